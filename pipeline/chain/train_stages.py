"""The stages of the extract-and-train chain beside extraction, each a wrapper of
today's stage functions in the stage protocol (`stage.py`): importing the label files
(labels), obtaining the pseudo-label source (pseudo-labels), training, evaluating and
writing the report. `stages.py` holds the stages of the parse-folder chain (extract,
which this chain runs too, and parse), `STAGES`, every stage by name, and the table of
each stage's units and of when its outputs are stored.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...storage import RunDir, RunStore
from ...storage.failures import Failure
from .. import catalog
from ..dataset import PSEUDO_LABELS, check_label_source
from ..evaluate import (
    EvaluateConfig,
    RunEvaluation,
    evaluate_run,
    plan_evaluation,
    stored_evaluation,
)
from ..pseudo_labels import (
    GenerateConfig,
    generate_pseudo_labels,
    write_dense_source,
)
from ..release import (
    ImportLabelsConfig,
    LLPLabelsResult,
    SkippedFile,
    import_llp_labels,
    import_pseudo_labels,
)
from ..reports.report import REPORT_FOLDER, ReportConfig, ReportResult, write_report
from ..train import TrainResult, is_finished, planned_run_id, train
from ..train_config import TrainConfig
from ..valor import FetchConfig, fetch_valor
from .stage import (
    STAMP,
    Plan,
    Reporter,
    Stage,
    Unit,
    digest,
    read_stamp,
    stamped_plan,
    stamps_folder,
    table_fingerprint,
    write_stamp,
)

PseudoLabelMethod = Literal["fetch", "import", "generate", "dense", "stored"]


def files_digest(folder: str | Path | None, recursive: bool = False) -> str:
    """Digest of the names and bytes of the files in `folder` (directly in it unless
    `recursive`; None: the vendored LLP files). The videos beside `avvp synth clips`
    labels sit in a subfolder, so a label folder's digest does not read them."""
    root = resources.files("avvp.pipeline.data.llp") if folder is None else Path(folder)
    entries = root.rglob("*") if recursive and isinstance(root, Path) else root.iterdir()
    hashed = hashlib.sha256()
    for entry in sorted(entries, key=lambda entry: str(entry)):
        if entry.is_file() and not entry.name.startswith((".", "__")):
            relative = entry.relative_to(root) if isinstance(root, Path) else entry.name
            hashed.update(str(relative).encode() + b"\0")
            hashed.update(entry.read_bytes())
    return hashed.hexdigest()[:16]


def file_stamp(path: str) -> tuple[str, int, int]:
    """(path, size, mtime): how a large input (an archive) is recognised unchanged."""
    stat = Path(path).stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def run_url(store: str, run_id: str) -> str:
    return RunStore(store).run(run_id).url


# ---- labels ------------------------------------------------------------------------------


class LabelsInput(BaseModel):
    """Which LLP-format label files the chain imports (or none: the store's own)."""

    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(None, description="LLP-format folder; None: the vendored LLP")
    import_files: bool = Field(True, description="False: use the labels already stored")


class LabelsResult(BaseModel):
    """What importing the label files did (empty when nothing had to be imported)."""

    source: str
    imported: LLPLabelsResult | None = None


class LabelsStage(Stage[LabelsInput, LabelsResult]):
    name = "labels"
    config_type = LabelsInput
    result_type = LabelsResult
    code = ("avvp.pipeline.release",)

    def plan(self, store: str, config: LabelsInput) -> Plan:
        if not config.import_files:
            weak = table_fingerprint(store, f"labels/{catalog.WEAK_LABELS_TABLE}")
            if not weak:
                raise ValueError(
                    f"{store} holds no weak labels: import label files (`avvp import-labels`) "
                    "or let the chain import them"
                )
            return Plan(stage=self.name, key=digest(weak))
        key = digest(self.name, files_digest(config.folder), self.code_version())
        folder = stamps_folder(store, self.name)
        return stamped_plan(self.name, key, store, folder, f"{key}.json", "label files")

    def run(
        self, store: str, config: LabelsInput, unit: Unit, reporter: Reporter
    ) -> LLPLabelsResult:
        return import_llp_labels(store, config.folder)

    def finish(
        self, store: str, config: LabelsInput, plan: Plan, results: list[BaseModel]
    ) -> LabelsResult:
        source = config.folder or "the vendored LLP files"
        if not results:
            return LabelsResult(source=source)
        imported = LLPLabelsResult.model_validate(results[0])
        outputs = [f"labels/{name}" for name in imported.tables]
        write_stamp(
            stamps_folder(store, self.name), f"{plan.key}.json", plan.key, store, imported, outputs
        )
        return LabelsResult(source=source, imported=imported)

    def summary_line(self, result: LabelsResult) -> str:
        if result.imported is None:
            return f"labels of {result.source}: stored"
        return f"labels of {result.source}: {'; '.join(result.imported.lines())}"


