"""Reading the ledger: history (believed, all, or as believed at a past record time), the
assignment at a valid time, and plain-language explanations."""
