"""The synthetic stream: deterministic, parseable, and shaped as docs/rules.md scenarios need."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import astuple, replace
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import phonenumbers
import pytest

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line
from ledger.domain.events import (
    DOCUMENT_KINDS,
    EVIDENCE_KINDS,
    Event,
    IdentityVerified,
    PhoneChanged,
    Relocated,
    SignedUp,
    TermsAccepted,
)
from ledger.generate import generate_events, generate_log, write_events, write_log

DATA = Path(__file__).parents[1] / "data" / "schema-v1"
USERS = 5000
SEED = 20260325

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
CUTOVER = datetime(2025, 12, 8, tzinfo=UTC) - timedelta(hours=8)
RESIDENCY = datetime(2026, 3, 25, tzinfo=UTC) - timedelta(hours=8)
EFFECTIVE = {
    "tos-2023-legacy": datetime(2013, 6, 1, tzinfo=UTC),
    "tos-2025-12-cutover": CUTOVER,
    "tos-2026-03-residency": RESIDENCY,
}


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    return list(generate_events(USERS, SEED))


@pytest.fixture(scope="module")
def by_user(stream: list[Event]) -> dict[str, list[Event]]:
    """Each user's distinct events in valid-time order."""
    seen: set[str] = set()
    users: dict[str, list[Event]] = defaultdict(list)
    for event in stream:
        if event.event_id not in seen:
            seen.add(event.event_id)
            users[event.user_id].append(event)
    for events in users.values():
        events.sort(key=lambda e: e.order_key)
    return users


def _region(phone: str) -> str | None:
    """Region the ledger would read from the phone, None when not valid (docs/rules.md)."""
    try:
        number = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException:
        return None
    return (
        phonenumbers.region_code_for_number(number)
        if phonenumbers.is_valid_number(number)
        else None
    )


# --- determinism and formats ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".avro"])
def test_same_seed_gives_byte_identical_files(tmp_path: Path, suffix: str) -> None:
    first, second, other = (tmp_path / f"{name}{suffix}" for name in ("a", "b", "c"))
    count = write_events(first, generate_events(300, 7))
    assert write_events(second, generate_events(300, 7)) == count > 300
    write_events(other, generate_events(300, 8))
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_is_a_lazy_iterator() -> None:
    events = generate_events(10, 1)
    assert isinstance(events, Iterator)
    assert isinstance(next(events).payload, SignedUp)  # the earliest event is a signup


def test_every_jsonl_line_parses_back_to_the_event(tmp_path: Path) -> None:
    events = list(generate_events(400, 3))
    path = tmp_path / "events.jsonl"
    assert write_events(path, events) == len(events)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(events)
    parsed = [event_from_json_line(line) for line in lines]
    assert [event for event, _ in parsed] == events
    assert all(recorded_at is None for _, recorded_at in parsed)


def test_avro_container_holds_the_same_events_as_jsonl(tmp_path: Path) -> None:
    jsonl, avro = tmp_path / "events.jsonl", tmp_path / "events.avro"
    write_events(jsonl, generate_events(400, 4))
    write_events(avro, generate_events(400, 4))
    from_json = [event_from_json_line(line) for line in jsonl.read_text().splitlines()]
    with avro.open("rb") as fo:
        from_avro = [item for _, item in AvroCodec().read_container(fo)]
    assert from_avro == from_json


@pytest.mark.parametrize("name", ["events.csv", "events", "events.json"])
def test_unknown_suffix_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"use \.jsonl or \.avro") as info:
        write_events(tmp_path / name, generate_events(2, 1))
    assert "\n" not in str(info.value)
    assert not (tmp_path / name).exists()


def test_no_users_no_events(tmp_path: Path) -> None:
    assert list(generate_events(0, 1)) == []
    assert write_events(tmp_path / "empty.avro", generate_events(0, 1)) == 0
    with (tmp_path / "empty.avro").open("rb") as fo:
        assert list(AvroCodec().read_container(fo)) == []