# ---- pseudo-labels -----------------------------------------------------------------------


class PseudoLabelsInput(BaseModel):
    """Which pseudo-label source the chain trains on, and how it is obtained."""

    model_config = ConfigDict(extra="forbid")

    source: str
    method: PseudoLabelMethod
    labels: str | None = Field(None, description="LLP-format folder; None: the vendored LLP")
    folder: str | None = Field(None, description="import: the folder of <id>.npy labels")
    modality: Literal["audio", "visual"] | None = None
    annotations: str = Field("corrected", description="dense: the stored annotations copied")
    fetch: FetchConfig | None = None
    generate: GenerateConfig | None = None


class PseudoLabelsResult(BaseModel):
    """The source trained on, how it was obtained, and (when it ran) what the method did."""

    source: str
    method: PseudoLabelMethod
    detail: dict[str, Any] = Field(default_factory=dict)
    skipped: list[SkippedFile] = Field(default_factory=list)


class PseudoLabelsStage(Stage[PseudoLabelsInput, PseudoLabelsResult]):
    name = "pseudo-labels"
    config_type = PseudoLabelsInput
    result_type = PseudoLabelsResult
    code = ("avvp.pipeline.pseudo_labels", "avvp.pipeline.release")

    def plan(self, store: str, config: PseudoLabelsInput) -> Plan:
        if config.method == "stored":
            check_label_source(store, PSEUDO_LABELS, config.source)
            table = f"labels/{catalog.pseudo_label_table(config.source)}"
            return Plan(stage=self.name, key=digest(table_fingerprint(store, table)))
        key = digest(self.name, config, self._inputs(store, config), self.code_version())
        folder = stamps_folder(store, self.name)
        return stamped_plan(self.name, key, store, folder, f"{key}.json", config.method)

    def _inputs(self, store: str, config: PseudoLabelsInput) -> dict[str, Any]:
        """What the method reads, as digests and fingerprints."""
        inputs: dict[str, Any] = {}
        if config.method in ("fetch", "import", "dense"):
            inputs["labels"] = files_digest(config.labels)
        if config.method == "fetch" and config.fetch is not None:
            inputs["archives"] = [file_stamp(path) for path in config.fetch.from_zips]
        if config.method == "import" and config.folder is not None:
            inputs["folder"] = files_digest(config.folder, recursive=True)
        if config.method == "dense":
            inputs["dense"] = table_fingerprint(
                store, f"labels/{catalog.dense_table(config.annotations)}"
            )
        if config.method in ("dense", "generate"):
            inputs["weak"] = table_fingerprint(store, f"labels/{catalog.WEAK_LABELS_TABLE}")
        if config.method == "generate":
            generate = config.generate or GenerateConfig()
            inputs["embeddings"] = [
                table_fingerprint(store, f"features/{name}")
                for name in (generate.visual_table, generate.audio_table)
            ]
        return inputs

    def run(
        self, store: str, config: PseudoLabelsInput, unit: Unit, reporter: Reporter
    ) -> PseudoLabelsResult:
        source, skipped = config.source, []
        if config.method == "fetch":
            fetched = fetch_valor(store, config.fetch)
            detail, skipped = fetched.model_dump(mode="json"), fetched.skipped
        elif config.method == "import":
            if config.folder is None:
                raise ValueError(
                    f"pseudo-labels {config.source!r} are imported from a folder: give "
                    "config.pseudo_labels.folder"
                )
            settings = ImportLabelsConfig(
                source=config.source, modality=config.modality, labels=config.labels
            )
            imported = import_pseudo_labels(config.folder, store, settings)
            detail, skipped = imported.model_dump(mode="json"), imported.skipped
        elif config.method == "generate":
            generated = generate_pseudo_labels(store, config.generate)
            detail, source = generated.model_dump(mode="json"), generated.source
        else:
            dense = write_dense_source(
                store, labels_dir=config.labels, annotations=config.annotations
            )
            detail, source = dense.model_dump(mode="json"), dense.source
        reporter.note(f"source {source!r} by {config.method}")
        return PseudoLabelsResult(
            source=source, method=config.method, detail=detail, skipped=skipped
        )

    def finish(
        self, store: str, config: PseudoLabelsInput, plan: Plan, results: list[BaseModel]
    ) -> PseudoLabelsResult:
        folder = stamps_folder(store, self.name)
        if not results:
            stamp = read_stamp(folder, f"{plan.key}.json")
            source = stamp.result["source"] if stamp is not None else config.source
            return PseudoLabelsResult(source=source, method=config.method)
        result = PseudoLabelsResult.model_validate(results[0])
        outputs = [f"labels/{catalog.pseudo_label_table(result.source)}"]
        if config.method == "fetch":
            outputs += [f"features/{entry['table']}" for entry in result.detail["features"]]
        stamped = result.model_copy(update={"detail": {}, "skipped": []})
        write_stamp(folder, f"{plan.key}.json", plan.key, store, stamped, outputs)
        return result

    def summary_line(self, result: PseudoLabelsResult) -> str:
        return f"source {result.source!r} ({result.method})"

    def device(self, config: PseudoLabelsInput) -> str | None:
        return (config.generate or GenerateConfig()).device if config.method == "generate" else None

    def failures(self, result: PseudoLabelsResult) -> list[Failure]:
        return [Failure("", skipped.path, skipped.reason) for skipped in result.skipped]


