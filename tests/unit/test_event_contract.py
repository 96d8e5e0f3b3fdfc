"""The event contract across versions (docs/event-contract.md): released schemas frozen
and readable forever, the bytes version 1 wrote read into today's events, upcasting in one
step per version, the JSON rules for unknown fields and types, what a ledger of version 1
does with what version 2 writes, and `ledger schema check` on the shipped and on broken
schemas."""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger.app.ingest.projector import Projector
from ledger.app.ingest.replay import replay_files
from ledger.codecs.avro import AvroCodec, UnresolvedRecord
from ledger.codecs.compatibility import check_schemas
from ledger.codecs.jsonl import event_from_json_line, event_to_json_line
from ledger.codecs.policy_files import load_policies
from ledger.codecs.releases import (
    FINGERPRINTS,
    NAMESPACE,
    SCHEMA_VERSION,
    UPCASTS,
    load_releases,
    upcast,
)
from ledger.domain.events import (
    EVENT_TYPES,
    Event,
    EventError,
    IdentityVerified,
    SignedUp,
)
from ledger.resources import schemas_dir
from ledger.store.memory import MemoryStore
from tests import factories

DATA = Path(__file__).parents[1] / "data" / "schema-v1"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
V3 = AvroCodec()
V2 = AvroCodec(version=2)
V1 = AvroCodec(version=1)


def v1_archive() -> list[tuple[Event, datetime | None]]:
    with (DATA / "events-v1.avro").open("rb") as fo:
        items = [item for _, item in V2.read_container(fo)]
    assert not any(isinstance(i, EventError) for i in items)
    return items  # type: ignore[return-value]


def v1_messages() -> list[bytes]:
    lines = (DATA / "messages-v1.jsonl").read_text().splitlines()
    return [bytes.fromhex(json.loads(line)["value"]) for line in lines]


# --- released versions ------------------------------------------------------------------


def test_released_versions_are_frozen_and_the_current_one_is_pinned() -> None:
    releases = load_releases()
    assert [r.version for r in releases] == list(range(1, SCHEMA_VERSION + 1))
    assert {r.version: r.fingerprint for r in releases} == FINGERPRINTS
    assert releases[-1].directory == schemas_dir()
    # One upcasting step from every earlier version to the next.
    assert set(UPCASTS) == set(range(1, SCHEMA_VERSION))
    assert releases[0].payload_types == ("SignedUp", "PhoneChanged", "Relocated", "TermsAccepted")
    assert releases[-1].payload_types == EVENT_TYPES


def test_version_1_messages_carry_the_pinned_fingerprint() -> None:
    assert {m[2:10].hex() for m in v1_messages()} == {FINGERPRINTS[1]}
    assert V2.encode(factories.event(factories.signup(1)))[2:10].hex() == FINGERPRINTS[2]
    assert V3.encode(factories.event(factories.signup(1)))[2:10].hex() == FINGERPRINTS[3]


# --- the bytes version 1 wrote ----------------------------------------------------------


def test_the_version_1_archive_and_messages_read_as_the_same_events() -> None:
    archive = v1_archive()
    assert len(archive) == 97
    messages = [V2.decode(m) for m in v1_messages()]
    assert messages == archive
    signups = [e.payload for e, _ in archive if isinstance(e.payload, SignedUp)]
    assert len(signups) == 20 and all(s.locale is None for s in signups)
    assert {e.type for e, _ in archive} == set(EVENT_TYPES) - {"IdentityVerified", "AccountErased"}


def test_version_1_events_written_again_at_version_2_are_the_same_events() -> None:
    archive = v1_archive()
    buf = io.BytesIO()
    V2.write_container(buf, archive)
    buf.seek(0)
    assert [item for _, item in V2.read_container(buf)] == archive
    assert [V2.decode(V2.encode(e, r)) for e, r in archive] == archive
    # The JSON form of an event without the version-2 fields is what version 1 wrote.
    for event, _ in archive:
        assert "locale" not in json.loads(event_to_json_line(event))


def _replayed(path: Path, codec: AvroCodec = V2) -> MemoryStore:
    store = MemoryStore()
    projector = Projector(store, load_policies(), b"contract-key")
    replay_files(projector, [path], batch_size=16, now=NOW, codec=codec)
    return store


def _state(store: MemoryStore) -> tuple[list[Any], dict[str, bytes]]:
    rows = sorted(store.history_rows(), key=repr)
    with store.transaction() as tx:
        heads = {u: p.chain_head for u, p in tx.load_users(store.user_ids()).items()}
    return rows, heads


