"""The bitemporal timeline picture of one user, drawn server-side as SVG (and an HTML page
around it): valid time across, record time up.

Each history row is a band over [valid_from, valid_to) in valid time, standing from its
`recorded_at` to its `superseded_at` in record time, so what the ledger believes now is the
top layer and a belief that a late event corrected sits below the one that replaced it.
Bands are coloured by rulebook and labelled with policy and rule; the events are ticks on
the valid-time axis (and dots at their record time); the sign-up and the moments a terms
version began to bind are vertical marks.

Self-contained: no script, no font, no image or style sheet is fetched. Every text that
came from input (user ids, reasons, policy names) is escaped for XML and has its control
characters spelled out, so a hostile id can neither inject markup nor break the document.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from html import escape
from typing import NamedTuple

from ledger.domain.projection import HistoryRow
from ledger.domain.time import format_instant
from ledger.queries.timeline import TimelineData
from ledger.render.text import escape_control

COLOURS = {
    "xhs-domestic": "#c8463d",
    "rednote-international": "#3469b3",
    "undetermined": "#8d8d8d",
}
LABELS = {
    "xhs-domestic": "Xiaohongshu domestic",
    "rednote-international": "Rednote international",
    "undetermined": "undetermined (review queue)",
}
OTHER_COLOUR = "#6b4fa0"  # an assignment this renderer does not know (future rulebook)

WIDTH = 1000
LEFT, RIGHT, TOP = 150, 40, 92
PLOT_H = 340
TICK_AREA = 150  # below the plot: axis labels and event types
LEGEND_H = 70
CHAR_W = 6.4  # average width of a 11px sans-serif character, for fitting labels

# XML 1.0 cannot carry these even as character references; escape_control takes the C0/C1
# controls and bidirectional overrides.
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")


def text(value: object) -> str:
    """Input as XML/HTML text or attribute value."""
    s = escape_control(str(value))
    s = _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", s)
    return escape(s, quote=True)


def _fmt(value: datetime | None) -> str:
    return format_instant(value) or "open"


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
    pad = max(span * 0.06, timedelta(days=1))
    # Room on the far side for what is open-ended (a valid_to or superseded_at of null).
    far = max(span * (0.14 if open_end else 0.06), timedelta(days=3 if open_end else 1))
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


def _lanes(xs: Iterable[float], gap: float) -> list[int]:
    """A lane for each label at x (sorted input) so labels closer than `gap` do not overlap."""
    last: list[float] = []
    out = []
    for x in xs:
        for lane, end in enumerate(last):
            if x - end >= gap:
                last[lane] = x
                out.append(lane)
                break
        else:
            last.append(x)
            out.append(len(last) - 1)
    return out


def _band_title(r: HistoryRow) -> str:
    e = r.entry
    state = f"superseded {_fmt(r.superseded_at)}" if r.superseded_at else "believed now"
    return (
        f"{e.assignment}: valid {_fmt(e.valid_from)} to {_fmt(e.valid_to)}; "
        f"policy {e.policy}, rule {e.rule}: {e.reason}; recorded {_fmt(r.recorded_at)}, {state}"
    )


def _fit(label: str, width: float) -> bool:
    return len(label) * CHAR_W + 8 <= width


def render_svg(data: TimelineData, *, now: datetime | None = None) -> str:
    """The picture as a standalone SVG document (UTF-8 text)."""
    rows = data.rows
    valid = [r.entry.valid_from for r in rows]
    valid += [r.entry.valid_to for r in rows if r.entry.valid_to is not None]
    valid += [e.occurred_at for e in data.events]
    if data.signup_at is not None:
        valid.append(data.signup_at)
    recorded = [r.recorded_at for r in rows]
    recorded += [r.superseded_at for r in rows if r.superseded_at is not None]
    recorded += [e.recorded_at for e in data.events]
    if not valid:  # a user with events but no sign-up has no history to draw
        valid = [now or datetime.now(UTC)]
    if not recorded:
        recorded = [now or datetime.now(UTC)]
    open_valid = any(r.entry.valid_to is None for r in rows)
    open_record = any(r.superseded_at is None for r in rows)
    plot_l, plot_r = LEFT, WIDTH - RIGHT
    plot_t, plot_b = TOP, TOP + PLOT_H
    x = _Scale(*_padded(valid, open_valid), plot_l, plot_r)
    y = _Scale(*_padded(recorded, open_record), plot_b, plot_t)
    height = TOP + PLOT_H + TICK_AREA + LEGEND_H
    uid = text(data.user_id)
    out: list[str] = [
        '<svg xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-labelledby="tl-title tl-desc" class="ledger-timeline" '
        f'data-user-id="{uid}" data-rows="{len(rows)}" data-events="{len(data.events)}">',
        f'<title id="tl-title">Jurisdiction timeline of {uid}</title>',
        f'<desc id="tl-desc">{len(rows)} history rows ('
        f"{sum(1 for r in rows if r.superseded_at)} superseded) and {len(data.events)} events: "
        "valid time across, record time up.</desc>",
        "<defs>"
        '<pattern id="hatch" width="7" height="7" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="7" height="7" fill="#fff" fill-opacity="0"/>'
        '<line x1="0" y1="0" x2="0" y2="7" stroke="#fff" stroke-width="2.5" '
        'stroke-opacity="0.75"/></pattern>'
        f'<clipPath id="plot"><rect x="{plot_l}" y="{plot_t}" width="{plot_r - plot_l}" '
        f'height="{plot_b - plot_t}"/></clipPath>'
        "</defs>",
        "<style>"
        "text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;"
        "font-size:11px;fill:#222}"
        ".axis{stroke:#444;stroke-width:1}.grid{stroke:#e4e4e4;stroke-width:1}"
        ".band-label{fill:#fff;font-weight:600;pointer-events:none}"
        ".small{font-size:10px;fill:#555}.title{font-size:15px;font-weight:600}"
        "</style>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text class="title" x="{plot_l}" y="22">Jurisdiction timeline of {uid}</text>',
    ]
    # Grid and axes.
    xt, xdays = ticks(x.lo, x.hi)
    # Record time above the latest instant drawn is "still believed", not a future date.
    latest = max(recorded)
    yt, ydays = ticks(y.lo, latest, most=6)
    if len(yt) < 2:
        yt, ydays = sorted(set(recorded))[-3:], False
    for t in xt:
        px = x(t)
        out.append(f'<line class="grid" x1="{px:.1f}" y1="{plot_t}" x2="{px:.1f}" y2="{plot_b}"/>')
        out.append(
            f'<text class="small" x="{px:.1f}" y="{plot_b + 14}" text-anchor="middle">'
            f"{_tick_label(t, xdays)}</text>"
        )
    for t in yt:
        py = y(t)
        out.append(f'<line class="grid" x1="{plot_l}" y1="{py:.1f}" x2="{plot_r}" y2="{py:.1f}"/>')
        out.append(
            f'<text class="small" x="{plot_l - 6}" y="{py + 3:.1f}" text-anchor="end">'
            f"{_tick_label(t, ydays)}</text>"
        )
    out.append(
        f'<line class="axis" x1="{plot_l}" y1="{plot_b}" x2="{plot_r}" y2="{plot_b}"/>'
        f'<line class="axis" x1="{plot_l}" y1="{plot_t}" x2="{plot_l}" y2="{plot_b}"/>'
        f'<text x="{plot_r}" y="{plot_b + 30}" text-anchor="end" class="small">'
        "valid time (when it held in the world) →</text>"
        f'<text class="small" transform="translate(16 {plot_b}) rotate(-90)">'
        "record time (when the ledger believed it) →</text>"
        f'<text class="small" x="{plot_l - 6}" y="{plot_t + 10}" text-anchor="end">'
        "still believed ↑</text>"
    )
    # Bands: superseded first, so the belief that replaced one is drawn over any edge.
    out.append('<g class="bands" clip-path="url(#plot)">')
    for r in sorted(rows, key=lambda r: (r.superseded_at is None, r.recorded_at)):
        e = r.entry
        x0, x1 = x(e.valid_from), (x(e.valid_to) if e.valid_to else plot_r)
        y0 = y(r.recorded_at)
        y1 = y(r.superseded_at) if r.superseded_at else plot_t
        w, h = max(x1 - x0, 2.0), max(y0 - y1, 3.0)
        top = y0 - h
        superseded = r.superseded_at is not None
        colour = COLOURS.get(e.assignment, OTHER_COLOUR)
        cls = "band band-superseded" if superseded else "band band-current"
        dashed = ' stroke-dasharray="4 3"' if superseded else ""
        out.append(
            f'<g class="{cls}" data-assignment="{text(e.assignment)}" '
            f'data-policy="{text(e.policy)}" data-rule="{text(e.rule)}" '
            f'data-valid-from="{_fmt(e.valid_from)}" data-valid-to="{_fmt(e.valid_to)}" '
            f'data-recorded-at="{_fmt(r.recorded_at)}" '
            f'data-superseded-at="{format_instant(r.superseded_at) or ""}">'
            f"<title>{text(_band_title(r))}</title>"
            f'<rect x="{x0:.1f}" y="{top:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{colour}" fill-opacity="{0.5 if superseded else 0.92}" stroke="#1d1d1d" '
            f'stroke-width="1"{dashed}/>'
        )
        if superseded:
            out.append(
                f'<rect x="{x0:.1f}" y="{top:.1f}" width="{w:.1f}" height="{h:.1f}" '
                'fill="url(#hatch)"/>'
            )
        if not e.valid_to:  # open in valid time: it holds on
            out.append(
                f'<path d="M{x1 - 9:.1f},{top + h / 2 - 5:.1f} l7,5 l-7,5" fill="none" '
                'stroke="#fff" stroke-width="2"/>'
            )
        label = f"{e.policy} · {e.rule}"
        if h >= 15:
            for candidate in (label, e.rule):
                if _fit(candidate, w):
                    ty = top + min(h / 2, 40) + 4
                    out.append(
                        f'<text class="band-label" x="{x0 + 5:.1f}" y="{ty:.1f}">'
                        f"{text(candidate)}</text>"
                    )
                    break
        out.append("</g>")
    out.append("</g>")
    # Events: a dot where valid time meets record time (a late event stands out above its
    # neighbours), and a tick with its type on the valid-time axis.
    out.append('<g class="events">')
    lanes = _lanes((x(e.occurred_at) for e in data.events), 14)
    for mark, lane in zip(data.events, lanes, strict=True):
        px, py = x(mark.occurred_at), y(mark.recorded_at)
        tip = text(
            f"{mark.type} {mark.event_id}: occurred {_fmt(mark.occurred_at)}, recorded "
            f"{_fmt(mark.recorded_at)}" + (f"; {mark.detail}" if mark.detail else "")
        )
        ly = plot_b + 44 + 12 * (lane % 4)
        out.append(
            f'<g class="event" data-type="{text(mark.type)}" data-event-id="{text(mark.event_id)}">'
            f"<title>{tip}</title>"
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.2" fill="#111" stroke="#fff" '
            'stroke-width="1"/>'
            f'<line x1="{px:.1f}" y1="{plot_b}" x2="{px:.1f}" y2="{plot_b + 8}" '
            'stroke="#111" stroke-width="2"/>'
            f'<text class="small" x="{px:.1f}" y="{ly}" '
            f'transform="rotate(35 {px:.1f} {ly})">{text(mark.type)}</text></g>'
        )
    if data.events_total > len(data.events):
        out.append(
            f'<text class="small" x="{plot_r}" y="{plot_b + 44}" text-anchor="end">'
            f"first {len(data.events)} of {data.events_total} events shown</text>"
        )
    out.append("</g>")
    # Sign-up and terms bindings: vertical marks through the plot, labelled above it.
    marks: list[tuple[float, str, str, str]] = []
    if data.signup_at is not None:
        marks.append((x(data.signup_at), "signup", "sign-up", "#111"))
    for b in data.bindings:
        marks.append((x(b.at), "binding", f"binds {b.policy}", "#7a5a00"))
    marks.sort(key=lambda m: m[0])
    mark_lanes = _lanes((m[0] for m in marks), 150)
    out.append('<g class="marks">')
    for (px, kind, label, colour), lane in zip(marks, mark_lanes, strict=True):
        dash = "6 3" if kind == "signup" else "2 3"
        ty = plot_t - 8 - 13 * (lane % 4)
        # Near the right edge the label reads leftwards, so it stays inside the picture.
        anchor = ("end", px - 3) if px > plot_r - len(label) * CHAR_W else ("start", px + 3)
        out.append(
            f'<g class="mark mark-{kind}">'
            f'<line x1="{px:.1f}" y1="{ty + 3}" x2="{px:.1f}" y2="{plot_b}" stroke="{colour}" '
            f'stroke-width="1.5" stroke-dasharray="{dash}"/>'
            f'<text x="{anchor[1]:.1f}" y="{ty}" text-anchor="{anchor[0]}" class="small" '
            f'style="fill:{colour}">{text(label)}</text></g>'
        )
    out.append("</g>")
    # Legend.
    ly = TOP + PLOT_H + TICK_AREA + 12
    items: list[str] = []
    lx = plot_l
    for assignment, colour in COLOURS.items():
        items.append(
            f'<rect x="{lx}" y="{ly}" width="16" height="11" fill="{colour}" stroke="#1d1d1d"/>'
            f'<text x="{lx + 21}" y="{ly + 10}">{LABELS[assignment]}</text>'
        )
        lx += 36 + int(len(LABELS[assignment]) * CHAR_W)
    items.append(
        f'<rect x="{lx}" y="{ly}" width="16" height="11" fill="#8d8d8d" fill-opacity="0.5" '
        'stroke="#1d1d1d" stroke-dasharray="4 3"/>'
        f'<rect x="{lx}" y="{ly}" width="16" height="11" fill="url(#hatch)"/>'
        f'<text x="{lx + 21}" y="{ly + 10}">superseded belief</text>'
    )
    ly2 = ly + 24
    items.append(
        f'<circle cx="{plot_l + 6}" cy="{ly2 + 5}" r="3.2" fill="#111"/>'
        f'<text x="{plot_l + 21}" y="{ly2 + 9}">event (tick: valid time; dot: record time)</text>'
        f'<line x1="{plot_l + 300}" y1="{ly2}" x2="{plot_l + 300}" y2="{ly2 + 12}" stroke="#111" '
        'stroke-width="1.5" stroke-dasharray="6 3"/>'
        f'<text x="{plot_l + 307}" y="{ly2 + 9}">sign-up</text>'
        f'<line x1="{plot_l + 380}" y1="{ly2}" x2="{plot_l + 380}" y2="{ly2 + 12}" '
        'stroke="#7a5a00" stroke-width="1.5" stroke-dasharray="2 3"/>'
        f'<text x="{plot_l + 387}" y="{ly2 + 9}">terms version binds</text>'
        f'<text x="{plot_l + 530}" y="{ly2 + 9}">band edge at the right or top: still open</text>'
    )
    out.append(f'<g class="legend">{"".join(items)}</g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(data: TimelineData, *, now: datetime | None = None) -> str:
    """A page with the picture and the rows and events it draws, as a table."""
    uid = text(data.user_id)
    rows = "".join(
        f'<tr class="{"superseded" if r.superseded_at else "current"}">'
        f"<td>{_fmt(r.entry.valid_from)}</td><td>{_fmt(r.entry.valid_to)}</td>"
        f"<td>{text(r.entry.assignment)}</td><td>{text(r.entry.policy)}</td>"
        f"<td>{text(r.entry.rule)}</td><td>{text(r.entry.reason)}</td>"
        f"<td>{_fmt(r.recorded_at)}</td><td>{format_instant(r.superseded_at) or '—'}</td></tr>"
        for r in data.rows
    )
    events = "".join(
        f"<tr><td>{_fmt(e.occurred_at)}</td><td>{_fmt(e.recorded_at)}</td>"
        f"<td>{text(e.type)}</td><td>{text(e.detail or '')}</td>"
        f"<td><code>{text(e.event_id)}</code></td></tr>"
        for e in data.events
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        # The page fetches nothing: a browser that honours this refuses even a stray fetch.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # An empty icon: otherwise the browser asks the server for /favicon.ico.
        '<link rel="icon" href="data:,">'
        f"<title>Timeline of {uid} · jurisdiction ledger</title>"
        "<style>"
        "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;"
        "margin:24px;color:#222;max-width:1040px}"
        "svg{max-width:100%;height:auto;border:1px solid #ddd}"
        "table{border-collapse:collapse;font-size:13px;margin:8px 0 24px}"
        "th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}"
        "tr.superseded td{color:#777;text-decoration:line-through}"
        "h1{font-size:20px}h2{font-size:16px;margin-top:28px}"
        "</style></head><body>"
        f"<h1>Jurisdiction timeline of <code>{uid}</code></h1>"
        "<p>Valid time across, record time up: each band is one history row, held in the "
        "world from its left to its right edge and believed by the ledger from its bottom "
        "to its top edge. A hatched band is a belief a later-arriving event superseded.</p>"
        f"{render_svg(data, now=now)}"
        "<h2>History (every row, superseded ones struck through)</h2>"
        "<table><thead><tr><th>valid from</th><th>valid to</th><th>assignment</th>"
        "<th>policy</th><th>rule</th><th>reason</th><th>recorded at</th>"
        f"<th>superseded at</th></tr></thead><tbody>{rows}</tbody></table>"
        "<h2>Events</h2>"
        "<table><thead><tr><th>occurred at</th><th>recorded at</th><th>type</th>"
        f"<th>detail</th><th>event id</th></tr></thead><tbody>{events}</tbody></table>"
        "</body></html>\n"
    )
