"""Segment pseudo-label sources: VALOR's zero-shot labels regenerated from stored
embeddings, the dense oracle, and the score of any source against dense annotations.

- `generate_pseudo_labels`: VALOR's recipe (AVVP.md, "VALOR pseudo-labels") on the CLIP
  image embeddings and CLAP segment embeddings already in the feature store. Visual
  labels are ``100 x cosine`` with the CLIP prompts, audio labels ``logit_scale_a x
  cosine`` with the CLAP prompts, each against per-class thresholds and restricted to
  the video's weak label. The text embeddings of the prompts come from the same
  extractors' text towers, so their weights must be those the stored embeddings were
  made with; the labels go to `segment-generated-<clip weights>+<clap weights>`, so
  labels of other weights never mix with these.
- `prompt_embeddings`: the prompts' text embeddings, computed once per (extractor,
  weights, prompts) and kept in the store under `prompts/<name>/`.
- `write_dense_source`: the `dense` source, segment labels taken from dense truth (the
  planted events of synthetic clips, else the stored LLP annotations): an upper bound
  for any pseudo-label source and the pseudo-labels of synthetic data.
- `score_label_source`: the eleven AVVP metrics of a source itself on one split.

Labels are content: every writer replaces the stored rows whose labels changed (an
edited planted_events.csv, or edited weak labels that restrict the generated labels),
skips identical ones, and says how many rows were new, replaced and unchanged; a rerun
on the same inputs writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..contract import SEGMENTS_PER_WINDOW
from ..extractors import FeatureExtractor, create_extractor
from ..model.classes import LLP_CLASSES
from ..model.metrics import segment_and_event_f1
from ..model.zero_shot import (
    CLAP_PROMPTS,
    CLAP_THRESHOLDS,
    CLIP_LOGIT_SCALE,
    CLIP_PROMPTS,
    CLIP_THRESHOLDS,
    THRESHOLDS_VERSION,
    threshold_labels,
    zero_shot_logits,
)
from ..storage import FeatureStore, FeatureTable, Keys, LabelStore, MissingKeysError, Provenance
from ..storage.labels import WeakLabelTable
from ..storage.table import TensorTable
from . import catalog
from .dataset import (
    ANNOTATIONS,
    PSEUDO_LABELS,
    check_label_source,
    resolve_label_source,
)
from .sources.config_files import renamed_key
from .sources.dense_events import PLANTED_EVENTS_FILE, planted_rows

GENERATOR_VERSION = "1"
DENSE_VERSION = "1"
PROMPTS_KIND = "prompts"  # <root>/prompts/<name>/: cached text embeddings of prompts
GENERATED_PREFIX = "generated-"
DENSE_SOURCE = "dense"
# Videos whose embeddings are read and labelled together, written as one part: bounds
# memory (a batch of LLP clips is about 25 MB of float16 embeddings) and keeps the work
# of earlier batches if a later one fails.
VIDEOS_PER_BATCH = 1024
EXTRACTOR_FOR_WEIGHTS = {"clip": "clip", "clap": "clap-segments"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NOT_IN_TABLE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def _extract_hint(root: str) -> str:
    return f"`avvp extract VIDEOS --store {root} --extractors clip,clap-segments`"


class GenerateConfig(BaseModel):
    """Which text towers score the stored embeddings, and which tables hold those."""

    model_config = ConfigDict(extra="forbid")

    size: Literal["paper", "tiny"] = Field(
        "paper", description="the extractors' size the embeddings were extracted with"
    )
    weights: dict[str, str] = Field(
        default_factory=dict,
        description="'clip' / 'clap' -> weight file (default: each library's cache); the "
        "files the embeddings were extracted with",
    )
    roberta: str | None = Field(
        None, description="local roberta-base folder for the paper CLAP text tower"
    )
    device: str = "auto"
    visual_table: str = catalog.VISUAL_TABLE
    audio_table: str = catalog.AUDIO_SEGMENT_TABLE

    _old_names = renamed_key("preset", "size")

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, weights: dict[str, str]) -> dict[str, str]:
        if unknown := sorted(set(weights) - EXTRACTOR_FOR_WEIGHTS.keys()):
            raise ValueError(
                f"weights name {', '.join(unknown)}; pseudo-labels take weights for "
                f"{' and '.join(EXTRACTOR_FOR_WEIGHTS)} only"
            )
        return weights


class GenerateResult(BaseModel):
    """What one `generate_pseudo_labels` call did.

    Video counts: each video is in exactly one of labelled, without weak labels or
    missing embeddings. Every labelled video is labelled again on each call; its windows
    are new (`windows_written`), changed since the stored labels (`windows_replaced`,
    e.g. after its weak labels were edited) or the same (`windows_unchanged`).
    `input_fingerprints` digest exactly the rows read to label the videos of this call.
    """

    source: str  # read it back with pseudo_labels=<source>
    table: str  # labels/<table>
    videos_labelled: int
    windows_written: int
    windows_replaced: int
    windows_unchanged: int
    videos_without_weak_labels: int
    videos_missing_embeddings: int  # absent from one of the two tables, or fewer windows there
    text_cache_used: bool  # both prompt sets read from the store, no text tower run
    input_fingerprints: dict[str, str]


class DenseResult(BaseModel):
    """What `write_dense_source` wrote."""

    source: str
    origin: str  # "planted-events" or the dense table copied, e.g. "dense-corrected"
    videos: int
    windows_written: int  # new windows
    windows_replaced: int  # stored windows whose labels changed
    windows_already_stored: int  # stored windows with the same labels


class LabelScore(BaseModel):
    """The eleven AVVP metrics (percent) of a pseudo-label source against dense truth."""

    source: str
    split: str
    annotations: str
    videos: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class PromptEmbeddings:
    """Text embeddings of prompts, one row per prompt, and the tower's logit scale."""

    embeddings: np.ndarray  # (K, D) float32, L2-normalised
    logit_scale: float
    cached: bool  # read from the store rather than computed


