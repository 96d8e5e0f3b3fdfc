"""Hypothesis strategies for testing the ledger and your own classification policies.

Import them in a test module (Hypothesis must be installed; it is in the `test` extra)::

    from hypothesis import given
    from ledger.testing import event_streams, phones, user_events

    @given(user_events("u-000001"))
    def test_my_policy_always_decides(events):
        ...  # fold `events` and check that your policy assigns a rulebook at every instant

The strategies are pure (no I/O, no clock) and produce `ledger.domain.events.Event` values that
survive the JSON and Avro encodings unchanged. They deliberately include what a real stream
brings: invalid phone numbers, events dated before the signup, several events at exactly the
same millisecond (so ordering by `(occurred_at, event_id)` matters), duplicate deliveries and
arbitrary arrival orders.

Typical properties and the strategy to draw from:
- "the believed history does not depend on arrival order": `event_streams()` drawn twice, or
  one stream and `st.permutations(stream)`;
- "a duplicate delivery changes nothing": `streams_with_duplicates()`;
- "applying a stream in batches equals applying it at once": `batch_splits(stream)`, e.g.
  ``stream = data.draw(event_streams()); batches = data.draw(batch_splits(stream))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import cache
from itertools import pairwise
from typing import TypeVar

import phonenumbers
from hypothesis import strategies as st
from phonenumbers import PhoneNumber, PhoneNumberType

from ledger.domain.events import (
    DOCUMENT_KINDS,
    EVIDENCE_KINDS,
    KNOWN_CHANNELS,
    Event,
    IdentityVerified,
    Payload,
    PhoneChanged,
    Relocated,
    SignedUp,
    TermsAccepted,
)
from ledger.domain.time import from_millis, to_millis

__all__ = [
    "BINDABLE_TOS_VERSIONS",
    "COUNTRIES",
    "DOCUMENT_COUNTRIES",
    "INVALID_PHONES",
    "LOCALES",
    "PHONE_REGIONS",
    "batch_splits",
    "birth_dates",
    "channels",
    "event_streams",
    "instants",
    "locales",
    "phones",
    "streams_with_duplicates",
    "user_events",
    "valid_phones",
    "with_duplicates",
]

T = TypeVar("T")

PHONE_REGIONS = ("CN", "HK", "MO", "TW", "US", "CA", "GB", "DE", "SG", "JP")
"""Regions whose numbers `phones()` draws: mainland China, the three regions that are not
mainland (HK, MO, TW) and the main international markets."""

INVALID_PHONES = ("+8612345", "+86", "+1", "+8613", "+852123", "+1555", "+447", "+999123456")
"""Strings a client might send that are not valid numbers; some do not even parse."""

COUNTRIES = ("CN", "HK", "MO", "TW", "US", "CA", "GB", "DE", "SG", "JP", "AU", "FR", "KR", "MY")
"""ISO 3166-1 alpha-2 codes used for `Relocated` events."""

DOCUMENT_COUNTRIES = ("CN", "HK", "US")
"""Issuing countries for `IdentityVerified`: mainland China (its resident identity card is
what a policy is likely to single out), a region that is not mainland, a foreign country.
Few on purpose: a property about one document must meet it often (with every country of
`COUNTRIES`, a mainland resident identity card together with a residence abroad came up in
one history of a hundred)."""

LOCALES = (
    "zh-CN",
    "en-US",
    "zh-HK",
    "zh-TW",
    "zh-Hans-CN",
    "en-GB",
    "en-CA",
    "fr-CA",
    "de-DE",
    "ja-JP",
    "es-419",
    "en",
    "en-US-u-ca-gregory",
)
"""BCP 47 tags for `SignedUp.locale`, in the case the ledger keeps them in: plain
language-region tags, a script, a numeric region, a bare language, an extension."""

BINDABLE_TOS_VERSIONS = ("tos-2023-legacy", "tos-2025-12-cutover", "tos-2026-03-residency")

DEFAULT_MIN = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_MAX = datetime(2026, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)

_DIGITS_DRAWN = 4  # trailing digits randomised; the leading ones keep the number type valid


@cache
def _templates(region: str) -> tuple[tuple[int, str], ...]:
    """(country code, national number) of the library's example mobile and fixed-line numbers."""
    out = []
    for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
        example = phonenumbers.example_number_for_type(region, kind)
        if example is not None and example.country_code is not None:
            out.append((example.country_code, phonenumbers.national_significant_number(example)))
    return tuple(dict.fromkeys(out))


def _is_valid_in(code: int, national: str, region: str) -> bool:
    number = PhoneNumber(country_code=code, national_number=int(national))
    return (
        phonenumbers.is_valid_number(number)
        and phonenumbers.region_code_for_number(number) == region
    )


