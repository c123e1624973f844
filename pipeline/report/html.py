"""The reconcile report as one self-contained HTML page: plain CSS, charts as inline SVG drawn here, no scripts.

Every figure comes from ``report_dict`` (the ``--json`` object) and carries a ``data-key`` naming where it sits in
that object (``totals.failed``, ``shards.3.credits``), so the page and the JSON cannot disagree unnoticed.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from html import escape
from typing import Any

from pipeline.report.reconcile import RunReport
from pipeline.report.text import report_dict, retry_command
from pipeline.states import LEDGER_STATES

MAX_BARS = 120  # throughput bars; longer runs are binned in wider intervals
LISTED = 50  # orphans, missing and invalid lines listed before "and N more"
_STATE_COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "rejected": "#6a1b9a", "deferred": "#ef6c00",
                  "orphan": "#795548", "missing": "#546e7a", "invalid": "#9e9d24"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #212121; margin: 24px auto;
       max-width: 1180px; padding: 0 16px; background: #fafafa; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.meta { color: #666; }
.verdict { padding: 10px 14px; border-radius: 4px; font-weight: 600; margin: 16px 0; }
.ok { background: #e8f5e9; color: #1b5e20; } .bad { background: #ffebee; color: #b71c1c; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 8px 14px; min-width: 92px; }
.card .n { font-size: 22px; font-weight: 600; } .card .l { color: #555; font-size: 12px; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; background: #f7f7f7; }
code, .where { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: 8px; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
.none { color: #777; font-style: italic; }
"""


def render_html(report: RunReport) -> str:
    """The whole page."""
    data = report_dict(report)
    title = f"Run {data['run_id']}" if data["run_id"] else "Reconcile report"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p class='meta'>Read from S3 at {escape(data['generated_at'])}: {len(data['shards'])} manifest(s).</p>",
        _verdict(data),
        _cards(data),
        "<h2>Shards</h2>", _shard_table(data),
        "<h2>Failed, by reason</h2>", _groups(data["failures"], "failures", "reason"),
        "<h2>Rejected by the API (422)</h2>", _groups(data["rejected"], "rejected", "message"),
        "<h2>Deferred (not started)</h2>", _groups(data["deferred"], "deferred", "reason"),
        "<h2>Orphans: output without a provenance record</h2>", _lines(data["orphans"], "orphans"),
        "<h2>Missing: no record at all</h2>", _lines(data["missing"], "missing"),
        "<h2>Invalid manifest lines (never enqueued)</h2>", _invalid(data["invalid"]),
        "<h2>Quality</h2>", _quality(data, report),
        "<h2>Throughput</h2>", _throughput(report),
        "<h2>Cost per shard</h2>", _cost(data),
    ]
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def _figure(value: Any, key: str, cls: str = "") -> str:
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.3f}".rstrip("0").rstrip(".")
    attr = f" class='{cls}'" if cls else ""
    return f"<span{attr} data-key='{escape(key)}'>{text}</span>"


def _verdict(data: dict[str, Any]) -> str:
    totals = data["totals"]
    if data["all_succeeded"]:
        return f"<div class='verdict ok'>Every line succeeded ({totals['succeeded']:,} jobs).</div>"
    left = totals["lines"] - totals["succeeded"]
    return (f"<div class='verdict bad'>{left:,} of {totals['lines']:,} lines did not succeed. Re-run the failed, "
            f"deferred, orphaned and missing ones with <code>{escape(retry_command(data))}</code></div>")


def _cards(data: dict[str, Any]) -> str:
    names = ["lines", *(o.value for o in LEDGER_STATES), "invalid", "credits"]
    cards = []
    for name in names:
        colour = _STATE_COLOURS.get(name, "#212121")
        cards.append(f"<div class='card'><div class='n' style='color:{colour}'>"
                     f"{_figure(data['totals'][name], f'totals.{name}')}</div><div class='l'>{name}</div></div>")
    return f"<div class='cards'>{''.join(cards)}</div>"


