"""Malformed input at the decoder: Avro single-object decoding names what is wrong. The same
inputs through `ledger replay` are in tests/e2e/test_malformed_input.py."""

from __future__ import annotations

import json

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line
from tests.support import eid

GOOD_SIGNUP = {
    "event_id": eid(1),
    "user_id": "u-1",
    "occurred_at": "2026-01-10T09:00:00Z",
    "type": "SignedUp",
    "phone": "+8613912345678",
    "channel": "xiaohongshu-app",
}


def test_single_object_decoding_errors_are_precise() -> None:
    codec = AvroCodec()
    event, _ = event_from_json_line(json.dumps(GOOD_SIGNUP))
    data = codec.encode(event)
    for bad, reason in [
        (b"\x00\x01garbage!", "missing C3 01 header"),
        (data[:2] + b"\xff" * 8 + data[10:], "unknown writer schema fingerprint ffffffffffffffff"),
        (data[:-5], "truncated or corrupt Avro body"),
    ]:
        try:
            codec.decode(bad)
        except ValueError as exc:
            assert reason in str(exc)
        else:
            raise AssertionError(f"decoded {bad!r}")
