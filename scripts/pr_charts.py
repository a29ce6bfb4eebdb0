"""Mermaid `xychart-beta` charts for the PR comment: GitHub renders them inline, so no image is hosted anywhere.

Every label is reduced to a safe character set and every number must be finite, so a variant or revision with an
odd name cannot end the chart (quotes, brackets, `%%` comments, backticks that would close the code fence).
Each chart also gets a plain-text legend under it: GitHub's Mermaid may be older than the one that draws legends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

BASE_COLOUR, NEW_COLOUR = "#9e9e9e", "#1f77b4"  # grey = base, blue = this PR
BASE_COLOUR_2, NEW_COLOUR_2 = "#ffbb78", "#ff7f0e"  # a second pair (PyTorch in the benchmark charts)
MAX_LABEL = 40
MAX_SERIES = 24  # Mermaid drops the whole legend when a name does not fit beside the chart


class ChartError(ValueError):
    pass


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float]
    colour: str
    kind: str = "line"  # or "bar"


def label(text: object, limit: int = MAX_LABEL) -> str:
    """Text Mermaid shows verbatim inside double quotes: letters, digits, spaces and . _ + - / ( ) # @ =."""
    cleaned = re.sub(r"[^\w .+\-/()#@=]", "_", str(text))
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    return (cleaned[: limit - 1] + "…" if len(cleaned) > limit else cleaned) or "_"


def num(value: float) -> str:
    """A finite number in plain decimal notation (Mermaid's grammar has no exponent)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ChartError(f"not a finite number: {value!r}")
    return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def xychart(
    title: str, x_title: str, categories: list, y_title: str, series: list[Series], horizontal: bool = False
) -> str:
    """A fenced ```mermaid block; all series must have one value per category. Horizontal: categories down the
    side, where long names do not collide."""
    if not categories or not series:
        raise ChartError(f"chart {title!r}: nothing to draw")
    for s in series:
        if len(s.values) != len(categories):
            raise ChartError(f"chart {title!r}: series {s.name!r} has {len(s.values)} values for {len(categories)}")
    values = [v for s in series for v in s.values]
    for value in values:
        num(value)  # refuses what cannot be drawn before it is compared
    low, high = min(values), max(values)
    if any(s.kind == "bar" for s in series):
        low = min(low, 0)  # bars start at 0 or they lie about ratios
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1
    low = low if low == 0 else max(low - pad, 0) if low > 0 else low - pad  # positive data: no negative axis
    palette = ", ".join(s.colour for s in series)
    lines = [
        "```mermaid",
        "---",
        "config:",
        "  xyChart:",
        "    showLegend: true",
        "  themeVariables:",
        "    xyChart:",
        f'      plotColorPalette: "{palette}"',
        "---",
        "xychart-beta horizontal" if horizontal else "xychart-beta",
        f'  title "{label(title)}"',
        f'  x-axis "{label(x_title)}" [{", ".join(f"{chr(34)}{label(c)}{chr(34)}" for c in categories)}]',
        f'  y-axis "{label(y_title)}" {num(round(low, 4))} --> {num(round(high + pad, 4))}',
    ]
    lines += [f'  {s.kind} "{label(s.name, MAX_SERIES)}" [{", ".join(num(v) for v in s.values)}]' for s in series]
    lines.append("```")
    legend = " · ".join(f"{s.kind} {label(s.name, MAX_SERIES)}: {colour_name(s.colour)}" for s in series)
    return "\n".join(lines) + f"\n\n<sub>{legend}</sub>"


def colour_name(colour: str) -> str:
    return {BASE_COLOUR: "grey", NEW_COLOUR: "blue", BASE_COLOUR_2: "light orange", NEW_COLOUR_2: "orange"}.get(
        colour, colour
    )


def pair_series(
    base_name: str, base: list[float] | None, new_name: str, new: list[float] | None, colours=(BASE_COLOUR, NEW_COLOUR)
) -> tuple[list[Series], int, str]:
    """Base and PR series cut to a common length (Mermaid draws NaN past a shorter series); a note if cut."""
    present = [(n, v, c) for n, v, c in ((base_name, base, colours[0]), (new_name, new, colours[1])) if v]
    if not present:
        return [], 0, ""
    length = min(len(v) for _, v, _ in present)
    note = ""
    if len({len(v) for _, v, _ in present}) > 1:
        names = [label(name, MAX_SERIES) for name in (base_name, new_name)]
        note = f"{names[0]} has {len(base or [])} points, {names[1]} {len(new or [])}: the first {length} shown."
    return [Series(n, v[:length], c) for n, v, c in present], length, note