def test_the_version_1_archive_builds_the_histories_of_the_same_events_at_version_2(
    tmp_path: Path,
) -> None:
    again = tmp_path / "events-v2.avro"
    with again.open("wb") as fo:
        V2.write_container(fo, v1_archive())
    as_json = tmp_path / "events-v2.jsonl"
    as_json.write_text("".join(event_to_json_line(e, r) + "\n" for e, r in v1_archive()))
    released = _state(_replayed(DATA / "events-v1.avro"))
    assert len(released[1]) == 20
    assert _state(_replayed(again)) == released
    assert _state(_replayed(as_json)) == released


# --- upcasting ----------------------------------------------------------------------------


def test_upcasting_says_a_version_1_signup_has_no_locale_whatever_the_default() -> None:
    # Resolution would give the reader's default; the step says what version 1 meant.
    record = {
        "payload": (f"{NAMESPACE}.SignedUp", {"phone": "+1", "channel": "c", "locale": "zh-CN"})
    }
    assert upcast(copy.deepcopy(record), 1)["payload"][1]["locale"] is None
    assert upcast(copy.deepcopy(record), 2) == record  # written now: nothing to do
    other = {"payload": (f"{NAMESPACE}.TermsAccepted", {"tos_version": "t"})}
    assert upcast(copy.deepcopy(other), 1) == other


# --- JSON Lines: what a reader does with what it does not know ---------------------------

LINE = {
    "event_id": "7f0c0000-0000-4000-8000-000000000001",
    "user_id": "u-1",
    "occurred_at": "2026-01-10T09:00:00Z",
    "type": "SignedUp",
    "phone": "+8613912345678",
    "channel": "xiaohongshu-app",
}


def test_json_fields_a_reader_does_not_know_are_ignored() -> None:
    event, _ = event_from_json_line(json.dumps({**LINE, "referrer": "ad-7", "locale": "en-us"}))
    assert event == event_from_json_line(json.dumps({**LINE, "locale": "en-US"}))[0]
    assert isinstance(event.payload, SignedUp) and event.payload.locale == "en-US"


def test_json_optional_fields_absent_or_null_are_null() -> None:
    for line in (LINE, {**LINE, "locale": None}):
        event, _ = event_from_json_line(json.dumps(line))
        assert isinstance(event.payload, SignedUp) and event.payload.locale is None


def test_a_json_type_the_reader_does_not_know_is_dead_lettered_naming_the_way_out() -> None:
    line = {**LINE, "type": "AccountMerged", "into": "u-2"}
    with pytest.raises(EventError) as caught:
        event_from_json_line(json.dumps(line))
    reason = str(caught.value)
    assert reason.startswith("unknown event type 'AccountMerged'")
    assert "IdentityVerified" in reason and "`ledger dead-letters retry`" in reason


def test_identity_verified_in_json() -> None:
    line = {
        **{k: LINE[k] for k in ("event_id", "user_id", "occurred_at")},
        "type": "IdentityVerified",
        "document_country": "CN",
        "document_kind": "resident_id",
    }
    event, _ = event_from_json_line(json.dumps(line))
    assert event.payload == IdentityVerified("CN", "resident_id")
    assert json.loads(event_to_json_line(event)) == line
    for field, value, fragment in [
        ("document_country", "cn", "document_country 'cn' is not an ISO 3166-1"),
        ("document_country", "XX", "document_country 'XX' is not an ISO 3166-1"),
        ("document_kind", "driving_licence", "document_kind 'driving_licence' is not one of"),
        ("document_kind", None, "missing field 'document_kind'"),
    ]:
        with pytest.raises(EventError, match=fragment):
            event_from_json_line(json.dumps({**line, field: value}))


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("en-US", "en-US"),
        ("en-us", "en-US"),
        ("ZH-hans-cn", "zh-Hans-CN"),
        ("es-419", "es-419"),
        ("en", "en"),
        ("de-CH-1996", "de-CH-1996"),
        ("en-US-u-ca-Gregory", "en-US-u-ca-gregory"),
        ("x-Private", "x-private"),
    ],
)
def test_locales_are_kept_in_the_conventional_case(given: str, kept: str) -> None:
    event, _ = event_from_json_line(json.dumps({**LINE, "locale": given}))
    assert isinstance(event.payload, SignedUp) and event.payload.locale == kept


@pytest.mark.parametrize("bad", ["en_US", "english", "xx-YY", "e", "en--US", "zh-CN-", "日本語", 7])
def test_a_locale_that_is_no_bcp_47_tag_is_refused(bad: object) -> None:
    with pytest.raises(EventError, match="locale"):
        event_from_json_line(json.dumps({**LINE, "locale": bad}))


# --- a ledger of version 1 and what version 2 writes -------------------------------------


def _version_2_events() -> list[Event]:
    signup = Event(
        "7f0c0000-0000-4000-8000-000000000001",
        "u-9",
        datetime(2026, 1, 10, tzinfo=UTC),
        SignedUp("+8613912345678", "xiaohongshu-app", None, "zh-CN"),
    )
    verified = Event(
        "7f0c0000-0000-4000-8000-000000000002",
        "u-9",
        datetime(2026, 1, 11, tzinfo=UTC),
        IdentityVerified("CN", "resident_id"),
    )
    return [signup, verified]


