"""`parse-folder`: a folder of new videos and a trained run -> events, videos.csv and
timelines (the `avvp parse` stage: `avvp.pipeline.parse`), with the extraction as one
mapped task per shard as in `extract-and-train`."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from avvp.flows.cache import result_storage
from avvp.flows.extract_and_train import extract_stage
from avvp.flows.tasks import RETRYING, gpu_slot
from avvp.pipeline.extract import ExtractConfig
from avvp.pipeline.infer import load_run
from avvp.pipeline.parse import ParseConfig, parse_extract_config, parse_stored
from avvp.storage import open_run

FLOW_NAME = "parse-folder"


@task(name="parse-extract-config")
def extract_config_task(run: str, config: ParseConfig) -> dict[str, Any]:
    """The run's extraction settings, checked against its features' provenance."""
    return parse_extract_config(load_run(run, config.device), config).model_dump(mode="json")


@task(name="parse", **RETRYING)
def parse_task(
    videos: list[str], run: str, store: str | None, out: str, config: ParseConfig
) -> dict[str, Any]:
    loaded = load_run(run, config.device)
    with gpu_slot(config.device):
        return parse_stored(videos, loaded, store or loaded.root, out, config).model_dump(
            mode="json"
        )


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=1))
def parse_folder(
    videos: str | list[str],
    run: str,
    out: str = "./avvp-parsed",
    store: str | None = None,
    threshold: float = 0.5,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Extract what the store lacks with the run's extractors, then parse every file."""
    paths = [videos] if isinstance(videos, str) else list(videos)
    parse_config = ParseConfig.model_validate({**(config or {}), "threshold": threshold})
    extract = ExtractConfig.model_validate(extract_config_task(run, parse_config))
    root = store or open_run(run)[0]
    extraction = extract_stage(paths, root, extract, result_storage(root))
    result = parse_task(paths, run, root, out, parse_config)
    failed = [video for video in result["videos"] if video["status"] != "ok"]
    create_table_artifact(
        key="parsed-videos",
        table=[{k: v for k, v in video.items() if k != "path"} for video in result["videos"]],
        description=f"{len(result['videos']) - len(failed)} of {len(result['videos'])} parsed",
    )
    create_markdown_artifact(
        key="parse-summary",
        markdown=f"# parse-folder\n\n- run: `{run}`\n- out: `{result['out']}`\n"
        f"- events: {result['events']}\n- failed files: {len(failed)}\n",
    )
    get_run_logger().info("events in %s/events.csv", result["out"])
    return {"extraction": extraction, "parse": result}
