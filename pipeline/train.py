"""The train stage: stored features and labels in, a run folder with a checkpoint out.

A split's features are read from the store once and kept on the device; batches are
formed by indexing those tensors, so an epoch has no per-sample file reads and no
Python loops building targets. Model selection is on validation segment-level
Type@AV, as in the official code.

Progress: `on_estimate` gets, during the first epoch, the run's expected length timed
on its first batches; `on_epoch` gets each epoch's loss, validation metrics and time
(epochs are numbered from 1 everywhere: reports, `best_epoch`, history.json);
`on_note` gets choices made for the caller (a label source picked because the store
holds only that one).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from pydantic import BaseModel, Field

from .. import __version__
from ..model.factory import create_model, needs_aux, training_loss
from ..storage import RunDir, RunStore
from .code_version import code_version
from .dataset import (
    autocast,
    load_split,
    resolve_device,
    resolve_label_sources,
    split_fingerprints,
)
from .evaluate import score_split
from .infer import predict
from .sources.checkpoints import checkpoint_bytes
from .train_config import OptimConfig, TrainConfig

SELECTION_METRIC = "Seg-type"
# Batches of the first epoch timed for the run's estimate (after one warm-up batch).
ESTIMATE_BATCHES = 3
HISTORY_FILE = "history.json"  # the run's epochs (EpochReport rows)
# A validation pass is forward only: about a third of a training step per window.
_FORWARD_SHARE = 1 / 3


def create_optimizer(
    parameters: Iterable[torch.nn.Parameter], optim: OptimConfig
) -> torch.optim.AdamW:
    """The trainer's AdamW. fused=True updates every parameter in one kernel on CUDA (a
    per-tensor loop of small kernels otherwise) and runs vectorised on CPU."""
    return torch.optim.AdamW(
        parameters, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay, fused=True
    )


def learning_rate_factor(optim: OptimConfig, epochs: int) -> Callable[[int], float]:
    """Per-epoch multiplier of the base learning rate (LambdaLR)."""
    if optim.schedule == "step":
        return lambda epoch: optim.gamma ** (epoch // optim.step_size)
    floor = optim.min_lr / optim.lr

    def warmup_cosine(epoch: int) -> float:
        if epoch < optim.warmup_epochs:
            return (epoch + 1) / (optim.warmup_epochs + 1)
        # The last epoch trains at exactly min_lr.
        span = max(1, epochs - optim.warmup_epochs - 1)
        progress = min(1.0, (epoch - optim.warmup_epochs) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return warmup_cosine


@dataclass
class EpochReport:
    """One finished epoch. `epoch` is its number counted from 1 (1..epochs), the
    numbering of `TrainResult.best_epoch`, metrics.json's `best_epoch`, history.json,
    the checkpoint's `epoch` and every progress line."""

    epoch: int
    loss: float
    lr: float
    val: dict[str, float]
    seconds: float = 0.0  # wall time of the epoch, validation included


class TrainEstimate(NamedTuple):
    """How long a run will take, timed on its first batches."""

    seconds: float  # the whole run
    epoch_seconds: float
    timed_batches: int
    epochs: int
    device: str


class TrainResult(BaseModel):
    """What `train` did: JSON-serialisable (`model_dump(mode="json")`)."""

    run_url: str
    run_id: str
    best_epoch: int  # counted from 1, as EpochReport.epoch
    best_val: dict[str, float]
    history: list[EpochReport] = Field(default_factory=list)
    reused: bool = False
    config: TrainConfig | None = None  # as resolved against the store
    notes: list[str] = Field(default_factory=list)


# A finished run's own files; metrics.json is written last.
RUN_FILES = ("config.json", "checkpoint.pt", "metrics.json")


def is_finished(run: RunDir) -> bool:
    """The run folder holds a finished run (a deleted file makes it train again)."""
    return all(run.exists(name) for name in RUN_FILES)


def run_id_for(config: TrainConfig, inputs: dict[str, Any]) -> str:
    """Same config, same rows read and same training code (`run_inputs` holds both) ->
    same run id, so a rerun does no work twice. The device is left out: where a run
    trains does not change what it is."""
    settings = config.model_dump_json(exclude={"device"})
    digest = hashlib.sha256((settings + json.dumps(inputs, sort_keys=True)).encode()).hexdigest()
    return f"{config.model}-{digest[:12]}"


def run_inputs(root: str, config: TrainConfig) -> dict[str, Any]:
    """Fingerprints of exactly the rows a run reads (`config` resolved): the train
    split's features, weak and pseudo-labels, and the validation split's features,
    weak labels and dense annotations; and under "code" the version of the training
    code. A row added or changed there, or changed training code, makes a new run;
    rows of other videos (the test split, say) do not."""
    data = config.data
    return {
        data.train_split: split_fingerprints(root, data, data.train_split, with_pseudo=True),
        data.val_split: split_fingerprints(root, data, data.val_split, with_dense=True),
        "code": code_version("avvp.pipeline.train"),
    }


def planned_run_id(root: str, config: TrainConfig) -> str:
    """The id `train(root, config)` gives its run, found without training: a flow's
    cache key for the training task."""
    resolved, _ = resolve_train_config(root, config)
    return run_id_for(resolved, run_inputs(root, resolved))


ProgressHook = Callable[[EpochReport], None]


