"""The chains, declared once as data: their parameters, nodes and edges, and how the
parameters resolve into each stage's config.

- `EXTRACT_AND_TRAIN` (`ChainConfig`): labels -> extract -> pseudo-labels -> train ->
  evaluate -> report, in the user's store.
- `PARSE_FOLDER` (`ParseFolderConfig`): extract -> parse, in a store of the parse's own
  (beside its output by default), never the training store.

A node names its stage, the nodes it comes after, and a function of the chain's
parameters and the results of the nodes before it that gives the stage's config: the
train node, say, trains on the source the pseudo-labels node obtained. Both runners
(`runner.run_local` and the Prefect adapter in `avvp.flows`) walk the same nodes.

Pseudo-labels come one of five ways (`ChainConfig.pseudo_label_method`):

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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..evaluate import EvaluateConfig
from ..extract_config import DEFAULT_EXTRACTORS, ExtractConfig
from ..infer import load_run
from ..parse import ParseConfig, parse_extract_config
from ..pseudo_labels import GenerateConfig
from ..reports.report import ReportConfig
from ..sources.config_files import renamed_key
from ..train_config import TrainConfig
from ..valor import FetchConfig
from .stage import Stage
from .stages import STAGES, ExtractInput, ParseInput
from .summary import ChainSummary, ExtractAndTrainSummary, ParseFolderSummary
from .train_stages import (
    EvaluateInput,
    LabelsInput,
    PseudoLabelMethod,
    PseudoLabelsInput,
    ReportInput,
)

DEFAULT_STORE = "./avvp-data"
DEFAULT_PARSE_OUT = "./avvp-parsed"
PARSE_STORE_FOLDER = "store"  # <out>/store/: the parse's own features
SEGMENT_EXTRACTOR = "clap-segments"  # the CLAP embeddings `generate` scores

ParamsT = TypeVar("ParamsT", bound=BaseModel)
SummaryT = TypeVar("SummaryT", bound=ChainSummary)
Results = dict[str, BaseModel]


def _one_or_many(value: Any) -> Any:
    # `--param videos=DIR` gives one string; a list of files and folders also works.
    return [str(value)] if isinstance(value, str | Path) else value


VideoPaths = Annotated[list[str], BeforeValidator(_one_or_many)]


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
    report: dict[str, Any] = Field(default_factory=dict, description="ReportConfig settings")
    pseudo_labels: PseudoLabelSettings = Field(default_factory=PseudoLabelSettings)
    splits: list[str] = Field(default_factory=lambda: ["val", "test"])
    import_labels: bool = Field(
        True, description="import the label files; False: use the labels already stored"
    )


class ChainConfig(BaseModel):
    """The parameters of `extract-and-train` (names fixed: they are the command line)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    videos: VideoPaths = Field(default_factory=list, description="video folders and/or files")
    labels: str | None = Field(
        None, description="folder of LLP-format annotation files (default: the vendored LLP)"
    )
    store: str = DEFAULT_STORE
    extractor_size: Literal["paper", "tiny"] = Field(
        "paper", description="the extractors' sizes: paper (released weights) or tiny"
    )
    pseudo_labels: str = "valor"
    model: str = "mmcse"
    epochs: int | None = Field(None, ge=1)
    config: StageSettings = Field(default_factory=StageSettings)

    _old_names = renamed_key("preset", "extractor_size")

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

    def labels_input(self) -> LabelsInput:
        return LabelsInput(folder=self.labels, import_files=self.config.import_labels)

    def extract_config(self) -> ExtractConfig:
        settings: dict[str, Any] = {"size": self.extractor_size, "labels": self.labels}
        if self.pseudo_label_method() == "generate":
            settings["extractors"] = [*DEFAULT_EXTRACTORS, SEGMENT_EXTRACTOR]
        return ExtractConfig.model_validate({**settings, **self.config.extract})

    def pseudo_labels_input(self) -> PseudoLabelsInput:
        method, settings = self.pseudo_label_method(), self.config.pseudo_labels
        fetch = generate = None
        if method == "fetch":
            fetch_settings = {"labels": self.labels, **settings.fetch}
            # Extracted videos bring their own features; only the labels come from VALOR.
            fetch_settings.setdefault("features", not self.videos)
            fetch = FetchConfig.model_validate(fetch_settings)
        if method == "generate":
            extract = self.extract_config()
            weights = {
                "clip": extract.weights.get("clip"),
                "clap": extract.weights.get(SEGMENT_EXTRACTOR) or extract.weights.get("clap"),
            }
            defaults: dict[str, Any] = {"size": extract.size, "device": extract.device}
            defaults["weights"] = {name: path for name, path in weights.items() if path}
            generate = GenerateConfig.model_validate({**defaults, **settings.generate})
        return PseudoLabelsInput(
            source=self.pseudo_labels,
            method=method,
            labels=self.labels,
            folder=settings.folder,
            modality=settings.modality,
            fetch=fetch,
            generate=generate,
        )

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
        settings = {"device": device, "splits": self.config.splits, **self.config.report}
        return ReportConfig.model_validate(settings)