def _shard_table(data: dict[str, Any]) -> str:
    columns = ["lines", *(o.value for o in LEDGER_STATES), "invalid", "credits"]
    head = "<tr><th>shard</th>" + "".join(f"<th class='num'>{c}</th>" for c in columns) + "</tr>"
    rows = []
    for index, shard in enumerate(data["shards"]):
        cells = "".join(f"<td class='num'>{_figure(shard[c], f'shards.{index}.{c}')}</td>" for c in columns)
        rows.append(f"<tr><td class='where' title='{escape(shard['file'])}'>{escape(shard['name'])}</td>{cells}</tr>")
    totals = "".join(f"<td class='num'>{_figure(data['totals'][c], f'totals.{c}')}</td>" for c in columns)
    rows.append(f"<tr class='total'><td>total</td>{totals}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _groups(groups: list[dict[str, Any]], key: str, label: str) -> str:
    if not groups:
        return "<p class='none'>None.</p>"
    rows = []
    for index, group in enumerate(groups):
        examples = "<br>".join(
            f"<span class='where'>{escape(e['where'])}</span>"
            + ("" if label == "message" else f": {escape(str(e['message'] or ''))}")
            + (f" <span class='meta'>(request {escape(e['request_id'])})</span>" if e.get("request_id") else "")
            for e in group["examples"])
        classes = escape(", ".join(group["error_classes"]))
        rows.append(f"<tr><td>{escape(str(group[label]))}<div class='meta'>{classes}</div></td>"
                    f"<td class='num'>{_figure(group['count'], f'{key}.{index}.count')}</td><td>{examples}</td></tr>")
    return (f"<table><tr><th>{label}</th><th class='num'>jobs</th><th>examples (FILE:LINE)</th></tr>"
            f"{''.join(rows)}</table>")


def _lines(rows: list[dict[str, Any]], key: str) -> str:
    if not rows:
        return "<p class='none'>None.</p>"
    items = "".join(f"<tr><td class='where'>{escape(r['where'])}</td><td class='where'>{escape(r['output'])}</td>"
                    + (f"<td>{escape(r['state'])}</td>" if "state" in r else "") + "</tr>" for r in rows[:LISTED])
    more = f"<p class='meta'>... and {len(rows) - LISTED:,} more (the --json and --csv reports list them all).</p>"
    return (f"<p><span data-key='{key}.length'>{len(rows)}</span> job(s).</p>"
            f"<table>{items}</table>{more if len(rows) > LISTED else ''}")


def _invalid(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class='none'>None.</p>"
    items = "".join(f"<tr><td class='where'>{escape(r['where'])}</td><td>{escape(r['field'])}</td>"
                    f"<td>{escape(r['message'])}</td></tr>" for r in rows[:LISTED])
    more = f"<p class='meta'>... and {len(rows) - LISTED:,} more.</p>" if len(rows) > LISTED else ""
    return f"<table><tr><th>where</th><th>field</th><th>problem</th></tr>{items}</table>{more}"


def _quality(data: dict[str, Any], report: RunReport) -> str:
    quality = data["quality"]
    flags = "".join(f"<tr><td>{escape(flag)}</td><td class='num'>{_figure(count, f'quality.flags.{flag}')}</td></tr>"
                    for flag, count in quality["flags"].items())
    flag_table = (f"<table style='width:auto'><tr><th>flag</th><th class='num'>outputs</th></tr>{flags}</table>"
                  if flags else "<p class='none'>No output was flagged.</p>")
    charts = (_chart_figure("Duration drift (ms): output minus expected",
                            histogram_svg(report.measured("drift_ms"), unit="ms"))
              + _chart_figure("Loudness (LUFS, integrated)", histogram_svg(report.measured("lufs"), unit="LUFS")))
    return (f"<p><span data-key='quality.measured'>{quality['measured']}</span> output(s) measured.</p>"
            f"{flag_table}<div class='charts'>{charts}</div>")


def _throughput(report: RunReport) -> str:
    minutes = report.throughput()
    if not minutes:
        return "<p class='none'>No finish times recorded.</p>"
    first, last = minutes[0][0], minutes[-1][0]
    span = int((last - first).total_seconds() // 60) + 1
    width = max(1, math.ceil(span / MAX_BARS))
    bins = [0] * math.ceil(span / width)
    for minute, states in minutes:
        bins[int((minute - first).total_seconds() // 60) // width] += sum(states.values())
    labels = [(first + timedelta(minutes=i * width)).strftime("%H:%M") for i in range(len(bins))]
    caption = f"Jobs finished per {'minute' if width == 1 else f'{width} minutes'} (UTC, from {_day(first)})"
    return _chart_figure(caption, column_svg(list(zip(labels, bins, strict=False)), y_label="jobs", width=1100))


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _cost(data: dict[str, Any]) -> str:
    total = _figure(data["cost"]["credits"], "cost.credits")
    requests = _figure(data["cost"]["requests"], "cost.requests")
    bars = list(data["cost"]["by_shard"].items())
    return (f"<p>{total} credits over {requests} API request(s).</p>"
            + _chart_figure("Credits per shard", row_svg(bars, unit="credits")))


def _chart_figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>"


# --- charts

def histogram_svg(values: list[float], *, unit: str, bins: int = 20) -> str:
    """A histogram of ``values`` in at most ``bins`` equal-width bins."""
    if not values:
        return "<p class='none'>No measurements.</p>"
    low, high = min(values), max(values)
    count = 1 if high == low else min(bins, max(1, len(values)))
    step = (high - low) / count if high > low else 1.0
    heights = [0] * count
    for value in values:
        heights[min(count - 1, int((value - low) / step))] += 1
    labels = [f"{low + i * step:.4g}" for i in range(count)]
    return column_svg(list(zip(labels, heights, strict=False)), y_label="outputs", x_label=unit)


def column_svg(bars: list[tuple[str, float]], *, y_label: str, x_label: str = "", width: int = 540,
               height: int = 220) -> str:
    """Vertical bars with a y axis from zero to the largest value, and a few x labels."""
    left, right, top, bottom = 44, 10, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((value for _, value in bars), default=0) or 1
    slot = plot_w / max(len(bars), 1)
    parts = [f"<svg width='{width}' height='{height}' role='img'>",
             f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#999'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + plot_h}' stroke='#999'/>",
             f"<text x='{left - 4}' y='{top + 8}' text-anchor='end'>{_short(peak)}</text>",
             f"<text x='{left - 4}' y='{top + plot_h}' text-anchor='end'>0</text>",
             f"<text x='4' y='{top + plot_h / 2}' transform='rotate(-90 10 {top + plot_h / 2})'>"
             f"{escape(y_label)}</text>"]
    every = max(1, math.ceil(len(bars) / 8))  # about eight x labels, whatever the number of bars
    for index, (label, value) in enumerate(bars):
        bar_h = plot_h * value / peak
        x = left + index * slot
        parts.append(f"<rect x='{x + slot * 0.1:.1f}' y='{top + plot_h - bar_h:.1f}' width='{slot * 0.8:.1f}' "
                     f"height='{bar_h:.1f}' fill='#1e88e5'><title>{escape(label)}: {_short(value)}</title></rect>")
        if index % every == 0:
            parts.append(f"<text x='{x + slot / 2:.1f}' y='{top + plot_h + 14}' text-anchor='middle'>"
                         f"{escape(label)}</text>")
    if x_label:
        parts.append(f"<text x='{left + plot_w / 2}' y='{height - 4}' text-anchor='middle'>{escape(x_label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def row_svg(bars: list[tuple[str, float]], *, unit: str, width: int = 760) -> str:
    """Horizontal bars, one row each, labelled with the name and the value."""
    if not bars:
        return "<p class='none'>No shards.</p>"
    label_w, value_w, row_h = 220, 90, 18
    plot_w = width - label_w - value_w
    peak = max(value for _, value in bars) or 1
    parts = [f"<svg width='{width}' height='{row_h * len(bars) + 4}' role='img'>"]
    for index, (label, value) in enumerate(bars):
        y = index * row_h + 2
        bar_w = plot_w * value / peak
        parts.append(f"<text x='{label_w - 6}' y='{y + 13}' text-anchor='end'>{escape(_clip(label, 34))}</text>"
                     f"<rect x='{label_w}' y='{y + 2}' width='{bar_w:.1f}' height='{row_h - 5}' fill='#43a047'>"
                     f"<title>{escape(label)}: {_short(value)} {escape(unit)}</title></rect>"
                     f"<text x='{label_w + bar_w + 4:.1f}' y='{y + 13}'>{_short(value)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _short(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
