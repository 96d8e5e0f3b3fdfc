"""The timeline picture's legend and the self-contained HTML page around the SVG."""

from __future__ import annotations

from datetime import datetime

from ledger.domain.time import format_instant
from ledger.queries.timeline import TimelineData
from ledger.render.timeline import (
    _fmt,
    render_svg,
    text,
)


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
        "to its top edge. A hatched band is a belief a later-arriving event superseded. "
        "Valid time is to scale; record time is in order, each moment the ledger recorded "
        "something one step up, labelled with its time, so that every belief it held shows, "
        "however close in time the next one came.</p>"
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
