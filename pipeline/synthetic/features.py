"""A synthetic mini-LLP at feature level, with planted structure a parser can learn.

Each class has an audio signature (in CLAP-map token space), a visual signature (CLIP
space) and a motion signature (R(2+1)D space). Every video holds one to a few classes;
for each, an audio event and a visual event are drawn independently (so the modalities
are asynchronous, and events of different classes may overlap), and segments covered
by no event carry background only. Features are the sum of the active signatures plus
noise, shaped exactly like LLP's (CLAP 64 x 768 maps, CLIP 10 x 768, R(2+1)D 10 x 512).
Labels follow LLP's conventions: weak labels are the union of both modalities' events,
segment pseudo-labels are the dense truth restricted to the weak classes with random
flips (as zero-shot pseudo-labels are noisy), and dense truth exists for val and test.

Everything goes through the feature and label stores exactly like real data, so the
demo and the tests exercise the same reading code as a real LLP run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from ...model.classes import NUM_CLASSES
from ...storage import FeatureStore, LabelStore, Provenance
from .. import catalog

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = "1"
CLAP_TIME_STEPS = 32


class SyntheticLLPConfig(BaseModel):
    """How many videos and how hard the task is."""

    n_train: int = Field(256, ge=1)
    n_val: int = Field(64, ge=1)
    n_test: int = Field(96, ge=1)
    num_segments: int = Field(10, ge=2)
    active_classes: int = Field(
        10, ge=1, le=NUM_CLASSES, description="classes that occur at all (a random subset)"
    )
    max_classes_per_video: int = Field(3, ge=1, le=NUM_CLASSES)
    modality_presence: float = Field(0.8, gt=0, le=1, description="P(event in a modality)")
    noise: float = Field(0.06, ge=0, description="per-dimension feature noise std")
    pseudo_label_flip: float = Field(0.15, ge=0, le=1, description="flip rate within weak classes")
    seed: int = 0


@dataclass
class SyntheticLLP:
    """The generated arrays, in the layouts the stores and metrics use."""

    video_ids: np.ndarray  # (N,) str, 11 characters like YouTube ids
    splits: np.ndarray  # (N,) str
    audio_map: np.ndarray  # (N, 64, 768) float16
    visual: np.ndarray  # (N, T, 768) float16, L2-normalised per segment
    visual_st: np.ndarray  # (N, T, 512) float16
    weak: np.ndarray  # (N, K) uint8
    dense: np.ndarray  # (N, 2, T, K) uint8, modality order [audio, visual]
    pseudo: np.ndarray  # (N, 2, T, K) uint8


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def noisy_pseudo_labels(
    dense: np.ndarray, weak: np.ndarray, flip_rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Segment pseudo-labels (N, 2, T, K) as zero-shot labelling gives them: the truth
    restricted to the weak classes, each segment of a weak class flipped at `flip_rate`."""
    in_weak = weak[:, None, None, :].astype(bool)
    flips = (rng.random(dense.shape) < flip_rate) & in_weak
    return ((dense ^ flips) & in_weak).astype(np.uint8)


