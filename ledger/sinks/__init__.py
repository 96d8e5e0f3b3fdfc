"""Where the ledger sends what it did not apply: the dead-letter topic. Beside `ledger.sources`
in the layering: both are the edge of the pipeline towards Kafka."""