# ---- train -------------------------------------------------------------------------------


class TrainStage(Stage[TrainConfig, TrainResult]):
    name = "train"
    config_type = TrainConfig
    result_type = TrainResult
    code = ("avvp.pipeline.train",)

    def plan(self, store: str, config: TrainConfig) -> Plan:
        # The run id digests the resolved config, the fingerprints of every row read
        # and the training code's version.
        run_id = planned_run_id(store, config)
        if is_finished(RunStore(store).run(run_id)):
            return Plan(stage=self.name, key=run_id, facts={"run_id": run_id})
        return Plan(
            stage=self.name,
            key=run_id,
            units=[Unit(key=run_id, label=run_id)],
            items=config.epochs,
            noun="epochs",
            facts={"run_id": run_id},
        )

    def run(self, store: str, config: TrainConfig, unit: Unit, reporter: Reporter) -> TrainResult:
        def on_epoch(report: Any) -> None:
            val = report.val.get("Avg", float("nan"))
            reporter.advance(
                f"epoch {report.epoch}",
                f"epoch {report.epoch}: loss {report.loss:.4f}, val Avg {val:.1f}",
            )

        result = train(store, config, on_epoch=on_epoch, on_note=reporter.note)
        return result.model_copy(update={"history": [], "config": None})

    def finish(
        self, store: str, config: TrainConfig, plan: Plan, results: list[BaseModel]
    ) -> TrainResult:
        run = RunStore(store).run(plan.facts["run_id"])
        metrics = run.read_json("metrics.json")
        notes = TrainResult.model_validate(results[0]).notes if results else []
        return TrainResult(
            run_url=run.url,
            run_id=run.run_id,
            best_epoch=metrics["best_epoch"],
            best_val=metrics["val"],
            reused=not results,
            notes=notes,
        )

    def summary_line(self, result: TrainResult) -> str:
        state = "finished before" if result.reused else "trained"
        return (
            f"run {result.run_id} ({state}): best epoch {result.best_epoch}, "
            f"val Avg {result.best_val.get('Avg', float('nan')):.1f}"
        )

    def device(self, config: TrainConfig) -> str | None:
        return config.device


# ---- evaluate ----------------------------------------------------------------------------


