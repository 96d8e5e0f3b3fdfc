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

import hashlib
import heapq
import random
import uuid
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import accumulate
from pathlib import Path
from typing import IO

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberType

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
from ledger.sources.files import write_event_file, write_event_stream

__all__ = ["generate_events", "generate_log", "write_events", "write_log", "write_log_to"]

_DAY = 86_400_000
_HOUR = 3_600_000

_END = to_millis(datetime(2026, 11, 1, tzinfo=UTC))  # exclusive: nothing happens from here on
_CST = timedelta(hours=8)
_CUTOVER = to_millis(datetime(2025, 12, 8, tzinfo=UTC) - _CST)
_RESIDENCY = to_millis(datetime(2026, 3, 25, tzinfo=UTC) - _CST)
_REFUGEE_WAVE = (
    to_millis(datetime(2025, 1, 1, tzinfo=UTC)),
    to_millis(datetime(2025, 2, 1, tzinfo=UTC)),
)
# Scripted rulebook-changers sign up late enough for the cutover to classify them by phone and
# early enough for three more events before the end of the stream.
_SCRIPT_WINDOW = (_CUTOVER, to_millis(datetime(2026, 8, 1, tzinfo=UTC)))

_LEGACY, _CUTOVER_TOS, _RESIDENCY_TOS = (
    "tos-2023-legacy",
    "tos-2025-12-cutover",
    "tos-2026-03-residency",
)

# Regions the platform's users come from; index 0 must stay CN (the script relies on it).
_REGIONS = ("CN", "HK", "MO", "TW", "US", "CA", "GB", "DE", "SG", "JP")
_INVALID = -1  # region index of a phone number that is not valid
# Shares in percent (CN a little above 55 to make up for the US wave); the last slot is
# "not a valid number".
_REGION_WEIGHTS = (57, 5, 1, 6, 13, 4, 4, 2, 3, 3, 2)
_WAVE_REGION_WEIGHTS = (36, 4, 1, 5, 38, 5, 3, 2, 2, 2, 2)
_CUM_REGION = tuple(accumulate(_REGION_WEIGHTS))
_CUM_WAVE_REGION = tuple(accumulate(_WAVE_REGION_WEIGHTS))
assert len(_REGION_WEIGHTS) == len(_REGIONS) + 1 and _REGIONS[0] == "CN"

# Where people move to (self_declared / id_verified) and travel to (ip_geolocation).
_MOVE_ABROAD = ("US", "CA", "GB", "AU", "SG", "JP", "DE", "HK", "NZ", "MY", "FR", "KR")
_TRAVEL = ("JP", "TH", "KR", "US", "SG", "HK", "MO", "FR", "GB", "AU", "MY", "TW", "IT", "CN")

_OTHER_CHANNELS = ("wechat-miniprogram", "partner-sso", "huawei-appgallery", "api-import")

# Number of events after signup for unscripted users (index = count); mean is about 4.
_CUM_LATER = tuple(accumulate((9, 12, 14, 14, 13, 11, 9, 6, 4, 3, 2, 2, 1)))

_P_BIRTH_DATE = 0.70
_P_SCRIPTED_CN = 0.45  # of CN signups inside the script window
_P_LATE = 0.010
_P_DUPLICATE = 0.005
# Delivery lag of an event sent when it happened: mostly seconds, at most a few minutes.
_LAG_MEAN_MS = 20_000
_LAG_MAX_MS = 10 * 60_000

# Event schema version 2. Locales by signup phone region (the last entry: not a valid
# number), as (tag, cumulative share in percent).
_LOCALES: tuple[tuple[tuple[str, int], ...], ...] = (
    (("zh-CN", 88), ("zh-Hans-CN", 96), ("en-US", 100)),  # CN
    (("zh-HK", 70), ("en-HK", 100)),  # HK
    (("zh-MO", 80), ("pt-MO", 100)),  # MO
    (("zh-TW", 100),),  # TW
    (("en-US", 90), ("es-US", 100)),  # US
    (("en-CA", 75), ("fr-CA", 100)),  # CA
    (("en-GB", 100),),  # GB
    (("de-DE", 90), ("en-DE", 100)),  # DE
    (("en-SG", 60), ("zh-SG", 100)),  # SG
    (("ja-JP", 100),),  # JP
    (("zh-CN", 50), ("en-US", 100)),  # invalid number
)
assert len(_LOCALES) == len(_REGIONS) + 1
# Apps sent no locale before the rednote brand (January 2025), and a few never do.
_P_NO_LOCALE = (0.40, 0.05)
# Who verifies an identity document, by signup phone region index, and with what.
_P_VERIFIED_CN = 0.60  # mainland real-name registration
_P_VERIFIED_HK_MO_TW = 0.30
_P_VERIFIED_ELSEWHERE = 0.12
_VERIFY_WITHIN = 21 * _DAY

# Avro container files carry a 16-byte sync marker that fastavro draws from os.urandom; a fixed
# one keeps archives byte-identical across runs.
_SYNC_MARKER = hashlib.blake2b(b"jurisdiction-ledger synthetic events", digest_size=16).digest()


# --- phone numbers -----------------------------------------------------------------------


_MOBILE_TYPES = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)


