"""The stage protocol: what every stage of a chain declares, and the store's records of
what a stage has made.

A stage (DESIGN.md, "Stages") is run by a runner in four steps:

1. `plan(store, config)` reads the store and gives a `Plan`: its key (a digest of
   exactly the rows and files the stage reads, its config and its own code version)
   and its units of work, the ones whose outputs are missing from the store. A plan
   without units is done: its outputs are in the store for that key.
2. `run(store, config, unit, reporter)` does one unit (extraction: one shard of
   videos; the other stages have a single unit) and returns its typed result.
3. `finish(store, config, plan, results)` records what the units made and returns the
   stage's typed result; for a plan that was done it reads that result from the store.
4. `summary_line(result)` says what happened in one line.

The store is the truth: a runner never asks anything but the plan whether work is
needed, and a plan asks the store. Stages whose outputs are whole tables record, after
a run, a `Stamp` of their key and of their output tables' fingerprints under
`<store>/stages/<stage>/<key>.json`; their plan is done only when the stamp of its key
exists and every table still has the recorded fingerprint. Deleted, edited or foreign
rows make the stage run again; a copied store keeps its stamps, and they hold there too.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Generic, Literal, TypeVar

import torch
from pydantic import BaseModel, Field

from ...storage import FeatureStore, LabelStore, RunDir
from ...storage.failures import Failure
from ...storage.location import open_root
from ..code_version import code_version
from ..dataset import resolve_device

ConfigT = TypeVar("ConfigT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound=BaseModel)
STAMPS_FOLDER = "stages"
STAMP = "stage.json"  # the stamp beside files a stage writes outside the tables
# "progress": a count line (done, rate, time left), which a progress bar may show instead.
Level = Literal["info", "warning", "progress"]


class Unit(BaseModel):
    """One unit of a stage's work: its key (the plan's key for a single-unit stage), a
    name for logs, and what `run` needs beyond the stage's config."""

    key: str
    label: str
    item: dict[str, Any] = Field(default_factory=dict)


class Plan(BaseModel):
    """What a stage will do: its key, the units whose outputs are missing (none: the
    outputs are in the store), how many items the units process (videos, epochs) for
    progress, and what `finish` needs to know of the planning."""

    stage: str
    key: str
    units: list[Unit] = Field(default_factory=list)
    items: int = 0
    noun: str = "items"
    facts: dict[str, Any] = Field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.units


