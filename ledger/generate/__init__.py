"""A realistic, deterministic synthetic stream of account events, for demos and benchmarks.

`generate_events(users, seed)` yields events the way a log would deliver them: roughly in
ascending `occurred_at` across all users, with about 1% delivered late (days to weeks after
later events) and about 0.5% delivered twice (same `event_id`). `generate_log(users, seed)`
yields the same events with the record time a log would give each: its delivery, seconds
after it happened, and for a late or repeated delivery the day it finally came, so it is
recorded after the events around it (the ledger's second time axis, as on real data). The
same arguments always give the same events and times; `write_events` and `write_log` turn
them into byte-identical `.jsonl` or `.avro` files.

Shape of the population (the rules it exercises are in docs/rules.md):
- signups from 2024-01-01 to 2026-10-31, growing over time with a spike in January 2025 (the
  wave of US users who moved over when TikTok faced a ban), so users bind to each of
  `tos-2023-legacy`, `tos-2025-12-cutover` and `tos-2026-03-residency`;
- signup phones drawn from the `phonenumbers` metadata for CN (~55%), HK, MO, TW, US, CA, GB,
  DE, SG and JP, plus ~2% numbers that are not valid;
- ~70% give a birth date, a few of them minors (under 13, 13-14, 14-18);
- about four later events per user: phone changes (sometimes to another country), relocations
  with all three evidence kinds, and terms acceptances;
- about 8% of users follow a script that moves them between rulebooks at least twice: a CN
  signup after the December 2025 cutover (domestic, C2), a foreign phone and acceptance of the
  residency terms (international, R4), then a declared move back to China (domestic, R1);
- event schema version 2: most signups carry a locale (the app's language and region: zh-CN
  on the mainland, en-US for most of the January 2025 wave, fewer before the rednote brand),
  and about 60% of mainland users, some from HK, MO and TW and a few from elsewhere have
  their identity verified within three weeks of signup (a mainland resident identity card,
  the Hong Kong or Macau card, a mainland travel permit, a passport).

The version-2 parts draw from a random generator of their own: every event of the stream
version 1 generated is still there, with the same id, time and delivery order.

Memory is O(users): one small tuple per user with pending events; events are built only as
they are emitted.
"""

from __future__ import annotations

import heapq
import random
import uuid
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from itertools import accumulate
from pathlib import Path
from typing import IO

from ledger.domain.events import (
    DocumentKind,
    Event,
    EvidenceKind,
    IdentityVerified,
    PhoneChanged,
    Relocated,
    SignedUp,
    TermsAccepted,
)
from ledger.domain.time import from_millis, to_millis
from ledger.generate.payloads import _other_region, _unscripted
from ledger.generate.phones import (
    _phone,
    _valid_phone,
)
from ledger.generate.shape import (
    _CUM_LATER,
    _CUM_REGION,
    _CUM_WAVE_REGION,
    _DAY,
    _END,
    _HOUR,
    _INVALID,
    _LAG_MAX_MS,
    _LAG_MEAN_MS,
    _LOCALES,
    _OTHER_CHANNELS,
    _P_BIRTH_DATE,
    _P_DUPLICATE,
    _P_LATE,
    _P_NO_LOCALE,
    _P_SCRIPTED_CN,
    _P_VERIFIED_CN,
    _P_VERIFIED_ELSEWHERE,
    _P_VERIFIED_HK_MO_TW,
    _REFUGEE_WAVE,
    _REGIONS,
    _RESIDENCY,
    _RESIDENCY_TOS,
    _SCRIPT_WINDOW,
    _SYNC_MARKER,
    _VERIFY_WITHIN,
)
from ledger.sources.files import write_event_file, write_event_stream

__all__ = ["generate_events", "generate_log", "write_events", "write_log", "write_log_to"]


# --- per-user choices -----------------------------------------------------------------------


