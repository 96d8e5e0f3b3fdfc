"""Stores of the read model: the batch port of `ledger.app.ports` on SQL databases
(`sql`, with its tables in `schema` and Alembic migrations) and in memory (`memory`)."""