def digest(*parts: Any) -> str:
    """16 hex digits of JSON-able parts (pydantic models are dumped first)."""
    text = json.dumps(list(parts), sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else str(value)


class Reporter:
    """Progress of one node: counts the items its units finish and says, at most every
    `every_s` seconds and at the end, how many are done, the rate and the time left
    (`extract: 57/200 videos, 3.1 videos/s, about 46 s left`), as "progress" lines;
    while `running`, also every `every_s` seconds when no item finished meanwhile (a
    first item that takes long, a model being built), so a log is never silent for
    long. Notes and warnings go out at once. `emit(level, message)` writes a line;
    `on_count(node, done, total, noun)` is told every count (a progress bar);
    `on_fraction(f)` the fraction done after every count line (a progress artifact).

    Copies in other processes (a Dask worker) count for themselves only, so they keep
    quiet about counts; the runner adds their units' items when a unit finishes
    (`absorb`), and only items this copy has not counted itself.
    """

    def __init__(
        self,
        node: str,
        total: int,
        noun: str,
        emit: Callable[[Level, str], None],
        on_fraction: Callable[[float], None] | None = None,
        every_s: float = 5.0,
        on_count: Callable[[str, int, int, str], None] | None = None,
    ) -> None:
        self.node, self.total, self.noun = node, total, noun
        self.emit, self.on_fraction, self.every_s = emit, on_fraction, every_s
        self.on_count = on_count
        self.done = 0
        self.counted: set[str] = set()
        self.started = self.last_line = time.monotonic()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"], state["_stopped"]
        state["on_count"] = None  # a display of this process, not of a worker's
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    @contextlib.contextmanager
    def running(self) -> Iterator[Reporter]:
        """While the block runs, a count line at least every `every_s` seconds."""
        if self.on_count is not None:
            self.on_count(self.node, self.done, self.total, self.noun)
        # The thread runs in a copy of this context, so a Prefect run logger still
        # finds its run.
        context = contextvars.copy_context()
        beat = threading.Thread(target=context.run, args=(self._beat,), daemon=True)
        beat.start()
        try:
            yield self
        finally:
            self._stopped.set()
            beat.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self.every_s / 5):
            with self._lock:
                if time.monotonic() - self.last_line >= self.every_s and self.done < self.total:
                    self.last_line = time.monotonic()
                    self._line("")

    def advance(self, item: str, detail: str = "") -> None:
        """One item is finished (`detail`: what to say of it when a line is due)."""
        with self._lock:
            if item in self.counted:
                return
            self.counted.add(item)
            self.done += 1
            if self.on_count is not None and os.getpid() == self._pid:
                self.on_count(self.node, self.done, self.total, self.noun)
            now = time.monotonic()
            due = now - self.last_line >= self.every_s or self.done >= self.total
            if due and os.getpid() == self._pid:
                self.last_line = now
                self._line(detail)

    def absorb(self, items: Iterable[str]) -> None:
        """Count finished items another process counted (a unit's result)."""
        for item in items:
            self.advance(item)

    def note(self, message: str) -> None:
        self.emit("info", f"{self.node}: {message}")

    def warn(self, message: str) -> None:
        self.emit("warning", f"{self.node}: {message}")

    def _line(self, detail: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if self.total <= 1 or not self.done:  # no rate yet, or none worth giving
            counts = f"{self.done}/{self.total} {self.noun}"
            so_far = f", {duration_text(elapsed)} so far" if self.done < self.total else ""
            self.emit("progress", f"{self.node}: {detail or counts + so_far}")
            return
        rate = self.done / elapsed
        speed = (
            f"{rate:.1f} {self.noun}/s"
            if rate >= 1
            else f"{1 / rate:.1f} s per {singular(self.noun)}"
        )
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        tail = f", about {duration_text(left)} left" if self.done < self.total else ""
        extra = f"; {detail}" if detail else ""
        self.emit(
            "progress", f"{self.node}: {self.done}/{self.total} {self.noun}, {speed}{tail}{extra}"
        )
        if self.on_fraction is not None:
            self.on_fraction(self.done / max(self.total, 1))


def singular(noun: str) -> str:
    """videos -> video, batches -> batch."""
    return noun[:-2] if noun.endswith("ches") else noun.removesuffix("s")


def duration_text(seconds: float) -> str:
    """45 s, 12 min, 1 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Stage(ABC, Generic[ConfigT, ResultT]):
    """One stage: its name, config model, result model and code (module docstring)."""

    name: ClassVar[str]
    config_type: ClassVar[type[BaseModel]]
    result_type: ClassVar[type[BaseModel]]
    # The modules whose import closure is the stage's code (pipeline/code_version.py).
    code: ClassVar[tuple[str, ...]]

    def code_version(self) -> str:
        return code_version(*self.code)

    @abstractmethod
    def plan(self, store: str, config: ConfigT) -> Plan: ...

    @abstractmethod
    def run(self, store: str, config: ConfigT, unit: Unit, reporter: Reporter) -> BaseModel: ...

    @abstractmethod
    def finish(
        self, store: str, config: ConfigT, plan: Plan, results: list[BaseModel]
    ) -> ResultT: ...

    @abstractmethod
    def summary_line(self, result: ResultT) -> str: ...

    def device(self, config: ConfigT) -> str | None:
        """The device the stage computes on (None: no accelerator work)."""
        return None

    def release(self) -> None:
        """After a node's units, however they ended: let go of what this process kept
        for them from one unit to the next (extraction's decoding workers)."""

    def failures(self, result: ResultT) -> list[Failure]:
        """The inputs that failed, for the chain's summary."""
        return []

    def warnings(self, result: ResultT) -> list[str]:
        """What the user should know although nothing failed."""
        return []

    def unit_items(self, unit_result: BaseModel) -> list[str]:
        """The items (for progress) a unit's result covers."""
        return []


def needs_gpu(device: str | None) -> bool:
    return device is not None and resolve_device(device).type == "cuda"


# Errors of the machine, not of the input: worth a second try.
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(error: BaseException | None) -> bool:
    """I/O errors other than a missing or forbidden path, and CUDA running out of memory."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, OSError | TimeoutError) and not isinstance(error, _PERMANENT_OS_ERRORS)


# ---- stamps ------------------------------------------------------------------------------


class Stamp(BaseModel):
    """A stage's record of one run: its key, the fingerprints of the tables it made
    (`labels/weak`: fingerprint), files it made (relative to the stamp's folder), and
    its result."""

    key: str
    tables: dict[str, str] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)


def stamps_folder(store: str, stage: str) -> RunDir:
    """`<store>/stages/<stage>/`."""
    fs, path = open_root(store)
    relative = f"{STAMPS_FOLDER}/{stage}"
    return RunDir(fs, f"{path}/{relative}", f"{store.rstrip('/')}/{relative}")


def read_stamp(folder: RunDir, name: str) -> Stamp | None:
    if not folder.exists(name):
        return None
    return Stamp.model_validate(folder.read_json(name))


def table_fingerprint(store: str, table: str) -> str:
    """Fingerprint of `features/<name>` or `labels/<name>` ("" when it holds nothing)."""
    kind, _, name = table.partition("/")
    if kind == "features":
        view = FeatureStore(store).table(name)
    elif name == "weak":
        view = LabelStore(store).weak()
    else:
        view = LabelStore(store).segments(name)
    return view.fingerprint() if view.provenance is not None else ""


def stamp_holds(stamp: Stamp | None, key: str, store: str, folder: RunDir) -> bool:
    """The stamp is of `key`, its tables have the recorded fingerprints and its files exist."""
    if stamp is None or stamp.key != key:
        return False
    if any(table_fingerprint(store, t) != fp for t, fp in stamp.tables.items()):
        return False
    return all(folder.exists(name) for name in stamp.files)


def stamped_plan(stage: str, key: str, store: str, folder: RunDir, name: str, label: str) -> Plan:
    """The plan of a one-unit stage whose runs leave the stamp `folder/name`: done when
    that stamp holds for `key`, else one unit (`label` names it in logs)."""
    if stamp_holds(read_stamp(folder, name), key, store, folder):
        return Plan(stage=stage, key=key)
    return Plan(stage=stage, key=key, units=[Unit(key=key, label=label)])


def write_stamp(
    folder: RunDir,
    name: str,
    key: str,
    store: str,
    result: BaseModel,
    tables: Iterable[str] = (),
    files: Iterable[str] = (),
) -> None:
    """Record a finished run: the tables' fingerprints are read now, after its writes."""
    stamp = Stamp(
        key=key,
        tables={table: table_fingerprint(store, table) for table in tables},
        files=list(files),
        result=result.model_dump(mode="json"),
    )
    folder.write_json(name, stamp.model_dump(mode="json"))
