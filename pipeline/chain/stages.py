"""The stages of the chains, each a wrapper of today's stage functions in the stage
protocol (`stage.py`): the science stays in those functions; here is only what each
one reads (its key), whether its outputs are stored, and how its result is told.
Here: the stages of the parse-folder chain (extract, which extract-and-train runs too,
and parse) and `STAGES`, every stage by name; the other stages of extract-and-train
are in `train_stages.py`.

| stage | units | its outputs are stored when |
| --- | --- | --- |
| labels | one | the stamp of its key holds (weak and dense label tables) |
| extract | shards of videos | every video is in every table (the plan finds no shard) |
| pseudo-labels | one | the stamp of its key holds (the source's table) |
| train | one | the run folder of its id holds config, checkpoint and metrics |
| evaluate | splits | `eval-<split>-...json` holds the evaluation's key |
| report | one | the report's stamp (in `report/`) holds its key and files |
| parse | one | the parse's stamp (in the output folder) holds its key and files |
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...storage import RunDir
from ...storage.failures import Failure
from ...storage.location import open_root
from ..decoding_workers import close_decoding_workers
from ..embedding import check_extraction_settings
from ..extract import (
    ExtractConfig,
    ExtractionPlan,
    ExtractSummary,
    Shard,
    ShardResult,
    counted,
    extract_shard,
    plan_extraction,
    record_plan,
    summarize,
)
from ..infer import load_run
from ..parse import ParseConfig, ParseResult, parse_inputs, parse_stored
from ..reports.plots import MODALITIES
from .stage import STAMP, Plan, Reporter, Stage, Unit, digest, read_stamp, stamped_plan, write_stamp
from .train_stages import (
    EvaluateStage,
    LabelsStage,
    PseudoLabelsStage,
    ReportStage,
    TrainStage,
)

# ---- extract -----------------------------------------------------------------------------


class ExtractInput(BaseModel):
    """The videos to extract and how."""

    model_config = ConfigDict(extra="forbid")

    videos: list[str] = Field(default_factory=list)
    config: ExtractConfig = Field(default_factory=ExtractConfig)


class ExtractStage(Stage[ExtractInput, ExtractSummary]):
    name = "extract"
    config_type = ExtractInput
    result_type = ExtractSummary
    code = ("avvp.pipeline.extract",)

    def plan(self, store: str, config: ExtractInput) -> Plan:
        if config.videos:
            planned = plan_extraction(config.videos, store, config.config)
        else:
            planned = ExtractionPlan(
                videos_found=0, skipped=[], failures=[], shards=[], manifest_updates=[]
            )
        if planned.shards:
            check_extraction_settings(store, config.config)  # before any work
        code = self.code_version()
        contents = sorted(
            (video.video_id, video.digest)
            for video in [*planned.skipped, *(t for s in planned.shards for t in s.videos)]
        )
        units = [
            Unit(
                key=f"{shard.key.removeprefix(f'{self.name}-')}-{code}",
                label=f"shard {number}/{len(planned.shards)} "
                f"({counted(len(shard.videos), 'video')})",
                item=shard.model_dump(mode="json"),
            )
            for number, shard in enumerate(planned.shards, 1)
        ]
        return Plan(
            stage=self.name,
            key=digest(self.name, contents, config.config.output_settings(), code),
            units=units,
            items=sum(len(shard.videos) for shard in planned.shards),
            noun="videos",
            facts=planned.model_dump(mode="json"),
        )

    def run(self, store: str, config: ExtractInput, unit: Unit, reporter: Reporter) -> ShardResult:
        def on_video(outcome: Any) -> None:
            if outcome.status == "failed":
                reporter.warn(f"failed {outcome.path}: {outcome.reason}")
            elif outcome.warning:
                reporter.warn(f"{outcome.path}: {outcome.warning}")
            reporter.advance(outcome.video_id)

        return extract_shard(
            Shard.model_validate(unit.item), store, config.config, on_video=on_video
        )

    def finish(
        self, store: str, config: ExtractInput, plan: Plan, results: list[BaseModel]
    ) -> ExtractSummary:
        planned = ExtractionPlan.model_validate(plan.facts)
        record_plan(planned, store)
        shards = [ShardResult.model_validate(result) for result in results]
        return summarize(planned, shards, config.config)

    def summary_line(self, result: ExtractSummary) -> str:
        return result.line()

    def device(self, config: ExtractInput) -> str | None:
        return config.config.device

    def release(self) -> None:
        close_decoding_workers()  # kept from shard to shard (units), not beyond the node

    def failures(self, result: ExtractSummary) -> list[Failure]:
        return list(result.failures)

    def warnings(self, result: ExtractSummary) -> list[str]:
        lines = [f"{warning.path}: {warning.message}" for warning in result.warnings]
        if result.videos_failed_before:
            lines.append(
                f"{result.videos_failed_before} file(s) that failed on an earlier run were "
                "not tried again (skipped while unchanged); --retry-failed (the extract "
                "setting retry_failed) tries them"
            )
        return lines

    def unit_items(self, unit_result: BaseModel) -> list[str]:
        shard = ShardResult.model_validate(unit_result)
        return [*shard.extracted, *(failure.video_id for failure in shard.failures)]


# ---- parse -------------------------------------------------------------------------------


class ParseInput(BaseModel):
    """The files to parse, the run that parses them and where the results go."""

    model_config = ConfigDict(extra="forbid")

    videos: list[str]
    run: str
    out: str
    config: ParseConfig = Field(default_factory=ParseConfig)


def _out_folder(out: str) -> RunDir:
    fs, path = open_root(out)
    return RunDir(fs, path, out)


class ParseStage(Stage[ParseInput, ParseResult]):
    name = "parse"
    config_type = ParseInput
    result_type = ParseResult
    code = ("avvp.pipeline.parse",)

    def plan(self, store: str, config: ParseInput) -> Plan:
        # What parse_stored reads: the run, the files' stored rows and failures.
        inputs = parse_inputs(config.videos, config.run, store, config.config)
        settings = config.config.model_dump(mode="json", exclude={"device", "batch_windows"})
        key = digest(self.name, inputs, settings, self.code_version())
        return stamped_plan(self.name, key, store, _out_folder(config.out), STAMP, config.out)

    def run(self, store: str, config: ParseInput, unit: Unit, reporter: Reporter) -> ParseResult:
        loaded = load_run(config.run, config.config.device)
        return parse_stored(config.videos, loaded, store, config.out, config.config)

    def finish(
        self, store: str, config: ParseInput, plan: Plan, results: list[BaseModel]
    ) -> ParseResult:
        folder = _out_folder(config.out)
        if not results:
            stamp = read_stamp(folder, STAMP)
            assert stamp is not None  # the plan found it holding
            return ParseResult.model_validate(stamp.result)
        result = ParseResult.model_validate(results[0])
        write_stamp(folder, STAMP, plan.key, store, result, files=result.files)
        return result

    def summary_line(self, result: ParseResult) -> str:
        counts = ", ".join(f"{result.events.get(m, 0)} {m}" for m in MODALITIES)
        parsed = len(result.videos) - len(result.failed)
        return f"{parsed} of {len(result.videos)} files parsed; events: {counts}; {result.out}"

    def device(self, config: ParseInput) -> str | None:
        return config.config.device

    def failures(self, result: ParseResult) -> list[Failure]:
        return [Failure(video.video_id, video.path, video.reason) for video in result.failed]


STAGES: dict[str, Stage[Any, Any]] = {
    stage.name: stage
    for stage in (
        LabelsStage(),
        ExtractStage(),
        PseudoLabelsStage(),
        TrainStage(),
        EvaluateStage(),
        ReportStage(),
        ParseStage(),
    )
}
