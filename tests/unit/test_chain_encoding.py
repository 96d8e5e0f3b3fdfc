"""Chain encoding 2 (ledger.domain.audit.canonical.chain_bytes): the length-prefixed binary
form of a stored event row that links are computed over. A reference decoder, written from
the layout in docs/audit.md, parses every encoding back into its row: so the encoding is
unambiguous (no two rows share bytes), and the documented layout is the one implemented.
"""

from __future__ import annotations

import copy
import hashlib
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.app.audit.signing import check, sign
from ledger.app.ingest.plan import chain_fields
from ledger.domain.audit.canonical import (
    CHAIN_ENCODING,
    EVENT_CHAIN_FIELDS,
    canonical_event,
    canonical_event_as,
    canonical_event_v2,
    chain_bytes,
)
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.audit.digest import Digest, DigestError, body_bytes
from ledger.domain.facts import observe, observed_fields
from ledger.generate import generate_events
from tests.unit.test_audit_core import EVENT_ROWS, a_row, changed

# The worked example of docs/audit.md ("Chain encoding 2"): `a_row()` and its link after
# the genesis link. Written out by hand from the layout, then checked against the code:
# change these only with a new encoding version.
KNOWN_ROW_HEX = (
    "02"
    "01" "00000024" + b"9b2f7a52-3f43-4a8e-9d43-2b1e1c6f0a11".hex()
    + "01" "00000003" + b"u-1".hex()
    + "01" "0000019ba7224680"  # occurred_at 2026-01-10T09:00:00.000Z = 1768035600000 ms
    + "01" "0000019ba7224b62"  # recorded_at 2026-01-10T09:00:01.250Z = 1768035601250 ms
    + "01" "00000008" + b"SignedUp".hex()
    + "01" "00000002" + b"CN".hex()  # phone_region
    + "01" "01"  # phone_valid true
    + "01" "00000040" + b"ab".hex() * 32  # phone_hash
    + "01" "0000000f" + b"xiaohongshu-app".hex()  # channel
    + "01" "00002b08"  # birth_date 2000-02-29 = day 11016
    + "00" "00" "00"  # country, evidence, tos_version
    + "00" "00" "00"  # locale, document_country, document_kind
    + "01" "0000000000000001"  # seq 1
)  # fmt: skip
KNOWN_LINK_HEX = "a67cf420b6c2c5b97a2118d50decc16f79cd891faf872f3ff0c75a846ae70955"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = {
    "occurred_at": "instant",
    "recorded_at": "instant",
    "phone_valid": "bool",
    "birth_date": "date",
    "seq": "seq",
}


def decode(data: bytes) -> dict[str, Any]:
    """The row an encoding-2 byte string holds, read by the documented layout alone;
    ValueError for anything else (a trailing byte included)."""
    if data[:1] != b"\x02":
        raise ValueError("not version 2")
    at = 1
    row: dict[str, Any] = {}
    for name in EVENT_CHAIN_FIELDS:
        marker = data[at]
        at += 1
        if marker == 0:
            row[name] = None
            continue
        if marker != 1:
            raise ValueError(f"marker {marker}")
        kind = _KINDS.get(name, "text")
        if kind == "text":
            (size,) = struct.unpack_from(">I", data, at)
            row[name] = data[at + 4 : at + 4 + size].decode("utf-8")
            at += 4 + size
        elif kind in ("instant", "seq"):
            (number,) = struct.unpack_from(">q", data, at)
            at += 8
            row[name] = number if kind == "seq" else _EPOCH + timedelta(milliseconds=number)
        elif kind == "date":
            (days,) = struct.unpack_from(">i", data, at)
            at += 4
            row[name] = date(1970, 1, 1) + timedelta(days=days)
        else:
            row[name] = {0: False, 1: True}[data[at]]
            at += 1
    if at != len(data):
        raise ValueError("trailing bytes")
    return row


def test_the_documented_example_encodes_and_links_as_written() -> None:
    encoded = canonical_event_v2(a_row())
    assert encoded.hex() == KNOWN_ROW_HEX
    assert next_link(GENESIS, encoded).hex() == KNOWN_LINK_HEX
    assert hashlib.sha256(bytes(32) + bytes.fromhex(KNOWN_ROW_HEX)).hexdigest() == KNOWN_LINK_HEX
    assert CHAIN_ENCODING == 2


@given(EVENT_ROWS)
def test_every_row_decodes_back_from_its_encoding(row: dict[str, Any]) -> None:
    # A left inverse: two rows with the same bytes would decode to the same row.
    assert decode(canonical_event_v2(row)) == row


@given(EVENT_ROWS, EVENT_ROWS)
def test_two_rows_share_an_encoding_only_when_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert (canonical_event_v2(a) == canonical_event_v2(b)) == (a == b)