# ---- prompt embeddings ---------------------------------------------------------------


def short_weights_identity(identity: str, size: str) -> str:
    """A weights identity short enough for a table name: a sha256's first 12 hex digits,
    any other identity with characters a table name refuses replaced by '-'.

    Tiny networks get a `tiny-` prefix: a tiny and a paper network built from the same
    seed share the identity `random-init-seed-N` but are different networks.
    """
    short = identity[:12] if _SHA256.fullmatch(identity) else identity
    short = _NOT_IN_TABLE_NAME.sub("-", short).strip("-") or "unknown"
    return f"tiny-{short}" if size == "tiny" else short


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _logit_scale(extractor: FeatureExtractor) -> float:
    # CLAP's audio-text scale is `logit_scale_a`; CLIP's image-text one `logit_scale`.
    for attribute in ("logit_scale_a", "logit_scale"):
        if hasattr(extractor, attribute):
            return float(getattr(extractor, attribute))
    raise TypeError(f"extractor {extractor.name!r} has no text tower (no logit scale)")


def _prompt_provenance(extractor: FeatureExtractor, digest: str) -> Provenance:
    return Provenance(
        source=extractor.name,
        version=extractor.version,
        weights=extractor.weights_identity,
        dtype="float32",
        shape=(extractor.output_shape[-1],),
        extras={
            "preset": extractor.size,  # the stored key of the size
            "logit_scale": _logit_scale(extractor),
            "prompts_digest": digest,
        },
    )


def prompt_embeddings(
    root: str | os.PathLike[str],
    extractor: FeatureExtractor,
    prompts: Sequence[str],
) -> PromptEmbeddings:
    """The text embeddings of `prompts` by `extractor`'s text tower, computed once.

    Kept in the store as table `prompts/<extractor>-v<version>-<weights>-<digest>`, one
    row per prompt (one per LLP class, in class order) keyed by its class name with
    window 0. Its provenance records the extractor, its version, size and weights
    identity, the logit scale and the digest of the names and prompts; a later call
    with the same extractor weights and prompts reads the rows back and runs no network.
    """
    prompts = list(prompts)
    names = list(LLP_CLASSES)
    if len(names) != len(prompts):
        raise ValueError(f"need one prompt per class, got {len(prompts)} for {len(names)} classes")
    digest = _digest({"names": names, "prompts": prompts})
    expected = _prompt_provenance(extractor, digest)
    short = short_weights_identity(extractor.weights_identity, extractor.size)
    name = f"{extractor.name}-v{extractor.version}-{short}-{digest[:12]}"
    table = TensorTable.open(root, PROMPTS_KIND, name)
    keys = Keys.of(names)
    stored = table.provenance
    if stored is not None:
        if differences := stored.differences(expected):
            raise ValueError(
                f"{table.url} holds text embeddings of another provenance "
                f"({'; '.join(differences)}); delete that folder to rebuild the cache"
            )
        try:
            cached = table.read(keys, ["embedding"])["embedding"]
        except MissingKeysError:
            pass  # some prompts are missing: embed them all, the write keeps stored rows
        else:
            return PromptEmbeddings(cached.astype(np.float32), expected.extras["logit_scale"], True)

    embedded = extractor.embed_texts(prompts)
    embeddings = torch.as_tensor(embedded).detach().float().cpu().numpy()
    if embeddings.shape != (len(prompts), *expected.shape):
        raise ValueError(
            f"{extractor.name}: embed_texts gave shape {embeddings.shape}, expected "
            f"({len(prompts)}, {expected.shape[0]})"
        )
    if not np.isfinite(embeddings).all():
        raise ValueError(f"{extractor.name}: NaN or infinite text embeddings; check its weights")
    table.write(
        keys,
        tensors={"embedding": embeddings},
        scalars={"prompt": pa.array(prompts, pa.string())},
        provenance=expected,
    )
    return PromptEmbeddings(embeddings, expected.extras["logit_scale"], False)


