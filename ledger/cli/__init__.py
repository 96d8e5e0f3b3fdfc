"""The `ledger` command line, by command group; `ledger.cli.main` assembles it.

Kept empty on purpose: the plugins in `consumers/` and `infra/` import `ledger.cli.common`,
which must not load the plugins again while they are still being imported.
"""