@given(EVENT_ROWS, st.sampled_from(EVENT_CHAIN_FIELDS), st.integers(0, 5))
def test_any_change_to_any_field_changes_the_bytes(
    row: dict[str, Any], name: str, how: int
) -> None:
    tampered = copy.deepcopy(row)
    tampered[name] = changed(row[name], how)
    try:
        encoded = canonical_event_v2(tampered)
    except ValueError:
        return  # a value its column cannot hold: refused, not hashed
    assert encoded != canonical_event_v2(row)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"country": ""}, {"country": None}),
        ({"country": "\x00"}, {"country": ""}),
        ({"country": "a", "evidence": None}, {"country": None, "evidence": "a"}),
        ({"country": "ab", "evidence": "c"}, {"country": "a", "evidence": "bc"}),
        ({"user_id": "u\x00"}, {"user_id": "u"}),
        ({"channel": "é"}, {"channel": "e\u0301"}),  # no Unicode normalisation
        ({"phone_valid": False}, {"phone_valid": None}),
        ({"birth_date": date(1970, 1, 1)}, {"birth_date": None}),
        ({"locale": None}, {"locale": ""}),
    ],
)
def test_look_alike_rows_encode_apart(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert canonical_event_v2(a_row(**a)) != canonical_event_v2(a_row(**b))


def test_instants_are_read_in_utc_and_the_epoch_edges_encode() -> None:
    shanghai = timezone(timedelta(hours=8))
    local = a_row(occurred_at=datetime(2026, 1, 10, 17, 0, tzinfo=shanghai))
    assert canonical_event_v2(local) == canonical_event_v2(a_row())
    early = a_row(
        occurred_at=datetime(1, 1, 1, tzinfo=UTC),
        recorded_at=datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
        birth_date=date(1, 1, 1),
    )
    assert decode(canonical_event_v2(early)) == early


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("occurred_at", "2026-01-10T09:00:00Z"),  # text where a timestamp belongs
        ("occurred_at", datetime(2026, 1, 10, 9, 0)),  # naive
        ("recorded_at", datetime(2026, 1, 10, 9, 0, 0, 1500, tzinfo=UTC)),  # finer than ms
        ("recorded_at", date(2026, 1, 10)),
        ("birth_date", datetime(2000, 2, 29, tzinfo=UTC)),
        ("birth_date", "2000-02-29"),
        ("phone_valid", 1),
        ("phone_valid", "true"),
        ("seq", True),
        ("seq", "1"),
        ("seq", 1.0),
        ("seq", 2**63),
        ("phone_hash", b"\xab" * 32),
        ("user_id", None),
        ("event_id", None),
        ("type", 7),
        ("country", "\ud800"),  # a lone surrogate has no UTF-8 form
    ],
)
def test_values_of_another_type_are_refused(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        canonical_event_v2(a_row(**{name: value}))


def test_exactly_the_chained_columns_are_taken() -> None:
    row = a_row()
    del row["locale"]  # encoding 1 leaves a null later field out; encoding 2 never does
    with pytest.raises(ValueError, match="missing locale"):
        canonical_event_v2(row)
    with pytest.raises(ValueError, match="unexpected 'source'"):
        canonical_event_v2(a_row(source="file.jsonl"))
    with pytest.raises(ValueError, match="observed fields"):
        chain_bytes("e", "u", _EPOCH, _EPOCH, "SignedUp", (None,) * 3, 1)


def test_each_encoding_is_chosen_by_its_number() -> None:
    assert canonical_event_as(1, a_row()) == canonical_event(a_row())
    assert canonical_event_as(2, a_row()) == canonical_event_v2(a_row())
    for unknown in (0, 3, "2", None):
        with pytest.raises(ValueError, match="chain encoding"):
            canonical_event_as(unknown, a_row())  # type: ignore[arg-type]


def test_the_planner_s_values_encode_as_the_stored_row() -> None:
    # The planner calls chain_bytes with what it holds; verify reads the row back.
    recorded = datetime(2026, 1, 10, 9, 0, 1, 250_000, tzinfo=UTC)
    for seq, event in enumerate(generate_events(40, seed=7), 1):
        obs = observe(event, b"k", None)
        direct = chain_bytes(
            obs.event_id,
            obs.user_id,
            obs.occurred_at,
            recorded,
            obs.type,
            observed_fields(obs.payload),
            seq,
        )
        row = chain_fields(obs, recorded, seq)
        assert direct == canonical_event_v2(row)
        assert decode(direct) == row


# --- the digest names its chain encoding ---------------------------------------------------

# Signed by the ledger before digests named their chain encoding (commit 4e59ac3), with the
# HMAC key b"old-audit-key": it must still check, and read as encoding 1.
OLD_SIGNED_DIGEST = {
    "events": 42,
    "format": "jurisdiction-ledger-digest/1",
    "policies": {"v1": "ab" * 32},
    "recorded_at": "2026-11-30T12:00:00.000Z",
    "root": "12" * 32,
    "seq": 42,
    "signature": {
        "alg": "HMAC-SHA256",
        "value": "b4729ac2a5896fd15fd9fe8eaa1e31e995d473fadb9432c99f3102451804bd56",
    },
    "users": 3,
}


def a_digest(**changes: Any) -> Digest:
    fields: dict[str, Any] = dict(
        root="12" * 32,
        seq=42,
        users=3,
        events=42,
        recorded_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        policies={"v1": "ab" * 32},
    )
    fields.update(changes)
    return Digest(**fields)


def test_a_digest_signed_before_the_field_existed_still_checks_as_encoding_1() -> None:
    digest = check(OLD_SIGNED_DIGEST, hmac_key=b"old-audit-key")
    assert digest == a_digest() and digest.chain_encoding == 1
    assert sign(digest, hmac_key=b"old-audit-key") == OLD_SIGNED_DIGEST


def test_a_digest_of_encoding_2_says_so_and_signs_it() -> None:
    digest = a_digest(chain_encoding=2)
    document = sign(digest, hmac_key=b"k")
    assert document["chain_encoding"] == 2 and b'"chain_encoding":2' in body_bytes(digest)
    assert check(document, hmac_key=b"k") == digest
    # The encoding is under the signature: saying 1 (by leaving it out) breaks it.
    del document["chain_encoding"]
    with pytest.raises(DigestError, match="does not match"):
        check(document, hmac_key=b"k")