# ---- generated pseudo-labels ---------------------------------------------------------


def generated_source_name(clip: FeatureExtractor, clap: FeatureExtractor) -> str:
    """`generated-<clip weights>+<clap weights>` in the short form of each identity."""
    return GENERATED_PREFIX + "+".join(
        short_weights_identity(extractor.weights_identity, extractor.size)
        for extractor in (clip, clap)
    )


def _build_extractor(key: str, config: GenerateConfig) -> FeatureExtractor:
    name = EXTRACTOR_FOR_WEIGHTS[key]
    options = {"roberta": config.roberta} if key == "clap" else {}
    return create_extractor(
        name,
        size=config.size,
        weights=config.weights.get(key),
        device=None if config.device == "auto" else config.device,
        # Only prompts pass through these towers (a few dozen rows): float32 costs
        # nothing and keeps scores near the labels' thresholds exact.
        precision="float32",
        **options,
    )


def _embedding_table(root: str, name: str, modality: str) -> FeatureTable:
    table = FeatureStore(root).table(name)
    if table.provenance is None:
        raise ValueError(
            f"{root} has no feature table {name!r} (features/{name}); {modality} "
            f"pseudo-labels are computed from it: run {_extract_hint(root)} first"
        )
    return table


def _check_same_weights(root: str, name: str, table: FeatureTable, tower: FeatureExtractor) -> None:
    """Refuse embeddings that `tower`'s text side was not trained with."""
    stored = table.provenance
    size = stored.extras.get("preset", tower.size)  # the stored key of the size
    if (stored.source, stored.weights, size) != (
        tower.name,
        tower.weights_identity,
        tower.size,
    ):
        raise ValueError(
            f"features/{name} holds embeddings of {stored.source!r} with weights "
            f"{stored.weights!r} (size {size!r}), but the text tower is {tower.name!r} "
            f"with weights {tower.weights_identity!r} (size {tower.size!r}): zero-shot "
            "labels need both sides from the same weights. Pass the weight file and size "
            f"the table was extracted with, or re-extract with {_extract_hint(root)} into a "
            "fresh store"
        )


def _segment_mask(valid_segments: np.ndarray) -> np.ndarray:
    """(N, T, 1): True on the segments of each window that hold real content."""
    return (np.arange(SEGMENTS_PER_WINDOW)[None, :] < valid_segments[:, None])[..., None]


