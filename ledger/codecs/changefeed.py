"""The changefeed's records in Avro (docs/changefeed.md): single-object encoding (C3 01, the
writer schema's CRC-64-AVRO fingerprint little-endian, then the body), as the event topic's
messages are, so a consumer finds the writer schema by fingerprint among the shipped
versions in `schemas/changefeed/`."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from ledger.codecs.avro import SINGLE_OBJECT_MAGIC
from ledger.resources import schemas_dir

SCHEMA_NAME = "RulebookDecision"
SCHEMA_VERSION = 1


@lru_cache(maxsize=4)
def decision_schema(version: int = SCHEMA_VERSION) -> tuple[Any, bytes]:
    """The parsed schema of that version and its 8-byte fingerprint."""
    path = schemas_dir() / "changefeed" / f"{SCHEMA_NAME}-{version}.avsc"
    parsed = parse_schema(json.loads(path.read_text()))
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return parsed, fp


def encode_decision(record: Mapping[str, Any]) -> bytes:
    """A decision record (`ledger.queries.changes.Change.record`) as one message."""
    parsed, fp = decision_schema()
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC)
    buf.write(fp)
    schemaless_writer(buf, parsed, dict(record))
    return buf.getvalue()


class NotADecision(ValueError):
    """A message that is not a decision record of a known schema version."""


def decode_decision(data: bytes) -> dict[str, Any]:
    """A decision record as a dict (instants as aware datetimes), whatever shipped version
    wrote it."""
    if len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
        raise NotADecision("not Avro single-object encoded (missing C3 01 header)")
    parsed, fp = decision_schema()
    if data[2:10] != fp:
        raise NotADecision(f"unknown writer schema fingerprint {data[2:10].hex()}")
    record = cast(dict[str, Any], schemaless_reader(io.BytesIO(data[10:]), parsed, None))
    for name in ("valid_from", "valid_to", "recorded_at"):
        value = record[name]
        if isinstance(value, datetime) and value.tzinfo is None:  # pragma: no cover
            raise NotADecision(f"{name} decoded without a time zone")
    return record
