"""The bitemporal timeline picture of one user, drawn server-side as SVG (and an HTML page
around it): valid time across, record time up.

Each history row is a band over [valid_from, valid_to) in valid time, standing from its
`recorded_at` to its `superseded_at` in record time, so what the ledger believes now is the
top layer and a belief that a late event corrected sits below the one that replaced it.
Bands are coloured by rulebook and labelled with policy and rule; the events are ticks on
the valid-time axis (and dots at their record time); the sign-up, the moments a terms
version began to bind and now are vertical marks.

Valid time is drawn to scale. Record time is drawn **in order**: each distinct record time
in the picture is one step up, labelled with the real time. On a real store the record
times of one user can lie minutes apart after years of nothing (a replay) or years apart
with minutes between corrections (a live log); to scale, a corrected belief would be a
sliver. In order, every belief the ledger held has at least one step of height.

Labels never overlap: their widths are estimated from the font size (on the wide side),
and labels that would collide go to lanes of their own.

Self-contained: no script, no font, no image or style sheet is fetched. Every text that
came from input (user ids, reasons, policy names) is escaped for XML and has its control
characters spelled out, so a hostile id can neither inject markup nor break the document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from ledger.domain.projection import HistoryRow
from ledger.domain.time import format_instant
from ledger.queries.timeline import TimelineData
from ledger.render.label_lanes import Lanes, dodge, text_width
from ledger.render.text import escape_control
from ledger.render.timeline_axes import (
    RecordAxis,
    _padded,
    _Scale,
    _tick_label,
    knot_labels,
    ticks,
)

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
NOW_COLOUR = "#0a7d55"

WIDTH = 1000
MIN_LEFT, RIGHT = 150, 40
TITLE_H = 40  # the title line, above the lanes of mark labels
LANE_H = 14  # one line of 10px labels
MIN_BAND_W = 4.0
EVENT_ROWS = 6  # lanes for event labels below the plot, at most

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


# --- the picture ---------------------------------------------------------------------------


def _band_title(r: HistoryRow) -> str:
    e = r.entry
    state = f"superseded {_fmt(r.superseded_at)}" if r.superseded_at else "believed now"
    return (
        f"{e.assignment}: valid {_fmt(e.valid_from)} to {_fmt(e.valid_to)}; "
        f"policy {e.policy}, rule {e.rule}: {e.reason}; recorded {_fmt(r.recorded_at)}, {state}"
    )


def _fits(label: str, width: float) -> bool:
    return text_width(label, 11, bold=True) + 10 <= width


@dataclass
class _Mark:
    """A label above the plot with a vertical line down: a mark, or a band's callout."""

    x: float
    label: str
    kind: str  # signup, binding, now, callout
    colour: str
    down_to: float | None = None  # a callout's band top, relative to the plot's bottom edge
    lane: int = 0
    left: float = 0.0