class EvaluateInput(BaseModel):
    """A run and the splits it is scored on (`config.split` is set per split)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    splits: list[str] = Field(default_factory=lambda: ["val", "test"])
    config: EvaluateConfig = Field(default_factory=EvaluateConfig)

    def split_config(self, split: str) -> EvaluateConfig:
        return self.config.model_copy(update={"split": split})


class Evaluations(BaseModel):
    """The evaluation of each split."""

    splits: dict[str, RunEvaluation]


class EvaluateStage(Stage[EvaluateInput, Evaluations]):
    name = "evaluate"
    config_type = EvaluateInput
    result_type = Evaluations
    code = ("avvp.pipeline.evaluate",)

    def plan(self, store: str, config: EvaluateInput) -> Plan:
        url = run_url(store, config.run_id)
        keys, units, stored = {}, [], {}
        for split in config.splits:
            planned = plan_evaluation(url, config.split_config(split))
            keys[split] = planned.cache_key
            evaluation = stored_evaluation(planned)
            if evaluation is None:
                units.append(Unit(key=planned.cache_key, label=split, item={"split": split}))
            else:
                stored[split] = evaluation.model_dump(mode="json")
        return Plan(
            stage=self.name,
            key=digest(keys),
            units=units,
            items=len(units),
            noun="splits",
            facts={"stored": stored},
        )

    def run(
        self, store: str, config: EvaluateInput, unit: Unit, reporter: Reporter
    ) -> RunEvaluation:
        split = unit.item["split"]
        evaluation = evaluate_run(run_url(store, config.run_id), config.split_config(split))
        reporter.advance(split, f"{split} Avg {evaluation.metrics['Avg']:.1f}")
        return evaluation

    def finish(
        self, store: str, config: EvaluateInput, plan: Plan, results: list[BaseModel]
    ) -> Evaluations:
        # The splits found stored when planning, and those scored since.
        evaluations = {
            split: RunEvaluation.model_validate(evaluation)
            for split, evaluation in plan.facts["stored"].items()
        }
        for result in results:
            evaluation = RunEvaluation.model_validate(result)
            evaluations[evaluation.split] = evaluation
        return Evaluations(splits={split: evaluations[split] for split in config.splits})

    def summary_line(self, result: Evaluations) -> str:
        return ", ".join(
            f"{split} Avg {evaluation.metrics['Avg']:.1f} on {evaluation.videos_scored} videos"
            for split, evaluation in result.splits.items()
        )

    def device(self, config: EvaluateInput) -> str | None:
        return config.config.device

    def warnings(self, result: Evaluations) -> list[str]:
        return [evaluation.warning for evaluation in result.splits.values() if evaluation.warning]


# ---- report ------------------------------------------------------------------------------


class ReportInput(BaseModel):
    """A run and what its report shows."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    config: ReportConfig = Field(default_factory=ReportConfig)


def _report_folder(store: str, run_id: str) -> RunDir:
    run = RunStore(store).run(run_id)
    return RunDir(run.fs, f"{run.path}/{REPORT_FOLDER}", f"{run.url}/{REPORT_FOLDER}")


class ReportStage(Stage[ReportInput, ReportResult]):
    name = "report"
    config_type = ReportInput
    result_type = ReportResult
    code = ("avvp.pipeline.reports.report",)

    def plan(self, store: str, config: ReportInput) -> Plan:
        # The report shows the evaluations' numbers and figures of the run's outputs.
        url = run_url(store, config.run_id)
        evaluations = {}
        for split in sorted({*config.config.splits, config.config.figure_split}):
            try:
                evaluations[split] = plan_evaluation(url, EvaluateConfig(split=split)).cache_key
            except (ValueError, FileNotFoundError) as error:
                evaluations[split] = str(error)  # the report notes it; a change is news
        settings = config.config.model_dump(mode="json", exclude={"device", "batch_size"})
        key = digest(self.name, config.run_id, evaluations, settings, self.code_version())
        folder = _report_folder(store, config.run_id)
        return stamped_plan(self.name, key, store, folder, STAMP, config.run_id)

    def run(self, store: str, config: ReportInput, unit: Unit, reporter: Reporter) -> ReportResult:
        return write_report(run_url(store, config.run_id), config.config)

    def finish(
        self, store: str, config: ReportInput, plan: Plan, results: list[BaseModel]
    ) -> ReportResult:
        folder = _report_folder(store, config.run_id)
        if not results:
            stamp = read_stamp(folder, STAMP)
            assert stamp is not None  # the plan found it holding
            stored = ReportResult.model_validate(stamp.result)
            return stored.model_copy(update={"run_url": run_url(store, config.run_id)})
        result = ReportResult.model_validate(results[0])
        files = [name.removeprefix(f"{REPORT_FOLDER}/") for name in result.files]
        write_stamp(folder, STAMP, plan.key, store, result, files=files)
        return result

    def summary_line(self, result: ReportResult) -> str:
        return f"{result.run_url}/{result.html} ({len(result.files)} files)"

    def device(self, config: ReportInput) -> str | None:
        return config.config.device

    def warnings(self, result: ReportResult) -> list[str]:
        return list(result.notes)