def _signup_segments() -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Month boundaries and the cumulative share of signups before each boundary."""
    bounds = []
    year, month = 2024, 1
    while (year, month) != (2026, 12):
        bounds.append(to_millis(datetime(year, month, 1, tzinfo=UTC)))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    weights = []
    for index, start in enumerate(bounds[:-1]):
        weight = 1.0 + index / 12  # steady growth
        if start == _REFUGEE_WAVE[0]:
            weight *= 3.0
        weights.append(weight * (bounds[index + 1] - start))
    total = sum(weights)
    cumulative = [0.0, *(c / total for c in accumulate(weights))]
    cumulative[-1] = 1.0  # no rounding gap at the top
    return tuple(bounds), tuple(cumulative)


def _signup_times(rng: random.Random, users: int) -> list[int]:
    """Sorted signup instants (ms) following the monthly growth curve."""
    bounds, cum = _signup_segments()
    times = []
    for u in sorted(rng.random() for _ in range(users)):
        i = min(bisect_right(cum, u) - 1, len(bounds) - 2)
        fraction = (u - cum[i]) / (cum[i + 1] - cum[i])
        times.append(bounds[i] + int(fraction * (bounds[i + 1] - bounds[i])))
    return times


def _region_index(rng: random.Random, t: int) -> int:
    cum = _CUM_WAVE_REGION if _REFUGEE_WAVE[0] <= t < _REFUGEE_WAVE[1] else _CUM_REGION
    i = bisect_right(cum, rng.random() * cum[-1])
    return _INVALID if i == len(_REGIONS) else i


def _channel(rng: random.Random, region_index: int, t: int) -> str:
    r = rng.random()
    if r < 0.02:
        return _OTHER_CHANNELS[int(rng.random() * len(_OTHER_CHANNELS))]
    # The international "rednote" brand dates from January 2025; before that everyone used
    # the xiaohongshu apps. A few mainland users sign up through rednote (and vice versa).
    domestic = region_index == 0
    if r < 0.05:
        domestic = not domestic
    if t < _REFUGEE_WAVE[0]:
        domestic = True
    app = rng.random() < 0.7
    if domestic:
        return "xiaohongshu-app" if app else "xiaohongshu-web"
    return "rednote-app" if app else "rednote-web"


def _birth_date(rng: random.Random, t: int) -> date | None:
    if rng.random() >= _P_BIRTH_DATE:
        return None
    r = rng.random()
    if r < 0.04:
        age = rng.uniform(9.0, 13.0)
    elif r < 0.09:
        age = rng.uniform(13.0, 14.0)
    elif r < 0.20:
        age = rng.uniform(14.0, 18.0)
    elif r < 0.85:
        age = rng.uniform(18.0, 35.0)
    else:
        age = rng.uniform(35.0, 70.0)
    signup_day = date(1970, 1, 1).toordinal() + t // _DAY
    return date.fromordinal(signup_day - int(age * 365.2425))


def _later_count(rng: random.Random) -> int:
    return bisect_right(_CUM_LATER, rng.random() * _CUM_LATER[-1])


def _next_uniform(rng: random.Random, t: int, remaining: int) -> int:
    """The earliest of `remaining` instants uniform in (t, END): successive calls walk through
    sorted uniform samples without storing them."""
    span = _END - 1 - t
    return min(_END - 1, t + 1 + int(span * (1.0 - rng.random() ** (1.0 / remaining))))


def _after(rng: random.Random, t: int, low: int, high: int, steps_left: int) -> int:
    """An instant between `low` and `high` ms after t, squeezed so `steps_left` more events
    still fit before the end of the stream."""
    room = (_END - 1 - t) // (steps_left + 1)
    return min(_END - 1, t + 1 + int(min(room, low + rng.random() * (high - low))))


# --- the stream ----------------------------------------------------------------------------

# A user with events still to come: (next occurred_at ms, user index, events left after the
# next one, home region index, current phone region index, script step; 0 = unscripted).
_Pending = tuple[int, int, int, int, int, int]


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _user_id(index: int) -> str:
    return f"u-{index + 1:06d}"


def _locale(extra: random.Random, region_index: int, t: int) -> str | None:
    if extra.random() < _P_NO_LOCALE[t >= _REFUGEE_WAVE[0]]:
        return None
    r = extra.random() * 100
    return next(tag for tag, share in _LOCALES[region_index] if r < share)


def _verification(extra: random.Random, region_index: int) -> IdentityVerified | None:
    """The identity document a user verifies, if any. Hong Kong and Macau residents use
    their own identity card or a mainland travel permit, which the mainland issues;
    Taiwan residents the mainland's Taiwan compatriot permit."""
    r = extra.random()
    kind: DocumentKind
    if region_index == 0:
        if r >= _P_VERIFIED_CN:
            return None
        return IdentityVerified("CN", "resident_id")
    if region_index in (1, 2, 3):
        if r >= _P_VERIFIED_HK_MO_TW:
            return None
        region = _REGIONS[region_index]
        if region != "TW" and extra.random() < 0.5:
            return IdentityVerified(region, "resident_id")
        return IdentityVerified("CN", "other")
    if r >= _P_VERIFIED_ELSEWHERE:
        return None
    country = _REGIONS[region_index] if region_index != _INVALID else "US"
    kind = "passport" if extra.random() < 0.9 else "other"
    return IdentityVerified(country, kind)