# --- shape of the population ---------------------------------------------------------------


def test_users_and_times(by_user: dict[str, list[Event]]) -> None:
    assert sorted(by_user) == [f"u-{i:06d}" for i in range(1, USERS + 1)]
    for events in by_user.values():
        signup, *later = events
        assert isinstance(signup.payload, SignedUp)
        assert not any(isinstance(e.payload, SignedUp) for e in later)
        assert signup.occurred_at >= START
        assert all(signup.occurred_at < e.occurred_at < END for e in later)
    mean = sum(map(len, by_user.values())) / USERS
    assert 4.0 <= mean <= 6.0


def test_signup_phones_mix(by_user: dict[str, list[Event]]) -> None:
    signups = [events[0].payload for events in by_user.values()]
    regions = Counter(_region(s.phone) for s in signups if isinstance(s, SignedUp))
    assert set(regions) == {"CN", "HK", "MO", "TW", "US", "CA", "GB", "DE", "SG", "JP", None}
    assert 0.45 <= regions["CN"] / USERS <= 0.65
    assert 0.01 <= regions[None] / USERS <= 0.035


def test_channels_and_birth_dates(by_user: dict[str, list[Event]]) -> None:
    channels: Counter[str] = Counter()
    ages: list[float] = []
    for events in by_user.values():
        signup = events[0]
        assert isinstance(signup.payload, SignedUp)
        channels[signup.payload.channel] += 1
        if signup.payload.birth_date is not None:
            days = (signup.occurred_at.date() - signup.payload.birth_date).days
            ages.append(days / 365.2425)
    known = {"xiaohongshu-app", "xiaohongshu-web", "rednote-app", "rednote-web"}
    assert known <= set(channels)
    assert 0.005 <= sum(n for c, n in channels.items() if c not in known) / USERS <= 0.05
    assert 0.6 <= len(ages) / USERS <= 0.8
    for low, high in ((0, 13), (13, 14), (14, 18), (18, 120)):
        assert any(low <= age < high for age in ages), (low, high)


def test_later_events_cover_every_kind(stream: list[Event]) -> None:
    relocations = [e.payload for e in stream if isinstance(e.payload, Relocated)]
    assert {r.evidence for r in relocations} == set(EVIDENCE_KINDS)
    assert {"CN", "US", "HK", "SG"} <= {r.country for r in relocations}
    versions = Counter(
        e.payload.tos_version for e in stream if isinstance(e.payload, TermsAccepted)
    )
    assert set(versions) == set(EFFECTIVE)
    changes = [e.payload.phone for e in stream if isinstance(e.payload, PhoneChanged)]
    assert len({_region(p) for p in changes}) >= 8


def test_signup_locales_follow_the_phone_and_the_2025_wave(
    by_user: dict[str, list[Event]],
) -> None:
    signups = [e[0] for e in by_user.values()]
    locales = Counter(s.payload.locale for s in signups if isinstance(s.payload, SignedUp))
    assert 0.05 <= locales[None] / USERS <= 0.25  # fewer before the rednote brand
    assert locales["zh-CN"] > locales["en-US"] > locales["zh-TW"] > 0
    wave = [
        s.payload
        for s in signups
        if isinstance(s.payload, SignedUp)
        and datetime(2025, 1, 1, tzinfo=UTC) <= s.occurred_at < datetime(2025, 2, 1, tzinfo=UTC)
    ]
    english = sum(1 for p in wave if p.locale and p.locale.startswith("en-"))
    assert english / len(wave) >= 0.3  # the English-speaking arrivals of January 2025


