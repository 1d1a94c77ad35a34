"""The chain's room: the stage protocol, the chains declared once as graphs, and the
runner that walks them (DESIGN.md, "Layout").

- `stage`: what every stage declares (`Stage`: name, config model, `plan` with its key
  and units, `run`, `finish`, summary), `Reporter` (progress in counts, rate and time
  left) and the stamps by which the store tells which outputs it holds.
- `stages`: today's stage functions as stages, and `STAGES` by name: here extract and
  parse; in `train_stages` labels, pseudo-labels, train, evaluate and report.
- `graph`: the chains `EXTRACT_AND_TRAIN` and `PARSE_FOLDER`, their parameters
  (`ChainConfig`, `ParseFolderConfig`) and how these resolve into each stage's config.
- `summary`: the typed summaries of a chain's run, written into the store.
- `runner`: `run_chain` (one walk, any executor) and the local runner `run_local`.

The Prefect adapter (`avvp.flows`) imports this room only.
"""

from .graph import (
    DEFAULT_PARSE_OUT,
    DEFAULT_STORE,
    EXTRACT_AND_TRAIN,
    PARSE_FOLDER,
    Chain,
    ChainConfig,
    Node,
    ParseFolderConfig,
)
from .runner import ChainError, Executor, LocalExecutor, run_chain, run_local
from .stage import (
    Level,
    Plan,
    Reporter,
    Stage,
    Unit,
    is_transient,
    needs_gpu,
)
from .stages import STAGES
from .summary import (
    ArtifactTable,
    ChainSummary,
    ExtractAndTrainSummary,
    NodeOutcome,
    ParseFolderSummary,
    summaries_folder,
)

__all__ = [
    "DEFAULT_PARSE_OUT",
    "DEFAULT_STORE",
    "EXTRACT_AND_TRAIN",
    "PARSE_FOLDER",
    "STAGES",
    "ArtifactTable",
    "Chain",
    "ChainConfig",
    "ChainError",
    "ChainSummary",
    "Executor",
    "ExtractAndTrainSummary",
    "Level",
    "LocalExecutor",
    "Node",
    "NodeOutcome",
    "ParseFolderConfig",
    "ParseFolderSummary",
    "Plan",
    "Reporter",
    "Stage",
    "Unit",
    "is_transient",
    "needs_gpu",
    "run_chain",
    "run_local",
    "summaries_folder",
]
