"""The HTML page of `avvp report`: one self-contained file (inline CSS, figures embedded
as base64 data URIs, no external links) with the run's summary, the notes of what was
skipped, the eleven metrics of each split and every figure with its caption.

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


@dataclass
class ReportFigure:
    """A PNG of the report with its caption."""

    name: str
    png: bytes
    caption: str  # plain text, escaped when the page is written


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


def report_html(
    loaded: LoadedRun,
    evaluations: dict[str, RunEvaluation],
    figures: list[ReportFigure],
    notes: list[str],
    figure_split: str,
) -> str:
    """The self-contained page: summary, notes, metrics tables, figures (of split
    `figure_split`), config."""
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
        "<h2>Run</h2>",
        _summary_table(loaded, resolved, summary),
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
    parts.append(f"<h2>Figures ({escape(figure_split)} split)</h2>")
    for figure in figures:
        encoded = base64.b64encode(figure.png).decode("ascii")
        parts.append(
            f"<figure id='{escape(Path(figure.name).stem)}'>"
            f"<img src='data:image/png;base64,{encoded}' alt='{escape(figure.name)}'>"
            f"<figcaption><b>{escape(figure.name)}</b>. {escape(figure.caption)}</figcaption>"
            "</figure>"
        )
    if not figures:
        parts.append("<p class='note'>No figures.</p>")
    parts += [
        "<h2>Resolved configuration</h2>",
        "<details><summary>config.json of the run</summary><pre>",
        escape(json.dumps(resolved, indent=2, sort_keys=True)),
        "</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_table(loaded: LoadedRun, resolved: dict[str, Any], summary: dict[str, Any]) -> str:
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
        (
            "features",
            f"{trained.data.audio_table}, {trained.data.visual_table}, "
            f"{trained.data.visual_st_table}",
        ),
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