def _is_valid_in(number: PhoneNumber, region: str) -> bool:
    """Valid and attributed to `region` by `region_code_for_number`, as the ledger reads it.
    The regional check alone is not enough for +1: Canada's metadata also accepts some
    non-geographic codes that `region_code_for_number` gives to the US."""
    if not phonenumbers.is_valid_number_for_region(number, region):
        return False
    return number.country_code != 1 or phonenumbers.region_code_for_number(number) == region


@cache
def _mobile_prefixes(region: str) -> tuple[int, int, tuple[str, ...]]:
    """(country code, national number length, leading digits seen on valid mobiles).

    Learned once from the library's example mobile number by randomising all but its first
    digit and keeping what validates as a mobile (sign-ups need SMS); seeded by the region so
    every run and every caller learns the same prefixes."""
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    if example is None:
        example = phonenumbers.example_number_for_type(region, PhoneNumberType.FIXED_LINE_OR_MOBILE)
    assert example is not None and example.country_code is not None, region
    national = phonenumbers.national_significant_number(example)
    keep = 4 if example.country_code == 1 else 3  # NANP: area code + first exchange digit
    learner = random.Random(f"prefixes:{region}")
    prefixes: set[str] = set()
    for _ in range(3000):
        digits = national[0] + "".join(learner.choice("0123456789") for _ in national[1:])
        number = PhoneNumber(country_code=example.country_code, national_number=int(digits))
        if _is_valid_in(number, region) and phonenumbers.number_type(number) in _MOBILE_TYPES:
            prefixes.add(digits[:keep])
    prefixes.add(national[:keep])
    return example.country_code, len(national), tuple(sorted(prefixes))


def _valid_phone(rng: random.Random, region: str) -> str:
    code, length, prefixes = _mobile_prefixes(region)
    while True:  # learned prefixes validate almost always; retry the rare miss
        prefix = prefixes[int(rng.random() * len(prefixes))]
        rest = length - len(prefix)
        digits = prefix + str(rng.randrange(10**rest)).zfill(rest)
        number = PhoneNumber(country_code=code, national_number=int(digits))
        if _is_valid_in(number, region):
            return f"+{code}{digits}"


def _invalid_phone(rng: random.Random, near: int) -> str:
    """Typos and truncated input: a country code followed by far too few digits. The code is
    that of region index `near` when there is one, else mostly +86."""
    if near == _INVALID:
        near = 0 if rng.random() < 0.6 else 1 + int(rng.random() * (len(_REGIONS) - 1))
    code = phonenumbers.country_code_for_region(_REGIONS[near])
    return f"+{code}{rng.randrange(10, 100_000)}"


def _phone(rng: random.Random, region_index: int, near: int = _INVALID) -> str:
    if region_index == _INVALID:
        return _invalid_phone(rng, near)
    return _valid_phone(rng, _REGIONS[region_index])


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


# --- event payloads ------------------------------------------------------------------------


def _other_region(rng: random.Random, region_index: int) -> int:
    if region_index != 0 and rng.random() < 0.4:
        return 0  # back to (or over to) a mainland number
    while True:
        i = 1 + int(rng.random() * (len(_REGIONS) - 1))
        if i != region_index:
            return i


def _phone_change(rng: random.Random, home: int, current: int) -> tuple[PhoneChanged, int]:
    r = rng.random()
    if r < 0.01:
        region = _INVALID
    elif r < 0.6 and current != _INVALID:
        region = current  # a new number in the same country
    else:
        region = _other_region(rng, home if current == _INVALID else current)
    return PhoneChanged(_phone(rng, region, near=home)), region


def _relocation(rng: random.Random, home: int, current: int) -> Relocated:
    r = rng.random()
    evidence: EvidenceKind
    if r < 0.45:
        evidence = "ip_geolocation"
    elif r < 0.80:
        evidence = "self_declared"
    else:
        evidence = "id_verified"
    base = current if current != _INVALID else home
    r = rng.random()
    if evidence == "ip_geolocation":  # travel
        if r < 0.3 and base != _INVALID:
            country = _REGIONS[base]
        else:
            country = _TRAVEL[int(rng.random() * len(_TRAVEL))]
    elif base == 0 or base == _INVALID:  # mainland users moving abroad, or staying
        country = "CN" if r < 0.3 else _MOVE_ABROAD[int(rng.random() * len(_MOVE_ABROAD))]
    elif r < 0.35:
        country = "CN"
    elif r < 0.7:
        country = _REGIONS[base]
    else:
        country = _MOVE_ABROAD[int(rng.random() * len(_MOVE_ABROAD))]
    return Relocated(country, evidence)


def _terms(rng: random.Random, t: int) -> TermsAccepted:
    r = rng.random()
    if t >= _RESIDENCY:
        version = _RESIDENCY_TOS if r < 0.85 else _CUTOVER_TOS if r < 0.97 else _LEGACY
    elif t >= _CUTOVER:
        version = _CUTOVER_TOS if r < 0.92 else _LEGACY
    else:
        version = _LEGACY
    return TermsAccepted(version)


def _unscripted(
    rng: random.Random, t: int, home: int, current: int
) -> tuple[PhoneChanged | Relocated | TermsAccepted, int]:
    # New terms only exist from the cutover on; before it, acceptances are rare re-confirmations.
    terms_share = 0.05 if t < _CUTOVER else 0.40
    r = rng.random()
    if r < terms_share:
        return _terms(rng, t), current
    if r < terms_share + (1 - terms_share) * 0.42:
        return _phone_change(rng, home, current)
    return _relocation(rng, home, current), current


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
