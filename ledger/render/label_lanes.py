"""Placing the timeline picture's labels so that no two overlap: lanes of labels, and labels
dodged along a line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LABEL_GAP = 6.0


# --- text widths ---------------------------------------------------------------------------

# Advance widths in em, rounded up from DejaVu Sans (the widest of the sans-serif fonts the
# style names, and the fallback of a bare Linux): an estimate on the wide side keeps apart
# labels that a narrower font would draw closer still.
_NARROW = frozenset("ijlI.,:;'|!`")
_SEMI = frozenset("frt()[]{}- /\\\"")
_WIDE = frozenset("mwMW@%")


def text_width(value: str, size: float, *, bold: bool = False) -> float:
    """The width a line of `value` takes at `size` px, estimated on the wide side."""
    em = 0.0
    for c in value:
        if c in _NARROW:
            em += 0.32
        elif c in _SEMI:
            em += 0.44
        elif c in _WIDE:
            em += 1.0
        elif c.isupper():
            em += 0.78
        elif c.isdigit():
            em += 0.66
        elif c.isascii():
            em += 0.64
        else:
            em += 1.0  # CJK, symbols, escapes: a full em
    return em * size * (1.12 if bold else 1.0)


# --- labels that never overlap -------------------------------------------------------------


@dataclass
class _Placed:
    left: float
    right: float
    lane: int


class Lanes:
    """Labels at fixed x positions, each in the lowest lane where it meets no other label
    (with a gap) and, where possible, where no vertical line of a label above crosses it."""

    def __init__(self, gap: float = LABEL_GAP) -> None:
        self.gap = gap
        self.placed: list[_Placed] = []
        self.lines: list[tuple[float, int]] = []  # (x, lane of its label)

    def _free(self, left: float, right: float, lane: int) -> bool:
        return all(
            p.lane != lane or right + self.gap <= p.left or p.right + self.gap <= left
            for p in self.placed
        )

    def _uncrossed(self, left: float, right: float, lane: int, line: float | None) -> bool:
        if any(lane < above and left - 2 <= x <= right + 2 for x, above in self.lines):
            return False
        return line is None or all(
            not (p.lane < lane and p.left - 2 <= line <= p.right + 2) for p in self.placed
        )

    def add(self, left: float, right: float, line: float | None = None) -> int:
        """The lane for a label over [left, right]; `line`: the x of a vertical line drawn
        from it down through the lanes below."""
        lane = 0
        while not (self._free(left, right, lane) and self._uncrossed(left, right, lane, line)):
            lane += 1
            if lane > 2 * len(self.placed) + 2:  # no lane avoids every line: labels first
                lane = 0
                while not self._free(left, right, lane):
                    lane += 1
                break
        self.placed.append(_Placed(left, right, lane))
        if line is not None:
            self.lines.append((line, lane))
        return lane

    @property
    def count(self) -> int:
        return 1 + max((p.lane for p in self.placed), default=-1)


def dodge(centres: Sequence[float], widths: Sequence[float], lo: float, hi: float) -> list[float]:
    """Left edges for labels in one row, each as near its centre as the others allow, in
    order, none overlapping, all within [lo, hi]; [] when they do not fit."""
    if sum(widths) + LABEL_GAP * (len(widths) - 1) > hi - lo:
        return []
    lefts: list[float] = []
    for c, w in zip(centres, widths, strict=True):
        left = max(c - w / 2, lo)
        if lefts:
            left = max(left, lefts[-1] + widths[len(lefts) - 1] + LABEL_GAP)
        lefts.append(left)
    limit = hi
    for i in range(len(lefts) - 1, -1, -1):  # pushed past the right end: back to the left
        lefts[i] = min(lefts[i], limit - widths[i])
        limit = lefts[i] - LABEL_GAP
    return lefts