def test_a_version_1_ledger_refuses_a_version_2_message_saying_the_writer_is_newer() -> None:
    assert V1.version == 1 and V1.payload_types == load_releases()[0].payload_types
    for event in _version_2_events():
        with pytest.raises(EventError) as caught:
            V1.decode(V2.encode(event))
        reason = str(caught.value)
        assert reason.startswith(f"unknown writer schema fingerprint {FINGERPRINTS[2]}")
        assert "newer than this ledger's event schema version 1" in reason
        assert "`ledger dead-letters retry`" in reason
    # What version 1 wrote, it reads as it always did.
    assert [V1.decode(m) for m in v1_messages()] == v1_archive()


def test_a_version_1_ledger_reads_a_version_2_archive_record_by_record() -> None:
    signup, verified = _version_2_events()
    buf = io.BytesIO()
    V2.write_container(buf, [(signup, None), (verified, None)])
    buf.seek(0)
    (_, first), (_, second) = V1.read_container(buf)
    # Avro resolution drops the field version 1 does not know, as a version-1 reader does.
    assert first == (Event(signup.event_id, "u-9", signup.occurred_at, SignedUp(
        "+8613912345678", "xiaohongshu-app"
    )), None)
    assert isinstance(second, UnresolvedRecord)
    assert "type 'IdentityVerified', which event schema version 1 does not have" in str(second)
    # The record is kept as a message of its writer's schema, which version 2 applies.
    assert V2.decode(second.message) == (verified, None)


# --- the facts of version 2 in a policy's property tests --------------------------------


@pytest.mark.slow
def test_policy_test_finds_the_promise_the_real_name_rule_breaks(tmp_path: Path) -> None:
    """The March terms promise that a residence abroad decides (R2). Copied unchanged into
    the real-name draft, that no longer holds once N1 comes first, and the property test
    draws a user who shows it: a mainland resident identity card, a residence abroad."""
    from ledger.cli.policy import policy_cases
    from tests.helpers.policy_drafts import REAL_NAME_VERSION, real_name_draft

    condition = '  { fact = "id_document_country", ne = "CN" },\n'
    assert condition in real_name_draft()
    path = tmp_path / f"{REAL_NAME_VERSION}.toml"
    path.write_text(real_name_draft().replace(condition, ""))
    out = tmp_path / "counterexamples"
    (case,) = [
        c
        for c in policy_cases([path], out_dir=out)
        if str(c) == f"invariant {REAL_NAME_VERSION}/foreign-residence-international"
    ]
    with pytest.raises(AssertionError) as failed:
        case.check()
    assert f"but it is xhs-domestic (policy {REAL_NAME_VERSION}, rule N1)" in str(failed.value)
    (example,) = out.glob("*foreign-residence-international.jsonl")
    types = {json.loads(line)["type"] for line in example.read_text().splitlines()}
    assert {"IdentityVerified", "Relocated"} <= types


# --- ledger schema check --------------------------------------------------------------

SchemaChange = Callable[[dict[str, Any]], None]


def _record(schema_dir: Path, name: str) -> tuple[Path, dict[str, Any]]:
    path = schema_dir / f"{name}.avsc"
    return path, json.loads(path.read_text())


def _next_version(tmp_path: Path) -> Path:
    """A schemas layout as it is when work on version 4 begins: version 3 frozen beside
    versions 1 and 2, the current schemas still those of version 3."""
    root = tmp_path / "schemas"
    shutil.copytree(schemas_dir(), root, ignore=shutil.ignore_patterns("policies"))
    frozen = shutil.ignore_patterns("policies", "releases")
    shutil.copytree(schemas_dir(), root / "releases" / "3", ignore=frozen)
    return root


def _candidate(tmp_path: Path, name: str, change: SchemaChange) -> Path:
    """Version 4 with one record of version 3 changed, as a developer might."""
    root = _next_version(tmp_path)
    path, record = _record(root, name)
    change(record)
    path.write_text(json.dumps(record))
    return root


def _texts(root: Path, mode: str) -> dict[str, list[str]]:
    """What the candidate's comparison with the latest release (3) finds, by direction."""
    report = check_schemas(root, mode)  # type: ignore[arg-type]
    assert report.current == 4 and report.compared == [3]
    return {c.direction: [i.text() for i in c.incompatibilities] for c in report.comparisons}


