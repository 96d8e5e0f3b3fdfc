"""Tools beside the test suite, run by hand or by `make`, never collected by pytest:
`python -m tools.faults` (`make faults`: the fault scenarios at larger sizes) and
`python -m tools.http_load` (a bounded load run of `ledger serve`). `tools.common` holds
what the fault scenarios share with the tests; nothing here imports `tests`."""
