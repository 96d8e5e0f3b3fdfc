"""`ledger bench`: the benchmark suite (suite.py: the contenders; cli.py: the command)."""
