"""Docs cannot drift from the numbers they restate: each quote below is rendered from the committed file it comes
from (config, metrics, benchmark results) and must appear in the doc verbatim (whitespace and line breaks aside).

When a number changes (a new run, a config edit), this fails with the text the doc should now say: update the
doc. When a doc sentence is rewritten, update its row here. A quote is a format string over named values; each
value is (source file, dotted key), or a callable for numbers that are computed (the truth table's size)."""

import json
import re
from collections.abc import Callable

import pytest
import yaml

from cola.paths import ROOT
from tests import pipeline_rules

BENCH = "reports/benchmark/metrics.json"
VARIANTS = "reports/benchmark/variants.json"
EXPORT = "reports/export/metrics.json"
EXPORT_VARIANTS = "reports/export/variants.json"


def _row(label: str, variant: str) -> tuple:
    """A row of docs/export.md's committed-run table, from the benchmark's variants.json."""
    keys = {"p1": "bs1.p50_ms", "p32": "bs32.p50_ms", "s32": "bs32.sentences_per_s"}
    return (
        "docs/export.md",
        f"| {label} | {{p1:.2f}} ms | {{p32:.1f}} ms | {{s32:,.0f}} |",
        {name: (VARIANTS, f"variants.{variant}.{key}") for name, key in keys.items()},
    )


