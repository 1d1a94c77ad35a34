"""The Prefect adapter of the chain: each node's plan and each of its units as a task.

`PrefectExecutor` is the executor `avvp.pipeline.chain.run_chain` walks a chain with
inside a flow. Nothing here knows a stage: a node's plan runs as the task
`plan-<node>`, and its units (extraction: one per shard; the others: one) run as
mapped tasks named after the node, whose cache key is the unit's key from the plan.
The store is the truth: a plan without units (its outputs are stored for its key)
submits no unit task at all, and a unit task always runs (`refresh_cache`), since a
plan gives units only for outputs the store lacks. A record Prefect kept of an earlier
run is never used in their place.

Retries: only transient errors (`is_transient`: I/O on a shared filesystem, a full
GPU) are retried, with backoff; a bad video is a failed input in the stage's result,
never a task failure. Units that compute on CUDA hold a slot of the Prefect concurrency
limit `gpu` while they run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.filesystems import WritableFileSystem
from prefect.states import State
from pydantic import BaseModel

from ..pipeline.chain import (
    STAGES,
    Level,
    Node,
    Plan,
    Reporter,
    Unit,
    is_transient,
    needs_gpu,
)

GPU_LIMIT = "gpu"
RETRY_DELAYS_S = [10, 60]


def retry_transient(task: Task[..., Any], _task_run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result()
    except BaseException as error:  # the task's own exception, re-raised by result()
        return is_transient(error)
    return False


@contextlib.contextmanager
def gpu_slot(device: str | None) -> Iterator[None]:
    """Hold one slot of the `gpu` limit while working on CUDA (no limit: no wait)."""
    if not needs_gpu(device):
        yield
        return
    with concurrency(GPU_LIMIT, occupy=1, strict=False):
        yield


RETRYING = {
    "retries": len(RETRY_DELAYS_S),
    "retry_delay_seconds": RETRY_DELAYS_S,
    "retry_condition_fn": retry_transient,
}


# A plan reads the store afresh every time: never a cached plan.
@task(name="plan", cache_policy=NO_CACHE, **RETRYING)
def plan_task(stage: str, store: str, config: BaseModel) -> Plan:
    """The stage's plan: its key, and the units whose outputs the store lacks."""
    return STAGES[stage].plan(store, config)


def _unit_key(context: Any, parameters: dict[str, Any]) -> str:
    return f"{parameters['stage']}-{parameters['unit'].key}"


@task(
    name="unit",
    cache_key_fn=_unit_key,
    refresh_cache=True,
    persist_result=True,
    result_serializer="json",
    **RETRYING,
)
def unit_task(
    stage: str, store: str, config: BaseModel, unit: Unit, reporter: Reporter
) -> BaseModel:
    """One unit of a stage's work."""
    chosen = STAGES[stage]
    with gpu_slot(chosen.device(config)):
        return chosen.run(store, config, unit, reporter)


def log_line(level: Level, message: str) -> None:
    """A line of a node's progress, in the current task's or flow's log."""
    try:
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
    except Exception:  # outside a run context (a Dask worker's own thread, say)
        logger = logging.getLogger("avvp")
    logger.log(logging.WARNING if level == "warning" else logging.INFO, message)


class PrefectExecutor:
    """Runs a chain's plans and units as Prefect tasks of the current flow run, with
    their results kept in `storage` (the store's `prefect-results/`)."""

    def __init__(self, storage: Path | WritableFileSystem) -> None:
        self.storage = storage
        context = FlowRunContext.get()
        self.run_label = str(context.flow_run.id) if context and context.flow_run else "local"

    def plan(self, node: Node, store: str, config: BaseModel) -> Plan:
        return plan_task.with_options(name=f"plan-{node.name}")(node.stage.name, store, config)

    def reporter(self, node: Node, plan: Plan) -> Reporter:
        if not plan.units or not plan.items:
            return Reporter(node.name, plan.items, plan.noun, log_line)
        artifact = create_progress_artifact(
            0.0, key=f"{node.name}-progress", description=f"{node.name}: {plan.items} {plan.noun}"
        )
        return Reporter(
            node.name,
            plan.items,
            plan.noun,
            log_line,
            on_fraction=lambda done: update_progress_artifact(artifact, 100.0 * done),
        )

    def run_units(
        self, node: Node, store: str, config: BaseModel, plan: Plan, reporter: Reporter
    ) -> list[BaseModel | BaseException]:
        runner = unit_task.with_options(name=node.name, result_storage=self.storage)
        futures = runner.map(
            unmapped(node.stage.name),
            unmapped(store),
            unmapped(config),
            plan.units,
            unmapped(reporter),
        )
        outputs: list[BaseModel | BaseException] = []
        for future in futures:
            future.wait()
            state = future.state
            if state.is_completed():
                output = state.result()
                # Units run in other processes (Dask) counted their items there.
                reporter.absorb(node.stage.unit_items(output))
                outputs.append(output)
            else:
                error = state.result(raise_on_failure=False)
                outputs.append(
                    error
                    if isinstance(error, BaseException)
                    else RuntimeError(f"{node.name} unit ended {state.name}: {state.message}")
                )
        return outputs
