"""Integration tests: the ledger's parts against real things: SQLite files and PostgreSQL,
the Kafka-protocol broker, and processes (writers in parallel, consumers, the launcher)."""