def test_the_shipped_schemas_are_backward_compatible_and_full_names_the_new_type() -> None:
    backward = check_schemas()
    assert backward.ok and backward.compared == [2] and backward.changed_releases == []
    full = check_schemas(mode="full", transitive=True)
    assert not full.ok
    found = {
        (c.release, c.direction): [(i.path, i.kind) for i in c.incompatibilities]
        for c in full.comparisons
    }
    assert found[(1, "backward")] == found[(2, "backward")] == []
    # Each new type is a branch an older reader's union lacks.
    erased = ("AccountEvent.payload[AccountErased]", "missing_union_branch")
    verified = ("AccountEvent.payload[IdentityVerified]", "missing_union_branch")
    assert found[(2, "forward")] == [erased]
    assert sorted(found[(1, "forward")]) == sorted([erased, verified])


def test_a_removed_field_breaks_forward_compatibility(tmp_path: Path) -> None:
    root = _candidate(tmp_path, "SignedUp", lambda r: r["fields"].pop(1))  # channel
    assert _texts(root, "backward") == {"backward": []}
    (problem,) = _texts(root, "forward")["forward"]
    assert problem.startswith("AccountEvent.payload[SignedUp].channel: the writer has no such")
    assert problem.endswith("(reader_field_missing_default_value)")


def test_a_changed_type_breaks_both_directions(tmp_path: Path) -> None:
    def phone_as_long(record: dict[str, Any]) -> None:
        record["fields"][0]["type"] = "long"

    found = _texts(_candidate(tmp_path, "PhoneChanged", phone_as_long), "full")
    assert found == {
        "backward": [
            "AccountEvent.payload[PhoneChanged].phone: reader type: long not compatible with "
            "writer type: string (type_mismatch)"
        ],
        "forward": [
            "AccountEvent.payload[PhoneChanged].phone: reader type: string not compatible with "
            "writer type: long (type_mismatch)"
        ],
    }


def test_a_renamed_record_breaks_backward_compatibility(tmp_path: Path) -> None:
    def rename(record: dict[str, Any]) -> None:
        record["name"] = "Moved"

    root = _candidate(tmp_path, "Relocated", rename)
    envelope_path, envelope = _record(root, "AccountEvent")
    payload = envelope["fields"][3]
    payload["type"] = [t.replace("Relocated", "Moved") for t in payload["type"]]
    envelope_path.write_text(json.dumps(envelope))
    shutil.move(root / "Relocated.avsc", root / "Moved.avsc")
    (problem,) = _texts(root, "backward")["backward"]
    assert problem.startswith(
        "AccountEvent.payload[Relocated]: the reader's union has no Relocated"
    )
    # Aliases are how Avro renames: with the old name as one, it is compatible again.
    path, record = _record(root, "Moved")
    path.write_text(json.dumps({**record, "aliases": ["ledger.events.Relocated"]}))
    assert _texts(root, "backward") == {"backward": []}


def test_a_new_field_without_default_breaks_backward_compatibility(tmp_path: Path) -> None:
    def add(record: dict[str, Any]) -> None:
        record["fields"].append({"name": "accepted_in", "type": "string"})

    root = _candidate(tmp_path, "TermsAccepted", add)
    assert _texts(root, "full") == {
        "backward": [
            "AccountEvent.payload[TermsAccepted].accepted_in: the writer has no such field and "
            "the reader gives it no default (reader_field_missing_default_value)"
        ],
        "forward": [],
    }

    def with_default(record: dict[str, Any]) -> None:
        record["fields"].append({"name": "accepted_in", "type": "string", "default": ""})

    assert _texts(_candidate(tmp_path / "b", "TermsAccepted", with_default), "backward") == {
        "backward": []
    }


def test_transitive_compares_with_every_release_not_only_the_latest(tmp_path: Path) -> None:
    """A layout with releases 1 to 3 (the shipped ones) and a candidate version 4 that
    makes SignedUp.locale required: it reads what versions 2 and 3 wrote (which always
    have it) but not what version 1 wrote. Against the latest release only, that goes
    unseen."""
    root = _next_version(tmp_path)
    path, signup = _record(root, "SignedUp")
    locale = signup["fields"][3]
    locale.pop("default")
    locale["type"] = ["string", "null"]
    path.write_text(json.dumps(signup))
    latest = check_schemas(root)
    assert latest.current == 4 and latest.compared == [3] and latest.ok
    every = check_schemas(root, transitive=True)
    assert every.compared == [1, 2, 3]
    assert [(c.release, [i.path for i in c.incompatibilities]) for c in every.comparisons] == [
        (1, ["AccountEvent.payload[SignedUp].locale"]),
        (2, []),
        (3, []),
    ]


def test_a_released_schema_edited_later_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import ledger.codecs.compatibility as compatibility

    monkeypatch.setattr(compatibility, "FINGERPRINTS", {**FINGERPRINTS, 1: "0" * 16})
    report = check_schemas()
    assert not report.ok
    (problem,) = report.changed_releases
    assert f"version 1 in releases/1/ has fingerprint {FINGERPRINTS[1]}" in problem
