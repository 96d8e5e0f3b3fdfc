"""The shape of the synthetic platform `ledger generate` draws: its dates, regions, channels
and the odds of each kind of event, late delivery and duplicate."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from ledger.domain.time import to_millis

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
