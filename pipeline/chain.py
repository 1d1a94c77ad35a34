"""The whole chain's settings: the `extract-and-train` flow's parameters, resolved into
each stage's own config.

The flow's parameters are the user's command line (`prefect deployment run
'extract-and-train/default' --param videos=DIR ...`); `ChainConfig` holds them plus
one optional nested `config` of per-stage overrides, and hands every stage the config
it takes (`extract_config`, `train_config`, `evaluate_config`, ...). The flow only wires
these stages; everything a stage decides stays in the stage.

Pseudo-labels come one of five ways (`pseudo_label_method`):

- `fetch`: VALOR's released labels (`fetch_valor`); with videos of its own the chain
  imports only the labels, since its features come from extraction;
- `import`: a folder of label files (`import_pseudo_labels`);
- `generate`: VALOR's zero-shot recipe on the extracted embeddings
  (`generate_pseudo_labels`; the chain then also extracts `clap-segments`);
- `dense`: labels from dense annotations or planted events (`write_dense_source`);
- `stored`: a source already in the store, used as it is.

`auto` picks by name: `valor` fetches, `dense` is dense, `generated...` generates, any
other name is imported when a folder is given and stored otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from avvp.pipeline.evaluate import EvaluateConfig
from avvp.pipeline.extract import DEFAULT_EXTRACTORS, ExtractConfig
from avvp.pipeline.pseudo_labels import GenerateConfig
from avvp.pipeline.release import FetchConfig, ImportLabelsConfig
from avvp.pipeline.report import ReportConfig
from avvp.pipeline.train_config import TrainConfig
from avvp.storage import RunDir
from avvp.storage.table import open_root

DEFAULT_STORE = "./avvp-data"
PseudoLabelMethod = Literal["fetch", "import", "generate", "dense", "stored"]
SEGMENT_EXTRACTOR = "clap-segments"  # the CLAP embeddings `generate` scores


class PseudoLabelSettings(BaseModel):
    """How the chain obtains its pseudo-label source."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["auto", "fetch", "import", "generate", "dense", "stored"] = "auto"
    folder: str | None = Field(None, description="import: the folder of <id>.npy labels")
    modality: Literal["audio", "visual"] | None = None
    fetch: dict[str, Any] = Field(default_factory=dict, description="FetchConfig settings")
    generate: dict[str, Any] = Field(default_factory=dict, description="GenerateConfig settings")


class StageSettings(BaseModel):
    """The nested `config` parameter: per-stage settings over the chain's defaults."""

    model_config = ConfigDict(extra="forbid")

    extract: dict[str, Any] = Field(default_factory=dict, description="ExtractConfig settings")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig settings")
    evaluate: dict[str, Any] = Field(default_factory=dict, description="EvaluateConfig settings")
    pseudo_labels: PseudoLabelSettings = Field(default_factory=PseudoLabelSettings)
    splits: list[str] = Field(default_factory=lambda: ["val", "test"])