def test_identity_verifications_come_after_signup_by_phone_region(
    by_user: dict[str, list[Event]],
) -> None:
    verified: Counter[tuple[str | None, str, str]] = Counter()
    for events in by_user.values():
        signup = events[0]
        assert isinstance(signup.payload, SignedUp)
        for e in events[1:]:
            if isinstance(e.payload, IdentityVerified):
                assert signup.occurred_at < e.occurred_at <= signup.occurred_at + timedelta(days=21)
                verified[_region(signup.payload.phone), *astuple(e.payload)] += 1
    assert {kind for _, _, kind in verified} == set(DOCUMENT_KINDS)
    mainland = sum(n for (region, _, _), n in verified.items() if region == "CN")
    assert mainland == verified["CN", "CN", "resident_id"]
    assert verified["HK", "CN", "other"] and verified["HK", "HK", "resident_id"]
    assert verified["US", "US", "passport"]


def test_the_events_of_version_1_are_those_version_1_generated() -> None:
    """Version 2's events draw from a generator of their own: the archive the version-1
    code wrote with the same arguments (tests/data/schema-v1) is the same stream without
    them and without locales."""
    with (DATA / "events-v1.avro").open("rb") as fo:
        released = [item for _, item in AvroCodec().read_container(fo)]
    def as_version_1(e: Event) -> Event:
        if isinstance(e.payload, SignedUp):
            return replace(e, payload=replace(e.payload, locale=None))
        return e

    now = [
        (as_version_1(e), None)
        for e in generate_events(20, 11)
        if not isinstance(e.payload, IdentityVerified)
    ]
    assert now == released
    assert any(isinstance(e.payload, IdentityVerified) for e in generate_events(20, 11))


def test_all_three_terms_versions_bind_at_signup(by_user: dict[str, list[Event]]) -> None:
    bound = Counter(
        max(v for v, since in EFFECTIVE.items() if since <= events[0].occurred_at)
        for events in by_user.values()
    )
    # Version names sort by date, so max() is the latest effective version.
    assert set(bound) == set(EFFECTIVE)
    assert all(n >= 0.05 * USERS for n in bound.values()), bound


# --- delivery: log order, late events, duplicates ------------------------------------------


def test_duplicates_are_exact_repeats(stream: list[Event]) -> None:
    first: dict[str, Event] = {}
    repeats = 0
    for event in stream:
        if event.event_id in first:
            assert first[event.event_id] == event
            repeats += 1
        else:
            first[event.event_id] = event
    assert 0.003 <= repeats / len(stream) <= 0.008


def test_mostly_ascending_with_some_late_events(stream: list[Event]) -> None:
    seen: set[str] = set()
    latest = datetime.min.replace(tzinfo=UTC)
    lags: list[float] = []
    for event in stream:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        if event.occurred_at < latest:
            lags.append((latest - event.occurred_at) / timedelta(days=1))
        latest = max(latest, event.occurred_at)
    assert 0.006 <= len(lags) / len(seen) <= 0.015
    assert 1.0 <= statistics.median(lags) <= 35.0  # days to weeks, not minutes


# --- record times: a log's, so the second time axis shows on generated data --------------


@pytest.fixture(scope="module")
def log() -> list[tuple[Event, datetime]]:
    return list(generate_log(USERS, SEED))


def test_the_log_carries_the_stream_with_increasing_record_times(
    stream: list[Event], log: list[tuple[Event, datetime]]
) -> None:
    assert [event for event, _ in log] == stream  # the same events, in the same order
    times = [recorded for _, recorded in log]
    assert all(a < b for a, b in pairwise(times))  # a log's order
    assert all(recorded >= event.occurred_at for event, recorded in log)
    assert times[0] >= START and times[-1] <= END + timedelta(minutes=10)


def test_record_times_are_spread_over_the_years_not_one_replay(
    log: list[tuple[Event, datetime]],
) -> None:
    # Before, a generated file had no record times and a replay recorded everything at
    # its own start: every belief of a user at one instant, corrections a moment later.
    lags = [recorded - event.occurred_at for event, recorded in log]
    assert statistics.median(lags) < timedelta(minutes=1)  # sent as it happened
    assert sum(lag < timedelta(minutes=10) for lag in lags) / len(lags) >= 0.97
    assert len({recorded.date() for _, recorded in log}) > 700


