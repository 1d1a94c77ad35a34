"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from avvp.pipeline.dataset import DataConfig
    from avvp.pipeline.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
# Everything a test reads lives in the repository: outputs of the official code
# (`metrics_public.*`, `mmcse_official_clapclip.pt`) and the LLP sample clip.
DATA = REPO / "tests" / "data"
FIXTURES = DATA
SAMPLES = DATA

# Model sizes small enough to train in seconds on the CPU.
TINY_SIZES = {"hidden_dim": 32, "class_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32}


# avvp is imported inside the functions below: conftest imports this module before it
# points PREFECT_HOME at a temporary folder, and prefect reads its settings on import.
def synthetic_data() -> DataConfig:
    """Data settings for a store `write_synthetic_llp` wrote: its pseudo-labels and labels."""
    from avvp.pipeline.dataset import DataConfig

    return DataConfig(pseudo_labels="synthetic", annotations="synthetic")


def tiny_config(model: str, epochs: int = 2, **changes: object) -> TrainConfig:
    """A `TINY_SIZES` model trained on the CPU on a synthetic store; `changes` override."""
    from avvp.pipeline.train_config import TrainConfig

    settings = {
        "model": model,
        "architecture": TINY_SIZES,
        "data": synthetic_data(),
        "epochs": epochs,
        "batch_size": 16,
        "device": "cpu",
        "optim": {"warmup_epochs": 1},
        **changes,
    }
    return TrainConfig.model_validate(settings)


class StartStop:
    """`with helper:` calls its `start()`, then its `stop()` however the block ends."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
