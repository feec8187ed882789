"""The card as one self-contained HTML page: figures embedded as base64 PNG, inline CSS, no scripts,
no external assets (it opens offline, from a USB stick or an e-mail attachment).

Figures are drawn with matplotlib's object API (:class:`matplotlib.figure.Figure`, no pyplot
state, no display needed). The page is laid out to fit any width: images scale down, wide
tables scroll inside their own box, long hashes wrap.

Example:
    >>> page = render_html({"title": "demo", "headline": {"clean accuracy": "0.9"}, "sections": []})
    >>> page.startswith("<!DOCTYPE html>") and "http" not in page.split("<body>")[1]
    True
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

__all__ = ["band_figure", "eps_label", "figure_png", "reliability_figure", "robustness_figure", "sensitivity_figure", "render_html", "fmt_interval"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;padding:1em;max-width:60em;
color:#1d1d1f;line-height:1.45;overflow-wrap:anywhere}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
.tbl{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f4f4f6}
code{font-size:.85em;word-break:break-all}.flag{color:#b00020;font-weight:bold}.ok{color:#1b5e20}
.note{color:#555;font-size:.9em}.headline td:first-child{font-weight:bold}
"""


def eps_label(e: float) -> str:
    """An L-inf radius in ``[0, 1]`` units as ``"<e x 255>/255"``, e.g. ``"2/255"``."""
    return f"{e * 255:g}/255"