# An identity verification still to come: (occurred_at ms, user index, event id, payload).
_Verification = tuple[int, int, str, IdentityVerified]


def _in_valid_time_order(
    users: int, rng: random.Random, extra: random.Random
) -> Iterator[Event]:
    """Every event in ascending occurred_at (ties: signups first, then by user; identity
    verifications after the events of version 1 at the same instant)."""
    signups = _signup_times(rng, users)
    pending: list[_Pending] = []
    verifications: list[_Verification] = []
    next_user = 0
    while next_user < users or pending or verifications:
        first = min(
            signups[next_user] if next_user < users else _END,
            pending[0][0] if pending else _END,
        )
        if (verifications and verifications[0][0] < first) or first == _END:
            t, index, event_id, document = heapq.heappop(verifications)
            yield Event(event_id, _user_id(index), from_millis(t), document)
            continue
        if next_user < users and (not pending or signups[next_user] <= pending[0][0]):
            index, t = next_user, signups[next_user]
            next_user += 1
            region = _region_index(rng, t)
            scripted = (
                region == 0
                and _SCRIPT_WINDOW[0] <= t < _SCRIPT_WINDOW[1]
                and rng.random() < _P_SCRIPTED_CN
            )
            phone = _phone(rng, region)
            payload = SignedUp(
                phone, _channel(rng, region, t), _birth_date(rng, t), _locale(extra, region, t)
            )
            yield Event(_event_id(rng), _user_id(index), from_millis(t), payload)
            verified = _verification(extra, region)
            at = t + 1 + int(extra.random() * _VERIFY_WITHIN)
            if verified is not None and at < _END:
                heapq.heappush(verifications, (at, index, _event_id(extra), verified))
            if scripted:
                heapq.heappush(pending, (_after(rng, t, _HOUR, 45 * _DAY, 3), index, 2, 0, 0, 1))
            else:
                later = _later_count(rng)
                if later:
                    first = _next_uniform(rng, t, later)
                    heapq.heappush(pending, (first, index, later - 1, region, region, 0))
            continue

        t, index, left, home, current, step = heapq.heappop(pending)
        event_payload: PhoneChanged | Relocated | TermsAccepted
        if step == 1:  # a foreign number: the residency terms will now read it as international
            region = _other_region(rng, 0)
            event_payload, current = PhoneChanged(_valid_phone(rng, _REGIONS[region])), region
            following = _after(rng, max(t, _RESIDENCY), _HOUR, 30 * _DAY, 2)
        elif step == 2:
            event_payload = TermsAccepted(_RESIDENCY_TOS)
            following = _after(rng, t, _DAY, 60 * _DAY, 1)
        elif step == 3:  # declared return to China: domestic again under R1
            evidence: EvidenceKind = "self_declared" if rng.random() < 0.7 else "id_verified"
            event_payload = Relocated("CN", evidence)
            following = 0
        else:
            event_payload, current = _unscripted(rng, t, home, current)
            following = _next_uniform(rng, t, left) if left else 0
        yield Event(_event_id(rng), _user_id(index), from_millis(t), event_payload)
        if left:
            next_step = step + 1 if step else 0
            heapq.heappush(pending, (following, index, left - 1, home, current, next_step))


