"""The audit trail's pure building blocks (ledger.domain.audit) and the digest signatures
(ledger.app.audit.signing): canonical bytes, hash chains, the Merkle root, policy hashes,
decision ids and the digest document."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.app.audit.signing import check, sign, signature_alg
from ledger.codecs.policy_files import load_policies
from ledger.domain.audit.canonical import (
    EVENT_CHAIN_FIELDS,
    EVENT_CHAIN_LATER_FIELDS,
    canonical_event,
    canonical_json,
)
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.audit.digest import Digest, DigestError, body_bytes
from ledger.domain.audit.merkle import EMPTY_ROOT, MerkleBuilder
from ledger.domain.audit.stable_ids import decision_id, policy_hash
from ledger.domain.policy import Policy, parse_policy
from ledger.resources import policies_dir

# --- strategies --------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
DATES = st.dates()


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


EVENT_ROWS = st.fixed_dictionaries(
    {
        "event_id": TEXT,
        "user_id": TEXT,
        "occurred_at": INSTANTS,
        "recorded_at": INSTANTS,
        "type": TEXT,
        "phone_region": optional(TEXT),
        "phone_valid": optional(st.booleans()),
        "phone_hash": optional(TEXT),
        "channel": optional(TEXT),
        "birth_date": optional(DATES),
        "country": optional(TEXT),
        "evidence": optional(TEXT),
        "tos_version": optional(TEXT),
        "locale": optional(TEXT),
        "document_country": optional(TEXT),
        "document_kind": optional(TEXT),
        "seq": st.integers(1, 2**31),
    }
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def a_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": "9b2f7a52-3f43-4a8e-9d43-2b1e1c6f0a11",
        "user_id": "u-1",
        "occurred_at": datetime(2026, 1, 10, 9, 0, tzinfo=UTC),
        "recorded_at": datetime(2026, 1, 10, 9, 0, 1, 250_000, tzinfo=UTC),
        "type": "SignedUp",
        "phone_region": "CN",
        "phone_valid": True,
        "phone_hash": "ab" * 32,
        "channel": "xiaohongshu-app",
        "birth_date": date(2000, 2, 29),
        "country": None,
        "evidence": None,
        "tos_version": None,
        "locale": None,
        "document_country": None,
        "document_kind": None,
        "seq": 1,
    }
    row.update(changes)
    return row


def changed(value: Any, how: int) -> Any:
    """Another value of the same column: never equal to `value`."""
    if value is None:
        return "x" if how % 2 else True
    if isinstance(value, bool):
        return None if how % 2 else not value
    if isinstance(value, int):
        return value + 1 + how
    if isinstance(value, datetime):
        return (
            value + timedelta(milliseconds=1 + how)
            if value.year < 9999
            else value - timedelta(milliseconds=1 + how)
        )
    if isinstance(value, date):
        return value + timedelta(days=1) if value.year < 9999 else value - timedelta(days=1)
    assert isinstance(value, str)
    return None if how % 3 == 0 else value + "\u00e9" * (1 + how % 2)


# --- canonical JSON and canonical events ----------------------------------------------


@given(JSON_VALUES)
def test_canonical_json_is_sorted_compact_utf8_json(value: Any) -> None:
    expected = json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")
    assert canonical_json(value) == expected


def test_canonical_json_refuses_what_has_no_canonical_form() -> None:
    for bad in (
        b"raw",
        float("nan"),
        float("inf"),
        datetime(2026, 1, 1),
        datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "\ud800",
        {"set"},
    ):
        with pytest.raises(ValueError):
            canonical_json(bad)


def test_canonical_event_has_a_fixed_form() -> None:
    assert (
        canonical_event(a_row())
        == (
            '{"birth_date":"2000-02-29","channel":"xiaohongshu-app","country":null,'
            '"event_id":"9b2f7a52-3f43-4a8e-9d43-2b1e1c6f0a11","evidence":null,'
            '"occurred_at":"2026-01-10T09:00:00.000Z","phone_hash":"' + "ab" * 32 + '",'
            '"phone_region":"CN","phone_valid":true,"recorded_at":"2026-01-10T09:00:01.250Z",'
            '"seq":1,"tos_version":null,"type":"SignedUp","user_id":"u-1"}'
        ).encode()
    )


def test_fields_of_event_schema_2_are_left_out_when_null() -> None:
    # So every link computed before they existed stays valid: the fixed form above is the
    # form a row had at revision 0003, when these columns did not exist.
    version_1 = a_row()
    for name in EVENT_CHAIN_LATER_FIELDS:
        del version_1[name]
    assert canonical_event(version_1) == canonical_event(a_row())
    verified = a_row(
        type="IdentityVerified",
        **dict.fromkeys(("phone_region", "phone_valid", "phone_hash", "channel", "birth_date")),
        document_country="CN",
        document_kind="resident_id",
    )
    assert canonical_event(verified) == (
        b'{"birth_date":null,"channel":null,"country":null,"document_country":"CN",'
        b'"document_kind":"resident_id","event_id":"9b2f7a52-3f43-4a8e-9d43-2b1e1c6f0a11",'
        b'"evidence":null,"occurred_at":"2026-01-10T09:00:00.000Z","phone_hash":null,'
        b'"phone_region":null,"phone_valid":null,"recorded_at":"2026-01-10T09:00:01.250Z",'
        b'"seq":1,"tos_version":null,"type":"IdentityVerified","user_id":"u-1"}'
    )
    assert b'"locale"' not in canonical_event(verified)
    assert b'"locale":"en-US"' in canonical_event(a_row(locale="en-US"))


@given(EVENT_ROWS)
def test_canonical_event_is_the_canonical_json_of_the_row(row: dict[str, Any]) -> None:
    # The event encoder is specialised for speed; it must agree with the general one, and
    # with the standard library's JSON once instants and dates are written as text. The
    # fields of event schema version 2 are in it only when they hold a value.
    kept = {k: v for k, v in row.items() if v is not None or k not in EVENT_CHAIN_LATER_FIELDS}
    as_text = {
        k: (v.isoformat(timespec="milliseconds")[:-6] + "Z" if isinstance(v, datetime) else v)
        for k, v in kept.items()
    }
    as_text["birth_date"] = row["birth_date"] and row["birth_date"].isoformat()
    expected = json.dumps(as_text, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert canonical_event(row) == canonical_json(kept) == expected.encode("utf-8")


def test_canonical_event_reads_instants_in_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    local = a_row(occurred_at=datetime(2026, 1, 10, 17, 0, tzinfo=shanghai))
    assert canonical_event(local) == canonical_event(a_row())


def test_canonical_event_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        canonical_event(a_row(recorded_at=datetime(2026, 1, 10, 9, 0)))
    with pytest.raises(ValueError, match="milliseconds"):
        canonical_event(a_row(occurred_at=datetime(2026, 1, 10, 9, 0, 0, 1500, tzinfo=UTC)))


def test_canonical_event_takes_exactly_the_chained_columns() -> None:
    row = a_row()
    del row["seq"]
    with pytest.raises(ValueError, match="missing seq"):
        canonical_event(row)
    with pytest.raises(ValueError, match="unexpected 'source'"):
        canonical_event(a_row(source="file.jsonl"))
    row = a_row(position="3")
    del row["country"]
    with pytest.raises(ValueError, match=r"missing country; unexpected 'position'"):
        canonical_event(row)
    assert set(EVENT_CHAIN_FIELDS) == set(a_row())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("occurred_at", "2026-01-10T09:00:00Z"),  # text where a timestamp belongs
        ("birth_date", datetime(2000, 2, 29, tzinfo=UTC)),
        ("phone_valid", 1),
        ("seq", True),
        ("seq", "1"),
        ("phone_hash", b"\xab" * 32),
        ("user_id", None),
    ],
)
def test_canonical_event_refuses_values_of_another_type(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        canonical_event(a_row(**{name: value}))


def test_event_columns_are_the_stored_ones() -> None:
    from ledger.store.schema import events

    stored = {c.name for c in events.columns}
    assert set(EVENT_CHAIN_FIELDS) <= stored
    # Left out on purpose: where a copy was read from, the global application order (it
    # depends on how users interleave) and the link itself. A new column must be chosen.
    # The source and position are stored as origin_id and origin_offset since 0007.
    assert stored - set(EVENT_CHAIN_FIELDS) <= {"origin_id", "origin_offset", "app_seq", "link"}


# --- hash chains ---------------------------------------------------------------------


def head_after(prev: bytes, rows: list[dict[str, Any]]) -> bytes:
    """The chain head after `rows`, linked one event at a time as the batch planner links
    them (ledger.app.ingest.plan)."""
    head = prev
    for row in rows:
        head = next_link(head, canonical_event(row))
    return head


def test_next_link_is_sha256_of_prev_and_canonical() -> None:
    canonical = canonical_event(a_row())
    assert next_link(GENESIS, canonical) == hashlib.sha256(bytes(32) + canonical).digest()
    with pytest.raises(ValueError, match="32 bytes"):
        next_link(b"short", canonical)
    with pytest.raises(ValueError, match="32 bytes"):
        next_link(b"", canonical)


@given(st.lists(EVENT_ROWS, max_size=6), st.integers(0, 6))
def test_the_chain_is_deterministic_and_blind_to_batches(
    rows: list[dict[str, Any]], cut: int
) -> None:
    head = head_after(GENESIS, rows)
    assert head_after(GENESIS, copy.deepcopy(rows)) == head
    assert head_after(GENESIS, [dict(reversed(r.items())) for r in rows]) == head
    assert head_after(head_after(GENESIS, rows[:cut]), rows[cut:]) == head
    manual = GENESIS
    for row in rows:
        manual = hashlib.sha256(manual + canonical_event(row)).digest()
    assert manual == head
    assert head_after(GENESIS, []) == GENESIS


@given(
    st.lists(EVENT_ROWS, min_size=1, max_size=6),
    st.data(),
    st.sampled_from(EVENT_CHAIN_FIELDS),
    st.integers(0, 5),
)
def test_any_change_to_any_field_of_any_row_changes_the_head(
    rows: list[dict[str, Any]], data: st.DataObject, name: str, how: int
) -> None:
    index = data.draw(st.integers(0, len(rows) - 1))
    tampered = copy.deepcopy(rows)
    tampered[index][name] = changed(rows[index][name], how)
    assert tampered[index][name] != rows[index][name] or type(tampered[index][name]) is not type(
        rows[index][name]
    )
    try:
        tampered_head = head_after(GENESIS, tampered)
    except ValueError:
        return  # the change gave the column a type it cannot hold: refused, not hidden
    assert tampered_head != head_after(GENESIS, rows)


@given(st.lists(EVENT_ROWS, min_size=2, max_size=5, unique_by=lambda r: r["event_id"]))
def test_deleting_or_reordering_rows_changes_the_head(rows: list[dict[str, Any]]) -> None:
    head = head_after(GENESIS, rows)
    assert head_after(GENESIS, rows[1:]) != head
    assert head_after(GENESIS, rows[:-1]) != head
    assert head_after(GENESIS, [rows[1], rows[0], *rows[2:]]) != head


# --- the Merkle root ------------------------------------------------------------------


def reference_leaf(user_id: str, head: bytes, length: int) -> bytes:
    data = json.dumps([user_id, head.hex(), length], ensure_ascii=False, separators=(",", ":"))
    return data.encode("utf-8")


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, as written there."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


def some_leaves(n: int, salt: int = 0) -> list[tuple[str, bytes, int]]:
    return [
        (f"user-{i:05d}", hashlib.sha256(f"{salt}/{i}".encode()).digest(), i % 7 + 1)
        for i in range(n)
    ]


def root_over(leaves: list[tuple[str, bytes, int]]) -> bytes:
    """The Merkle root over `leaves`, added in order as `ledger digest` adds them."""
    builder = MerkleBuilder()
    for user_id, head, length in leaves:
        builder.add(user_id, head, length)
    return builder.root()


def test_merkle_root_equals_rfc6962_for_every_count_up_to_300() -> None:
    builder = MerkleBuilder()
    leaves = some_leaves(300)
    assert builder.root() == EMPTY_ROOT == hashlib.sha256(b"").digest()
    for n, leaf in enumerate(leaves, start=1):
        builder.add(*leaf)
        assert builder.root() == reference_mth([reference_leaf(*x) for x in leaves[:n]]), n
        # Bounded memory: one subtree root per set bit of the count.
        assert len(builder._stack) == bin(n).count("1")
    assert builder.count == 300


@settings(max_examples=60)
@given(
    st.lists(st.text(st.characters(blacklist_categories=("Cs",))), max_size=300, unique=True),
    st.integers(0, 2**16),
)
def test_merkle_root_equals_rfc6962_for_random_leaves(user_ids: list[str], salt: int) -> None:
    leaves = [
        (u, hashlib.sha256(f"{salt}/{u}".encode("utf-8", "surrogatepass")).digest(), len(u))
        for u in sorted(user_ids)
    ]
    assert root_over(leaves) == reference_mth([reference_leaf(*x) for x in leaves])


def test_merkle_leaves_must_arrive_strictly_increasing() -> None:
    builder = MerkleBuilder()
    builder.add("b", GENESIS, 1)
    for user_id in ("a", "b"):
        with pytest.raises(ValueError, match="sorted by user id"):
            builder.add(user_id, GENESIS, 1)
    with pytest.raises(ValueError, match="sorted by user id"):
        root_over([("u2", GENESIS, 1), ("u10", GENESIS, 1)])  # "u10" < "u2"
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleBuilder().add("a", b"\x00" * 31, 1)
    with pytest.raises(ValueError, match="not a count"):
        MerkleBuilder().add("a", GENESIS, -1)


def test_merkle_root_covers_heads_and_lengths() -> None:
    leaves = some_leaves(5)
    root = root_over(leaves)
    user_id, head, length = leaves[2]
    assert root_over([*leaves[:2], (user_id, head, length + 1), *leaves[3:]]) != root
    assert root_over([*leaves[:2], (user_id, GENESIS, length), *leaves[3:]]) != root
    assert root_over([*leaves[:2], *leaves[3:]]) != root


# --- policy hashes ---------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        # An inline table, keys reversed and spaced differently from the shipped files.
        inner = " ,  ".join(f"{k}={toml_value(v)}" for k, v in reversed(value.items()))
        return "{" + inner + "}"
    assert isinstance(value, list)
    if not value:
        return "[ ]"
    return "[\n" + "".join(f"    {toml_value(v)},  # item\n" for v in value) + "]"


def as_instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def restyle(data: dict[str, Any]) -> str:
    """The same policy written another way: keys in reverse order, other comments and
    spacing, instants in UTC, condition instants as native TOML datetimes."""
    lines = ["# restyled copy", ""]
    tables = {k: v for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    for key, value in reversed(data.items()):
        if key in tables:
            continue
        if key == "effective_from":
            value = as_instant(value).isoformat().replace("+00:00", "Z")
        lines.append(f"{key}   =   {toml_value(value)}   # a comment")
    for key, rows in tables.items():
        for row in rows:
            lines += ["", "", f"[[ {key} ]]  # another comment"]
            for name, value in reversed(row.items()):
                if key == "rules" and name == "when":
                    value = [
                        {
                            k: as_instant(v) if k in ("before", "not_before") and "T" in v else v
                            for k, v in cond.items()
                        }
                        for cond in value
                    ]
                lines.append(f"  {name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def shipped_data() -> dict[str, dict[str, Any]]:
    import tomllib

    return {
        path.name: tomllib.loads(path.read_text(encoding="utf-8"))
        for path in sorted(policies_dir().glob("*.toml"))
    }


def parsed(data: dict[str, Any], source: str = "x.toml") -> Policy:
    problems: list[str] = []
    policy = parse_policy(data, source, problems)
    assert policy is not None, problems
    return policy


def test_policy_hash_ignores_comments_whitespace_key_order_and_file_name(
    tmp_path: Path,
) -> None:
    shipped = load_policies()
    for name, data in shipped_data().items():
        (tmp_path / f"restyled-{name}").write_text(restyle(data), encoding="utf-8")
    restyled = load_policies(tmp_path)
    assert set(restyled.by_version) == set(shipped.by_version)
    assert any(p.rules[0].when for p in shipped.by_version.values())
    for version, policy in shipped.by_version.items():
        assert restyled[version].source != policy.source
        assert policy_hash(restyled[version]) == policy_hash(policy), version
    hashes = {policy_hash(p) for p in shipped.by_version.values()}
    assert len(hashes) == len(shipped.by_version)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes)


def test_policy_hash_changes_with_any_semantic_change() -> None:
    data = shipped_data()["tos-2025-12-cutover.toml"]
    base = policy_hash(parsed(data))

    def edited(edit: Any) -> str:
        copied = copy.deepcopy(data)
        edit(copied)
        return policy_hash(parsed(copied))

    def reason(d: dict[str, Any]) -> None:
        d["rules"][1]["reason"] += "."

    def condition_value(d: dict[str, Any]) -> None:
        d["rules"][1]["when"][1]["eq"] = "HK"

    def instant(d: dict[str, Any]) -> None:
        d["rules"][0]["when"][0]["before"] = "2025-12-08T00:00:00.001+08:00"

    def operator(d: dict[str, Any]) -> None:
        d["rules"][2]["when"][1] = {"fact": "signup_phone_region", "not_in": ["CN"]}

    def assign(d: dict[str, Any]) -> None:
        d["rules"][3]["assign"] = "xhs-domestic"

    def rule_order(d: dict[str, Any]) -> None:
        d["rules"][1], d["rules"][2] = d["rules"][2], d["rules"][1]

    def rule_id(d: dict[str, Any]) -> None:
        d["rules"][0]["id"] = "C0"

    def effective_from(d: dict[str, Any]) -> None:
        d["effective_from"] = "2025-12-08T00:00:00Z"

    def title(d: dict[str, Any]) -> None:
        d["title"] += "!"

    def bindable(d: dict[str, Any]) -> None:
        d["bindable"] = False

    def version(d: dict[str, Any]) -> None:
        d["version"] = "tos-2025-12-cutover-b"

    edits = [
        reason,
        condition_value,
        instant,
        operator,
        assign,
        rule_order,
        rule_id,
        effective_from,
        title,
        bindable,
        version,
    ]
    seen = {base}
    for edit in edits:
        digest = edited(edit)
        assert digest not in seen, edit.__name__
        seen.add(digest)

    # What the policy does not decide with leaves the hash alone.
    def invariants(d: dict[str, Any]) -> None:
        d["invariants"].pop()

    assert edited(invariants) == base
    assert policy_hash(parsed(data, "another-name.toml")) == base


def test_policy_hash_treats_membership_lists_as_sets() -> None:
    def policy(members: list[str]) -> Policy:
        return parsed(
            {
                "version": "v",
                "effective_from": "2026-01-01T00:00:00Z",
                "title": "t",
                "rules": [
                    {
                        "id": "A",
                        "when": [{"fact": "residence", "in": members}],
                        "assign": "xhs-domestic",
                        "reason": "r",
                    },
                    {"id": "B", "when": [], "assign": "undetermined", "reason": "r"},
                ],
            }
        )

    same = policy_hash(policy(["CN", "HK"]))
    assert policy_hash(policy(["HK", "CN", "HK"])) == same
    assert policy_hash(policy(["CN"])) != same


def test_policy_hash_reads_native_toml_datetimes_as_their_text() -> None:
    import tomllib

    def hashed(instant: str) -> str:
        text = f"""
            version = "v"
            effective_from = "2026-01-01T00:00:00Z"
            [[rules]]
            id = "A"
            when = [{{ fact = "signup_at", before = {instant} }}]
            assign = "xhs-domestic"
            reason = "r"
            [[rules]]
            id = "B"
            when = []
            assign = "undetermined"
            reason = "r"
        """
        return policy_hash(parsed(tomllib.loads(text)))

    # A native TOML datetime means what the same text in quotes means: the same instant, in
    # milliseconds as every instant of the ledger, whatever the offset it is written in.
    fine = hashed("2025-12-08T00:00:00.001Z")
    assert hashed("2025-12-08T08:00:00.001+08:00") == fine
    assert hashed('"2025-12-08T00:00:00.001Z"') == fine
    assert hashed("2025-12-08T00:00:00.002Z") != fine
    assert hashed("2025-12-08T00:00:00.001999Z") == fine
    assert hashed("2025-12-08T00:00:00Z") == hashed('"2025-12-08T08:00:00+08:00"')


# --- decision ids ----------------------------------------------------------------------


def test_decision_id_is_stable_and_distinguishes_rows() -> None:
    t0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
    t1 = t0 + timedelta(milliseconds=1)
    one = decision_id("u-1", t0, t1)
    assert len(one) == 32 and int(one, 16) >= 0
    assert one == decision_id("u-1", t0.astimezone(timezone(timedelta(hours=8))), t1)
    others = {decision_id("u-2", t0, t1), decision_id("u-1", t1, t1), decision_id("u-1", t0, t0)}
    assert one not in others and len(others) == 3
    # The derivation is part of every exported decision log: it must never drift.
    body = (
        b'{"recorded_at":"2026-01-10T09:00:00.001Z","user_id":"u-1",'
        b'"valid_from":"2026-01-10T09:00:00.000Z"}'
    )
    assert one == hashlib.sha256(body).hexdigest()[:32] == "0859cbeb20a6a3c3baa47ad7cdf4f74a"


# --- the digest document ---------------------------------------------------------------

HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
DIGESTS = st.builds(
    Digest,
    root=HEX64,
    seq=st.integers(0, 2**63),
    users=st.integers(0, 2**40),
    events=st.integers(0, 2**40),
    recorded_at=INSTANTS,
    policies=st.dictionaries(TEXT.filter(bool), HEX64, max_size=4),
    chain_encoding=st.sampled_from((1, 2)),
)


def a_digest(**changes: Any) -> Digest:
    fields: dict[str, Any] = {
        "root": root_over(some_leaves(3)).hex(),
        "seq": 41,
        "users": 3,
        "events": 12,
        "recorded_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "policies": {"tos-2023-legacy": "ab" * 32, "tos-2025-12-cutover": "cd" * 32},
    }
    fields.update(changes)
    return Digest(**fields)


@given(DIGESTS)
def test_digest_json_round_trips(digest: Digest) -> None:
    document = json.loads(json.dumps(digest.to_json()))
    assert Digest.from_json(document) == digest
    assert document["format"] == "jurisdiction-ledger-digest/1"
    assert body_bytes(Digest.from_json(document)) == body_bytes(digest)


def test_digest_keeps_milliseconds() -> None:
    digest = a_digest(recorded_at=datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC))
    assert digest.to_json()["recorded_at"] == "2026-03-01T12:00:00.123Z"
    assert Digest.from_json(digest.to_json()) == digest


@pytest.mark.parametrize(
    "name", ["format", "root", "seq", "users", "events", "recorded_at", "policies"]
)
def test_a_missing_digest_field_is_named(name: str) -> None:
    document = a_digest().to_json()
    del document[name]
    with pytest.raises(DigestError, match=f"'{name}' is missing"):
        Digest.from_json(document)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("format", "jurisdiction-ledger-digest/2"),
        ("format", 1),
        ("root", "AB" * 32),
        ("root", "ab" * 31),
        ("root", None),
        ("seq", "41"),
        ("seq", -1),
        ("seq", True),
        ("seq", 41.0),
        ("users", None),
        ("events", [12]),
        ("recorded_at", "2026-03-01T12:00:00"),
        ("recorded_at", 1767225600000),
        ("policies", ["tos-2023-legacy"]),
        ("policies", {"tos-2023-legacy": "nope"}),
        ("policies", {"": "ab" * 32}),
        # Encoding 1 is said by leaving the field out (so old signed bytes stay the same).
        ("chain_encoding", 1),
        ("chain_encoding", 3),
        ("chain_encoding", 0),
        ("chain_encoding", -2),
        ("chain_encoding", True),
        ("chain_encoding", "2"),
        ("chain_encoding", 2.0),
        ("chain_encoding", None),
        ("chain_encoding", [2]),
        ("chain_encoding", 2**64),
        ("chain_encoding", "\x1b[2J"),
    ],
)
def test_a_wrongly_typed_digest_field_is_named(name: str, value: Any) -> None:
    document = a_digest().to_json()
    document[name] = value
    with pytest.raises(DigestError) as caught:
        Digest.from_json(document)
    message = str(caught.value)
    assert name in message and "\n" not in message


def test_digest_refuses_unknown_fields_and_non_objects() -> None:
    with pytest.raises(DigestError, match="unknown field 'extra'"):
        Digest.from_json({**a_digest().to_json(), "extra": 1})
    with pytest.raises(DigestError, match="JSON object"):
        Digest.from_json([])


# --- signing ---------------------------------------------------------------------------

KEY = b"an audit key kept away from the operator"


def ed25519_pair() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def through_a_file(document: dict[str, Any]) -> dict[str, Any]:
    """As an auditor reads it: written as indented JSON, read back."""
    loaded: dict[str, Any] = json.loads(json.dumps(document, indent=2))
    return loaded


def refused(document: Any, match: str, **keys: Any) -> str:
    with pytest.raises(DigestError, match=match) as caught:
        check(document, **keys)
    message = str(caught.value)
    assert "\n" not in message
    return message


@given(DIGESTS)
@settings(max_examples=30)
def test_hmac_sign_and_check_round_trip(digest: Digest) -> None:
    document = through_a_file(sign(digest, hmac_key=KEY))
    assert document["signature"]["alg"] == "HMAC-SHA256"
    assert check(document, hmac_key=KEY) == digest


def test_hmac_refuses_a_wrong_key_and_any_tampering() -> None:
    document = through_a_file(sign(a_digest(), hmac_key=KEY))
    refused(document, "does not match", hmac_key=KEY + b"!")
    for name, value in [
        ("root", root_over(some_leaves(4)).hex()),
        ("seq", 40),
        ("users", 2),
        ("events", 13),
        ("recorded_at", "2026-03-01T12:00:00.001Z"),
        ("policies", {"tos-2023-legacy": "ab" * 32}),
    ]:
        tampered = copy.deepcopy(document)
        tampered[name] = value
        refused(tampered, "does not match", hmac_key=KEY)
    tampered = copy.deepcopy(document)
    tampered["signature"]["value"] = "00" * 32
    refused(tampered, "does not match", hmac_key=KEY)
    tampered["signature"]["value"] = "zz"
    refused(tampered, "hex", hmac_key=KEY)


def test_a_missing_signature_is_refused_when_a_key_is_given() -> None:
    unsigned = through_a_file(sign(a_digest()))
    assert unsigned["signature"] == {"alg": "none"}
    assert signature_alg(unsigned) == "none"
    refused(unsigned, "not signed", hmac_key=KEY)
    stripped = through_a_file(sign(a_digest(), hmac_key=KEY))
    del stripped["signature"]
    refused(stripped, "not signed", hmac_key=KEY)
    _, public = ed25519_pair()
    refused(stripped, "not signed", ed25519_public_pem=public)
    # With no key an unsigned digest is read; the caller warns that nothing vouches for it.
    assert check(unsigned) == a_digest()
    assert check(stripped) == a_digest()


def test_a_signed_digest_needs_its_key() -> None:
    document = sign(a_digest(), hmac_key=KEY)
    refused(document, "no key was given")
    # Reading it unchecked is still possible, and explicit.
    assert Digest.from_json(document) == a_digest()


def test_the_key_must_be_of_the_documents_algorithm() -> None:
    private, public = ed25519_pair()
    by_hmac = sign(a_digest(), hmac_key=KEY)
    by_ed25519 = sign(a_digest(), ed25519_private_pem=private)
    refused(by_hmac, "signed with HMAC-SHA256, but the key given is for Ed25519",
            ed25519_public_pem=public)  # fmt: skip
    refused(by_ed25519, "signed with Ed25519, but the key given is for HMAC-SHA256",
            hmac_key=KEY)  # fmt: skip
    both = {"hmac_key": KEY, "ed25519_public_pem": public}
    assert check(by_hmac, **both) == check(by_ed25519, **both) == a_digest()
    with pytest.raises(DigestError, match="one signing key"):
        sign(a_digest(), hmac_key=KEY, ed25519_private_pem=private)


def test_ed25519_sign_and_check_round_trip() -> None:
    private, public = ed25519_pair()
    document = through_a_file(sign(a_digest(), ed25519_private_pem=private))
    assert document["signature"]["alg"] == "Ed25519"
    assert document["signature"]["public_key"] == public.decode()
    assert check(document, ed25519_public_pem=public) == a_digest()


def test_ed25519_refuses_another_key_and_tampering() -> None:
    private, public = ed25519_pair()
    other_private, other_public = ed25519_pair()
    document = through_a_file(sign(a_digest(), ed25519_private_pem=other_private))
    refused(document, "signed by another key", ed25519_public_pem=public)
    # Swapping in the expected public key does not make another key's signature good.
    document["signature"]["public_key"] = public.decode()
    refused(document, "does not match", ed25519_public_pem=public)

    good = through_a_file(sign(a_digest(), ed25519_private_pem=private))
    for name, value in [("root", "00" * 32), ("seq", 42), ("events", 0)]:
        tampered = copy.deepcopy(good)
        tampered[name] = value
        refused(tampered, "changed after signing", ed25519_public_pem=public)
    assert check(good, ed25519_public_pem=public) == a_digest()
    assert other_public != public


def test_malformed_documents_and_keys_are_refused_in_one_line() -> None:
    private, public = ed25519_pair()
    refused("not a document", "JSON object")
    refused({**sign(a_digest()), "signature": "HMAC"}, "signature")
    refused({**sign(a_digest()), "signature": {"alg": "RSA", "value": "00"}}, "unknown algorithm")
    refused(
        {**sign(a_digest(), hmac_key=KEY), "extra": True}, "unknown field 'extra'", hmac_key=KEY
    )
    document = sign(a_digest(), hmac_key=KEY)
    document["signature"]["note"] = "x"
    refused(document, "unknown field 'note'", hmac_key=KEY)
    refused(sign(a_digest(), hmac_key=KEY), "empty", hmac_key=b"")
    by_ed25519 = sign(a_digest(), ed25519_private_pem=private)
    refused(by_ed25519, "cannot read the Ed25519 public key", ed25519_public_pem=b"garbage")
    refused(by_ed25519, "cannot read the Ed25519 public key", ed25519_public_pem=private)
    with pytest.raises(DigestError, match="cannot read the Ed25519 private key"):
        sign(a_digest(), ed25519_private_pem=public)
