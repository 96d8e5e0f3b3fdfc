"""The two time axes of the timeline picture: valid time to scale across, with calendar
ticks; record time in order up, one step per distinct belief, labelled with its real time."""

from __future__ import annotations

import bisect
import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from ledger.domain.projection import HistoryRow
from ledger.queries.timeline import TimelineData

MIN_STEP = 24  # px per record-time step, while the plot stays below MAX_PLOT_H
MIN_PLOT_H, MAX_PLOT_H = 300, 1400
MAX_KNOTS = 60  # events' record times are steps of their own up to this many


# --- valid time: to scale ------------------------------------------------------------------


class _Scale(NamedTuple):
    lo: datetime
    hi: datetime
    px0: float
    px1: float

    def __call__(self, t: datetime) -> float:
        span = (self.hi - self.lo).total_seconds()
        return self.px0 + (t - self.lo).total_seconds() / span * (self.px1 - self.px0)


def _padded(instants: list[datetime], open_end: bool) -> tuple[datetime, datetime]:
    lo, hi = min(instants), max(instants)
    span = hi - lo
    pad = max(span * 0.04, timedelta(days=1))
    # Room on the far side for what is open-ended (a valid_to of null).
    far = max(span * (0.10 if open_end else 0.04), timedelta(days=3 if open_end else 1))
    return _clamp(lo - pad), _clamp(hi + far)


def _clamp(t: datetime) -> datetime:
    low = datetime(1, 1, 2, tzinfo=UTC)
    high = datetime(9999, 12, 30, tzinfo=UTC)
    return min(max(t, low), high)


_STEPS = [
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
]
_MONTH_STEPS = [1, 3, 6, 12, 24, 60, 120, 600, 1200]


def _add_months(t: datetime, months: int) -> datetime:
    y, m = divmod(t.month - 1 + months, 12)
    year = t.year + y
    if year > 9999:
        return datetime(9999, 12, 30, tzinfo=UTC)
    return t.replace(year=year, month=m + 1, day=min(t.day, calendar.monthrange(year, m + 1)[1]))


def ticks(lo: datetime, hi: datetime, most: int = 8) -> tuple[list[datetime], bool]:
    """Round instants between lo and hi, at most `most`; True when they are whole days."""
    span = hi - lo
    for step in _STEPS:
        if span / step <= most:
            start = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
            while start < lo:
                start += step
            out: list[datetime] = []
            t = start
            while t <= hi and len(out) <= most:
                out.append(t)
                t += step
            return out, step >= timedelta(days=1)
    for months in _MONTH_STEPS:
        if span.days / (30.4 * months) <= most:
            year = lo.year - (lo.year - 1) % (months // 12) if months >= 12 else lo.year
            t = datetime(year, 1, 1, tzinfo=UTC)
            out = []
            while t <= hi and len(out) <= 4 * most:
                if t >= lo:
                    out.append(t)
                t = _add_months(t, months)
                if t.year >= 9999:
                    break
            return out, True
    return [lo, hi], True


def _tick_label(t: datetime, days: bool) -> str:
    return f"{t:%Y-%m-%d}" if days else f"{t:%Y-%m-%d %H:%M}"


# --- record time: in order -----------------------------------------------------------------

_PRECISIONS: tuple[Callable[[datetime], str], ...] = (
    lambda t: f"{t:%Y-%m-%d}",
    lambda t: f"{t:%Y-%m-%d %H:%M}",
    lambda t: f"{t:%Y-%m-%d %H:%M:%S}",
    lambda t: f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d}",
    lambda t: f"{t:%Y-%m-%d %H:%M:%S.%f}",
)


def knot_labels(knots: Sequence[datetime]) -> list[str]:
    """Each record time as briefly as tells it from its neighbours: a date, then minutes,
    seconds, milliseconds as needed (replays put many within one second)."""
    out = []
    for i, t in enumerate(knots):
        neighbours = [knots[j] for j in (i - 1, i + 1) if 0 <= j < len(knots)]
        for fmt in _PRECISIONS:
            if all(fmt(t) != fmt(n) for n in neighbours):
                out.append(fmt(t))
                break
        else:
            out.append(_PRECISIONS[-1](t))
    return out


@dataclass
class RecordAxis:
    """Record time in order: each knot (a distinct record time) one `step` above the one
    before; instants between knots are placed by interpolation, so an event recorded
    between two beliefs lies between them."""

    knots: list[datetime]
    now: datetime
    step: float = MIN_STEP
    bottom: float = 0.0  # y of the plot's bottom edge

    @classmethod
    def of(cls, rows: Sequence[HistoryRow], data: TimelineData, now: datetime) -> RecordAxis:
        bounds = {r.recorded_at for r in rows} | {
            r.superseded_at for r in rows if r.superseded_at is not None
        }
        with_events = bounds | {e.recorded_at for e in data.events}
        knots = sorted(with_events if len(with_events) <= MAX_KNOTS else bounds)
        return cls(knots or [now], now)

    @property
    def height(self) -> float:
        """The plot height: half a step under the first knot, a step over the last."""
        n = len(self.knots)
        return min(MAX_PLOT_H, max(MIN_PLOT_H, (n + 0.5) * MIN_STEP))

    def place(self, bottom: float) -> None:
        self.bottom = bottom
        self.step = self.height / (len(self.knots) + 0.5)

    def knot_y(self, i: int) -> float:
        return self.bottom - self.step * (i + 0.5)

    @property
    def top(self) -> float:
        return self.bottom - self.height

    def __call__(self, t: datetime) -> float:
        k = self.knots
        i = bisect.bisect_left(k, t)
        if i < len(k) and k[i] == t:
            return self.knot_y(i)
        if i == 0:  # before the first knot: in the half step under it
            return self.knot_y(0) + self.step * 0.3
        if i == len(k):  # after the last: in the step above it, towards now
            span = (self.now - k[-1]).total_seconds()
            share = min(1.0, (t - k[-1]).total_seconds() / span) if span > 0 else 0.5
            return self.knot_y(len(k) - 1) - self.step * 0.8 * share
        share = (t - k[i - 1]).total_seconds() / (k[i] - k[i - 1]).total_seconds()
        return self.knot_y(i - 1) - self.step * share