def _deliveries(users: int, seed: int) -> Iterator[tuple[Event, int]]:
    """The stream in delivery order, each event with the instant (ms) it was sent: when it
    happened, or when a late or repeated delivery was released."""
    if users < 0:
        raise ValueError(f"users must be >= 0, got {users}")
    rng = random.Random(seed)
    extra = random.Random(f"event schema version 2:{seed}")
    # Events held back for later delivery: (release instant ms, sequence, event).
    held: list[tuple[int, int, Event]] = []
    sequence = 0
    for event in _in_valid_time_order(users, rng, extra):
        t = to_millis(event.occurred_at)
        while held and held[0][0] <= t:
            release, _, late = heapq.heappop(held)
            yield late, release
        # Version 2's events draw from their own generator (module docstring).
        draws = extra if isinstance(event.payload, IdentityVerified) else rng
        r = draws.random()
        if r < _P_LATE:  # delivered after events that happened days to weeks later
            release = t + _DAY + int(draws.random() * 34 * _DAY)
            heapq.heappush(held, (release, sequence, event))
            sequence += 1
            continue
        yield event, t
        if r < _P_LATE + _P_DUPLICATE:  # an at-least-once producer sending it again
            release = t + 60_000 + int(draws.random() * 14 * _DAY)
            heapq.heappush(held, (release, sequence, event))
            sequence += 1
    while held:
        release, _, late = heapq.heappop(held)
        yield late, release


def generate_events(users: int, seed: int) -> Iterator[Event]:
    """Yield the synthetic stream for `users` users in delivery order (see the module doc).

    Deterministic: the same `(users, seed)` always yields the same events in the same order.
    User ids are `u-000001`, `u-000002`, ... in signup order."""
    return (event for event, _ in _deliveries(users, seed))


def generate_log(users: int, seed: int) -> Iterator[tuple[Event, datetime]]:
    """The stream of `generate_events` with each event's record time, as a log would stamp
    it: the instant it was sent plus a delivery lag of seconds, strictly increasing along
    the log. The stream ends on 2026-11-01: what is still held then is delivered then.

    Deterministic per `(users, seed)`; the lags come from a generator of their own, so the
    events are exactly those of `generate_events`."""
    lag = random.Random(f"record times {seed}")
    last = -1
    for event, sent in _deliveries(users, seed):
        delay = min(_LAG_MAX_MS, 50 + int(lag.expovariate(1 / _LAG_MEAN_MS)))
        last = max(last + 1, min(sent, _END) + delay)
        yield event, from_millis(last)


def write_events(path: Path, events: Iterable[Event]) -> int:
    """Write events to `path` as JSON Lines (`.jsonl`) or an Avro object container (`.avro`),
    chosen by suffix; returns how many were written. Output depends only on the events, so a
    deterministic stream gives a byte-identical file."""
    return write_log(path, ((e, None) for e in events))


def write_log(path: Path, records: Iterable[tuple[Event, datetime | None]]) -> int:
    """As `write_events`, each event with its record time (`recorded_at`, as an export
    carries it; None: none, the replay's time is used)."""
    path = Path(path)
    if path.suffix not in (".jsonl", ".avro"):
        raise ValueError(
            f"cannot write events to {path}: unknown suffix {path.suffix!r} (use .jsonl or .avro)"
        )
    return write_event_file(path, records, sync_marker=_SYNC_MARKER)


def write_log_to(
    fo: IO[bytes], fmt: str, records: Iterable[tuple[Event, datetime | None]]
) -> int:
    """`write_log` to a binary stream (standard output) in the format `fmt`, "jsonl" or
    "avro": the same bytes as the file of that format."""
    return write_event_stream(fo, fmt, records, sync_marker=_SYNC_MARKER)
