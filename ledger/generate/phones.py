"""Phone numbers for `ledger generate`: valid mobiles of each region, learned from the
phonenumbers library's examples, and invalid numbers near them."""

from __future__ import annotations

import random
from functools import cache

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberType

from ledger.generate.shape import (
    _INVALID,
    _REGIONS,
)

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