class ChainConfig(BaseModel):
    """The parameters of `extract-and-train` (names fixed: they are the command line)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    videos: list[str] = Field(default_factory=list, description="video folders and/or files")
    labels: str | None = Field(
        None, description="folder of LLP-format annotation files (default: the vendored LLP)"
    )
    store: str = DEFAULT_STORE
    preset: Literal["paper", "tiny"] = "paper"
    pseudo_labels: str = "valor"
    model: str = "mmcse"
    epochs: int | None = Field(None, ge=1)
    config: StageSettings = Field(default_factory=StageSettings)

    @field_validator("videos", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        # `--param videos=DIR` gives one string; a list of files and folders also works.
        if isinstance(value, str | Path):
            return [str(value)]
        return value

    def pseudo_label_method(self) -> PseudoLabelMethod:
        method = self.config.pseudo_labels.method
        if method != "auto":
            return method
        if self.pseudo_labels == "valor":
            return "fetch"
        if self.pseudo_labels == "dense":
            return "dense"
        if self.pseudo_labels.startswith("generated"):
            return "generate"
        return "import" if self.config.pseudo_labels.folder else "stored"

    def extract_config(self) -> ExtractConfig:
        settings: dict[str, Any] = {"preset": self.preset, "labels": self.labels}
        if self.pseudo_label_method() == "generate":
            settings["extractors"] = [*DEFAULT_EXTRACTORS, SEGMENT_EXTRACTOR]
        return ExtractConfig.model_validate({**settings, **self.config.extract})

    def train_config(self, pseudo_labels: str) -> TrainConfig:
        """Training on `pseudo_labels` (the source the labels step wrote or found)."""
        settings: dict[str, Any] = {"model": self.model, "size": "auto", **self.config.train}
        data = dict(settings.get("data") or {})
        data["pseudo_labels"] = pseudo_labels
        settings["data"] = data
        if self.epochs is not None:
            settings["epochs"] = self.epochs
        return TrainConfig.model_validate(settings)

    def evaluate_config(self, split: str) -> EvaluateConfig:
        return EvaluateConfig.model_validate({**self.config.evaluate, "split": split})

    def report_config(self) -> ReportConfig:
        device = self.config.evaluate.get("device", "auto")
        return ReportConfig(device=device, splits=self.config.splits)

    def fetch_config(self) -> FetchConfig:
        settings = {"labels": self.labels, **self.config.pseudo_labels.fetch}
        # Extracted videos bring their own features; only the labels come from VALOR.
        settings.setdefault("features", not self.videos)
        return FetchConfig.model_validate(settings)

    def import_config(self) -> ImportLabelsConfig:
        return ImportLabelsConfig(
            source=self.pseudo_labels,
            modality=self.config.pseudo_labels.modality,
            labels=self.labels,
        )

    def generate_config(self) -> GenerateConfig:
        extract = self.extract_config()
        settings: dict[str, Any] = {"preset": extract.preset, "device": extract.device}
        weights = {
            "clip": extract.weights.get("clip"),
            "clap": extract.weights.get(SEGMENT_EXTRACTOR) or extract.weights.get("clap"),
        }
        settings["weights"] = {name: path for name, path in weights.items() if path}
        return GenerateConfig.model_validate({**settings, **self.config.pseudo_labels.generate})


FLOWS_FOLDER = "flows"


def summaries_folder(store: str, flow_name: str) -> RunDir:
    """`<store>/flows/<flow name>/`: one JSON summary per flow run, atomically written."""
    fs, path = open_root(store)
    folder = f"{path}/{FLOWS_FOLDER}/{flow_name}"
    url = folder if "file" in fs.protocol else f"{store.rstrip('/')}/{FLOWS_FOLDER}/{flow_name}"
    return RunDir(fs, folder, url)


def publish_summary(store: str, flow_name: str, summary: dict[str, Any]) -> str:
    """Write a flow run's summary as `<time>-<flow run id>.json`; returns its path."""
    folder = summaries_folder(store, flow_name)
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{summary.get('flow_run') or 'local'}.json"
    folder.write_json(name, summary)
    return f"{folder.url}/{name}"


def read_summaries(store: str, flow_name: str) -> list[dict[str, Any]]:
    """Every published summary of a flow on this store, oldest first."""
    folder = summaries_folder(store, flow_name)
    return [json.loads(folder.read_text(name)) for name in folder.names() if name.endswith(".json")]


def report_lines(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return []
    folder = report["html"].rsplit("/", 1)[0]
    figures = ", ".join(f"`{name.rsplit('/', 1)[-1]}`" for name in report["figures"])
    return [f"- report: `{report['html']}`", f"- plots in `{folder}/`: {figures}"]


def extraction_counts(extraction: dict[str, Any]) -> tuple[int, int, int]:
    """Videos found, extracted and failed by a flow run's extraction stage (a run given
    no videos has no `videos_extracted` or `failures`)."""
    return (
        extraction["videos_found"],
        len(extraction.get("videos_extracted", [])),
        len(extraction.get("failures", [])),
    )


def train_outcome(train: dict[str, Any]) -> str:
    """`trained` when this flow run trained its run; `reused` when the train task's
    result came from the cache or training found the run already finished."""
    return "trained" if train["task"] == "ran" and not train["reused"] else "reused"


def summary_markdown(summary: dict[str, Any]) -> str:
    """A flow run's summary for people: what was done, where the run and its files are."""
    extraction, train = summary["extraction"], summary["train"]
    found, extracted, failed = extraction_counts(extraction)
    lines = [
        f"# extract-and-train on `{summary['store']}`",
        "",
        f"- videos: {found} found, {extracted} extracted in {extraction['ran']} shard tasks "
        f"({extraction['cached']} from the cache), {failed} failed",
        f"- pseudo-labels: `{summary['pseudo_labels']['source']}` "
        f"({summary['pseudo_labels']['method']})",
        f"- run `{train['run_id']}` ({train_outcome(train)}): `{train['run_url']}`",
        f"- summary file: `{summary.get('summary_file', '')}`",
        *report_lines(summary.get("report")),
        "",
        "| metric | " + " | ".join(summary["evaluate"]) + " |",
        "| --- | " + " | ".join("---" for _ in summary["evaluate"]) + " |",
    ]
    keys = next(iter(summary["evaluate"].values()))["metrics"] if summary["evaluate"] else {}
    for key in keys:
        values = " | ".join(f"{e['metrics'][key]:.1f}" for e in summary["evaluate"].values())
        lines.append(f"| {key} | {values} |")
    return "\n".join(lines) + "\n"
