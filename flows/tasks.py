"""The chain's Prefect tasks: each calls one stage function and returns its small JSON
summary (ids, counts, fingerprints, run ids, paths), never arrays.

Retries: only transient errors (I/O on a shared filesystem, a full GPU) are retried,
with backoff; a bad video is a recorded failure inside the extraction stage, never a
task failure. The tasks that use the GPU (extraction, training, evaluation) hold a slot
of the Prefect concurrency limit `gpu` while they run on CUDA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.concurrency.sync import concurrency
from prefect.states import State

from avvp.flows.cache import folder_digest, task_key
from avvp.pipeline.chain import ChainConfig
from avvp.pipeline.dataset import resolve_device
from avvp.pipeline.evaluate import EvaluateConfig, evaluate_run, plan_evaluation
from avvp.pipeline.extract import (
    ExtractConfig,
    Shard,
    extract_shard,
    plan_extraction,
    record_plan,
)
from avvp.pipeline.llp_labels import import_llp_labels
from avvp.pipeline.pseudo_labels import generate_pseudo_labels, write_dense_source
from avvp.pipeline.release import fetch_valor, import_pseudo_labels
from avvp.pipeline.report import ReportConfig, write_report
from avvp.pipeline.train import planned_run_id, train
from avvp.pipeline.train_config import TrainConfig
from avvp.storage import FeatureStore, LabelStore

GPU_LIMIT = "gpu"
RETRY_DELAYS_S = [10, 60]
# Errors of the machine, not of the input: worth a second try.
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(error: BaseException | None) -> bool:
    """I/O errors other than a missing or forbidden path, and CUDA running out of memory."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, OSError | TimeoutError) and not isinstance(error, _PERMANENT_OS_ERRORS)


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result()
    except BaseException as error:  # the task's own exception, re-raised by result()
        return is_transient(error)
    return False


@contextlib.contextmanager
def gpu_slot(device: str) -> Iterator[None]:
    """Hold one slot of the `gpu` limit while working on CUDA (no limit: no wait)."""
    if resolve_device(device).type != "cuda":
        yield
        return
    with concurrency(GPU_LIMIT, occupy=1, strict=False):
        yield


RETRYING = {
    "retries": len(RETRY_DELAYS_S),
    "retry_delay_seconds": RETRY_DELAYS_S,
    "retry_condition_fn": retry_transient,
}
CACHED = {"persist_result": True, "result_serializer": "json"}


@task(name="plan-extraction", **RETRYING)
def plan_extraction_task(videos: list[str], store: str, config: ExtractConfig) -> dict[str, Any]:
    """Which videos lack which tables, in shards; records refused and complete files."""
    plan = plan_extraction(videos, store, config)
    record_plan(plan, store)
    get_run_logger().info(
        "%d videos: %d already stored, %d refused, %d to extract in %d shards",
        plan.videos_found,
        len(plan.skipped),
        len(plan.failures),
        sum(len(shard.videos) for shard in plan.shards),
        len(plan.shards),
    )
    return plan.model_dump(mode="json")


def _shard_key(context: Any, parameters: dict[str, Any]) -> str:
    # The shard key digests its videos' contents, the windows stored and the output
    # settings; where it runs (device, batch, workers) does not change what it writes.
    config: ExtractConfig = parameters["config"]
    return task_key("extract", parameters["shard"]["key"], config.output_settings())


@task(name="extract-shard", cache_key_fn=_shard_key, **CACHED, **RETRYING)
def extract_shard_task(shard: dict[str, Any], store: str, config: ExtractConfig) -> dict[str, Any]:
    """Embed one shard's missing windows and write them (`extract_shard`)."""
    logger = get_run_logger()

    def on_video(outcome: Any) -> None:
        if outcome.status == "failed":
            logger.warning("failed %s: %s", outcome.path, outcome.reason)
        else:
            logger.info("%s %s (%d windows)", outcome.status, outcome.path, outcome.windows)

    with gpu_slot(config.device):
        result = extract_shard(Shard.model_validate(shard), store, config, on_video=on_video)
    return result.model_dump(mode="json")


def _labels_key(context: Any, parameters: dict[str, Any]) -> str:
    return task_key("labels", parameters["store"], folder_digest(parameters["labels"]))


@task(name="import-labels", cache_key_fn=_labels_key, **CACHED, **RETRYING)
def import_labels_task(store: str, labels: str | None) -> dict[str, int]:
    """LLP-format weak labels and dense annotations into the label store."""
    return import_llp_labels(store, labels)


