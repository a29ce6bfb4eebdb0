"""scripts/pr_charts.py: its Mermaid blocks render with the real Mermaid CLI and show the series they were given,
whatever the names; numbers it cannot draw are refused before they reach the comment."""

from __future__ import annotations

import math
import re

import pytest

from scripts import pr_charts as charts
from tests.aws.mermaid import mmdc, render_markdown

HOSTILE = 'v"] \n```%%{init: {"theme": "dark"}}%% --> ;x[<script>' + "`" * 3


def mermaid_source(block: str) -> str:
    """The diagram inside a ```mermaid fence."""
    return block.split("```mermaid\n", 1)[1].split("\n```", 1)[0]


def test_a_chart_renders_with_its_series(tmp_path):
    block = charts.xychart(
        "Validation MCC per epoch",
        "epoch",
        [1, 2, 3],
        "mcc",
        [
            charts.Series("origin/main", [0.03, 0.28, 0.31], charts.BASE_COLOUR),
            charts.Series("this PR", [0.22, 0.29, 0.33], charts.NEW_COLOUR),
        ],
    )
    (drawn,) = render_markdown(block, tmp_path)
    assert drawn.title == "Validation MCC per epoch"
    assert drawn.legend == ["origin/main", "this PR"]
    assert drawn.plots == [("line", charts.BASE_COLOUR, 3), ("line", charts.NEW_COLOUR, 3)]
    assert "line origin/main: grey · line this PR: blue" in block  # the text legend for older renderers


def test_bars_start_at_zero_and_a_line_overlays_them(tmp_path):
    block = charts.xychart(
        "Test MCC per exported variant",
        "variant",
        ["fp32", "int8_static (served)"],
        "MCC",
        [
            charts.Series("this PR", [0.29, 0.287], charts.NEW_COLOUR, "bar"),
            charts.Series("main", [0.297, 0.309], charts.BASE_COLOUR),
        ],
        horizontal=True,
    )
    assert "xychart-beta horizontal\n" in block
    assert re.search(r'y-axis "MCC" 0 --> ', block)
    (drawn,) = render_markdown(block, tmp_path)
    assert drawn.plots == [("bar", charts.NEW_COLOUR, 2), ("line", charts.BASE_COLOUR, 2)]
    assert drawn.legend == ["this PR", "main"]


def test_hostile_names_cannot_break_the_chart_or_the_comment(tmp_path):
    block = charts.xychart(HOSTILE, HOSTILE, [HOSTILE, "b"], HOSTILE, [charts.Series(HOSTILE, [1, 2], "#1f77b4")])
    source = mermaid_source(block)
    assert "```" not in source and "%%" not in source  # the fence stays closed, no Mermaid directive slips in
    (drawn,) = render_markdown(block, tmp_path / "safe")
    assert drawn.legend == [charts.label(HOSTILE, charts.MAX_SERIES)] and drawn.plots == [("line", "#1f77b4", 2)]
    assert drawn.title == charts.label(HOSTILE)

    # the same chart with the name as it came breaks: what label() prevents
    raw = source.replace(f'line "{charts.label(HOSTILE, charts.MAX_SERIES)}"', f'line "{HOSTILE}"')
    assert raw != source
    (tmp_path / "raw.mmd").write_text(raw)
    result = mmdc(tmp_path / "raw.mmd", tmp_path / "raw.svg")
    assert result.returncode != 0 and "Parse error" in result.stderr, result.stderr[-500:]


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.3", True])
def test_numbers_it_cannot_draw_are_refused(bad):
    with pytest.raises(charts.ChartError, match="not a finite number"):
        charts.xychart("t", "x", [1, 2], "y", [charts.Series("s", [0.1, bad], "#000000")])


def test_series_of_different_lengths_are_cut_to_the_common_length_with_a_note():
    series, length, note = charts.pair_series("main", [0.1, 0.2, 0.3, 0.4], "this PR", [0.2, 0.3])
    assert length == 2 and [s.values for s in series] == [[0.1, 0.2], [0.2, 0.3]]
    assert note == "main has 4 points, this PR 2: the first 2 shown."
    with pytest.raises(charts.ChartError, match="has 3 values for 2"):
        charts.xychart("t", "x", [1, 2], "y", [charts.Series("s", [1, 2, 3], "#000000")])
    series, length, note = charts.pair_series("main", None, "this PR", [0.2, 0.3])
    assert [s.name for s in series] == ["this PR"] and length == 2 and note == ""