QUOTES: list[tuple[str, str, dict[str, tuple[str, str] | Callable[[], object]]]] = [
    ("docs/export.md", "`export.static.calibration_sentences` ({n:,}) **training** sentences",
     {"n": ("params.yaml", "export.static.calibration_sentences")}),
    ("docs/export.md", "classifier stay fp32 (hence {mb:.1f} MB)", {"mb": (EXPORT, "served.size_mb")}),
    ("docs/export.md", "static int8 scores test MCC {s:.3f} against fp32's {f:.3f}, a drop of {d:.3f} within "
     "`export.max_mcc_drop` ({gate}); label agreement with PyTorch is {a:.1f} %",
     {"s": (EXPORT_VARIANTS, "int8_static.mcc"), "f": (EXPORT_VARIANTS, "fp32.mcc"),
      "d": (EXPORT, "served.mcc_drop_vs_fp32"), "gate": ("params.yaml", "export.max_mcc_drop"),
      "a": (EXPORT, "served.agreement*100")}),
    _row("pytorch (eager)", "pytorch"),
    _row("ort_fp32", "ort_fp32"),
    _row("ort_int8 (dynamic, pre-tokenised)", "ort_int8"),
    _row("ort_int8_static (pre-tokenised, as exported)", "ort_int8_static"),
    ("docs/export.md", "| **bundle (served: int8 static)** | **{p1:.2f} ms** | **{p32:.1f} ms** | **{s32:,.0f}** |",
     {"p1": (VARIANTS, "variants.bundle.bs1.p50_ms"), "p32": (VARIANTS, "variants.bundle.bs32.p50_ms"),
      "s32": (VARIANTS, "variants.bundle.bs32.sentences_per_s")}),
    _row("bundle_bucketed", "bundle_bucketed"),
    ("docs/export.md", "| served vs pytorch | **{b1:.1f}×** (goal ≥ 8) | **{b32:.1f}×** (goal ≥ 5) |",
     {"b1": (BENCH, "headline.bs1.speedup_vs_pytorch"), "b32": (BENCH, "headline.bs32.speedup_vs_pytorch")}),
    ("docs/export.md", "Cold start of that run: bundle {b:.2f} s, torch + transformers {t:.2f} s.",
     {"b": (VARIANTS, "cold_start_s.bundle"), "t": (VARIANTS, "cold_start_s.torch_transformers")}),
    ("docs/export.md", "ORT's int8 matmul alone reaches {g1:.0f} GOPS at batch 1 (M = 11 rows) and {g32:.0f} GOPS "
     "at batch 32 (M = 346), i.e. {p1:,.0f} and {p32:,.0f} sentences/s for the {macs:.1f} M int8 MACs of a "
     "{tok:.1f}-token sentence (fp32 attention scores: {att:.2f} M MACs",
     {"g1": (BENCH, "peak.bs1.int8_gops"), "g32": (BENCH, "peak.bs32.int8_gops"),
      "p1": (BENCH, "peak.bs1.peak_sentences_per_s"), "p32": (BENCH, "peak.bs32.peak_sentences_per_s"),
      "macs": (BENCH, "peak.int8_macs_per_sentence/1e6"), "tok": (BENCH, "peak.mean_tokens"),
      "att": (BENCH, "peak.fp32_attention_macs_per_sentence/1e6")}),
    ("docs/export.md", "The served path reaches **{f1:.0f} %** of that bound at batch 1 and **{f32:.0f} %** at "
     "batch 32", {"f1": (BENCH, "peak.bs1.served_fraction_of_peak*100"),
                  "f32": (BENCH, "peak.bs32.served_fraction_of_peak*100")}),
    ("docs/export.md", "({g32:.0f} GOPS = {macs:.0f} G int8 MACs/s on one core.",
     {"g32": (BENCH, "peak.bs32.int8_gops"), "macs": (BENCH, "peak.bs32.int8_gops/2")}),
    ("README.md", "batch 1: **{b1:.1f}×** faster ({s1:.2f} vs {p1:.2f} ms p50); batch 32: **{b32:.1f}×** ({s32:.1f} vs "
     "{p32:.0f} ms)",
     {"b1": (BENCH, "headline.bs1.speedup_vs_pytorch"), "b32": (BENCH, "headline.bs32.speedup_vs_pytorch"),
      "s1": (VARIANTS, "variants.bundle.bs1.p50_ms"), "p1": (VARIANTS, "variants.pytorch.bs1.p50_ms"),
      "s32": (VARIANTS, "variants.bundle.bs32.p50_ms"), "p32": (VARIANTS, "variants.pytorch.bs32.p50_ms")}),
    ("README.md", "batch 1: {b1:.1f}×; batch 32: {b32:.1f}× |", {"b1": (BENCH, "headline.bs1.speedup_vs_pad128"),
                                                              "b32": (BENCH, "headline.bs32.speedup_vs_pad128")}),
    ("README.md", "PyTorch {p:,.0f}/s, served {s:,.0f}/s (length-aware model calls), served + sorting the whole set "
     "{b:,.0f}/s", {"p": (VARIANTS, "variants.pytorch.bs32.sentences_per_s"),
                    "s": (VARIANTS, "variants.bundle.bs32.sentences_per_s"),
                    "b": (VARIANTS, "variants.bundle_bucketed.bs32.sentences_per_s")}),
    ("README.md", "| {f1:.0f} % at batch 1, {f32:.0f} % at batch 32 |",
     {"f1": (BENCH, "peak.bs1.served_fraction_of_peak*100"), "f32": (BENCH, "peak.bs32.served_fraction_of_peak*100")}),
    ("README.md", "torch-free bundle {b:.2f} s, torch + transformers {t:.2f} s",
     {"b": (VARIANTS, "cold_start_s.bundle"), "t": (VARIANTS, "cold_start_s.torch_transformers")}),
    ("docs/monitoring.md", "(`export.served_variant`: {v} by default)",
     {"v": ("params.yaml", "export.served_variant")}),
    ("docs/pipeline.md", "truth-table test: {n} edits", {"n": lambda: len(list(pipeline_rules.truth_table(ROOT)))}),
]  # fmt: skip


def value(source: tuple[str, str] | Callable[[], object]):
    if callable(source):
        return source()
    path, key = source
    key, scale = re.fullmatch(r"([\w.]+)([*/][\d.e]+)?", key).groups()  # "a.b/1e6": in millions, "*100": in %
    text = (ROOT / path).read_text()
    node = yaml.safe_load(text) if path.endswith(".yaml") else json.loads(text)
    for part in key.split("."):
        node = node[part]
    if scale:
        node = node * float(scale[1:]) if scale[0] == "*" else node / float(scale[1:])
    return node


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize(("doc", "quote", "sources"), QUOTES, ids=[f"{d}:{q[:40]}" for d, q, _ in QUOTES])
def test_doc_quotes_the_committed_number(doc, quote, sources):
    expected = quote.format(**{name: value(source) for name, source in sources.items()})
    assert flat(expected) in flat((ROOT / doc).read_text()), f"{doc} should say: {expected}"


def test_a_quote_that_disagrees_with_its_file_fails():
    """The check itself can fail: a quote rendered from another number is not in the doc."""
    doc, quote, sources = QUOTES[0]
    wrong = quote.format(**{name: value(source) + 1 for name, source in sources.items()})
    assert flat(wrong) not in flat((ROOT / doc).read_text())
