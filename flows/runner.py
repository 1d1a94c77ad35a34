"""Running the flows: in this process on Prefect's embedded API (`avvp run`, `avvp
demo`), or served as deployments against a Prefect server (`avvp serve`)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import Flow, serve
from prefect.task_runners import TaskRunner

from avvp.flows.extract_and_train import extract_and_train
from avvp.flows.parse_folder import parse_folder
from avvp.pipeline.chain import ChainConfig

TaskRunnerName = Literal["default", "dask"]
DEPLOYMENT = "default"


def task_runner(
    name: TaskRunnerName, dask_address: str | None = None, dask_workers: int | None = None
) -> TaskRunner[Any] | None:
    """None (the flow's own: one task at a time here), or a Dask runner: a LocalCluster
    of `dask_workers` single-threaded workers, or the cluster at `dask_address`."""
    if name == "default":
        return None
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    cluster = {"threads_per_worker": 1}
    if dask_workers:
        cluster["n_workers"] = dask_workers
    return DaskTaskRunner(cluster_kwargs=cluster)


def with_runner(flow: Flow[..., Any], runner: TaskRunner[Any] | None) -> Flow[..., Any]:
    return flow if runner is None else flow.with_options(task_runner=runner)


def run_chain(
    chain: ChainConfig,
    runner: TaskRunnerName = "default",
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """`extract-and-train` in this process; returns its summary."""
    flow = with_runner(extract_and_train, task_runner(runner, dask_address, dask_workers))
    return flow(**chain.model_dump(mode="json"))


def serve_deployments(runner: TaskRunnerName = "default", dask_address: str | None = None) -> None:
    """Serve `extract-and-train/default` and `parse-folder/default` until interrupted."""
    chosen = task_runner(runner, dask_address)
    serve(
        with_runner(extract_and_train, chosen).to_deployment(name=DEPLOYMENT),
        with_runner(parse_folder, chosen).to_deployment(name=DEPLOYMENT),
    )