def resolve_train_config(root: str, config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """`config` with its label sources chosen against the store (see
    `dataset.resolve_label_sources`), and notes on what was chosen for the caller."""
    data, notes = resolve_label_sources(root, config.data)
    return config.sizes_resolved().model_copy(update={"data": data}), notes


def train(
    root: str,
    config: TrainConfig | None = None,
    *,
    on_epoch: ProgressHook | None = None,
    on_estimate: Callable[[TrainEstimate], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    force: bool = False,
) -> TrainResult:
    """Train a parser on the stores under `root`; writes `<root>/runs/<run-id>/`."""
    config, notes = resolve_train_config(root, config or TrainConfig())
    for note in notes:
        if on_note is not None:
            on_note(note)
    model_config = config.model_config_resolved()
    inputs = run_inputs(root, config)
    run_id = run_id_for(config, inputs)
    run = RunStore(root).run(run_id)
    if is_finished(run) and not force:
        summary = run.read_json("metrics.json")
        return TrainResult(
            run_url=run.url,
            run_id=run_id,
            best_epoch=summary["best_epoch"],
            best_val=summary["val"],
            reused=True,
            config=config,
            notes=notes,
        )

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    train_split = load_split(root, config.data, config.data.train_split, device, with_pseudo=True)
    val_split = load_split(root, config.data, config.data.val_split, device, with_dense=True)
    assert train_split.pseudo is not None

    model = create_model(model_config).to(device)
    optimizer = create_optimizer(model.parameters(), config.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, learning_rate_factor(config.optim, config.epochs)
    )
    loss_config = config.loss.to_loss_config()
    with_aux = needs_aux(model_config, loss_config)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    rule = config.filter_resolved()

    history: list[EpochReport] = []
    best: tuple[float, int, dict[str, float], bytes] | None = None
    timer = _FirstBatchesTimer(
        device, math.ceil(len(train_split) / config.batch_size), config.epochs
    )
    # Validation windows in training-batch equivalents, for the estimate.
    validation_batches = _FORWARD_SHARE * len(val_split) / config.batch_size
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_split), generator=generator).to(device)
        # Summed on the device: a .item() per step would stall the GPU every step.
        total, batches = torch.zeros((), device=device), 0
        for start in range(0, len(order), config.batch_size):
            if epoch == 1:
                timer.before_batch(batches)
            rows = order[start : start + config.batch_size]
            with autocast(device, config.amp):
                output = model(
                    train_split.audio[rows],
                    train_split.visual[rows],
                    train_split.visual_st[rows],
                    with_aux=with_aux,
                )
            pseudo = train_split.pseudo[rows]
            loss = training_loss(
                model_config,
                output,
                train_split.weak[rows],
                pseudo[:, 0],
                pseudo[:, 1],
                loss_config,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            optimizer.step()
            total += loss.total.detach()
            batches += 1
            estimate = timer.after_batch(batches, validation_batches) if epoch == 1 else None
            if estimate is not None and on_estimate is not None:
                on_estimate(estimate)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        outputs = predict(
            model, val_split.audio, val_split.visual, val_split.visual_st, amp=config.amp
        )
        val = score_split(outputs, val_split, rule)
        report = EpochReport(
            epoch, float(total) / max(batches, 1), lr, val, time.perf_counter() - epoch_started
        )
        history.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if best is None or val[SELECTION_METRIC] > best[0]:
            extra = {"epoch": epoch, "val": val, "train_config": config.model_dump_json()}
            best = (val[SELECTION_METRIC], epoch, val, checkpoint_bytes(model, model_config, extra))

    assert best is not None
    _, best_epoch, best_val, checkpoint = best
    run.write_json(
        "config.json",
        {
            "train": json.loads(config.model_dump_json()),
            "model": model_config.to_dict(),
            "device": str(device),
            "avvp_version": __version__,
        },
    )
    run.write_json("inputs.json", inputs)
    run.write_bytes("checkpoint.pt", checkpoint)
    run.write_json(HISTORY_FILE, [report.__dict__ for report in history])
    # Written last: its presence marks a finished run.
    run.write_json(
        "metrics.json",
        {
            "best_epoch": best_epoch,
            "selection_metric": SELECTION_METRIC,
            "filter_rule": rule,
            "val": best_val,
        },
    )
    return TrainResult(
        run_url=run.url,
        run_id=run_id,
        best_epoch=best_epoch,
        best_val=best_val,
        history=history,
        config=config,
        notes=notes,
    )


class _FirstBatchesTimer:
    """Times ESTIMATE_BATCHES training batches of the first epoch, after a warm-up batch
    (allocations, kernel selection) when the epoch has enough of them."""

    def __init__(self, device: torch.device, batches_per_epoch: int, epochs: int) -> None:
        self.device, self.batches_per_epoch, self.epochs = device, batches_per_epoch, epochs
        self.first = 1 if batches_per_epoch > ESTIMATE_BATCHES else 0
        self.last = min(batches_per_epoch, self.first + ESTIMATE_BATCHES)
        self.started = 0.0

    def before_batch(self, index: int) -> None:
        if index == self.first:
            self._synchronize()
            self.started = time.perf_counter()

    def after_batch(self, done: int, validation_batches: float) -> TrainEstimate | None:
        """The estimate once the timed batches are done, else None."""
        if done != self.last:
            return None
        self._synchronize()
        per_batch = (time.perf_counter() - self.started) / (self.last - self.first)
        epoch_seconds = per_batch * (self.batches_per_epoch + validation_batches)
        return TrainEstimate(
            epoch_seconds * self.epochs,
            epoch_seconds,
            self.last - self.first,
            self.epochs,
            str(self.device),
        )

    def _synchronize(self) -> None:
        # Kernels run asynchronously on CUDA: time what they did, not what was queued.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