def fmt_interval(entry: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``"0.812 [0.701, 0.894] (n=64)"`` from a card value entry (``value/lo/hi/n``); ``"n/a"`` when missing."""
    if not entry or entry.get("value") is None:
        return "n/a"
    v, lo, hi = entry.get("value"), entry.get("lo"), entry.get("hi")
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else ""
    n = f" (n={entry['n']})" if "n" in entry else ""
    return f"{v:.{digits}f}{ci}{n}"


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (100 dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def band_figure(series: Mapping[str, Sequence[tuple[float, Mapping[str, Any]]]], *, xlabel: str, ylabel: str,
                ylim: tuple[float, float] | None = None, title: str = "") -> Figure:  # fmt: skip
    """One line per series ``{name: [(x, {"value", "lo", "hi"}), ...]}`` with its 95 % band (when every bound is there)."""
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.add_subplot(111)
    for name, pts in series.items():
        xs = [p for p, _ in pts]
        (line,) = ax.plot(xs, [e["value"] for _, e in pts], marker="o", ms=4, label=name)
        if all(e["lo"] is not None and e["hi"] is not None for _, e in pts):
            ax.fill_between(xs, [e["lo"] for _, e in pts], [e["hi"] for _, e in pts], color=line.get_color(), alpha=0.15)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7)
    return fig


def reliability_figure(rel: Mapping[str, Sequence[Any]]) -> Figure:
    """Reliability diagram: accuracy vs confidence per bin (bar width = bin), bin counts underneath."""
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot(111)
    lo, hi = rel["bin_lo"], rel["bin_hi"]
    for a, b, acc, conf, c in zip(lo, hi, rel["accuracy"], rel["confidence"], rel["count"]):
        if c and acc is not None:
            ax.bar(a, acc, width=b - a, align="edge", color="#4c72b0", edgecolor="k", alpha=0.8)
            ax.bar(a, (conf or 0) - acc, bottom=acc, width=b - a, align="edge", color="#dd8452", alpha=0.35)
            ax.text((a + b) / 2, 0.02, str(c), ha="center", fontsize=7)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-label confidence", ylabel="accuracy",
           title="Reliability (bar: accuracy; shaded: gap; count per bin)")  # fmt: skip
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def robustness_figure(adv: Mapping[str, Any], autoattack: Mapping[str, Any] | None) -> Figure:
    """Robust accuracy vs eps (x 255) per attack, worst case and AutoAttack, with 95 % bands."""
    fig = Figure(figsize=(5.6, 4.0))
    ax = fig.add_subplot(111)
    rows = adv["rows"]
    eps = [r["eps"] * 255 for r in rows]
    series = {name: [r["attacks"][name] for r in rows] for name in rows[0]["attacks"]} if rows else {}
    series["worst case"] = [r["worst_case"] for r in rows]
    if autoattack and not autoattack.get("skipped") and autoattack.get("rows"):
        series[f"AutoAttack ({autoattack['version']})"] = [r["accuracy"] for r in autoattack["rows"]]
    for name, vals in series.items():
        xs = eps if not name.startswith("AutoAttack") else [r["eps"] * 255 for r in autoattack["rows"]]  # type: ignore[index]
        v = [e["value"] for e in vals]
        ls = "-" if name != "worst case" else "--"
        (line,) = ax.plot(xs, v, ls, marker="o", ms=4, label=name)
        if all(e["lo"] is not None for e in vals):
            ax.fill_between(xs, [e["lo"] for e in vals], [e["hi"] for e in vals], color=line.get_color(), alpha=0.15)
    if rows:
        ax.axhline(rows[0]["clean"]["value"], color="grey", lw=0.8, ls=":", label="clean")
    ax.set(xlabel="eps (L-inf, x 1/255 of the [0, 1] input range)", ylabel="robust accuracy", ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)
    return fig


def sensitivity_figure(families: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """Accuracy and flip rate vs severity, one panel per family, with 95 % bands."""
    names = list(families)
    cols = min(3, max(1, len(names)))
    nrows = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(3.4 * cols, 2.8 * nrows))
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, k + 1)
        rows = families[name]
        sev = [r["severity"] for r in rows]
        for metric, color in (("accuracy", "#4c72b0"), ("flip_rate", "#c44e52")):
            v = [r.get(metric) for r in rows]
            if all(x is None for x in v):
                continue
            ax.plot(sev, [float("nan") if x is None else x for x in v], marker="o", ms=3, color=color, label=metric)
            lo = [r.get(f"{metric}_lo") for r in rows]
            hi = [r.get(f"{metric}_hi") for r in rows]
            if all(x is not None for x in lo + hi):
                ax.fill_between(sev, lo, hi, color=color, alpha=0.15)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("severity", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)  # fmt: skip
    return f'<div class="tbl"><table><tr>{head}</tr>{body}</table></div>'


class _Raw(str):
    """HTML that a table cell inserts as is (already escaped)."""


def render_html(page: Mapping[str, Any]) -> str:
    """The HTML page from ``{"title", "headline": {label: text}, "sections": [{"title", "html"?, "text"?,
    "table"?: (header, rows), "figure"?: png bytes, "caption"?}]}``; every text is escaped."""
    parts = [f"<h1>{html.escape(page['title'])}</h1>"]
    if page.get("subtitle"):
        parts.append(f'<p class="note">{html.escape(page["subtitle"])}</p>')
    parts.append('<h2>Headline</h2><div class="tbl"><table class="headline">' + "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in page["headline"].items())
        + "</table></div>")  # fmt: skip
    for sec in page["sections"]:
        parts.append(f"<h2>{html.escape(sec['title'])}</h2>")
        for para in sec.get("text", ()):
            cls = ' class="flag"' if para.startswith("FLAG") or para.startswith("SKIPPED") else ""
            parts.append(f"<p{cls}>{html.escape(para)}</p>")
        if sec.get("figure") is not None:
            b64 = base64.b64encode(sec["figure"]).decode("ascii")
            alt = html.escape(sec.get("caption", sec["title"]))
            parts.append(f'<img alt="{alt}" src="data:image/png;base64,{b64}">')
        if sec.get("table"):
            parts.append(_table(*sec["table"]))
        for note in sec.get("notes", ()):
            parts.append(f'<p class="note">{html.escape(note)}</p>')
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(page['title'])}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")  # fmt: skip
