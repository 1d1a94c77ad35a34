"""What one run of a chain did, typed: read by the command line, the demo and the flows
alike, and written as JSON under `<store>/chains/<chain>/<time>-<run label>.json`.

Every node's outcome (`ran`, or `stored`: its outputs were in the store for its key)
and one typed field per node with its stage's result; every failed input of every stage
(`failures`), and what the user should know although nothing failed (`warnings`).

`markdown()` and `tables()` are what the Prefect UI shows of a run (the flows publish
them as artifacts): text and tables only, readable on any machine, where a link to a
file of the machine that ran the flow would not be.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from ...storage import RunDir
from ...storage.failures import Failure
from ...storage.location import open_root
from ..evaluate import METRIC_KEYS, REFERENCE_ROWS
from ..extract import ExtractSummary
from ..parse import ParseResult
from ..reports.context import TRAINED
from ..reports.report import ReportResult
from ..train import TrainResult
from .train_stages import (
    Evaluations,
    LabelsResult,
    PseudoLabelsResult,
)

SUMMARIES_FOLDER = "chains"
SHOWN_FAILURES = 5


class NodeOutcome(BaseModel):
    """How one node went: `ran` its units, or found its outputs `stored` for its key."""

    node: str
    key: str
    status: Literal["ran", "stored"]
    units: int  # units run (shards, splits)
    seconds: float
    line: str  # the stage's one-line summary


class ArtifactTable(BaseModel):
    """A table to show beside the run (a Prefect table artifact)."""

    key: str
    description: str
    rows: list[dict[str, str | float | int]]


class ChainSummary(BaseModel):
    """What every chain's summary holds; each chain adds one field per node."""

    chain: str
    store: str
    run_label: str = "local"  # the flow run's id, or "local"
    nodes: list[NodeOutcome]
    failures: list[Failure] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    summary_file: str = ""

    @property
    def ok(self) -> bool:
        """No input failed."""
        return not self.failures

    def outcome(self, node: str) -> NodeOutcome:
        return next(outcome for outcome in self.nodes if outcome.node == node)

    def ran(self) -> list[str]:
        """The nodes that ran units (the others found their outputs stored)."""
        return [outcome.node for outcome in self.nodes if outcome.status == "ran"]

    def failure_message(self) -> str:
        shown = "; ".join(f"{f.path}: {f.reason}" for f in self.failures[:SHOWN_FAILURES])
        more = (
            f" and {len(self.failures) - SHOWN_FAILURES} more"
            if len(self.failures) > SHOWN_FAILURES
            else ""
        )
        return (
            f"{len(self.failures)} input(s) failed ({shown}{more}); everything else of "
            f"{self.chain} was done"
        )

    def markdown(self) -> str:
        lines = [f"# {self.chain} on `{self.store}`", "", *self.preamble()]
        lines += [f"- **{o.node}** ({o.status}): {o.line}" for o in self.nodes]
        if self.failures:
            lines += ["", f"**{len(self.failures)} input(s) failed**", ""]
            lines += [f"- `{f.path}`: {f.reason}" for f in self.failures]
        lines += [f"- warning: {warning}" for warning in self.warnings]
        lines += ["", f"summary file: `{self.summary_file}`"]
        return "\n".join(lines) + "\n"

    def preamble(self) -> list[str]:
        """Markdown lines to read before the nodes' outcomes (none here)."""
        return []

    def tables(self) -> list[ArtifactTable]:
        """This run's failures, as a table."""
        rows: list[dict[str, str | float | int]] = [
            {"path": f.path, "reason": f.reason} for f in self.failures
        ]
        return [
            ArtifactTable(
                key="failures",
                description="inputs that failed in this run",
                rows=rows or [{"path": "", "reason": "no failures"}],
            )
        ]


