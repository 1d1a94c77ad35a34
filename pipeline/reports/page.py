"""The HTML page of `avvp report`: one self-contained file (inline CSS, figures embedded
as base64 data URIs, no external links) with where the features came from, the run's
summary, the notes of what was skipped, the eleven metrics of each split beside two
baselines, the training curves, the per-class scores and every figure with its caption.

`report.py` gathers what the page shows; here is only how it is written.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...model.metrics import METRIC_KEYS
from ...model.mmcse import MMCSE
from ..evaluate import RunEvaluation
from ..infer import LoadedRun
from .context import TRAINED, ClassScore, FeatureOrigin


@dataclass
class ReportFigure:
    """A PNG of the report with its caption."""

    name: str
    png: bytes
    caption: str  # plain text, escaped when the page is written
    section: str = "figures"  # where the page shows it: training, per-class or figures


@dataclass
class RunContext:
    """What the page shows besides the metrics and figures: see `context.py`."""

    origins: list[FeatureOrigin]
    warning: str  # "" when the features' origin limits nothing
    baselines: dict[str, dict[str, dict[str, float]]]  # split -> row -> eleven metrics
    per_class: list[ClassScore]
    per_class_split: str


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
  max-width: 72em; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em;
  border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; }
table.metrics td { text-align: right; font-variant-numeric: tabular-nums; }
table.metrics th[scope=row], table.summary th { text-align: left; background: #f4f4f4; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.92em; color: #444; max-width: 60em; }
.note { background: #fff6d8; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }
#provenance { border: 1px solid #bbb; background: #f4f7fb; padding: 0.5em 1em; }
#provenance.warning { border: 2px solid #c0392b; background: #fdecea; }
#provenance .headline { font-weight: 600; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""
_LEVELS = (("Segment", "Seg"), ("Event", "Event"))
_COLUMNS = (("A", "a"), ("V", "v"), ("AV", "av"), ("Type@AV", "type"), ("Event@AV", "event"))


def metrics_table_html(evaluation: RunEvaluation) -> str:
    """The eleven metrics of one split as an HTML table (each cell carries its key)."""
    metrics = evaluation.metrics
    if missing := [key for key in METRIC_KEYS if key not in metrics]:
        raise ValueError(f"metrics of {evaluation.split} lack {', '.join(missing)}")
    header = "".join(f"<th scope='col'>{name}</th>" for name, _ in _COLUMNS)
    lines = [
        f"<table class='metrics' id='metrics-{html.escape(evaluation.split)}'>",
        f"<caption>{html.escape(evaluation.split)} split: annotations "
        f"{html.escape(evaluation.annotations)}, filter {html.escape(evaluation.filter_rule)}"
        "</caption>",
        f"<tr><th></th>{header}<th scope='col'>Avg</th></tr>",
    ]
    for number, (level, prefix) in enumerate(_LEVELS):
        cells = "".join(_metric_cell(metrics, f"{prefix}-{suffix}") for _, suffix in _COLUMNS)
        average = _metric_cell(metrics, "Avg", " rowspan='2'") if number == 0 else ""
        lines.append(f"<tr><th scope='row'>{level}</th>{cells}{average}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def coverage_html(evaluation: RunEvaluation) -> str:
    """The line under a split's metrics table: how many of its videos were scored."""
    split = html.escape(evaluation.split)
    line = (
        f"<p class='coverage' id='coverage-{split}'>scored {evaluation.videos_scored} of "
        f"{evaluation.videos_in_split} videos of the {split} split</p>"
    )
    if evaluation.warning:
        line += f"\n<p class='note'>{html.escape(evaluation.warning)}</p>"
    return line


def _metric_cell(metrics: dict[str, float], key: str, extra: str = "") -> str:
    return f"<td data-metric='{key}'{extra}>{metrics[key]:.2f}</td>"


def provenance_html(origins: list[FeatureOrigin], warning: str) -> str:
    """The banner under the title: what made each feature table, as a warning when the
    features say nothing about the networks the tables are named after."""
    style = " class='warning'" if warning else ""
    headline = (
        f"Warning: {warning}"
        if warning
        else "Features: what made the tables this run was trained on."
    )
    items = "".join(f"<li>{html.escape(origin.text)}</li>" for origin in origins)
    return (
        f"<div id='provenance'{style}><p class='headline'>{html.escape(headline)}</p>"
        f"<ul>{items}</ul></div>"
    )


