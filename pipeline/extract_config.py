"""The extraction stage's settings (`ExtractConfig`): which extractors, with which
weights, on which device, in what batches and with how many decoding processes; the
stage itself is `avvp.pipeline.extract`."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import catalog
from .dataset import resolve_device
from .sources.config_files import renamed_key

DEFAULT_EXTRACTORS = ("clip", "r2plus1d", "clap")


class ExtractConfig(BaseModel):
    """How to extract: which extractors, with which weights, on what, in what batches."""

    model_config = ConfigDict(extra="forbid")

    extractors: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXTRACTORS),
        description="extractors of the feature catalog (avvp.pipeline.catalog), each into "
        "its feature set's table",
    )
    size: Literal["paper", "tiny"] = Field(
        "paper",
        description="the extractors' sizes: paper (released weights) or tiny (small random "
        "networks, for tests and demos)",
    )
    weights: dict[str, str] = Field(
        default_factory=dict, description="extractor name -> weight file (default: its cache)"
    )
    device: str = "auto"
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="what the networks compute in; auto: bfloat16 on CUDA and, for the "
        "paper size, on a CPU with native bf16 (AVX512-BF16 or AMX), float32 otherwise",
    )
    batch_size: int | Literal["auto"] = Field(
        "auto",
        description="windows per embed call; auto: per extractor, the fastest size up to 16 "
        "measured on the first batches (large on a GPU, often one window on a CPU)",
    )
    workers: int | None = Field(
        None,
        ge=0,
        description="decoding processes; default: min(8, CPUs) beside a GPU, CPUs / 2 - 1 "
        "on a CPU (decoding there competes with the extractors' threads)",
    )
    decoder_threads: int | None = Field(
        None,
        ge=1,
        description="video decoder threads in each decoding process; default: the CPUs "
        "shared out among the decoding processes (the decoder's own choice when decoding "
        "in this process)",
    )
    dtype: Literal["float16", "float32"] | None = Field(
        None, description="the stored dtype of every table; default: each feature set's"
    )
    reuse_freed_memory: bool = Field(True, description="False: the C library's heap defaults")
    flush_windows: int = Field(256, ge=1, description="rows a table gathers before a part")
    shard_videos: int = Field(32, ge=1, description="videos per shard, the unit of work")
    labels: str | None = Field(
        None,
        description="LLP-format folder whose ids name LLP files (default: the vendored LLP)",
    )
    ids: Literal["name", "content"] = Field(
        "name",
        description="what a video's rows are stored under: the id of its name (DESIGN.md), "
        "or its content digest (a parse's store: files of one name, different content)",
    )
    retry_failed: bool = Field(
        False,
        description="try again the files that failed on an earlier run (by default they "
        "are skipped while their content is unchanged)",
    )

    _old_names = renamed_key("preset", "size")

    @field_validator("extractors")
    @classmethod
    def _known_extractors(cls, names: list[str]) -> list[str]:
        known = catalog.extracted_sets()
        unknown = sorted(set(names) - known.keys())
        if not names or unknown or len(set(names)) < len(names):
            raise ValueError(
                f"extractors must be distinct names among {', '.join(known)}, got {names}"
            )
        frame_rates = {known[name].extractor_class().input.fps for name in names} - {None}
        if len(frame_rates) > 1:
            raise ValueError(f"the extractors want frames at different rates {frame_rates}")
        return names

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, size: int | str) -> int | str:
        if size != "auto" and size < 1:
            raise ValueError(f"batch_size must be at least 1 or 'auto', not {size}")
        return size

    @model_validator(mode="after")
    def _weights_for_named_extractors(self) -> ExtractConfig:
        if unused := sorted(set(self.weights) - set(self.extractors)):
            raise ValueError(
                f"weights name {', '.join(unused)}, which are not among the extractors "
                f"({', '.join(self.extractors)})"
            )
        return self

    def decoding_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        cpus = os.cpu_count() or 1
        on_gpu = resolve_device(self.device).type != "cpu"
        # Measured on 2 cores (benchmarks/extract.py): a decoding process beside CPU
        # extraction slows the extractors' two threads more than it saves.
        return min(8, cpus) if on_gpu else max(0, min(8, cpus // 2 - 1))

    def output_settings(self) -> dict[str, Any]:
        """The settings that change what is written (not where or how fast it runs)."""
        return {
            "extractors": self.extractors,
            "size": self.size,
            "weights": self.weights,
            "dtype": self.dtype,
        }
