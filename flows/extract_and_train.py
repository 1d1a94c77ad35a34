"""`extract-and-train`: videos -> features -> labels -> pseudo-labels -> train -> evaluate
-> publish, as a Prefect 3 DAG over the pipeline's stage functions.

Extraction is one mapped task per shard (the unit of work: resumed per shard, stats per
shard). By default the flow runs its tasks one at a time in this process (one device
serves them all); `dask` task runners spread the shards over a Dask cluster, each
worker writing its own parts, with decoding in-process (Dask's workers are daemonic and
cannot fork loader processes).

What the run did (shard tasks run or found in the cache, rows written, whether training
ran) is returned as one JSON summary, written to `<store>/flows/extract-and-train/` and
shown as Prefect artifacts with the metrics tables and the failures of this run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.context import FlowRunContext
from prefect.filesystems import WritableFileSystem
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from avvp.flows.cache import result_storage
from avvp.flows.tasks import (
    evaluate_task,
    extract_shard_task,
    import_labels_task,
    plan_extraction_task,
    pseudo_labels_task,
    report_task,
    train_task,
)
from avvp.pipeline.chain import DEFAULT_STORE, ChainConfig, publish_summary, summary_markdown
from avvp.pipeline.evaluate import METRIC_KEYS
from avvp.pipeline.extract import ExtractConfig
from avvp.storage.failures import Failure

FLOW_NAME = "extract-and-train"


def task_outcome(state: State[Any]) -> str:
    """`cached` (Prefect found the result), `ran`, or the state's name when it failed."""
    if state.name == "Cached":
        return "cached"
    return "ran" if state.is_completed() else state.name.lower()


def in_dask() -> bool:
    context = FlowRunContext.get()
    return context is not None and type(context.task_runner).__name__ == "DaskTaskRunner"


def extract_stage(
    videos: list[str], store: str, config: ExtractConfig, storage: Path | WritableFileSystem
) -> dict[str, Any]:
    """Plan, then one task per shard; a failed shard fails the flow after the others."""
    if in_dask():
        config = config.model_copy(update={"workers": 0})
    summary: dict[str, Any] = {"videos_found": 0, "shards": 0, "ran": 0, "cached": 0}
    if not videos:
        return summary
    plan = plan_extraction_task(videos, store, config)
    shard_task = extract_shard_task.with_options(result_storage=storage)
    futures = shard_task.map(plan["shards"], unmapped(store), unmapped(config))
    states = [future.wait() or future.state for future in futures]
    outcomes = [task_outcome(state) for state in states]
    results = [state.result() for state in states if state.is_completed()]
    written: dict[str, int] = {}
    for result in results:
        for table, rows in result["windows_written"].items():
            written[table] = written.get(table, 0) + rows
    summary.update(
        videos_found=plan["videos_found"],
        videos_skipped=len(plan["skipped"]),
        shards=len(states),
        ran=outcomes.count("ran"),
        cached=outcomes.count("cached"),
        videos_extracted=[video for result in results for video in result["extracted"]],
        video_ids=[
            *(task["video_id"] for task in plan["skipped"]),
            *(video for result in results for video in result["extracted"]),
        ],
        windows_written=written,
        failures=[
            Failure(*failure)._asdict()
            for failure in [*plan["failures"], *(f for r in results for f in r["failures"])]
        ],
    )
    if failed := [state for state in states if not state.is_completed()]:
        raise RuntimeError(
            f"{len(failed)} of {len(states)} extraction shards failed (the other shards' "
            "rows are stored; run the flow again to extract only what is missing): "
            f"{failed[0].message}"
        )
    return summary


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=1))
def extract_and_train(
    videos: str | list[str] | None = None,
    labels: str | None = None,
    store: str = DEFAULT_STORE,
    preset: str = "paper",
    pseudo_labels: str = "valor",
    model: str = "mmcse",
    epochs: int | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole chain; see `avvp.pipeline.chain.ChainConfig` for the parameters."""
    chain = ChainConfig.model_validate(
        {
            "videos": videos or [],
            "labels": labels,
            "store": store,
            "preset": preset,
            "pseudo_labels": pseudo_labels,
            "model": model,
            "epochs": epochs,
            "config": config or {},
        }
    )
    logger = get_run_logger()
    storage = result_storage(chain.store)
    labels_state = import_labels_task.with_options(result_storage=storage)(
        chain.store, chain.labels, return_state=True
    )
    extraction = extract_stage(chain.videos, chain.store, chain.extract_config(), storage)
    pseudo_state = pseudo_labels_task.with_options(result_storage=storage)(
        chain, return_state=True, wait_for=[labels_state]
    )
    source = pseudo_state.result()["source"]
    train_state = train_task.with_options(result_storage=storage)(
        chain.store, chain.train_config(source), return_state=True
    )
    trained = train_state.result()
    evaluations = {}
    for split in chain.config.splits:
        state = evaluate_task.with_options(result_storage=storage)(
            trained["run_url"], chain.evaluate_config(split), return_state=True
        )
        evaluations[split] = {**state.result(), "task": task_outcome(state)}
    report_state = report_task.with_options(result_storage=storage)(
        trained["run_url"], chain.report_config(), return_state=True
    )
    report = report_state.result()
    context = FlowRunContext.get()
    summary = {
        "flow_run": str(context.flow_run.id) if context and context.flow_run else "",
        "store": chain.store,
        "extraction": extraction,
        "labels": {"task": task_outcome(labels_state), "written": labels_state.result()},
        "pseudo_labels": {**pseudo_state.result(), "task": task_outcome(pseudo_state)},
        "train": {**trained, "task": task_outcome(train_state)},
        "evaluate": evaluations,
        "report": {
            "html": f"{trained['run_url']}/{report['html']}",
            "figures": [f for f in report["files"] if f.endswith(".png")],
            "task": task_outcome(report_state),
        },
    }
    summary["summary_file"] = publish_summary(chain.store, FLOW_NAME, summary)
    publish_artifacts(summary)
    logger.info("run %s; summary in %s", trained["run_url"], summary["summary_file"])
    return summary


def publish_artifacts(summary: dict[str, Any]) -> None:
    """The metrics of each split and this run's failures as tables, and a summary."""
    for split, evaluation in summary["evaluate"].items():
        create_table_artifact(
            key=f"metrics-{split}",
            table=[
                {"metric": key, "value": round(evaluation["metrics"][key], 2)}
                for key in METRIC_KEYS
            ],
            description=f"{split} split, {evaluation['annotations']} annotations, "
            f"filter {evaluation['filter_rule']}: {evaluation['run_url']}",
        )
    failures = summary["extraction"].get("failures") or []
    create_table_artifact(
        key="failures",
        table=[{"path": f["path"], "reason": f["reason"]} for f in failures]
        or [{"path": "", "reason": "no failures"}],
        description="videos that failed in this run",
    )
    create_markdown_artifact(key="summary", markdown=summary_markdown(summary))
    run_url = summary["train"]["run_url"]
    if "://" not in run_url:
        # The report's figures, by their file URLs (they live in the run folder).
        folder = Path(run_url)
        for name in summary["report"]["figures"]:
            # Artifact keys allow lowercase letters, digits and dashes only.
            key = re.sub(r"[^a-z0-9-]+", "-", Path(name).stem.lower())
            create_image_artifact(
                image_url=(folder / name).resolve().as_uri(),
                key=f"report-{key}"[:100],
                description=f"{name} of {summary['train']['run_id']}",
            )
