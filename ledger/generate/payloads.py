"""The payloads of the events `ledger generate` draws after a signup: phone changes,
relocations of every evidence kind, terms acceptances."""

from __future__ import annotations

import random

from ledger.domain.events import (
    EvidenceKind,
    PhoneChanged,
    Relocated,
    TermsAccepted,
)
from ledger.generate.phones import (
    _phone,
)
from ledger.generate.shape import (
    _CUTOVER,
    _CUTOVER_TOS,
    _INVALID,
    _LEGACY,
    _MOVE_ABROAD,
    _REGIONS,
    _RESIDENCY,
    _RESIDENCY_TOS,
    _TRAVEL,
)


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
