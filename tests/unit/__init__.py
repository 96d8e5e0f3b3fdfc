"""Unit tests: pure and in-process. No database file, no subprocess, no broker, no network
(the in-memory store and temporary plain files are fine)."""
