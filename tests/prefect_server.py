"""A real Prefect server, and long-running Prefect commands against it, for end-to-end tests.

Each server runs `prefect server start` on 127.0.0.1 and a free port, with its own
PREFECT_HOME (so its own SQLite database), in its own session, and is stopped by its
PID (the whole process group, SIGKILL after a grace period):

    with PrefectServer(tmp_path / "prefect") as server:
        with Background(
            [sys.executable, "flows_file.py"], env=server.env, log_path=tmp_path / "serve.log"
        ) as serving:
            wait_for_deployment(server, "hello/default", timeout_s=60)
            result = run_deployment(server, "hello/default", {"n": 3}, timeout_s=120)
        flow_run_states(server, "hello")  # [FlowRunInfo(name=..., state_type="COMPLETED", ...)]

The REST API is read with httpx rather than Prefect's client, so the test process itself
never imports Prefect or changes its global settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from support import StartStop

# The `prefect` console script of the interpreter running the tests (the dev venv).
PREFECT = Path(sys.executable).parent / "prefect"

# A fresh PREFECT_HOME costs ~6-7 s of server startup here (migrations, block
# registration); on a loaded two-core machine several times that.
SERVER_STARTUP_TIMEOUT_S = 120.0
# `serve` and the server stop in under 4 s on SIGTERM, cancelling runs in flight.
STOP_GRACE_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """os.environ for a Prefect process that uses only `home` (and `api_url`, if given).

    Without `api_url` a flow run in that process starts Prefect's embedded (ephemeral)
    API server on a SQLite database under `home`.
    """
    # No inherited PREFECT_* variable (a profile, an API URL or key, a database URL)
    # may point the process anywhere but `home` and `api_url`.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            # The UI is never looked at, and skipping it trims startup a little.
            "PREFECT_SERVER_UI_ENABLED": "false",
            # The embedded API's default of 20 s is too short for a fresh home on a
            # busy machine (~9 s alone, ~25 s with three at once, measured here).
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            # `serve` polls for scheduled runs every 10 s by default; 1 s cuts ~9 s
            # from every deployment run a test triggers.
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            "PREFECT_CLI_COLORS": "false",
            "PREFECT_CLI_PROMPT": "false",
            # distributed logs every worker start and stop at INFO by default.
            "DASK_LOGGING__DISTRIBUTED": "warning",
            "HF_HUB_OFFLINE": "1",
            # Log files then show a process's last words when a test reads their tail.
            "PYTHONUNBUFFERED": "1",
        }
    )
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie then counts as alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    # The state letter follows the command name, which is in parentheses and may
    # itself contain spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it exited while we looked
            continue
        state, group = fields[0], int(fields[3])
        if group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _tail(path: Path, n_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return text[-n_chars:]


class Background(StartStop):
    """A long-running command (`avvp serve`, `prefect worker start`, a script calling
    `serve`) in its own session, output to `log_path`, stopped by its PID.

    `stop` signals the whole process group, so the flow-run subprocesses a runner
    spawned go too. SIGTERM is the default because a `serve` process then cancels the
    runs in flight (state CANCELLED) and exits in ~0.3 s idle, ~3.5 s busy; SIGINT also
    stops it, but leaves runs in flight RUNNING on the server. Pass
    `stop_signal=signal.SIGINT` for `prefect worker start`, which ignores SIGTERM.
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.grace_s = grace_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.argv[0]} was not started")
        return self._process.pid

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError(f"{self.argv[0]} was started already")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # A session of its own: its PID is its process group's id, so `stop` can
            # reach its children, and a Ctrl-C in the test's terminal does not.
            self._process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def log_tail(self, n_chars: int = 4000) -> str:
        return _tail(self.log_path, n_chars)

    def stop(self) -> int | None:
        """Signal the process group, wait for it, SIGKILL what is left after the grace
        period. Returns the command's exit status (None if it was never started)."""
        if self._process is None:
            return None
        pgid = self._process.pid
        if self._process.poll() is None or process_group_members(pgid):
            self._signal_group(pgid, self.stop_signal)
            deadline = time.monotonic() + self.grace_s
            while time.monotonic() < deadline:
                self._process.poll()  # reaps the leader, so it stops counting
                if self._process.returncode is not None and not process_group_members(pgid):
                    break
                time.sleep(0.05)
            else:
                self._signal_group(pgid, signal.SIGKILL)
                self._process.wait(timeout=self.grace_s)
                # SIGKILL cannot be caught; what is left of the group goes within moments.
                deadline = time.monotonic() + 5.0
                while process_group_members(pgid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        return self._process.wait(timeout=self.grace_s)

    @staticmethod
    def _signal_group(pgid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(pgid, signum)


class PrefectServer(StartStop):
    """`prefect server start` on 127.0.0.1 with PREFECT_HOME=`home`, until `stop`."""

    def __init__(self, home: Path, *, startup_timeout_s: float = SERVER_STARTUP_TIMEOUT_S) -> None:
        self.home = home
        self.port = 0  # a free one, chosen by `start`
        self.startup_timeout_s = startup_timeout_s
        self.log_path = home / "server.log"
        self._process: Background | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that talks to this server."""
        return prefect_env(self.home, self.api_url)

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the Prefect server was not started")
        return self._process.pid

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        # Another process may take the free port before the server binds it; a new
        # port then fixes it.
        attempts = 3
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self._process = Background(
                [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=prefect_env(self.home),
                log_path=self.log_path,
            )
            self._process.start()
            if self._wait_until_healthy(began + self.startup_timeout_s):
                return
            exited = self._process.returncode() is not None
            self._process.stop()
            if not exited or attempt == attempts:
                break
        raise RuntimeError(
            f"the Prefect server at {self.api_url} did not answer /health within"
            f" {self.startup_timeout_s:.0f} s (or exited); the end of {self.log_path}:\n"
            + _tail(self.log_path)
        )

    def _wait_until_healthy(self, deadline: float) -> bool:
        """True once /health answers 200; False when the server exits or time runs out."""
        assert self._process is not None
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self._process.running():
                    return False
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return True
                except httpx.TransportError:  # not listening yet
                    pass
                time.sleep(0.2)
        return False

    def stop(self) -> None:
        # SIGTERM: the server exits in ~0.2 s (SIGINT takes ~1 s).
        if self._process is not None:
            self._process.stop()

    def client(self, timeout_s: float = 10.0) -> httpx.Client:
        """An httpx client whose relative URLs are this server's API paths."""
        return httpx.Client(base_url=self.api_url + "/", timeout=timeout_s)


@dataclass(frozen=True)
class FlowRunInfo:
    id: str
    name: str  # the run's generated name, e.g. "popular-swallow"
    state_type: str  # "COMPLETED", "FAILED", "CANCELLED", "RUNNING", ...
    state_name: str  # "Completed", "Cached", "Crashed", ...
    parameters: dict[str, Any]
    deployment_id: str | None


def run_deployment(
    server: PrefectServer,
    name: str,
    params: Mapping[str, Any],
    timeout_s: float,
) -> subprocess.CompletedProcess[str]:
    """`prefect deployment run NAME --param k=v ... --watch`; exit status 0 means the run
    ended COMPLETED, 1 any other final state or a watch timeout."""
    argv = [str(PREFECT), "deployment", "run", name]
    for key, value in params.items():
        # The CLI parses each value as JSON and falls back to a bare string only for
        # some invalid JSON, so every value goes as JSON (paths as strings).
        argv += ["--param", f"{key}={json.dumps(value, default=str)}"]
    argv += ["--watch", "--watch-timeout", str(int(timeout_s))]
    return subprocess.run(
        argv,
        env=server.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        # A margin over --watch-timeout for the CLI's own start (~2 s) and exit.
        timeout=timeout_s + 60,
    )


def flow_run_states(server: PrefectServer, flow_name: str) -> list[FlowRunInfo]:
    """The runs of flow `flow_name`, oldest first."""
    query = {
        "flows": {"name": {"any_": [flow_name]}},
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 200,
    }
    with server.client() as client:
        response = client.post("flow_runs/filter", json=query)
        response.raise_for_status()
    return [
        FlowRunInfo(
            id=run["id"],
            name=run["name"],
            state_type=run["state_type"],
            state_name=run["state_name"],
            parameters=run["parameters"],
            deployment_id=run["deployment_id"],
        )
        for run in response.json()
    ]


def wait_for_deployment(
    server: PrefectServer,
    name: str,
    timeout_s: float,
    *,
    serving: Background | None = None,
) -> dict[str, Any]:
    """Poll until deployment `FLOW/DEPLOYMENT` exists (`serve` registers it ~1.5 s after
    its imports) and return it as the API describes it. With `serving`, the process
    meant to register it, fail at once with its log's tail if that process exits."""
    flow_name, _, deployment_name = name.partition("/")
    path = f"deployments/name/{quote(flow_name, safe='')}/{quote(deployment_name, safe='')}"
    deadline = time.monotonic() + timeout_s
    with server.client() as client:
        while True:
            response = client.get(path)
            if response.status_code == 200:
                return dict(response.json())
            if response.status_code != 404:
                response.raise_for_status()
            if serving is not None and not serving.running():
                raise RuntimeError(
                    f"{serving.argv} exited ({serving.returncode()}) before deployment"
                    f" {name!r} existed; the end of {serving.log_path}:\n{serving.log_tail()}"
                )
            if time.monotonic() > deadline:
                tail = "" if serving is None else f"; the end of its log:\n{serving.log_tail()}"
                raise TimeoutError(f"deployment {name!r} not registered within {timeout_s} s{tail}")
            time.sleep(0.25)
