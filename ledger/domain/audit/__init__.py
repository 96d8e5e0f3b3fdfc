"""The pure building blocks of the tamper-evident audit trail (docs/audit.md).

- `canonical`: canonical JSON and the canonical bytes of a stored event;
- `chain`: the per-user hash chain over those bytes;
- `merkle`: the Merkle root over every user's (user_id, chain head, chain length);
- `stable_ids`: a policy's content hash and a history row's stable decision id;
- `digest`: the digest document `ledger digest` writes and `ledger verify` reads.

Pure: no I/O, no clock. The store and the CLI feed these with stored rows and write the
results; signing the digest is `ledger.app.audit.signing`.
"""