def render_svg(data: TimelineData, *, now: datetime | None = None) -> str:
    """The picture as a standalone SVG document (UTF-8 text)."""
    now = now or datetime.now(UTC)
    rows = data.rows
    valid = [r.entry.valid_from for r in rows]
    valid += [r.entry.valid_to for r in rows if r.entry.valid_to is not None]
    valid += [e.occurred_at for e in data.events]
    if data.signup_at is not None:
        valid.append(data.signup_at)
    open_valid = any(r.entry.valid_to is None for r in rows)
    # An open band holds until now (and on): the axis reaches now to show where that is.
    if not valid or (open_valid and now > min(valid)):
        valid.append(now)

    y = RecordAxis.of(rows, data, now)
    labels_y = knot_labels(y.knots)
    top_label = "now, still believed" if now >= y.knots[-1] else "still believed"
    widest = max(text_width(s, 10) for s in [*labels_y, top_label])
    left = max(MIN_LEFT, 34 + widest + 8)
    plot_l, plot_r = left, WIDTH - RIGHT
    x = _Scale(*_padded(valid, open_valid), plot_l, plot_r)

    # Bands: where each is drawn, and where its label goes (inside if it fits). Heights
    # are known now; vertical positions are relative to the plot's bottom edge until the
    # lanes of labels above the plot are counted.
    y.place(0.0)
    bands = []
    marks: list[_Mark] = []
    for r in sorted(rows, key=lambda r: (r.superseded_at is None, r.recorded_at)):
        e = r.entry
        x0 = x(e.valid_from)
        x1 = x(e.valid_to) if e.valid_to else plot_r
        w = max(x1 - x0, MIN_BAND_W)
        y0 = y(r.recorded_at)
        y1 = y(r.superseded_at) if r.superseded_at else y.top
        h = max(y0 - y1, 3.0)
        label, where = f"{e.policy} · {e.rule}", "callout"
        if h >= 16 and _fits(label, w):
            where = "inside"
        elif h >= 16 and _fits(e.rule, w):
            label, where = e.rule, "inside"
        elif w >= 15 and text_width(e.rule, 11, bold=True) + 8 <= h:
            label, where = e.rule, "upright"
        else:
            label = e.rule
            marks.append(_Mark(x0 + w / 2, label, "callout", "#1d1d1d", down_to=y1))
        bands.append((r, x0, w, y0 - h, h, label, where))  # top relative to the bottom

    if data.signup_at is not None:
        marks.append(_Mark(x(data.signup_at), "sign-up", "signup", "#111"))
    for b in data.bindings:
        marks.append(_Mark(x(b.at), f"binds {b.policy}", "binding", "#7a5a00"))
    if plot_l <= x(now) <= plot_r:
        marks.append(_Mark(x(now), f"now {now:%Y-%m-%d}", "now", NOW_COLOUR))
    lanes = Lanes()
    for m in sorted(marks, key=lambda m: m.x):
        w = text_width(m.label, 10)
        # A label reads rightwards from its line, or leftwards: near the right edge, so it
        # stays inside the picture, and where it would cover another mark's line.
        sides = [lft for lft in (m.x + 3, m.x - 3 - w) if lft >= 4 and lft + w <= WIDTH - 6]
        others = [o.x for o in marks if o is not m]
        clear = [lft for lft in sides if not any(lft - 2 <= o <= lft + w + 2 for o in others)]
        m.left = (clear or sides or [m.x + 3])[0]
        m.lane = lanes.add(m.left, m.left + w, line=m.x)
    plot_t = TITLE_H + LANE_H * lanes.count + 10
    y.place(plot_t + y.height)
    plot_b = y.bottom

    # Event labels: one row under the axis if they fit, else round-robin over more rows.
    marks_ev = sorted(data.events, key=lambda e: (e.occurred_at, e.event_id))
    widths = [text_width(m.type, 10) for m in marks_ev]
    centres = [x(m.occurred_at) for m in marks_ev]
    event_rows: list[tuple[int, float]] = []  # (row, left) of each event label
    for n_rows in range(1, EVENT_ROWS + 1):
        placed: dict[int, tuple[int, float]] = {}
        for row in range(n_rows):
            idx = list(range(row, len(marks_ev), n_rows))
            lefts = dodge([centres[i] for i in idx], [widths[i] for i in idx], 8.0, WIDTH - 8)
            if idx and not lefts:
                break
            placed.update({i: (row, lft) for i, lft in zip(idx, lefts, strict=True)})
        else:
            event_rows = [placed[i] for i in range(len(marks_ev))]
            break
    n_event_rows = 1 + max((r for r, _ in event_rows), default=0)
    first_row_y = plot_b + 30
    dates_y = first_row_y + LANE_H * n_event_rows + 8
    axis_title_y = dates_y + 16
    legend, legend_bottom = _legend(plot_l, axis_title_y + 16)
    height = int(legend_bottom + 12)

    uid = text(data.user_id)
    superseded = sum(1 for r in rows if r.superseded_at)
    out: list[str] = [
        '<svg xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-labelledby="tl-title tl-desc" class="ledger-timeline" '
        f'data-user-id="{uid}" data-rows="{len(rows)}" data-events="{len(data.events)}">',
        f'<title id="tl-title">Jurisdiction timeline of {uid}</title>',
        f'<desc id="tl-desc">{len(rows)} history rows ({superseded} superseded) and '
        f"{len(data.events)} events: valid time across, record time up (in order, each "
        "record time one step).</desc>",
        "<defs>"
        '<pattern id="hatch" width="7" height="7" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="7" height="7" fill="#fff" fill-opacity="0"/>'
        '<line x1="0" y1="0" x2="0" y2="7" stroke="#fff" stroke-width="2.5" '
        'stroke-opacity="0.75"/></pattern>'
        f'<clipPath id="plot"><rect x="{plot_l:.1f}" y="{plot_t:.1f}" '
        f'width="{plot_r - plot_l:.1f}" height="{plot_b - plot_t:.1f}"/></clipPath>'
        "</defs>",
        "<style>"
        "text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;"
        "font-size:11px;fill:#222}"
        ".axis{stroke:#444;stroke-width:1}.grid{stroke:#e4e4e4;stroke-width:1}"
        ".band-label{fill:#fff;font-weight:600;pointer-events:none}"
        ".small{font-size:10px;fill:#555}.title{font-size:15px;font-weight:600}"
        ".halo{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}"
        "</style>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text class="title" x="{plot_l:.1f}" y="22">Jurisdiction timeline of {uid}</text>',
    ]

    # Grid and axes. Valid time: round dates, as many as their labels leave room for.
    tick_w = text_width("2026-12-04 18:00", 10) + 16
    xt, xdays = ticks(x.lo, x.hi, most=max(2, min(8, int((plot_r - plot_l) // tick_w))))
    out.append('<g class="axes">')
    for t in xt:
        px = x(t)
        out.append(
            f'<line class="grid" x1="{px:.1f}" y1="{plot_t:.1f}" x2="{px:.1f}" y2="{plot_b:.1f}"/>'
            f'<text class="small x-tick" x="{px:.1f}" y="{dates_y:.1f}" text-anchor="middle">'
            f"{_tick_label(t, xdays)}</text>"
        )
    # Record time: a line and a label at each knot, thinned out only when steps are tiny.
    last_label = y.top + 10.0  # the "still believed" label at the top
    for i in range(len(y.knots) - 1, -1, -1):
        py = y.knot_y(i)
        out.append(
            f'<line class="grid" x1="{plot_l:.1f}" y1="{py:.1f}" x2="{plot_r:.1f}" y2="{py:.1f}"/>'
        )
        if py - last_label >= 12:
            last_label = py + 3
            out.append(
                f'<text class="small y-tick" x="{plot_l - 6:.1f}" y="{py + 3:.1f}" '
                f'text-anchor="end" data-recorded-at="{_fmt(y.knots[i])}">{labels_y[i]}</text>'
            )
    out.append(
        f'<line class="axis" x1="{plot_l:.1f}" y1="{plot_b:.1f}" x2="{plot_r:.1f}" '
        f'y2="{plot_b:.1f}"/>'
        f'<line class="axis" x1="{plot_l:.1f}" y1="{plot_t:.1f}" x2="{plot_l:.1f}" '
        f'y2="{plot_b:.1f}"/>'
        f'<text x="{plot_r:.1f}" y="{axis_title_y:.1f}" text-anchor="end" class="small">'
        "valid time (when it held in the world), to scale →</text>"
        f'<text class="small" transform="translate(16 {plot_b:.1f}) rotate(-90)">'
        "record time (when the ledger believed it), in order →</text>"
        f'<text class="small" x="{plot_l - 6:.1f}" y="{plot_t + 10:.1f}" text-anchor="end" '
        f'style="fill:{NOW_COLOUR if top_label.startswith("now") else "#555"}">'
        f"{top_label} ↑</text>"
    )
    out.append("</g>")

    # Bands: superseded first, so the belief that replaced one is drawn over any edge.
    out.append('<g class="bands" clip-path="url(#plot)">')
    for r, x0, w, top_rel, h, label, where in bands:
        top = top_rel + plot_b
        e = r.entry
        is_superseded = r.superseded_at is not None
        colour = COLOURS.get(e.assignment, OTHER_COLOUR)
        cls = "band band-superseded" if is_superseded else "band band-current"
        dashed = ' stroke-dasharray="4 3"' if is_superseded else ""
        out.append(
            f'<g class="{cls}" data-assignment="{text(e.assignment)}" '
            f'data-policy="{text(e.policy)}" data-rule="{text(e.rule)}" '
            f'data-valid-from="{_fmt(e.valid_from)}" data-valid-to="{_fmt(e.valid_to)}" '
            f'data-recorded-at="{_fmt(r.recorded_at)}" '
            f'data-superseded-at="{format_instant(r.superseded_at) or ""}">'
            f"<title>{text(_band_title(r))}</title>"
            f'<rect x="{x0:.1f}" y="{top:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{colour}" fill-opacity="{0.5 if is_superseded else 0.92}" stroke="#1d1d1d" '
            f'stroke-width="1"{dashed}/>'
        )
        if is_superseded:
            out.append(
                f'<rect x="{x0:.1f}" y="{top:.1f}" width="{w:.1f}" height="{h:.1f}" '
                'fill="url(#hatch)"/>'
            )
        if not e.valid_to and w >= 24:  # open in valid time: it holds on
            out.append(
                f'<path d="M{x0 + w - 9:.1f},{top + h / 2 - 5:.1f} l7,5 l-7,5" fill="none" '
                'stroke="#fff" stroke-width="2"/>'
            )
        if where == "inside":
            # Mid-way up the band's top step: event dots sit on the steps' lines, never there.
            ty = top + min(h, y.step) / 2 + 4
            out.append(
                f'<text class="band-label" x="{x0 + 5:.1f}" y="{ty:.1f}">{text(label)}</text>'
            )
        elif where == "upright":
            cx, cy = x0 + w / 2 + 4, top + h / 2
            out.append(
                f'<text class="band-label" x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 {cx:.1f} {cy:.1f})">{text(label)}</text>'
            )
        out.append("</g>")
    out.append("</g>")

    # Marks through the plot (sign-up, bindings, now) and callouts of narrow bands, their
    # labels in lanes above it.
    out.append('<g class="marks">')
    for m in marks:
        ty = plot_t - 8 - LANE_H * m.lane
        w = text_width(m.label, 10)
        if m.kind == "callout":
            # The band's own top, in plot coordinates now that the plot is placed.
            down = m.down_to + plot_b if m.down_to is not None else plot_b
            line = (
                f'<line x1="{m.x:.1f}" y1="{ty + 3:.1f}" x2="{m.x:.1f}" y2="{down:.1f}" '
                f'stroke="{m.colour}" stroke-width="1"/>'
            )
        else:
            dash = {"signup": "6 3", "binding": "2 3", "now": "8 2 2 2"}[m.kind]
            line = (
                f'<line x1="{m.x:.1f}" y1="{ty + 3:.1f}" x2="{m.x:.1f}" y2="{plot_b:.1f}" '
                f'stroke="{m.colour}" stroke-width="1.5" stroke-dasharray="{dash}"/>'
            )
        out.append(
            f'<g class="mark mark-{m.kind}">{line}'
            f'<text x="{m.left:.1f}" y="{ty:.1f}" class="small halo" '
            f'style="fill:{m.colour}" textLength="{w:.1f}" lengthAdjust="spacing">'
            f"{text(m.label)}</text></g>"
        )
    out.append("</g>")

    # Events: a dot where valid time meets record time (a late event stands out above its
    # neighbours), and a tick with its type under the valid-time axis.
    out.append('<g class="events">')
    for i, mark in enumerate(marks_ev):
        px, py = centres[i], y(mark.recorded_at)
        tip = text(
            f"{mark.type} {mark.event_id}: occurred {_fmt(mark.occurred_at)}, recorded "
            f"{_fmt(mark.recorded_at)}" + (f"; {mark.detail}" if mark.detail else "")
        )
        label = ""
        if event_rows:
            row, lft = event_rows[i]
            ly = first_row_y + LANE_H * row
            mid = lft + widths[i] / 2
            label = (
                f'<line x1="{px:.1f}" y1="{plot_b + 8:.1f}" x2="{mid:.1f}" y2="{ly - 11:.1f}" '
                'stroke="#999" stroke-width="0.8"/>'
                f'<text class="small halo event-label" x="{lft:.1f}" y="{ly:.1f}" '
                f'textLength="{widths[i]:.1f}" lengthAdjust="spacing">{text(mark.type)}</text>'
            )
        out.append(
            f'<g class="event" data-type="{text(mark.type)}" data-event-id="{text(mark.event_id)}">'
            f"<title>{tip}</title>"
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.2" fill="#111" stroke="#fff" '
            'stroke-width="1"/>'
            f'<line x1="{px:.1f}" y1="{plot_b:.1f}" x2="{px:.1f}" y2="{plot_b + 8:.1f}" '
            f'stroke="#111" stroke-width="2"/>{label}</g>'
        )
    notes = []
    if marks_ev and not event_rows:
        notes.append(f"{len(marks_ev)} events: too many to label, each tick has its type")
    if data.events_total > len(data.events):
        notes.append(f"first {len(data.events)} of {data.events_total} events shown")
    if notes:
        out.append(
            f'<text class="small" x="{plot_l:.1f}" y="{first_row_y:.1f}">'
            f"{text('; '.join(notes))}</text>"
        )
    out.append("</g>")

    out.append(legend)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _legend(left: float, top: float) -> tuple[str, float]:
    """The legend in lines, each item as wide as its text; and where it ends."""
    items: list[tuple[str, str]] = []  # (swatch markup at x=0, label)
    for assignment, colour in COLOURS.items():
        items.append(
            (f'<rect x="0" y="0" width="16" height="11" fill="{colour}" stroke="#1d1d1d"/>',
             LABELS[assignment])
        )  # fmt: skip
    items += [
        (
            '<rect x="0" y="0" width="16" height="11" fill="#8d8d8d" fill-opacity="0.5" '
            'stroke="#1d1d1d" stroke-dasharray="4 3"/>'
            '<rect x="0" y="0" width="16" height="11" fill="url(#hatch)"/>',
            "superseded belief",
        ),
        ('<circle cx="8" cy="5.5" r="3.2" fill="#111"/>',
         "event (tick: valid time; dot: record time)"),
        ('<line x1="8" y1="0" x2="8" y2="12" stroke="#111" stroke-width="1.5" '
         'stroke-dasharray="6 3"/>', "sign-up"),
        ('<line x1="8" y1="0" x2="8" y2="12" stroke="#7a5a00" stroke-width="1.5" '
         'stroke-dasharray="2 3"/>', "terms version binds"),
        (f'<line x1="8" y1="0" x2="8" y2="12" stroke="{NOW_COLOUR}" stroke-width="1.5" '
         'stroke-dasharray="8 2 2 2"/>', "now"),
        ("", "band edge at the right or top: still open"),
    ]  # fmt: skip
    out, lx, ly = [], left, top
    for swatch, label in items:
        w = (21 if swatch else 0) + text_width(label, 11) + 18
        if lx + w > WIDTH - 8 and lx > left:
            lx, ly = left, ly + 22
        out.append(
            f'<g transform="translate({lx:.1f} {ly:.1f})">{swatch}'
            f'<text x="{21 if swatch else 0}" y="10">{text(label)}</text></g>'
        )
        lx += w
    return f'<g class="legend">{"".join(out)}</g>', ly + 14
