"""A chain run as the body of a flow: its nodes as tasks (`tasks.PrefectExecutor`), its
summary as artifacts, and a final state that tells the truth.

A flow run in which inputs failed does all the rest of its work, publishes its summary,
and then ends Failed with a message counting the failures, so that `prefect deployment
run --watch` reports it as not successful; its summary is the state's data.
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed, State
from pydantic import BaseModel

from ..pipeline.chain import Chain, ChainSummary, run_chain
from .cache import result_storage
from .tasks import PrefectExecutor, log_line


def run_in_flow(chain: Chain[Any, Any], params: BaseModel) -> dict[str, Any] | State[Any]:
    """Run `chain` inside the current flow; its summary as JSON, or a Failed state
    holding it when inputs failed."""
    store = chain.store(params)
    summary: ChainSummary = run_chain(chain, params, PrefectExecutor(result_storage(store)))
    publish_artifacts(summary)
    log_line("info", f"{chain.name}: summary in {summary.summary_file}")
    data = summary.model_dump(mode="json")
    if not summary.ok:
        log_line("warning", summary.failure_message())
        return Failed(message=summary.failure_message(), data=data)
    return data


def publish_artifacts(summary: ChainSummary) -> None:
    """The summary as markdown and its tables: text only, so that the Prefect UI shows
    them on any machine (the figures are described there and lie in the run's report)."""
    for table in summary.tables():
        create_table_artifact(key=table.key, table=table.rows, description=table.description)
    create_markdown_artifact(key="summary", markdown=summary.markdown())
