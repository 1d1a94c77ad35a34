"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parents[1]
# Everything a test reads lives in the repository: outputs of the official code
# (`metrics_public.*`, `mmcse_official_clapclip.pt`) and the LLP sample clip.
DATA = REPO / "tests" / "data"
FIXTURES = DATA
SAMPLES = DATA


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
