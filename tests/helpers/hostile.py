"""Hostile input shared by tests/unit/test_hostile_input.py (the decoders) and
tests/e2e/test_hostile_input.py (`ledger replay` and `ledger publish`): the valid lines
every case is mixed with, the lines `publish` must report instead of sending, and files
with one line too long to hold."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from ledger.config import ByteLimits
from tests import factories
from tests.support import eid

LIMIT = ByteLimits().event_bytes
RECORDED = "2026-06-01T00:00:00Z"  # record time carried by every line: histories compare


# Every line carries the record time (a later keyword replaces it, a hostile one too).
signup = partial(factories.signup, recorded_at=RECORDED)
accepts = partial(factories.terms_accepted, recorded_at=RECORDED)
verified = partial(factories.identity_verified, recorded_at=RECORDED)


dumps = factories.line


GOOD = [
    dumps(signup(1, "u-1")),
    dumps(signup(2, "u-2", phone=factories.PHONE_HK, channel="rednote-app")),
    dumps(accepts(3, "u-1")),
]
Bad = tuple[str | bytes, str]  # (the line, a fragment its reason must contain)


# Lines `ledger publish` reports rather than sends (and the decoders refuse).
PUBLISH_BAD = [
    dumps(signup(90, "u-9", occurred_at="9999-12-31T23:59:59-05:00")),
    dumps(signup(91, "u-9", recorded_at="0001-01-01T00:00:00+05:00")),
    dumps(signup(92, "u-9", recorded_at="1960-01-01T00:00:00Z")),
    dumps(signup(93, "u-9")).replace(f'"{eid(93)}"', "9" * 5000),
    "[" * 100_000,
    dumps(signup(94, "\ud800x")),
    dumps(signup(95, "u-\x009")),
    dumps(signup(96, "u" * 201)),
    dumps(signup(97, "u-9", channel="c" * 101)),
    dumps(signup(98, "u-9", channel="a\x00")),
    # event schema version 2: SignedUp.locale and IdentityVerified
    dumps(signup(80, "u-9", locale="en-" + "x" * 62)),  # one over the column size
    dumps(signup(81, "u-9", locale="en-US\x00")),
    dumps(signup(82, "u-9", locale="\ud800")),
    dumps(signup(83, "u-9", locale="en_US")),
    dumps(signup(84, "u-9", locale=["en-US"])),
    dumps(verified(85, "u-9", country="cn")),
    dumps(verified(86, "u-9", kind="resident_id\x00")),
    dumps(verified(87, "u-9", kind="x" * 1_000_000)),
    dumps(verified(88, "u-9", country=None)),
]


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


HUGE = 64 << 20  # not 2 GB: the same code path, in a fraction of the time and disk


def huge_line_file(path: Path, size: int = HUGE) -> Path:
    """GOOD[0], one line of `size` bytes (mostly a hole in a sparse file: NUL bytes on
    read, no disk), then the other valid lines."""
    with path.open("wb") as fo:
        fo.write(GOOD[0].encode() + b"\n")
        fo.write(b'{"event_id": "')
        fo.seek(size - len(b'{"event_id": "') - len(b'"}'), os.SEEK_CUR)
        fo.write(b'"}\n')
        for line in GOOD[1:]:
            fo.write(line.encode() + b"\n")
    return path
