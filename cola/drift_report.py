"""The drift monitor's HTML report: one self-contained file (inline SVG charts, no scripts, no network)."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 460, 220, 36
REFERENCE_COLOUR, LIVE_COLOUR = "#4c78a8", "#f58518"
TITLES = {
    "char_length": "Input length (characters)",
    "token_length": "Input length (tokens)",
    "confidence": "Model confidence",
    "token_density": "Tokens per character",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }
.status { padding: 10px 14px; border-radius: 6px; color: white; font-weight: bold; display: inline-block; }
.ok { background: #2ca02c; } .drift { background: #d62728; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }
figcaption { font-size: 14px; font-weight: 600; margin-bottom: 4px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 14px; }
td, th { border: 1px solid #ddd; padding: 4px 10px; text-align: left; }
tr.alert td { background: #fde0e0; } tr.pass td { background: #e8f5e9; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
svg text { font-size: 11px; fill: #444; }
"""


def _scale(value: float, lo: float, hi: float, out_lo: float, out_hi: float) -> float:
    return out_lo + (value - lo) / (hi - lo or 1) * (out_hi - out_lo)


def _axes(y_max: float, x_labels: list[tuple[float, str]]) -> list[str]:
    bottom, right = HEIGHT - PAD, WIDTH - 8
    parts = [
        f'<line x1="{PAD}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>',
        f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{bottom}" stroke="#888"/>',
        f'<text x="4" y="14">{y_max:.2f}</text>',
        f'<text x="4" y="{bottom}">0</text>',
    ]
    parts += [
        f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="{"end" if x > right - 40 else "middle"}">'
        f"{escape(label)}</text>"
        for x, label in x_labels
    ]
    return parts


def histogram_svg(feature: str, hist: dict) -> str:
    """Reference and live shares per bin, side by side."""
    edges, ref, live = hist["edges"], hist["reference"], hist["live"]
    y_max = max(max(ref), max(live), 1e-9)
    left, right, bottom = PAD, WIDTH - 8, HEIGHT - PAD
    slot = (right - left) / len(ref)
    parts = []
    for i, (r, c) in enumerate(zip(ref, live, strict=True)):
        for offset, share, colour, side in ((0.1, r, REFERENCE_COLOUR, "reference"), (0.5, c, LIVE_COLOUR, "live")):
            h = _scale(share, 0, y_max, 0, bottom - 8)
            parts.append(
                f'<rect class="bar {side}" x="{left + slot * (i + offset):.1f}" y="{bottom - h:.1f}" '
                f'width="{slot * 0.4:.1f}" height="{h:.1f}" fill="{colour}"><title>{side} '
                f"{edges[i]:.3g}–{edges[i + 1]:.3g}: {share:.1%}</title></rect>"
            )
    ticks = [(left + slot * i, f"{edges[i]:.4g}") for i in range(0, len(edges), max(len(edges) // 5, 1))]
    return _svg(feature, _axes(y_max, ticks) + parts)


def timeline_svg(points: list[dict], reference_share: float, training_share: float) -> str:
    """Acceptable share of predictions per time slice, with the reference levels as dashed lines."""
    left, right, bottom = PAD, WIDTH - 8, HEIGHT - PAD
    xs = [_scale(i, 0, max(len(points) - 1, 1), left + 6, right - 6) for i in range(len(points))]
    ys = [_scale(p["acceptable_share"], 0, 1, bottom, 8) for p in points]
    parts = _axes(1.0, [(xs[0], points[0]["start"][11:19]), (xs[-1], points[-1]["start"][11:19])])
    for share, colour, name in (
        (reference_share, REFERENCE_COLOUR, "held-out reference"),
        (training_share, "#999", "training labels"),
    ):
        if share == share:  # not NaN
            y = _scale(share, 0, 1, bottom, 8)
            parts.append(
                f'<line class="reference-level" x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
                f'stroke="{colour}" stroke-dasharray="5,4"><title>{name}: {share:.1%}</title></line>'
            )
    parts.append(
        f'<polyline class="live-line" fill="none" stroke="{LIVE_COLOUR}" stroke-width="2" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        + '"/>'
    )
    parts += [
        f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{LIVE_COLOUR}"><title>{p["start"]}: '
        f"{p['acceptable_share']:.1%} of {p['n']}</title></circle>"
        for x, y, p in zip(xs, ys, points, strict=True)
    ]
    return _svg("label_ratio", parts)


def _svg(name: str, parts: list[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{name}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">' + "".join(parts) + "</svg>"
    )


def render_report(meta: dict, figures: dict, checks: list, histograms: dict, timeline: list[dict]) -> str:
    alerts = [c for c in checks if c.alert]
    status = (
        f'<div class="status drift">DRIFT: {len(alerts)} alert(s)</div>'
        if alerts
        else '<div class="status ok">No drift past the thresholds</div>'
    )
    rows = "".join(
        f'<tr class="{"alert" if c.alert else "pass"}"><td>{"ALERT" if c.alert else "ok"}</td><td>{c.feature}</td>'
        f"<td>{c.statistic}</td><td>{c.value:.4f}</td><td>{c.threshold}</td></tr>"
        for c in checks
    )
    charts = "".join(
        f"<figure><figcaption>{TITLES[f]} — PSI {figures[f]['psi']:.3f}, KS {figures[f]['ks']:.3f}</figcaption>"
        f"{histogram_svg(f, h)}</figure>"
        for f, h in histograms.items()
    )
    label = figures.get("predicted_label", {})
    timeline_html = (
        f"<figure><figcaption>Predicted acceptable share over time (live vs reference)</figcaption>"
        f"{timeline_svg(timeline, label.get('reference_acceptable', float('nan')), meta['training_acceptable'])}"
        f"</figure>"
        if timeline
        else ""
    )
    facts = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in meta.items())
    legend = (
        f'<p class="legend"><span style="background:{REFERENCE_COLOUR}"></span>reference'
        f'<span style="background:{LIVE_COLOUR}"></span>live</p>'
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>CoLA drift report</title>'
        f"<style>{STYLE}</style></head><body><h1>CoLA prediction drift report</h1>{status}"
        f"<h2>Alerts</h2><table><tr><th>status</th><th>feature</th><th>statistic</th><th>value</th>"
        f"<th>threshold</th></tr>{rows}</table>"
        f'<h2>Reference vs live</h2>{legend}<div class="charts">{charts}{timeline_html}</div>'
        f"<h2>Run</h2><table>{facts}</table></body></html>"
    )