@st.composite
def valid_phones(draw: st.DrawFn, regions: Sequence[str] = PHONE_REGIONS) -> str:
    """E.164 numbers that `phonenumbers` accepts as valid and attributes to one of `regions`.

    Built from the library's example number for the region with the last digits drawn, so
    Hypothesis shrinks towards the example number itself."""
    region = draw(st.sampled_from(tuple(regions)))
    code, national = draw(st.sampled_from(_templates(region)))
    tail = draw(st.integers(0, 10**_DIGITS_DRAWN - 1))
    candidate = national[:-_DIGITS_DRAWN] + str(tail).zfill(_DIGITS_DRAWN)
    # Randomising only the subscriber digits practically always stays valid; falling back to
    # the example keeps the strategy total instead of rejecting (and slowing) examples.
    if not _is_valid_in(code, candidate, region):
        candidate = national
    return f"+{code}{candidate}"


def phones(
    regions: Sequence[str] = PHONE_REGIONS, *, invalid: bool = True
) -> st.SearchStrategy[str]:
    """Phone strings as clients send them: mostly valid numbers of `regions` (see
    `valid_phones`), and with `invalid=True` also strings from `INVALID_PHONES` such as
    `+8612345` (parses, not valid) or `+86` (does not parse at all).

    Example: ``@given(phones(["HK", "MO", "TW"], invalid=False))`` for "not mainland" cases."""
    valid = valid_phones(regions)
    if not invalid:
        return valid
    # one_of picks a branch uniformly: two valid branches make invalid numbers about a third.
    return st.one_of(valid, st.sampled_from(INVALID_PHONES), valid)


def instants(
    min_value: datetime = DEFAULT_MIN, max_value: datetime = DEFAULT_MAX
) -> st.SearchStrategy[datetime]:
    """Aware UTC datetimes with millisecond precision in [min_value, max_value], the grain of
    `occurred_at`. Shrinks towards `min_value`."""
    return st.integers(to_millis(min_value), to_millis(max_value)).map(from_millis)


def birth_dates(
    min_value: date = date(1950, 1, 1), max_value: date = date(2025, 12, 31)
) -> st.SearchStrategy[date | None]:
    """Optional birth dates: `None` (not given) or a date; the default range makes minors of
    every age band (under 13, 13-14, 14-18) likely for signups in 2024-2026."""
    return st.none() | st.dates(min_value, max_value)


def locales() -> st.SearchStrategy[str | None]:
    """Optional signup locales: `None` (an event of schema version 1, or a client that sent
    none) or one of `LOCALES`."""
    return st.none() | st.sampled_from(LOCALES)


def channels() -> st.SearchStrategy[str]:
    """Signup channels: the four known ones, or any other non-empty string."""
    # Valid channels only: NUL is refused by the event model (no store can hold it).
    other = st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20
    )
    return st.one_of(st.sampled_from(KNOWN_CHANNELS), other)


def _occurred_after(
    signup_at: datetime, taken: list[datetime], min_value: datetime, max_value: datetime
) -> st.SearchStrategy[datetime]:
    """When a later event happened: usually after the signup, sometimes exactly at an instant
    already used (ties are decided by event_id), sometimes anywhere, even before the signup."""
    after = instants(signup_at, max_value)
    return st.one_of(after, after, st.sampled_from(taken), instants(min_value, max_value))


@st.composite
def user_events(
    draw: st.DrawFn,
    user_id: str = "u-000001",
    tos_versions: Sequence[str] = BINDABLE_TOS_VERSIONS,
    max_events: int = 8,
    *,
    min_value: datetime = DEFAULT_MIN,
    max_value: datetime = DEFAULT_MAX,
) -> list[Event]:
    """One user's events: a `SignedUp` first (with a locale or none), then up to
    `max_events - 1` of `PhoneChanged`, `Relocated` (countries from `COUNTRIES`, every
    evidence kind), `TermsAccepted` (versions from `tos_versions`; pass e.g.
    `"wechat-style"` or `"tos-unknown"` to test dead-lettering) and `IdentityVerified`
    (issuing countries from `DOCUMENT_COUNTRIES`, every document kind). Event ids are unique UUID
    strings.

    The list is in generation order, not valid-time order: `occurred_at` values may precede
    the signup or coincide exactly, so sort by `Event.order_key` where order matters."""
    if max_events < 1:
        raise ValueError("max_events must be at least 1 (the SignedUp)")
    count = draw(st.integers(1, max_events))
    ids = draw(st.lists(st.uuids(), min_size=count, max_size=count, unique=True))
    signup_at = draw(instants(min_value, max_value))
    signup = SignedUp(draw(phones()), draw(channels()), draw(birth_dates()), draw(locales()))
    events = [Event(str(ids[0]), user_id, signup_at, signup)]
    taken = [signup_at]
    for event_id in ids[1:]:
        occurred_at = draw(_occurred_after(signup_at, taken, min_value, max_value))
        taken.append(occurred_at)
        kind = draw(
            st.sampled_from(("PhoneChanged", "Relocated", "TermsAccepted", "IdentityVerified"))
        )
        payload: Payload
        if kind == "PhoneChanged":
            payload = PhoneChanged(draw(phones()))
        elif kind == "Relocated":
            payload = Relocated(
                draw(st.sampled_from(COUNTRIES)), draw(st.sampled_from(EVIDENCE_KINDS))
            )
        elif kind == "IdentityVerified":
            payload = IdentityVerified(
                draw(st.sampled_from(DOCUMENT_COUNTRIES)), draw(st.sampled_from(DOCUMENT_KINDS))
            )
        else:
            payload = TermsAccepted(draw(st.sampled_from(tuple(tos_versions))))
        events.append(Event(str(event_id), user_id, occurred_at, payload))
    return events


