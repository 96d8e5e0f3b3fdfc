"""Helpers of the test suite that are not tests: `kafka` (the broker fixtures and the
consumer processes), `http` (a store worth asking about and `ledger serve`), `postgres`
(the server the PostgreSQL tests use and fresh databases on it). `tests.support` (the CLI
runner and store reads) and `tests.factories` (events) sit beside this package."""
