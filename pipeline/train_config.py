"""Configuration of the train stage: pydantic models, loadable from TOML/YAML and
overridable on the command line; every run writes its resolved copy."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..model.config import MMCSEOptions, ModelConfig, get_model_config, resolve_model_name
from ..model.losses import MMCSELossConfig
from . import catalog
from .dataset import DataConfig, resolve_device
from .sources.config_files import load_config

TABLE_FIELDS = ("audio_table", "visual_table", "visual_st_table")  # DataConfig's, in order
ARCHITECTURE_FIELDS = ("hidden_dim", "class_dim", "num_layers", "num_heads", "ffn_dim", "dropout")

ModelSize = Literal["auto", "paper", "tiny"]
# Network sizes by name. `tiny` is the same architecture, narrower and shallower: on a
# CPU an epoch of it takes seconds where the paper's sizes take most of a minute.
SIZE_ARCHITECTURES: dict[str, dict[str, float]] = {
    "paper": {},
    "tiny": {"hidden_dim": 64, "class_dim": 32, "num_layers": 2, "num_heads": 4, "ffn_dim": 128},
}


def resolve_size(size: ModelSize, device: str) -> Literal["paper", "tiny"]:
    """`auto` is the paper's sizes on a GPU and tiny ones on a CPU."""
    if size == "auto":
        return "paper" if resolve_device(device).type == "cuda" else "tiny"
    if size not in SIZE_ARCHITECTURES:
        raise ValueError(f"unknown size {size!r}: use auto, paper or tiny")
    return size


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = 3e-4
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float = 1.0
    schedule: Literal["warmup_cosine", "step"] = "warmup_cosine"
    warmup_epochs: int = 10
    min_lr: float = 3e-6
    step_size: int = 10
    gamma: float = 0.1


class LossOptions(BaseModel):
    """MM-CSE's auxiliary losses (ignored by VALOR, whose loss has none)."""

    model_config = ConfigDict(extra="forbid")

    reconstruction: bool = True
    orthogonality: bool = True
    co_occurrence: bool = True
    lambda1: float = 0.1
    lambda2: float = 0.1

    def to_loss_config(self) -> MMCSELossConfig:
        return MMCSELossConfig(
            reconstruction=self.reconstruction,
            orthogonality=self.orthogonality,
            co_occurrence=self.co_occurrence,
            lambda1=self.lambda1,
            lambda2=self.lambda2,
        )


class TrainConfig(BaseModel):
    """Everything a run depends on; written resolved into every run folder."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("mmcse-clapclip", description="model preset (avvp.model.config)")
    size: ModelSize | None = Field(
        None,
        description="named sizes (paper, tiny, auto: tiny on a CPU) under `architecture`; "
        "resolved into `architecture` before a run's id is taken",
    )
    architecture: dict[str, float] = Field(
        default_factory=dict,
        description="overrides of the preset's sizes: hidden_dim, class_dim, num_layers, ...",
    )
    mmcse: dict[str, bool] = Field(default_factory=dict, description="MM-CSE ablation switches")
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossOptions = Field(default_factory=LossOptions)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 87
    device: str = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA")
    filter_rule: Literal["mmcse", "valor"] | None = Field(
        None, description="evaluation filter; default: the model's own protocol"
    )

    def model_config_resolved(self) -> ModelConfig:
        config = get_model_config(self.model)
        data = self.data
        inputs = catalog.input_spec(
            config.inputs, data.audio_table, data.visual_table, data.visual_st_table
        )
        config = replace(config, inputs=inputs)
        if architecture := self.sizes_resolved().architecture:
            sizes = {
                name: value if name == "dropout" else int(value)
                for name, value in architecture.items()
            }
            config = replace(config, **sizes)
        if self.mmcse:
            config = replace(config, mmcse=replace(config.mmcse, **self.mmcse))
        return config

    def sizes_resolved(self) -> TrainConfig:
        """This config with `size` turned into `architecture` entries (explicit ones win),
        so that a run names its network's sizes exactly, whatever machine resolved it."""
        if self.size is None:
            return self
        named = SIZE_ARCHITECTURES[resolve_size(self.size, self.device)]
        return self.model_copy(
            update={"size": None, "architecture": {**named, **self.architecture}}
        )

    def filter_resolved(self) -> str:
        return self.filter_rule or self.model_config_resolved().kind

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        """Aliases (`mmcse`, `valor`) become the preset they stand for, so that a run's
        config and id name the network exactly."""
        canonical = resolve_model_name(name)
        get_model_config(canonical)
        return canonical

    @model_validator(mode="after")
    def _preset_tables(self) -> TrainConfig:
        """Tables the config leaves unset are the ones the model preset names (the
        catalog's MODEL_TABLES), so `model = "mmcse-vggish-resnet"` alone reads VGGish."""
        given = self.data.model_fields_set
        named = catalog.MODEL_TABLES.get(self.model)
        if named is not None:
            for field, table in zip(TABLE_FIELDS, named, strict=True):
                if field not in given:
                    setattr(self.data, field, table)
        return self

    @field_validator("architecture")
    @classmethod
    def _known_sizes(cls, sizes: dict[str, float]) -> dict[str, float]:
        if unknown := sorted(set(sizes) - set(ARCHITECTURE_FIELDS)):
            raise ValueError(f"unknown architecture sizes {unknown}; known: {ARCHITECTURE_FIELDS}")
        return sizes

    @field_validator("mmcse")
    @classmethod
    def _known_switches(cls, switches: dict[str, bool]) -> dict[str, bool]:
        known = {f.name for f in fields(MMCSEOptions)}
        if unknown := sorted(set(switches) - known):
            raise ValueError(f"unknown MM-CSE switches {unknown}; known: {sorted(known)}")
        return switches


# The paper's recipe (AdamW 3e-4, wd 1e-3, batch 64, 60 epochs, 10 warm-up epochs then
# cosine as VALOR++) is the default; `official` reproduces the official code's defaults.
TRAIN_RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "official": {
        "optim": {"lr": 1e-4, "betas": (0.5, 0.999), "schedule": "step", "step_size": 10},
        "seed": 87,
    },
}


def load_train_config(
    recipe: str = "paper", file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """A recipe, then a TOML/YAML/JSON file, then explicit overrides, each over the last."""
    if recipe not in TRAIN_RECIPES:
        raise ValueError(f"unknown training recipe {recipe!r}; known: {sorted(TRAIN_RECIPES)}")
    return load_config(TrainConfig, file, overrides, TRAIN_RECIPES[recipe])