def test_late_deliveries_are_recorded_after_their_neighbours(
    log: list[tuple[Event, datetime]],
) -> None:
    latest = datetime.min.replace(tzinfo=UTC)  # the latest valid time delivered so far
    late = 0
    for event, recorded in log:
        if recorded - event.occurred_at >= timedelta(days=1):
            late += 1
            # Recorded after events that happened after it: what a correction looks like.
            assert latest > event.occurred_at, event
        latest = max(latest, event.occurred_at)
    assert 0.008 <= late / len(log) <= 0.02


@pytest.mark.parametrize("suffix", [".jsonl", ".avro"])
def test_a_written_log_reads_back_with_its_record_times(tmp_path: Path, suffix: str) -> None:
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    records = list(generate_log(200, 5))
    assert write_log(first, records) == write_log(second, generate_log(200, 5)) == len(records)
    assert first.read_bytes() == second.read_bytes()
    if suffix == ".jsonl":
        parsed = [event_from_json_line(line) for line in first.read_text().splitlines()]
    else:
        with first.open("rb") as fo:
            parsed = [item for _, item in AvroCodec().read_container(fo)]
    assert parsed == records


def test_ledger_generate_writes_the_log_with_its_record_times(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ledger.cli.main import app

    out = tmp_path / "events.jsonl"
    result = CliRunner().invoke(app, ["generate", "--users", "50", "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    parsed = [event_from_json_line(line) for line in out.read_text().splitlines()]
    assert parsed == list(generate_log(50, 3))


# --- scenarios for the policies ------------------------------------------------------------


def _assignment(version: str, facts: dict[str, object]) -> str:
    """The default policies of docs/rules.md, reduced to the outcome (test oracle only)."""
    if version == "tos-2023-legacy":
        return "domestic"
    if version == "tos-2025-12-cutover":
        if facts["signup_at"] < CUTOVER:  # type: ignore[operator]
            return "domestic"
        region = facts["signup_region"]
    else:
        residence = facts["residence"]
        if residence is not None:
            return "domestic" if residence == "CN" else "international"
        region = facts["current_region"]
    if region is None:
        return "undetermined"
    return "domestic" if region == "CN" else "international"


def _rulebook_changes(events: list[Event]) -> int:
    signup = events[0]
    assert isinstance(signup.payload, SignedUp)
    version = max(v for v, since in EFFECTIVE.items() if since <= signup.occurred_at)
    region = _region(signup.payload.phone)
    facts: dict[str, object] = {
        "signup_at": signup.occurred_at,
        "signup_region": region,
        "current_region": region,
        "residence": None,
    }
    assignment, changes = _assignment(version, facts), 0
    for event in events[1:]:
        payload = event.payload
        if isinstance(payload, PhoneChanged):
            facts["current_region"] = _region(payload.phone)
        elif isinstance(payload, Relocated) and payload.evidence != "ip_geolocation":
            facts["residence"] = payload.country
        elif isinstance(payload, TermsAccepted) and payload.tos_version > version:
            # The generator never accepts terms before they take effect, so the rebind is
            # immediate and this oracle needs no pending rebinds.
            assert EFFECTIVE[payload.tos_version] <= event.occurred_at
            version = payload.tos_version
        now = _assignment(version, facts)
        changes += now != assignment
        assignment = now
    return changes


def test_many_users_change_rulebook_at_least_twice(by_user: dict[str, list[Event]]) -> None:
    changes = Counter(_rulebook_changes(events) for events in by_user.values())
    assert sum(n for k, n in changes.items() if k >= 2) >= 0.05 * USERS, changes
    assert changes[0] > 0.3 * USERS  # most users are stable


def test_birth_dates_are_real_dates(by_user: dict[str, list[Event]]) -> None:
    for events in by_user.values():
        payload = events[0].payload
        assert isinstance(payload, SignedUp)
        if payload.birth_date is not None:
            assert date(1950, 1, 1) < payload.birth_date < events[0].occurred_at.date()
