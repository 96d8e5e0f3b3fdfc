"""The audit trail: verify a store against its events and policies, take and sign digests,
export the decision log."""
