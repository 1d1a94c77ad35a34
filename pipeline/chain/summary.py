"""What one run of a chain did, typed: read by the command line, the demo and the flows
alike, and written as JSON under `<store>/chains/<chain>/<time>-<run label>.json`.

Every node's outcome (`ran`, or `stored`: its outputs were in the store for its key)
and one typed field per node with its stage's result; every failed input of every stage
(`failures`), and what the user should know although nothing failed (`warnings`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ...storage import RunDir
from ...storage.failures import Failure
from ...storage.location import open_root
from ..evaluate import METRIC_KEYS
from ..extract import ExtractSummary
from ..parse import ParseResult
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
        lines = [f"# {self.chain} on `{self.store}`", ""]
        lines += [f"- **{o.node}** ({o.status}): {o.line}" for o in self.nodes]
        if self.failures:
            lines += ["", f"**{len(self.failures)} input(s) failed**", ""]
            lines += [f"- `{f.path}`: {f.reason}" for f in self.failures]
        lines += [f"- warning: {warning}" for warning in self.warnings]
        lines += ["", f"summary file: `{self.summary_file}`"]
        return "\n".join(lines) + "\n"

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

    def figures(self) -> list[tuple[str, Path]]:
        """(name, local PNG file) of the figures to show beside the run."""
        return []


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

    def markdown(self) -> str:
        splits = list(self.metrics)
        lines = [super().markdown(), f"run: `{self.train.run_url}`", ""]
        lines += [f"report: `{self.train.run_url}/{self.report.html}`", ""]
        if splits:
            lines += ["| metric | " + " | ".join(splits) + " |"]
            lines += ["| --- | " + " | ".join("---" for _ in splits) + " |"]
            for key in METRIC_KEYS:
                values = " | ".join(f"{self.metrics[split][key]:.1f}" for split in splits)
                lines.append(f"| {key} | {values} |")
        return "\n".join(lines) + "\n"

    def tables(self) -> list[ArtifactTable]:
        metrics = [
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
        return [*metrics, *super().tables()]

    def figures(self) -> list[tuple[str, Path]]:
        run_url = self.train.run_url
        if "://" in run_url:
            return []
        return [
            # Artifact keys allow lowercase letters, digits and dashes only.
            (f"report-{re.sub(r'[^a-z0-9-]+', '-', Path(name).stem.lower())}", Path(run_url, name))
            for name in self.report.files
            if name.endswith(".png")
        ]


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