def _finite(batch: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(batch).all():
        raise ValueError(
            f"features/{name} holds NaN or infinite embeddings; re-extract those videos"
        )
    return batch


def _weak_table(labels: LabelStore, why: str) -> WeakLabelTable:
    weak_table = labels.weak()
    if weak_table.provenance is None:
        raise ValueError(
            f"{labels.root} has no weak labels (labels/{catalog.WEAK_LABELS_TABLE}); {why}: "
            "run `avvp import-labels` first"
        )
    return weak_table


def generate_pseudo_labels(
    root: str | os.PathLike[str],
    config: GenerateConfig | None = None,
    video_ids: Iterable[str] | None = None,
    *,
    clip: FeatureExtractor | None = None,
    clap: FeatureExtractor | None = None,
) -> GenerateResult:
    """VALOR's zero-shot pseudo-labels of the videos with stored CLIP and CLAP embeddings.

    video_ids: the videos to label (default: every video of either embedding table).
    clip, clap: built extractors whose text towers score the prompts (a ClipExtractor
    and a ClapSegmentExtractor); by default they are built from `config`, never
    downloading weights. Their weights must be those of the stored embeddings.

    Only videos with weak labels and with the same windows in both embedding tables are
    labelled, every window of them, also videos already in the output table: their
    labels depend on their weak labels, which may have been edited since, so changed
    windows replace the stored ones and identical ones are left as they are. Segments
    past a window's `valid_segments` stay 0, and so do the audio labels of a video
    without an audio track (its CLAP rows embed silence).
    """
    config = config or GenerateConfig()
    root = str(root)
    visual_table = _embedding_table(root, config.visual_table, "visual")
    audio_table = _embedding_table(root, config.audio_table, "audio")
    labels = LabelStore(root)
    weak_table = _weak_table(labels, "pseudo-labels are restricted to them")
    clip = clip if clip is not None else _build_extractor("clip", config)
    clap = clap if clap is not None else _build_extractor("clap", config)
    _check_same_weights(root, config.visual_table, visual_table, clip)
    _check_same_weights(root, config.audio_table, audio_table, clap)

    visual_prompts = prompt_embeddings(root, clip, CLIP_PROMPTS)
    audio_prompts = prompt_embeddings(root, clap, CLAP_PROMPTS)
    source = generated_source_name(clip, clap)
    name = catalog.pseudo_label_table(source)
    output = labels.segments(name)
    inputs = {
        f"features/{config.visual_table}": visual_table,
        f"features/{config.audio_table}": audio_table,
        f"labels/{catalog.WEAK_LABELS_TABLE}": weak_table,
    }
    provenance = _generated_provenance(source, clip, clap, audio_prompts.logit_scale, inputs)

    if video_ids is None:
        candidates = list(dict.fromkeys(visual_table.video_ids() + audio_table.video_ids()))
    else:
        candidates = list(dict.fromkeys(video_ids))
    weak_ids = set(weak_table.table.video_ids())
    with_weak = [video_id for video_id in candidates if video_id in weak_ids]
    visual_windows = visual_table.stored_windows(with_weak)
    audio_windows = audio_table.stored_windows(with_weak)
    complete = [
        video_id
        for video_id in with_weak
        if video_id in visual_windows and visual_windows[video_id] == audio_windows.get(video_id)
    ]
    windows = {"written": 0, "replaced": 0, "unchanged": 0}
    for start in range(0, len(complete), VIDEOS_PER_BATCH):
        batch = complete[start : start + VIDEOS_PER_BATCH]
        visual = visual_table.read_videos(batch)
        audio = audio_table.read_videos(batch)
        row_of_video = {video_id: row for row, video_id in enumerate(batch)}
        weak = weak_table.read(batch).labels[[row_of_video[v] for v in visual.keys.video_ids]]
        visual_logits = zero_shot_logits(
            _finite(visual.features, config.visual_table),
            visual_prompts.embeddings,
            CLIP_LOGIT_SCALE,
        )
        audio_logits = zero_shot_logits(
            _finite(audio.features, config.audio_table),
            audio_prompts.embeddings,
            audio_prompts.logit_scale,
        )
        visual_labels = threshold_labels(visual_logits, CLIP_THRESHOLDS, weak)
        audio_labels = threshold_labels(audio_logits, CLAP_THRESHOLDS, weak)
        visual_labels *= _segment_mask(visual.valid_segments)
        audio_labels *= _segment_mask(audio.valid_segments) & audio.has_audio[:, None, None]
        result = output.write(
            visual.keys.video_ids, visual.keys.windows, audio_labels, visual_labels, provenance
        )
        windows["written"] += result.written
        windows["replaced"] += result.replaced
        windows["unchanged"] += result.skipped

    return GenerateResult(
        source=source,
        table=name,
        videos_labelled=len(complete),
        windows_written=windows["written"],
        windows_replaced=windows["replaced"],
        windows_unchanged=windows["unchanged"],
        videos_without_weak_labels=len(candidates) - len(with_weak),
        videos_missing_embeddings=len(with_weak) - len(complete),
        text_cache_used=visual_prompts.cached and audio_prompts.cached,
        input_fingerprints={label: read.fingerprint(complete) for label, read in inputs.items()},
    )


def _generated_provenance(
    source: str,
    clip: FeatureExtractor,
    clap: FeatureExtractor,
    clap_scale: float,
    inputs: dict[str, FeatureTable | WeakLabelTable],
) -> Provenance:
    """What the generated table's rows come from.

    A table accepts writes of one provenance only, and later calls add the rows of
    newly extracted videos (and replace rows whose labels changed), so the inputs are
    recorded by the fingerprints of their provenance (`fingerprint([])`: settings, no
    rows), which stay fixed while rows are added or replaced. The fingerprints of the
    rows each call read are in its `GenerateResult`.
    """

    def tower(extractor: FeatureExtractor, scale: float, prompts: Sequence[str]) -> dict:
        return {
            "extractor": extractor.name,
            "version": extractor.version,
            "preset": extractor.size,  # the stored key of the size
            "weights": extractor.weights_identity,
            "logit_scale": scale,
            "prompts_digest": _digest(list(prompts)),
        }

    return Provenance(
        source=source,
        version=GENERATOR_VERSION,
        weights=f"{clip.weights_identity}+{clap.weights_identity}",
        extras={
            "thresholds_version": THRESHOLDS_VERSION,
            "clip": tower(clip, CLIP_LOGIT_SCALE, CLIP_PROMPTS),
            "clap": tower(clap, clap_scale, CLAP_PROMPTS),
            "input_provenance": {name: table.fingerprint([]) for name, table in inputs.items()},
        },
    )


# ---- the dense source ----------------------------------------------------------------


def write_dense_source(
    root: str | os.PathLike[str],
    *,
    labels_dir: str | os.PathLike[str] | None = None,
    annotations: str = "corrected",
) -> DenseResult:
    """Write the `dense` pseudo-label source (`segment-dense`) from dense truth.

    When `labels_dir` holds `planted_events.csv` (written by `avvp synth clips`), the
    planted events of every clip in it, train clips included, every window of each;
    otherwise a copy of the stored `dense-<annotations>` rows (LLP's val and test).
    The provenance's `origin` says which. Windows whose labels changed since they were
    stored (an edited planted_events.csv) replace the stored ones.
    """
    root = str(root)
    labels = LabelStore(root)
    planted = None if labels_dir is None else Path(labels_dir) / PLANTED_EVENTS_FILE
    if planted is not None and planted.is_file():
        origin = "planted-events"
        truth = planted_rows(planted.parent)
        keys, audio, visual = Keys.of(truth.video_ids, truth.windows), truth.audio, truth.visual
    else:
        try:
            check_label_source(root, ANNOTATIONS, annotations)
        except ValueError as error:
            lacking = "" if planted is None else f"{planted} does not exist and "
            raise ValueError(f"{lacking}{error}") from None
        origin = catalog.dense_table(annotations)
        stored = labels.segments(origin)
        rows = stored.read(stored.keys())
        keys, audio, visual = rows.keys, rows.audio, rows.visual
    provenance = Provenance(source=DENSE_SOURCE, version=DENSE_VERSION, extras={"origin": origin})
    result = labels.segments(catalog.pseudo_label_table(DENSE_SOURCE)).write(
        keys.video_ids, keys.windows, audio, visual, provenance
    )
    return DenseResult(
        source=DENSE_SOURCE,
        origin=origin,
        videos=len(set(keys.video_ids.tolist())),
        windows_written=result.written,
        windows_replaced=result.replaced,
        windows_already_stored=result.skipped,
    )


# ---- scoring a source ----------------------------------------------------------------


def score_label_source(
    root: str | os.PathLike[str],
    source: str,
    *,
    split: str = "test",
    annotations: str | None = None,
) -> LabelScore:
    """The AVVP metrics of pseudo-label source `source` as predictions on `split`.

    Scored on the windows of the split's videos (from the weak-label table) that have
    both pseudo-labels and dense annotations; pred and truth are the stacked (audio,
    visual) labels. annotations None: `corrected`, or the store's only dense set.
    """
    root = str(root)
    check_label_source(root, PSEUDO_LABELS, source)
    annotations, _ = resolve_label_source(root, ANNOTATIONS, annotations)
    labels = LabelStore(root)
    weak_table = _weak_table(labels, "they say each video's split")
    weak = weak_table.read()
    in_split = pa.array(weak.video_ids[weak.splits == split].tolist(), pa.string())
    if not len(in_split):
        held = ", ".join(sorted(set(weak.splits.tolist())))
        raise ValueError(f"{root}: no video of split {split!r} in the weak labels (splits: {held})")
    pseudo = labels.segments(catalog.pseudo_label_table(source))
    dense = labels.segments(catalog.dense_table(annotations))
    keys = pseudo.keys()
    overlap = pc.is_in(pa.array(keys.video_ids, pa.string()), value_set=in_split)
    overlap = pc.and_(overlap, pc.is_in(keys.joined(), value_set=dense.keys().joined()))
    keys = keys[overlap.to_numpy(zero_copy_only=False)]
    if not len(keys):
        raise ValueError(
            f"{root}: none of the {len(in_split)} videos of split {split!r} has both "
            f"pseudo-labels {source!r} and dense annotations {annotations!r}; choose "
            "another split or write the missing labels"
        )
    predicted, truth = pseudo.read(keys), dense.read(keys)
    metrics = segment_and_event_f1(
        np.stack([predicted.audio, predicted.visual], axis=1),
        np.stack([truth.audio, truth.visual], axis=1),
    )
    return LabelScore(
        source=source,
        split=split,
        annotations=annotations,
        videos=len(set(keys.video_ids.tolist())),
        metrics=metrics,
    )
