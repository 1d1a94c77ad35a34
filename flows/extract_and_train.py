"""`extract-and-train`: the chain `avvp.pipeline.chain.EXTRACT_AND_TRAIN` as a flow.

By default the flow runs its tasks one at a time in this process (one device serves
them all); `dask` task runners spread the extraction shards over a Dask cluster, each
worker writing its own parts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from ..pipeline.chain import DEFAULT_STORE, EXTRACT_AND_TRAIN
from .chain_flow import run_in_flow

FLOW_NAME = EXTRACT_AND_TRAIN.name


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=1))
def extract_and_train(
    videos: str | list[str] | None = None,
    labels: str | None = None,
    store: str = DEFAULT_STORE,
    extractor_size: str | None = None,
    pseudo_labels: str = "valor",
    model: str = "mmcse",
    epochs: int | None = None,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
) -> dict[str, Any] | State[Any]:
    """The whole chain; see `avvp.pipeline.chain.ChainConfig` for the parameters
    (`preset` is the deprecated name of `extractor_size`, kept for one release)."""
    sizes = {"extractor_size": extractor_size, "preset": preset}
    params = EXTRACT_AND_TRAIN.params.model_validate(
        {
            "videos": videos or [],
            "labels": labels,
            "store": store,
            **{name: size for name, size in sizes.items() if size is not None},
            "pseudo_labels": pseudo_labels,
            "model": model,
            "epochs": epochs,
            "config": config or {},
        }
    )
    return run_in_flow(EXTRACT_AND_TRAIN, params)
