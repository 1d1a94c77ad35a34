"""Running the flows: in this process on Prefect's embedded API (`avvp run`, `avvp
demo`, `avvp parse --runner prefect`), or served as deployments against a Prefect
server (`avvp serve`)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import Flow, serve
from prefect.deployments.runner import EntrypointType
from prefect.task_runners import TaskRunner
from pydantic import BaseModel

from ..pipeline.chain import (
    EXTRACT_AND_TRAIN,
    PARSE_FOLDER,
    Chain,
    ChainConfig,
    ExtractAndTrainSummary,
    ParseFolderConfig,
    ParseFolderSummary,
)
from .extract_and_train import extract_and_train
from .parse_folder import parse_folder

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


def _run(flow: Flow[..., Any], chain: Chain[Any, Any], params: BaseModel) -> Any:
    """The flow in this process; its summary, also when inputs failed (the flow run then
    ends Failed, with the summary as its data). Any other failure is raised."""
    state = flow(**params.model_dump(mode="json"), return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    return chain.summary.model_validate(data)


def run_extract_and_train(
    chain: ChainConfig,
    runner: TaskRunnerName = "default",
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> ExtractAndTrainSummary:
    """`extract-and-train` in this process; returns its summary."""
    flow = with_runner(extract_and_train, task_runner(runner, dask_address, dask_workers))
    return _run(flow, EXTRACT_AND_TRAIN, chain)


def run_parse_folder(params: ParseFolderConfig) -> ParseFolderSummary:
    """`parse-folder` in this process; returns its summary."""
    return _run(parse_folder, PARSE_FOLDER, params)


def serve_deployments(runner: TaskRunnerName = "default", dask_address: str | None = None) -> None:
    """Serve `extract-and-train/default` and `parse-folder/default` until interrupted."""
    chosen = task_runner(runner, dask_address)
    # By module path: a flow run loads `avvp.flows.<module>` as part of the installed
    # package, whose relative imports a file path loaded as a script could not resolve.
    by_module = EntrypointType.MODULE_PATH
    serve(
        with_runner(extract_and_train, chosen).to_deployment(
            name=DEPLOYMENT, entrypoint_type=by_module
        ),
        with_runner(parse_folder, chosen).to_deployment(name=DEPLOYMENT, entrypoint_type=by_module),
    )