def baselines_table_html(baselines: dict[str, dict[str, dict[str, float]]]) -> str:
    """The trained run beside the weak-label baseline and the untrained network: one row
    per split and predictor, the eleven metrics as columns (each cell carries its key)."""
    header = "".join(f"<th scope='col'>{key}</th>" for key in METRIC_KEYS)
    lines = [
        "<table class='metrics' id='baselines'>",
        "<caption>The trained run and two baselines, on the same windows</caption>",
        f"<tr><th scope='col'>split</th><th scope='col'>predictor</th>{header}</tr>",
    ]
    for split, rows in baselines.items():
        for row, metrics in rows.items():
            cells = "".join(_metric_cell(metrics, key) for key in METRIC_KEYS)
            name = f"<b>{html.escape(row)}</b>" if row == TRAINED else html.escape(row)
            lines.append(
                f"<tr data-split='{html.escape(split)}' data-row='{html.escape(row)}'>"
                f"<th scope='row'>{html.escape(split)}</th><th scope='row'>{name}</th>"
                f"{cells}</tr>"
            )
    lines.append("</table>")
    return "\n".join(lines)


def per_class_table_html(scores: list[ClassScore], split: str) -> str:
    """One row per class: its pooled audio and visual segment F-scores and its true
    segments ("n/a" where a class has neither a true nor a predicted segment)."""
    lines = [
        "<table class='metrics' id='per-class'>",
        f"<caption>{html.escape(split)} split: segment F-score per class (percent)</caption>",
        "<tr><th scope='col'>class</th><th scope='col'>audio F</th>"
        "<th scope='col'>visual F</th><th scope='col'>true audio segments</th>"
        "<th scope='col'>true visual segments</th></tr>",
    ]
    for score in scores:
        cells = "".join(
            f"<td data-column='{column}'>{_score_text(value)}</td>"
            for column, value in (
                ("audio_f", score.audio_f),
                ("visual_f", score.visual_f),
                ("audio_segments", score.audio_segments),
                ("visual_segments", score.visual_segments),
            )
        )
        name = html.escape(score.class_name)
        lines.append(f"<tr data-class='{name}'><th scope='row'>{name}</th>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _score_text(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def figure_html(figure: ReportFigure) -> str:
    """One figure, its PNG embedded, with its caption."""
    encoded = base64.b64encode(figure.png).decode("ascii")
    return (
        f"<figure id='{html.escape(Path(figure.name).stem)}'>"
        f"<img src='data:image/png;base64,{encoded}' alt='{html.escape(figure.name)}'>"
        f"<figcaption><b>{html.escape(figure.name)}</b>. {html.escape(figure.caption)}"
        "</figcaption></figure>"
    )


_BASELINES_TEXT = (
    "Each split's windows scored three ways with the official metrics: <b>trained run</b>, "
    "this run's network at its kept epoch (the tables above); <b>weak labels</b>, every "
    "weak (video-level) class of a video predicted in every 1-s segment of both "
    "modalities, the score of a parser that locates nothing in time; <b>untrained "
    "network</b>, the same network configuration and seed as this run before its first "
    "training step, scored by the run's protocol. What training added is the distance to "
    "the untrained network; what the parser adds over the weak labels is the distance to "
    "the weak-label row."
)


def report_html(
    loaded: LoadedRun,
    evaluations: dict[str, RunEvaluation],
    figures: list[ReportFigure],
    notes: list[str],
    figure_split: str,
    context: RunContext,
) -> str:
    """The self-contained page: provenance banner, summary, notes, metrics tables,
    baselines, training curves, per-class scores, figures (of split `figure_split`),
    config."""
    run = loaded.run
    resolved = run.read_json("config.json")
    summary = run.read_json("metrics.json") if run.exists("metrics.json") else {}
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>AVVP report: {escape(run.run_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>AVVP report: run <code>{escape(run.run_id)}</code></h1>",
        provenance_html(context.origins, context.warning),
        "<h2>Run</h2>",
        _summary_table(loaded, resolved, summary, context.origins),
    ]
    if notes:
        parts.append("<h2>Notes</h2>")
        parts += [f"<p class='note'>{escape(note)}</p>" for note in notes]
    parts.append("<h2>Metrics</h2>")
    if evaluations:
        parts.append(
            "<p>The official AVVP metrics (percent, mean over videos): segment- and "
            "event-level F-scores for audio, visual and audio-visual events, their mean "
            "(Type@AV) and the pooled Event@AV; Avg is the mean of the ten.</p>"
        )
        for evaluation in evaluations.values():
            parts += [metrics_table_html(evaluation), coverage_html(evaluation)]
    else:
        parts.append("<p class='note'>No split was evaluated.</p>")
    parts.append("<h2>Against two baselines</h2>")
    if context.baselines:
        parts += [f"<p>{_BASELINES_TEXT}</p>", baselines_table_html(context.baselines)]
    else:
        parts.append("<p class='note'>No baselines: no split was evaluated.</p>")
    shown = {section: [f for f in figures if f.section == section] for section in _SECTIONS}
    parts.append("<h2>Training</h2>")
    parts += [figure_html(figure) for figure in shown["training"]]
    if not shown["training"]:
        parts.append("<p class='note'>No training curves (see the notes).</p>")
    parts.append(f"<h2>Per-class segment F-scores ({escape(context.per_class_split)} split)</h2>")
    if context.per_class:
        parts.append(per_class_table_html(context.per_class, context.per_class_split))
        parts += [figure_html(figure) for figure in shown["per-class"]]
    else:
        parts.append("<p class='note'>No per-class scores (see the notes).</p>")
    parts.append(f"<h2>Figures ({escape(figure_split)} split)</h2>")
    parts += [figure_html(figure) for figure in shown["figures"]]
    if not shown["figures"]:
        parts.append("<p class='note'>No figures.</p>")
    parts += [
        "<h2>Resolved configuration</h2>",
        "<details><summary>config.json of the run</summary><pre>",
        escape(json.dumps(resolved, indent=2, sort_keys=True)),
        "</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


_SECTIONS = ("training", "per-class", "figures")


def _summary_table(
    loaded: LoadedRun,
    resolved: dict[str, Any],
    summary: dict[str, Any],
    origins: list[FeatureOrigin],
) -> str:
    trained = loaded.config
    network = loaded.model
    model_config = getattr(network, "config", None)
    parameters = sum(p.numel() for p in network.parameters())
    rows: list[tuple[str, str]] = [
        ("run id", loaded.run.run_id),
        ("run folder", loaded.run.url),
        ("model", f"{trained.model} ({type(network).__name__}, {parameters:,} parameters)"),
    ]
    if model_config is not None:
        sizes = (
            f"hidden {model_config.hidden_dim}, layers {model_config.num_layers}, heads "
            f"{model_config.num_heads}, feed-forward {model_config.ffn_dim}, dropout "
            f"{model_config.dropout:g}"
        )
        if isinstance(network, MMCSE):
            sizes = f"{sizes}, class features {model_config.class_dim}"
            switches = asdict(model_config.mmcse)
            off = [name for name, enabled in switches.items() if not enabled]
            rows.append(("MM-CSE parts", "all" if not off else f"without {', '.join(off)}"))
        rows.append(("sizes", sizes))
    optim = trained.optim
    rows += [
        (
            "training",
            f"{trained.epochs} epochs, batch {trained.batch_size}, lr {optim.lr:g}, "
            f"weight decay {optim.weight_decay:g}, {optim.schedule} schedule, seed "
            f"{trained.seed}, trained on {resolved.get('device', '?')}",
        ),
        ("features", "; ".join(f"{origin.stream} {origin.short}" for origin in origins)),
        (
            "labels",
            f"pseudo-labels {trained.data.pseudo_labels}, validation annotations "
            f"{trained.data.annotations}",
        ),
        ("evaluation filter", trained.filter_resolved()),
    ]
    if summary:
        metric = summary.get("selection_metric", "?")
        value = summary.get("val", {}).get(metric)
        chosen = f"epoch {summary.get('best_epoch')} of {trained.epochs}"
        if value is not None:
            chosen += f" (val {metric} {value:.2f})"
        rows.append(("checkpoint", chosen))
    rows.append(("avvp version", str(resolved.get("avvp_version", "?"))))
    body = "".join(
        f"<tr><th scope='row'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f"<table class='summary'>{body}</table>"