class ExtractAndTrainSummary(ChainSummary):
    """`extract-and-train`: one field per node."""

    labels: LabelsResult
    extract: ExtractSummary
    pseudo_labels: PseudoLabelsResult
    train: TrainResult
    evaluate: Evaluations
    report: ReportResult

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """split -> the eleven AVVP metrics."""
        return {split: e.metrics for split, e in self.evaluate.splits.items()}

    @property
    def report_path(self) -> str:
        return f"{self.train.run_url}/{self.report.html}"

    def preamble(self) -> list[str]:
        """Where the features came from, first: a warning when they say nothing about
        the networks their tables are named after."""
        report = self.report
        if not report.provenance:
            return []
        head = (
            f"> **Warning:** {report.provenance_warning}"
            if report.provenance_warning
            else "> **Features** of this run:"
        )
        return [head, ">", *(f"> - {line}" for line in report.provenance), ""]

    def markdown(self) -> str:
        splits = list(self.metrics)
        lines = [super().markdown(), f"run: `{self.train.run_url}`", ""]
        lines += [f"report: `{self.report_path}`", ""]
        if splits:
            lines += ["| metric | " + " | ".join(splits) + " |"]
            lines += ["| --- | " + " | ".join("---" for _ in splits) + " |"]
            for key in METRIC_KEYS:
                values = " | ".join(f"{self.metrics[split][key]:.1f}" for split in splits)
                lines.append(f"| {key} | {values} |")
        for split, rows in self.report.baselines.items():
            lines += ["", f"## Against two baselines ({split} split)", "", BASELINES_TEXT, ""]
            lines += _markdown_table(_baseline_rows(rows))
        if self.report.per_class:
            lines += ["", f"## Per-class segment F-scores ({self.report.per_class_split} split)"]
            lines += ["", *_markdown_table(_per_class_rows(self.report))]
        if self.report.history:
            lines += ["", "## Training: loss and validation Avg per epoch", ""]
            lines += _markdown_table(_history_rows(self.report))
        if self.report.captions:
            lines += ["", "## Figures", "", f"In the report, `{self.report_path}`:", ""]
            lines += [f"- `{name}`: {text}" for name, text in self.report.captions.items()]
        return "\n".join(lines) + "\n"

    def tables(self) -> list[ArtifactTable]:
        tables = [
            ArtifactTable(
                key=f"metrics-{split}",
                description=(
                    f"{split} split, {e.annotations} annotations, filter {e.filter_rule}, "
                    f"{e.videos_scored} of {e.videos_in_split} videos: {e.run_url}"
                ),
                rows=[{"metric": key, "value": round(e.metrics[key], 2)} for key in METRIC_KEYS],
            )
            for split, e in self.evaluate.splits.items()
        ]
        report = self.report
        # Artifact keys allow lowercase letters, digits and dashes only.
        tables += [
            ArtifactTable(
                key=f"baselines-{split}",
                description=f"{split} split: the trained run and two baselines. {BASELINES_TEXT}",
                rows=_baseline_rows(rows),
            )
            for split, rows in report.baselines.items()
        ]
        if report.per_class:
            tables.append(
                ArtifactTable(
                    key="per-class",
                    description=(
                        f"{report.per_class_split} split: pooled segment F-score (percent) "
                        "and true segments of each class; n/a: neither true nor predicted"
                    ),
                    rows=_per_class_rows(report),
                )
            )
        if report.history:
            tables.append(
                ArtifactTable(
                    key="training-curve",
                    description=(
                        "training loss and validation Avg per epoch (history.json); the kept "
                        f"epoch is {report.best_epoch}"
                    ),
                    rows=_history_rows(report),
                )
            )
        return [*tables, *super().tables()]


BASELINES_TEXT = (
    "trained run: the run's network at its kept epoch; weak labels: every weak "
    "(video-level) class of a video predicted in every segment of both modalities; "
    "untrained network: the same network configuration and seed before any training, "
    "scored by the run's protocol."
)
Row = dict[str, str | float | int]


def _baseline_rows(rows: dict[str, dict[str, float]]) -> list[Row]:
    # In a fixed order: a summary or report stamp read back from JSON has its keys sorted.
    return [
        {"predictor": name, **{key: round(rows[name][key], 2) for key in METRIC_KEYS}}
        for name in (TRAINED, *REFERENCE_ROWS)
        if name in rows
    ]


def _per_class_rows(report: ReportResult) -> list[Row]:
    def score(value: float | None) -> str | float:
        return "n/a" if value is None else round(value, 2)

    return [
        {
            "class": s.class_name,
            "audio F": score(s.audio_f),
            "visual F": score(s.visual_f),
            "true audio segments": s.audio_segments,
            "true visual segments": s.visual_segments,
        }
        for s in report.per_class
    ]


def _history_rows(report: ReportResult) -> list[Row]:
    return [
        {
            "epoch": row.epoch,
            "loss": round(row.loss, 4),
            "val Avg": round(row.val["Avg"], 2) if "Avg" in row.val else "n/a",
            "kept": "yes" if row.epoch == report.best_epoch else "",
        }
        for row in report.history
    ]


def _markdown_table(rows: list[Row]) -> list[str]:
    """Rows of equal keys as a markdown table, numbers right-aligned."""
    columns = list(rows[0])
    numeric = [any(isinstance(row[c], int | float) for row in rows) for c in columns]
    align = ["---:" if number else "---" for number in numeric]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return lines


class ParseFolderSummary(ChainSummary):
    """`parse-folder`: one field per node."""

    extract: ExtractSummary
    parse: ParseResult

    def tables(self) -> list[ArtifactTable]:
        videos = ArtifactTable(
            key="parsed-videos",
            description=(
                f"{len(self.parse.videos) - len(self.parse.failed)} of "
                f"{len(self.parse.videos)} files parsed into {self.parse.out}"
            ),
            rows=[
                {
                    "video": video.video_id,
                    "status": video.status,
                    "events": video.events,
                    "reason": video.reason,
                }
                for video in self.parse.videos
            ],
        )
        return [videos, *super().tables()]


def summaries_folder(store: str, chain: str) -> RunDir:
    """`<store>/chains/<chain>/`: one JSON summary per run, atomically written."""
    fs, path = open_root(store)
    relative = f"{SUMMARIES_FOLDER}/{chain}"
    return RunDir(fs, f"{path}/{relative}", f"{store.rstrip('/')}/{relative}")


def publish_summary(summary: ChainSummary) -> str:
    """Write a run's summary as `<time>-<run label>.json`; returns its URL."""
    folder = summaries_folder(summary.store, summary.chain)
    # Microseconds: two runs in one second keep their own files, in the order they ran.
    name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{summary.run_label}.json"
    summary.summary_file = f"{folder.url}/{name}"
    folder.write_json(name, summary.model_dump(mode="json"))
    return summary.summary_file
