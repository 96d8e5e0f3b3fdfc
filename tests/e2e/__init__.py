"""End-to-end tests: the ledger as a user drives it: `ledger ...` commands (in-process
through the CLI runner, or as processes), `ledger serve` over HTTP, and a browser."""
