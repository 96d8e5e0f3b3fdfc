"""The released versions of the event contract (docs/event-contract.md): which Avro schemas
each version has, their pinned fingerprints, and the one upcasting step per version that
turns what an older version wrote into today's events.

A version's schemas never change once released. The current version's files are
`schemas/*.avsc`; every earlier one is frozen under `schemas/releases/<version>/`. Before
the current schemas change for a new version, they are copied there, `SCHEMA_VERSION` goes
up by one, and `UPCASTS` gains the step from the old version to the new (a test holds all
three to this; `ledger schema check` holds the change to Avro's resolution rules).

Decoding resolves a record from its writer's schema to today's reader schema by Avro's
rules (a field the writer lacked gets the reader's default), then applies the upcasting
steps from the writer's version on. Resolution is structural; a step says what an old
record *means* today where a default cannot say it, and is the only place in the ledger
that knows about old versions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from ledger.resources import schemas_dir

# The event schema version this code writes (and the newest it reads).
SCHEMA_VERSION = 3

NAMESPACE = "ledger.events"
ENVELOPE_FILE = "AccountEvent.avsc"
RELEASES_DIR = "releases"

# The CRC-64-AVRO fingerprint of every released version's envelope (payload records
# inlined, Parsing Canonical Form), as single-object messages carry it. Pinned here so that
# a released schema file edited by mistake is caught (tests/unit/test_event_contract.py)
# rather than making every message of that version unreadable.
FINGERPRINTS: dict[int, str] = {
    1: "fbbf6dbef5b71e3e",
    2: "3c13c5d50cd1fa3a",
    3: "3129e6f794891907",
}


def load_envelope_schema(directory: Path | None = None) -> dict[str, Any]:
    """The envelope of `directory` (default: the current schemas) with every payload record
    inlined, so the schema (and its fingerprint) is self-contained."""
    directory = directory or schemas_dir()
    envelope = json.loads((directory / ENVELOPE_FILE).read_text())
    inlined: list[Any] = []
    for field in envelope["fields"]:
        if field["name"] == "payload":
            for name in field["type"]:
                short = name.rsplit(".", 1)[-1]
                inlined.append(json.loads((directory / f"{short}.avsc").read_text()))
            field["type"] = inlined
    return cast(dict[str, Any], envelope)


def schema_fingerprint(envelope: dict[str, Any]) -> str:
    """CRC-64-AVRO of the Parsing Canonical Form, hex: the same with or without logical
    types and docs, which the canonical form drops."""
    return str(fingerprint(to_parsing_canonical_form(parse_schema(envelope)), "CRC-64-AVRO"))


@dataclass(frozen=True)
class Release:
    version: int
    directory: Path
    envelope: dict[str, Any]  # JSON form, payload records inlined

    @property
    def fingerprint(self) -> str:
        return schema_fingerprint(self.envelope)

    @property
    def payload_types(self) -> tuple[str, ...]:
        """The short names of the event types this version has, in union order."""
        payload = next(f for f in self.envelope["fields"] if f["name"] == "payload")
        return tuple(str(r["name"]).rsplit(".", 1)[-1] for r in payload["type"])


def release_directories(root: Path | None = None) -> dict[int, Path]:
    """Version -> its schema directory under `root` (a directory laid out as `schemas/`):
    `releases/<n>/` for the frozen versions, `root` itself for the current one, the
    version after the newest frozen one."""
    root = root or schemas_dir()
    frozen: dict[int, Path] = {}
    releases = root / RELEASES_DIR
    if releases.is_dir():
        for path in releases.iterdir():
            if path.is_dir() and path.name.isdigit() and (path / ENVELOPE_FILE).is_file():
                frozen[int(path.name)] = path
    current = max(frozen, default=0) + 1
    return {**dict(sorted(frozen.items())), current: root}


def load_releases(root: Path | None = None, *, up_to: int | None = None) -> list[Release]:
    """Every version under `root` in ascending order, the current one last; with `up_to`,
    only versions up to it (a ledger of that version: `AvroCodec(version=…)`)."""
    return [
        Release(version, directory, load_envelope_schema(directory))
        for version, directory in release_directories(root).items()
        if up_to is None or version <= up_to
    ]


# --- upcasting --------------------------------------------------------------------------
# A record as resolved to today's reader (`fastavro.schemaless_reader` with
# return_record_name: the payload is a (full type name, fields) pair). Each step takes a
# record its version wrote and returns it as the next version would mean it.
Record = dict[str, Any]


def _v1_to_v2(record: Record) -> Record:
    """Version 2 added `SignedUp.locale` and the type `IdentityVerified`. A version-1 producer
    never knew the user's locale: it is unknown (null), whatever default a later reader
    gives the field. Version 1 had no IdentityVerified to translate."""
    type_name, fields = record["payload"]
    if type_name == f"{NAMESPACE}.SignedUp":
        fields["locale"] = None
    return record


def _v2_to_v3(record: Record) -> Record:
    """Version 3 added the type `AccountErased` and nothing else: what version 2 wrote means
    the same today."""
    return record


UPCASTS: dict[int, Callable[[Record], Record]] = {1: _v1_to_v2, 2: _v2_to_v3}


def upcast(record: Record, written: int, reader: int = SCHEMA_VERSION) -> Record:
    """`record`, written at version `written` and resolved to version `reader`'s schema,
    through every step from `written` up to `reader`."""
    for version in range(written, reader):
        record = UPCASTS[version](record)
    return record
