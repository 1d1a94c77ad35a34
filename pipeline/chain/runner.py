"""Running a chain: one walk over its nodes, shared by both runners.

`run_chain(chain, params, executor)` resolves each node's config, asks the executor
for the stage's plan, has it run the plan's units (none when the outputs are stored),
lets the stage finish, and returns the chain's typed summary, also written into the
store. The executor decides where plans and units run: `LocalExecutor` calls the stage
here (tests, `avvp run --runner local`, `avvp parse`); the Prefect adapter in
`avvp.flows` runs each plan and unit as a Prefect task.

A unit that raises does not stop the node's other units; the node then fails after
them, with the first error, and the chain stops there. A failed input (a video that
does not decode) is not an error: it is in the summary's `failures`, and the chain
goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from ...storage import check_store_root
from ...storage.failures import Failure
from .graph import Chain, Node, ParamsT, SummaryT
from .stage import Level, Plan, Reporter
from .summary import NodeOutcome, publish_summary


class ChainError(RuntimeError):
    """Units of a node failed (bugs or lasting machine errors, not bad inputs)."""


class Executor(Protocol):
    """Where a chain's plans and units run."""

    run_label: str

    def plan(self, node: Node, store: str, config: BaseModel) -> Plan: ...

    def reporter(self, node: Node, plan: Plan) -> Reporter: ...

    def run_units(
        self, node: Node, store: str, config: BaseModel, plan: Plan, reporter: Reporter
    ) -> list[BaseModel | BaseException]: ...


def run_chain(chain: Chain[ParamsT, SummaryT], params: ParamsT, executor: Executor) -> SummaryT:
    """Every node in order (module docstring); the summary is written into the store."""
    store = chain.store(params)
    for folder in chain.writes(params):
        check_store_root(folder)
    results: dict[str, BaseModel] = {}
    outcomes: list[NodeOutcome] = []
    failures: list[Failure] = []
    warnings: list[str] = []
    for node in chain.nodes:
        started = time.perf_counter()
        config = node.stage.config_type.model_validate(node.configure(params, results))
        plan = executor.plan(node, store, config)
        reporter = executor.reporter(node, plan)
        outputs: list[BaseModel | BaseException] = []
        if plan.units:
            with reporter.running():
                try:
                    outputs = executor.run_units(node, store, config, plan, reporter)
                finally:
                    node.stage.release()
        raise_failed_units(node, outputs)
        result = node.stage.finish(store, config, plan, outputs)
        line = node.stage.summary_line(result)
        reporter.note(line)
        results[node.name] = result
        failures += node.stage.failures(result)
        warnings += node.stage.warnings(result)
        outcomes.append(
            NodeOutcome(
                node=node.name,
                key=plan.key,
                status="ran" if plan.units else "stored",
                units=len(plan.units),
                seconds=time.perf_counter() - started,
                line=line,
            )
        )
    summary = chain.summary.model_validate(
        {
            "chain": chain.name,
            "store": store,
            "run_label": executor.run_label,
            "nodes": outcomes,
            # One row per input, however many stages saw it fail.
            "failures": list({(f.path, f.reason): f for f in failures}.values()),
            "warnings": list(dict.fromkeys(warnings)),
            **{node.field: results[node.name] for node in chain.nodes},
        }
    )
    publish_summary(summary)
    return summary


def raise_failed_units(node: Node, outputs: list[BaseModel | BaseException]) -> None:
    """Raise the error of a single-unit node as it is, or one for a node's failed units."""
    errors = [output for output in outputs if isinstance(output, BaseException)]
    if not errors:
        return
    if len(outputs) == 1:
        raise errors[0]
    raise ChainError(
        f"{len(errors)} of {len(outputs)} {node.name} units failed (what the others made is "
        f"stored; run again to do only what is missing): {errors[0]}"
    ) from errors[0]


def print_line(level: Level, message: str) -> None:
    print(f"warning: {message}" if level == "warning" else message, file=sys.stderr, flush=True)


class LocalExecutor:
    """Plans and units run here, in order; lines go to `emit` (default: stderr), every
    count to `on_count` (a progress bar)."""

    run_label = "local"

    def __init__(
        self,
        emit: Callable[[Level, str], None] = print_line,
        on_count: Callable[[str, int, int, str], None] | None = None,
    ) -> None:
        self.emit, self.on_count = emit, on_count

    def plan(self, node: Node, store: str, config: BaseModel) -> Plan:
        return node.stage.plan(store, config)

    def reporter(self, node: Node, plan: Plan) -> Reporter:
        return Reporter(node.name, plan.items, plan.noun, self.emit, on_count=self.on_count)

    def run_units(
        self, node: Node, store: str, config: BaseModel, plan: Plan, reporter: Reporter
    ) -> list[BaseModel | BaseException]:
        outputs: list[BaseModel | BaseException] = []
        for unit in plan.units:
            try:
                outputs.append(node.stage.run(store, config, unit, reporter))
            except Exception as error:  # the node fails after its other units
                outputs.append(error)
        return outputs


def run_local(
    chain: Chain[ParamsT, SummaryT],
    params: ParamsT | dict[str, Any],
    emit: Callable[[Level, str], None] = print_line,
    on_count: Callable[[str, int, int, str], None] | None = None,
) -> SummaryT:
    """The chain in this process, without Prefect: lines to `emit`, counts to `on_count`."""
    validated = chain.params.model_validate(params)
    return run_chain(chain, validated, LocalExecutor(emit, on_count))
