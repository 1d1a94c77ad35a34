"""`parse-folder`: the chain `avvp.pipeline.chain.PARSE_FOLDER` as a flow: a folder of
new videos and a trained run -> events, videos.csv and timelines, with the features
in a store of the parse's own (`<out>/store` by default)."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from ..pipeline.chain import DEFAULT_PARSE_OUT, PARSE_FOLDER
from .chain_flow import run_in_flow

FLOW_NAME = PARSE_FOLDER.name


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=1))
def parse_folder(
    videos: str | list[str],
    run: str,
    out: str = DEFAULT_PARSE_OUT,
    store: str | None = None,
    threshold: float = 0.5,
    config: dict[str, Any] | None = None,
) -> dict[str, Any] | State[Any]:
    """Extract what the parse's store lacks with the run's extractors, then parse."""
    params = PARSE_FOLDER.params.model_validate(
        {
            "videos": videos,
            "run": run,
            "out": out,
            "store": store,
            "threshold": threshold,
            "config": config or {},
        }
    )
    return run_in_flow(PARSE_FOLDER, params)