@st.composite
def event_streams(
    draw: st.DrawFn,
    max_users: int = 4,
    *,
    min_users: int = 1,
    tos_versions: Sequence[str] = BINDABLE_TOS_VERSIONS,
    max_events: int = 8,
    preserve_user_order: bool = False,
) -> list[Event]:
    """Several users' events (`u-000001`, `u-000002`, ...) interleaved into one stream.

    By default the order is arbitrary, even within a user (a file or a replay can deliver
    anything). With `preserve_user_order=True` each user's events keep their `user_events`
    order and only the interleaving across users is drawn, as on a Kafka topic keyed by user.
    Event ids are unique across the whole stream."""
    n_users = draw(st.integers(min_users, max_users))
    per_user = [
        draw(user_events(f"u-{i + 1:06d}", tos_versions, max_events)) for i in range(n_users)
    ]
    # Each user's ids are unique; across users Hypothesis may well repeat a UUID, so redraw.
    seen: set[str] = set()
    for events in per_user:
        for i, event in enumerate(events):
            if event.event_id in seen:
                fresh = draw(st.uuids().filter(lambda u: str(u) not in seen))
                events[i] = Event(str(fresh), event.user_id, event.occurred_at, event.payload)
            seen.add(events[i].event_id)
    if not preserve_user_order:
        return draw(st.permutations([e for events in per_user for e in events]))
    queues = [list(reversed(events)) for events in per_user]
    stream: list[Event] = []
    while any(queues):
        nonempty = [q for q in queues if q]
        stream.append(draw(st.sampled_from(nonempty)).pop())
    return stream


@st.composite
def with_duplicates(
    draw: st.DrawFn, streams: st.SearchStrategy[list[Event]], max_duplicates: int = 5
) -> list[Event]:
    """A stream from `streams` with up to `max_duplicates` of its events delivered again at a
    later position (same `event_id`, same content), as an at-least-once producer would."""
    stream = list(draw(streams))
    if not stream:
        return stream
    for _ in range(draw(st.integers(0, max_duplicates))):
        original = draw(st.integers(0, len(stream) - 1))
        position = draw(st.integers(original + 1, len(stream)))
        stream.insert(position, stream[original])
    return stream


def streams_with_duplicates(
    max_users: int = 4,
    max_duplicates: int = 5,
    *,
    tos_versions: Sequence[str] = BINDABLE_TOS_VERSIONS,
    max_events: int = 8,
    preserve_user_order: bool = False,
) -> st.SearchStrategy[list[Event]]:
    """`event_streams(...)` with up to `max_duplicates` duplicate deliveries mixed in.

    Property to check: folding this stream gives the same result as folding it with the
    repeats removed (keep the first delivery of each `event_id`)."""
    streams = event_streams(
        max_users,
        tos_versions=tos_versions,
        max_events=max_events,
        preserve_user_order=preserve_user_order,
    )
    return with_duplicates(streams, max_duplicates)


def batch_splits(
    items: Sequence[T], *, allow_empty: bool = False
) -> st.SearchStrategy[list[list[T]]]:
    """Ways to cut `items` into consecutive batches; concatenated, the batches are `items`.

    Draw it after the stream, e.g. with `st.data()`::

        @given(st.data())
        def test_batches(data):
            stream = data.draw(event_streams())
            batches = data.draw(batch_splits(stream))
            assert fold_in_batches(batches) == fold(stream)

    With `allow_empty=True` some batches may be empty (a poll that returned nothing)."""
    items = list(items)

    @st.composite
    def split(draw: st.DrawFn) -> list[list[T]]:
        if allow_empty:
            cuts = sorted(draw(st.lists(st.integers(0, len(items)), max_size=len(items) + 2)))
        elif len(items) < 2:
            cuts = []
        else:
            cuts = sorted(draw(st.sets(st.integers(1, len(items) - 1))))
        bounds = [0, *cuts, len(items)]
        batches = [items[a:b] for a, b in pairwise(bounds)]
        return batches if batches != [[]] or allow_empty else []

    return split()