def generate_synthetic_llp(config: SyntheticLLPConfig | None = None) -> SyntheticLLP:
    """Draw a synthetic mini-LLP; the same config always gives the same arrays."""
    cfg = config or SyntheticLLPConfig()
    rng = np.random.default_rng(cfg.seed)
    counts = (cfg.n_train, cfg.n_val, cfg.n_test)
    n, t, k = sum(counts), cfg.num_segments, NUM_CLASSES

    # Classes per video: 1..max classes drawn from the active subset.
    active = np.zeros(k, dtype=bool)
    active[rng.choice(k, cfg.active_classes, replace=False)] = True
    per_video = min(cfg.max_classes_per_video, cfg.active_classes)
    num_classes = rng.integers(1, per_video + 1, n)
    draws = np.where(active, rng.random((n, k)), np.inf)
    rank = draws.argsort(axis=1).argsort(axis=1)
    present = rank < num_classes[:, None]

    # Per (video, class, modality): is there an event, and where. A class present in the
    # video has at least one modality, so weak labels equal the union of the events.
    on = (rng.random((n, k, 2)) < cfg.modality_presence) & present[..., None]
    lost = present & ~on.any(axis=2)
    on[lost, rng.integers(0, 2, int(lost.sum()))] = True
    duration = rng.integers(1, t + 1, (n, k, 2))
    onset = np.floor(rng.random((n, k, 2)) * (t - duration + 1)).astype(int)
    seg = np.arange(t)[None, None, None, :]
    active = on[..., None] & (seg >= onset[..., None]) & (seg < (onset + duration)[..., None])
    dense = active.transpose(0, 2, 3, 1).astype(np.uint8)  # (N, 2, T, K)
    weak = dense.max(axis=(1, 2))

    strength = rng.uniform(0.8, 1.2, (n, 1, k))
    audio_sig = _unit_rows(rng, k, 768)
    visual_sig = _unit_rows(rng, k, 768)
    motion_sig = _unit_rows(rng, k, 512)
    background = _unit_rows(rng, 3, 768 + 768 + 512)

    audio_seg = np.einsum("ntk,kd->ntd", dense[:, 0] * strength, audio_sig)
    # CLAP map tokens are 2 frequency rows x 32 time steps; each time step lies in one
    # segment. The two rows see the event with different weights, as spectra would.
    step_segment = np.arange(CLAP_TIME_STEPS) * t // CLAP_TIME_STEPS
    audio_steps = audio_seg[:, step_segment]
    audio_map = np.concatenate([audio_steps, 0.6 * audio_steps], axis=1)
    audio_map += 0.3 * background[0, :768] + cfg.noise * rng.standard_normal(audio_map.shape)

    visual = np.einsum("ntk,kd->ntd", dense[:, 1] * strength, visual_sig)
    visual += 0.3 * background[1, 768:1536] + cfg.noise * rng.standard_normal(visual.shape)
    visual /= np.linalg.norm(visual, axis=-1, keepdims=True)

    visual_st = np.einsum("ntk,kd->ntd", dense[:, 1] * strength, motion_sig)
    visual_st += 0.3 * background[2, 1536:] + cfg.noise * rng.standard_normal(visual_st.shape)

    pseudo = noisy_pseudo_labels(dense, weak, cfg.pseudo_label_flip, rng)

    video_ids = np.array([f"syn{i:08d}" for i in range(n)])
    splits = np.repeat(np.array(SPLITS), counts)
    return SyntheticLLP(
        video_ids=video_ids,
        splits=splits,
        audio_map=audio_map.astype(np.float16),
        visual=visual.astype(np.float16),
        visual_st=visual_st.astype(np.float16),
        weak=weak,
        dense=dense,
        pseudo=pseudo,
    )


def _feature_provenance(name: str, data: np.ndarray, config: SyntheticLLPConfig) -> Provenance:
    return Provenance(
        source=f"synthetic-{name}",
        version=GENERATOR_VERSION,
        weights=f"synthetic-llp-seed-{config.seed}",
        dtype=str(data.dtype),
        shape=tuple(data.shape[1:]),
        extras={"config": config.model_dump(mode="json")},
    )


def write_synthetic_llp(root: str, config: SyntheticLLPConfig | None = None) -> SyntheticLLP:
    """Generate a synthetic mini-LLP and write it into the stores under `root`.

    Idempotent: windows already stored are skipped by the stores.
    """
    cfg = config or SyntheticLLPConfig()
    data = generate_synthetic_llp(cfg)
    n = len(data.video_ids)
    windows = np.zeros(n, dtype=np.int32)
    valid = np.full(n, cfg.num_segments, dtype=np.int16)
    has_audio = np.ones(n, dtype=bool)

    features = FeatureStore(root)
    for table, array in (
        (catalog.AUDIO_MAP_TABLE, data.audio_map),
        (catalog.VISUAL_TABLE, data.visual),
        (catalog.VISUAL_ST_TABLE, data.visual_st),
    ):
        features.table(table).write(
            data.video_ids, windows, array, valid, has_audio, _feature_provenance(table, array, cfg)
        )

    labels = LabelStore(root)
    provenance = Provenance(
        source="synthetic-llp",
        version=GENERATOR_VERSION,
        extras={"config": cfg.model_dump(mode="json")},
    )
    labels.weak().write(data.video_ids, data.weak, data.splits, provenance)
    labels.segments(catalog.pseudo_label_table("synthetic")).write(
        data.video_ids, windows, data.pseudo[:, 0], data.pseudo[:, 1], provenance
    )
    evaluated = data.splits != "train"
    labels.segments(catalog.dense_table("synthetic")).write(
        data.video_ids[evaluated],
        windows[evaluated],
        data.dense[evaluated, 0],
        data.dense[evaluated, 1],
        provenance,
    )
    return data
