"""`parse-folder`: a folder of new videos -> features -> a trained run's per-window
outputs (`OUT.npz` layout, README: exchange formats) in an output folder.

The events, timelines and reports of these outputs are the parse stage's next step;
this flow already runs the extraction shards and the inference of a trained run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from avvp.flows.cache import result_storage
from avvp.flows.extract_and_train import extract_stage
from avvp.flows.tasks import RETRYING, gpu_slot
from avvp.pipeline.chain import DEFAULT_STORE, ChainConfig
from avvp.pipeline.infer import write_run_outputs

FLOW_NAME = "parse-folder"


@task(name="infer", **RETRYING)
def infer_task(run: str, store: str, video_ids: list[str], out: str, device: str) -> dict[str, Any]:
    with gpu_slot(device):
        return write_run_outputs(run, store, video_ids, out, device=device)


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=1))
def parse_folder(
    videos: str | list[str],
    run: str,
    store: str = DEFAULT_STORE,
    preset: str = "paper",
    out: str = "./avvp-parsed",
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Extract the videos' missing windows, then run the trained `run` on all of them."""
    chain = ChainConfig.model_validate(
        {"videos": videos, "store": store, "preset": preset, "config": config or {}}
    )
    extraction = extract_stage(chain, result_storage(chain.store))
    ids = extraction.get("video_ids", [])
    device = chain.config.evaluate.get("device", "auto")
    outputs = infer_task(run, chain.store, ids, str(Path(out)), device)
    get_run_logger().info("outputs of %d windows in %s", outputs["windows"], outputs["file"])
    return {"extraction": extraction, "outputs": outputs}