class ParseFolderConfig(BaseModel):
    """The parameters of `parse-folder` (names fixed: they are the command line)."""

    model_config = ConfigDict(extra="forbid")

    videos: VideoPaths = Field(description="video folders and/or files")
    run: str = Field(description="a trained run folder, <store>/runs/<run-id>")
    out: str = DEFAULT_PARSE_OUT
    store: str | None = Field(
        None, description="store of the new videos' features; default: <out>/store"
    )
    threshold: float = 0.5
    config: dict[str, Any] = Field(default_factory=dict, description="ParseConfig settings")

    def parse_store(self) -> str:
        return self.store or f"{self.out.rstrip('/')}/{PARSE_STORE_FOLDER}"

    def parse_config(self) -> ParseConfig:
        return ParseConfig.model_validate({**self.config, "threshold": self.threshold})

    def extract_config(self) -> ExtractConfig:
        """The run's extraction settings, checked against its features' provenance;
        the parse's store keys each file by its content."""
        config = self.parse_config()
        extract = parse_extract_config(load_run(self.run, config.device), config)
        return extract.model_copy(update={"ids": "content"})


@dataclass(frozen=True)
class Node:
    """One node of a chain: a stage, the nodes it comes after, and its config from the
    chain's parameters and the results of the nodes before it."""

    name: str
    stage: Stage[Any, Any]
    configure: Callable[[Any, Results], BaseModel]
    after: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        """The node's field in the chain's summary."""
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class Chain(Generic[ParamsT, SummaryT]):
    """A chain: its name (the flow's), parameters, summary, nodes (declared in an order
    that runs every node after those it comes after), the store it works in and every
    folder it writes (checked writable before the first node runs)."""

    name: str
    params: type[ParamsT]
    summary: type[SummaryT]
    nodes: tuple[Node, ...]
    store: Callable[[ParamsT], str]
    writes: Callable[[ParamsT], tuple[str, ...]]

    def __post_init__(self) -> None:
        declared: set[str] = set()
        for node in self.nodes:
            if early := [name for name in node.after if name not in declared]:
                raise ValueError(f"{self.name}: node {node.name} comes after undeclared {early}")
            declared.add(node.name)


def _stage(name: str) -> Stage[Any, Any]:
    return STAGES[name]


EXTRACT_AND_TRAIN: Chain[ChainConfig, ExtractAndTrainSummary] = Chain(
    name="extract-and-train",
    params=ChainConfig,
    summary=ExtractAndTrainSummary,
    store=lambda params: params.store,
    writes=lambda params: (params.store,),
    nodes=(
        Node("labels", _stage("labels"), lambda p, _: p.labels_input()),
        Node(
            "extract",
            _stage("extract"),
            lambda p, _: ExtractInput(videos=p.videos, config=p.extract_config()),
        ),
        Node(
            "pseudo-labels",
            _stage("pseudo-labels"),
            lambda p, _: p.pseudo_labels_input(),
            after=("labels", "extract"),
        ),
        Node(
            "train",
            _stage("train"),
            lambda p, results: p.train_config(results["pseudo-labels"].source),
            after=("extract", "pseudo-labels"),
        ),
        Node(
            "evaluate",
            _stage("evaluate"),
            lambda p, results: EvaluateInput(
                run_id=results["train"].run_id,
                splits=p.config.splits,
                config=EvaluateConfig.model_validate(p.config.evaluate),
            ),
            after=("train",),
        ),
        Node(
            "report",
            _stage("report"),
            lambda p, results: ReportInput(
                run_id=results["train"].run_id, config=p.report_config()
            ),
            after=("evaluate",),
        ),
    ),
)

PARSE_FOLDER: Chain[ParseFolderConfig, ParseFolderSummary] = Chain(
    name="parse-folder",
    params=ParseFolderConfig,
    summary=ParseFolderSummary,
    store=lambda params: params.parse_store(),
    writes=lambda params: (params.parse_store(), str(params.out)),
    nodes=(
        Node(
            "extract",
            _stage("extract"),
            lambda p, _: ExtractInput(videos=p.videos, config=p.extract_config()),
        ),
        Node(
            "parse",
            _stage("parse"),
            lambda p, _: ParseInput(videos=p.videos, run=p.run, out=p.out, config=p.parse_config()),
            after=("extract",),
        ),
    ),
)
