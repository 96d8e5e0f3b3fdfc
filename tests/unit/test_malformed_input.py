"""Malformed input at the decoder: Avro single-object decoding names what is wrong. The same
inputs through `ledger replay` are in tests/e2e/test_malformed_input.py."""

from __future__ import annotations

from ledger.codecs.avro import AvroCodec
from tests import factories


def test_single_object_decoding_errors_are_precise() -> None:
    codec = AvroCodec()
    event = factories.event(factories.signup(1))
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
