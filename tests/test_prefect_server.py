"""The Prefect test harness (tests/prefect_server.py) end to end, with a trivial flow:
a real server, a process serving one deployment, a CLI run of it, and both processes
stopped by their PIDs."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from prefect_server import (
    Background,
    PrefectServer,
    flow_run_states,
    pid_alive,
    process_group_members,
    run_deployment,
    wait_for_deployment,
)

HELLO_FLOW = textwrap.dedent(
    """
    from prefect import flow, serve


    @flow
    def hello(n: int = 1) -> int:
        return 2 * n


    if __name__ == "__main__":
        serve(hello.to_deployment(name="default"))
    """
)


@pytest.mark.slow
def test_a_served_deployment_runs_to_completion_and_both_processes_stop(
    tmp_path: Path,
) -> None:
    flow_file = tmp_path / "hello_flow.py"
    flow_file.write_text(HELLO_FLOW)

    with PrefectServer(tmp_path / "prefect") as server:
        assert server.api_url.startswith("http://127.0.0.1:")
        assert server.env["PREFECT_API_URL"] == server.api_url
        with Background(
            [sys.executable, flow_file],
            env=server.env,
            log_path=tmp_path / "serve.log",
            cwd=tmp_path,
        ) as serving:
            deployment = wait_for_deployment(server, "hello/default", 90, serving=serving)
            result = run_deployment(server, "hello/default", {"n": 3}, timeout_s=120)
            assert result.returncode == 0, (
                f"{result.stdout}\n{result.stderr}\nserve log:\n{serving.log_tail()}"
            )
            assert "Completed" in result.stdout

        runs = flow_run_states(server, "hello")
        assert [(run.state_type, run.parameters) for run in runs] == [("COMPLETED", {"n": 3})]
        assert runs[0].deployment_id == deployment["id"]
        assert flow_run_states(server, "no-such-flow") == []

    for stopped in (serving, server):
        assert not pid_alive(stopped.pid)
        assert process_group_members(stopped.pid) == []
    assert serving.returncode() == 0  # SIGTERM is a clean shutdown for `serve`