def _pseudo_label_inputs(chain: ChainConfig) -> dict[str, Any]:
    """What a pseudo-label method reads, as digests: the key of its cached result."""
    method = chain.pseudo_label_method()
    inputs: dict[str, Any] = {"method": method, "settings": chain.config.pseudo_labels}
    if method in ("dense", "fetch", "import"):
        inputs["labels"] = folder_digest(chain.labels)
    if method == "import":
        inputs["folder"] = folder_digest(chain.config.pseudo_labels.folder)
    if method in ("dense", "generate"):
        weak = LabelStore(chain.store).weak()
        inputs["weak"] = weak.fingerprint() if weak.provenance is not None else ""
    if method == "generate":
        generate = chain.generate_config()
        features = FeatureStore(chain.store)
        inputs["embeddings"] = [
            features.table(name).fingerprint()
            for name in (generate.visual_table, generate.audio_table)
        ]
    return inputs


def _pseudo_labels_key(context: Any, parameters: dict[str, Any]) -> str:
    chain: ChainConfig = parameters["chain"]
    return task_key("pseudo-labels", chain.pseudo_labels, _pseudo_label_inputs(chain))


@task(name="pseudo-labels", cache_key_fn=_pseudo_labels_key, **CACHED, **RETRYING)
def pseudo_labels_task(chain: ChainConfig) -> dict[str, Any]:
    """Obtain the chain's pseudo-label source; returns its name and what was written."""
    method, store = chain.pseudo_label_method(), chain.store
    if method == "fetch":
        result = fetch_valor(store, chain.fetch_config()).model_dump(mode="json")
        source = "valor"
    elif method == "import":
        folder = chain.config.pseudo_labels.folder
        result = import_pseudo_labels(folder, store, chain.import_config()).model_dump(mode="json")
        source = chain.pseudo_labels
    elif method == "generate":
        generated = generate_pseudo_labels(store, chain.generate_config())
        result, source = generated.model_dump(mode="json"), generated.source
    elif method == "dense":
        dense = write_dense_source(store, labels_dir=chain.labels)
        result, source = dense.model_dump(mode="json"), dense.source
    else:
        result, source = {}, chain.pseudo_labels
    get_run_logger().info("pseudo-labels %r by %s", source, method)
    return {"source": source, "method": method, "result": result}


def _train_key(context: Any, parameters: dict[str, Any]) -> str:
    # The run id digests the resolved config and the fingerprints of every row read.
    return task_key("train", planned_run_id(parameters["store"], parameters["config"]))


@task(name="train", cache_key_fn=_train_key, **CACHED, **RETRYING)
def train_task(store: str, config: TrainConfig) -> dict[str, Any]:
    """Train (or find the finished run of) `config` on the store's rows."""
    logger = get_run_logger()
    with gpu_slot(config.device):
        result = train(
            store,
            config,
            on_epoch=lambda report: logger.info(
                "epoch %d/%d  loss %.4f  val Avg %.1f",
                report.epoch + 1,
                config.epochs,
                report.loss,
                report.val.get("Avg", float("nan")),
            ),
            on_note=logger.info,
        )
    return result.model_dump(mode="json", exclude={"history", "config"})


def _evaluate_key(context: Any, parameters: dict[str, Any]) -> str:
    plan = plan_evaluation(parameters["run_url"], parameters["config"])
    return task_key("evaluate", plan.cache_key)


def _report_key(context: Any, parameters: dict[str, Any]) -> str:
    # The report shows the evaluations' numbers and figures of the run's test outputs.
    config: ReportConfig = parameters["config"]
    run_url = parameters["run_url"]
    evaluations = [
        plan_evaluation(run_url, EvaluateConfig(split=split)).cache_key
        for split in sorted({*config.splits, config.figure_split})
    ]
    return task_key("report", evaluations, config.model_dump(exclude={"device"}))


@task(name="report", cache_key_fn=_report_key, **CACHED, **RETRYING)
def report_task(run_url: str, config: ReportConfig) -> dict[str, Any]:
    """The run's report/ folder: metrics tables, figures and report.html."""
    with gpu_slot(config.device):
        return write_report(run_url, config).model_dump(mode="json")


@task(name="evaluate", cache_key_fn=_evaluate_key, **CACHED, **RETRYING)
def evaluate_task(run_url: str, config: EvaluateConfig) -> dict[str, Any]:
    with gpu_slot(config.device):
        return evaluate_run(run_url, config).model_dump(mode="json")
