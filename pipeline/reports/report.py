"""`avvp report RUN`: a trained run's results as one self-contained HTML page and PNGs.

Written into `<store>/runs/<id>/report/`:

- at the top of the page, what made each feature table the run was trained on (its
  stored provenance in plain words), as a warning when the features come from random
  (untrained) networks or are synthetic, so that the scores say nothing about CLIP, CLAP
  or R(2+1)D;
- the eleven AVVP metrics of each split asked for (`evaluate_run`, which caches them),
  and beside them those of the weak-label baseline and of the untrained network
  (`evaluate.reference_metrics`);
- `curves.png`: training loss and validation metrics per epoch from `history.json`, the
  kept epoch marked (none for a run without history.json);
- `per_class.png` and a table: the pooled segment F-score of every class, audio and
  visual, on the figure split;
- `timeline_<n>_<video>.png`: predicted against true events of a few videos of the
  figure split (test by default), as in Fig. 3 of the MM-CSE paper, and the events
  drawn in `timelines.json`;
- MM-CSE only, `co_occurrence_av.png` / `.npy`: the learned audio-to-visual
  co-occurrence map, as in Fig. 4 (see `internals.co_occurrence_and_class_features`);
- MM-CSE only, `tsne_audio.png` / `tsne_visual.png` (and `.npz` with the points): t-SNE
  of the CAFD class features of true (segment, class) pairs, as in Fig. 5;
- `report.html`: the metrics tables, every figure with its caption (images embedded as
  base64 data URIs, inline CSS, no external links), the run's id, model and config.

For a network without SECM attention or CAFD class features (the `valor` baseline, or
an MM-CSE ablation without them) those figures are skipped, with a note on the page and
in `ReportResult.notes`.

Here: what the report gathers (metrics, timelines, the figures of MM-CSE's internals)
and where it writes it; the page itself is written by `page.py`, what MM-CSE holds is
read out by `internals.py`, and provenance, baselines, per-class scores and history are
gathered by `context.py`.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ...contract import SEGMENT_SECONDS, SEGMENTS_PER_WINDOW
from ...model.classes import LLP_CLASSES
from ...model.events import segment_events
from ...model.metrics import binarize_predictions
from ...model.mmcse import MMCSE
from ...storage import RunDir
from ..dataset import SplitTensors, load_split
from ..evaluate import EvaluateConfig, RunEvaluation, evaluate_run, reference_metrics
from ..infer import LoadedRun, load_run, predict
from .context import (
    TRAINED,
    ClassScore,
    EpochRow,
    curve_metrics,
    feature_origins,
    per_class_scores,
    provenance_warning,
    read_history,
)
from .internals import co_occurrence_and_class_features, embed_tsne
from .page import ReportFigure, RunContext, report_html
from .plots import (
    TRACKS,
    TimelineEvent,
    plot_class_scores,
    plot_cooccurrence,
    plot_timeline,
    plot_training_curves,
    plot_tsne,
)

REPORT_FOLDER = "report"
HTML_NAME = "report.html"
TIMELINES_NAME = "timelines.json"
CO_OCCURRENCE_NAME = "co_occurrence_av"
CURVES_NAME = "curves.png"
PER_CLASS_NAME = "per_class.png"
# Names of figure files from earlier reports that this one may not rewrite (fewer
# timeline videos, a model without SECM or without history): removed so the folder
# shows this report only.
_OWN_PREFIXES = ("timeline_", "tsne_", CO_OCCURRENCE_NAME, CURVES_NAME, PER_CLASS_NAME)
MIN_TSNE_POINTS = 5  # t-SNE needs a perplexity below the number of points


class ReportConfig(BaseModel):
    """What `write_report` shows."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"
    splits: list[str] = Field(
        default_factory=lambda: ["val", "test"], description="splits whose metrics are shown"
    )
    figure_split: str = Field("test", description="the split the figures are drawn from")
    timeline_videos: int = Field(4, ge=0, description="videos drawn as timelines")
    tsne_max_segments: int = Field(
        2000,
        ge=1,
        description="segments (each with all its true classes) in a t-SNE; more are sampled",
    )
    seed: int = Field(0, description="seed of the video and segment sampling and of t-SNE")
    batch_size: int = Field(256, ge=1)


class ReportResult(BaseModel):
    """What `write_report` wrote: JSON-serialisable (`model_dump()`)."""

    run_url: str
    run_id: str
    html: str  # the page, relative to the run folder
    files: list[str]  # every file written, relative to the run folder
    metrics: dict[str, dict[str, float]]  # split -> the eleven metrics
    notes: list[str] = Field(default_factory=list)
    # What the page shows besides, for readers without it (the Prefect artifacts).
    provenance: list[str] = Field(default_factory=list)  # a sentence per feature table
    provenance_warning: str = ""  # what the scores cannot say, given the features
    baselines: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict, description="split -> trained run / weak labels / untrained"
    )
    per_class_split: str = ""
    per_class: list[ClassScore] = Field(default_factory=list)
    history: list[EpochRow] = Field(default_factory=list)
    best_epoch: int | None = None
    captions: dict[str, str] = Field(default_factory=dict)  # figure file -> caption


def write_report(run_url: str, config: ReportConfig | None = None) -> ReportResult:
    """Write `report/` into a finished run folder (see the module docstring)."""
    config = config or ReportConfig()
    loaded = load_run(run_url, config.device)
    run = loaded.run
    folder = RunDir(run.fs, f"{run.path}/{REPORT_FOLDER}", f"{run.url}/{REPORT_FOLDER}")
    notes: list[str] = []

    evaluations: dict[str, RunEvaluation] = {}
    for split in config.splits:
        settings = EvaluateConfig(split=split, device=config.device, batch_size=config.batch_size)
        try:
            evaluations[split] = evaluate_run(run_url, settings)
        except (ValueError, FileNotFoundError) as error:
            notes.append(f"no metrics for the {split} split: {error}")

    origins = feature_origins(loaded.root, loaded.config.data)
    figures: list[ReportFigure] = []
    data_files: dict[str, bytes] = {}
    per_class: list[ClassScore] = []
    try:
        split = load_split(
            loaded.root, loaded.config.data, config.figure_split, loaded.device, with_dense=True
        )
    except (ValueError, FileNotFoundError) as error:
        split = None
        notes.append(f"no figures: the {config.figure_split} split could not be read: {error}")
    baselines = baseline_rows(loaded, evaluations, split, config)
    summary = run.read_json("metrics.json") if run.exists("metrics.json") else {}
    history = read_history(run)
    with tempfile.TemporaryDirectory(prefix="avvp-report-") as scratch:
        if history:
            figures.append(curves_figure(history, summary, Path(scratch)))
        else:
            notes.append(
                "training curves skipped: the run folder holds no history.json (a "
                "checkpoint imported, not trained here)"
            )
        if split is not None:
            per_class = per_class_scores(loaded, split, config.batch_size)
            figures.append(per_class_figure(per_class, config.figure_split, Path(scratch)))
            timelines, timeline_data = timeline_figures(loaded, split, config, Path(scratch))
            figures += timelines
            data_files[TIMELINES_NAME] = timeline_data
            class_figures, class_data, class_notes = class_internals_figures(
                loaded, split, config, Path(scratch)
            )
            figures += class_figures
            data_files.update(class_data)
            notes += class_notes

    warning = provenance_warning(origins)
    context = RunContext(origins, warning, baselines, per_class, config.figure_split)
    page = report_html(loaded, evaluations, figures, notes, config.figure_split, context)
    written: list[str] = []
    for name, data in [*((f.name, f.png) for f in figures), *data_files.items()]:
        folder.write_bytes(name, data)
        written.append(name)
    folder.write_text(HTML_NAME, page)  # last: the page exists only for a finished report
    written.append(HTML_NAME)
    for name in folder.names():
        if name not in written and name.startswith(_OWN_PREFIXES):
            run.fs.rm(f"{folder.path}/{name}")
    return ReportResult(
        run_url=run.url,
        run_id=run.run_id,
        html=f"{REPORT_FOLDER}/{HTML_NAME}",
        files=[f"{REPORT_FOLDER}/{name}" for name in written],
        metrics={name: evaluation.metrics for name, evaluation in evaluations.items()},
        notes=notes,
        provenance=[origin.text for origin in origins],
        provenance_warning=warning,
        baselines=baselines,
        per_class_split=config.figure_split if per_class else "",
        per_class=per_class,
        history=history,
        best_epoch=summary.get("best_epoch"),
        captions={figure.name: figure.caption for figure in figures},
    )


# ---- baselines, training curves, per-class scores --------------------------------------


def baseline_rows(
    loaded: LoadedRun,
    evaluations: dict[str, RunEvaluation],
    figure_split: SplitTensors | None,
    config: ReportConfig,
) -> dict[str, dict[str, dict[str, float]]]:
    """For each evaluated split: the trained run's metrics, then the weak-label baseline's
    and the untrained network's on the same windows (the figure split is read once)."""
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for name, evaluation in evaluations.items():
        if name == config.figure_split and figure_split is not None:
            tensors = figure_split
        else:
            tensors = load_split(
                loaded.root, loaded.config.data, name, loaded.device, with_dense=True
            )
        references = reference_metrics(tensors, loaded.config, config.batch_size)
        rows[name] = {TRAINED: evaluation.metrics, **references}
    return rows


def curves_figure(history: list[EpochRow], summary: dict[str, Any], scratch: Path) -> ReportFigure:
    """Training loss and validation metrics per epoch, the kept epoch marked."""
    selection = str(summary.get("selection_metric", "Seg-type"))
    best = summary.get("best_epoch")
    path = plot_training_curves(
        scratch / CURVES_NAME,
        [row.epoch for row in history],
        [row.loss for row in history],
        curve_metrics(history, selection),
        title="Training loss and validation metrics per epoch",
        best_epoch=best,
    )
    kept = (
        f" Dashed line: epoch {best}, the one kept (highest validation {selection}); the "
        "checkpoint and every score of this report are that epoch's."
        if best is not None
        else ""
    )
    caption = (
        f"Top: the training loss of each of the {len(history)} epochs (mean over the "
        "epoch's batches, against the pseudo-labels). Bottom: the validation split's "
        "metrics after each epoch (percent, the run's evaluation protocol), as recorded "
        f"in history.json.{kept}"
    )
    return ReportFigure(CURVES_NAME, path.read_bytes(), caption, section="training")


def per_class_figure(scores: list[ClassScore], split: str, scratch: Path) -> ReportFigure:
    """The per-class table's F-scores as bars, audio and visual."""
    values = np.array(
        [
            [np.nan if s.audio_f is None else s.audio_f for s in scores],
            [np.nan if s.visual_f is None else s.visual_f for s in scores],
        ]
    )
    path = plot_class_scores(
        scratch / PER_CLASS_NAME,
        values,
        [score.class_name for score in scores],
        series=TRACKS,
        title=f"Segment F-score per class ({split} split)",
        xlabel="segment F-score (%)",
    )
    caption = (
        f"The run's segment-level F-score of each class on every window of the {split} "
        "split, audio and visual: true positive, false positive and missed 1-s segments "
        "of the class summed over all windows, then F = 2TP / (2TP + FP + FN). Predictions "
        "by the run's protocol (threshold 0.5 and its video-level filter). n/a: the class "
        "has neither a true nor a predicted segment in that modality. Unlike the official "
        "metrics (a mean over videos of per-video F-scores), the counts are pooled over "
        "the split: one number per class, however its segments spread over the videos."
    )
    return ReportFigure(PER_CLASS_NAME, path.read_bytes(), caption, section="per-class")


# ---- timelines -------------------------------------------------------------------------


def video_tracks(split: SplitTensors, binary: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One video's (2, S, K) track from the (2, T, K) binary arrays of its windows `rows`
    (aligned with binary): window w covers segments 10w.. of the video; padded segments
    are left out, so S is the last window's end."""
    windows = split.keys.windows[rows].astype(np.int64)
    valid = split.valid_segments.cpu().numpy()[rows].astype(np.int64)
    starts = windows * SEGMENTS_PER_WINDOW
    track = np.zeros((2, int((starts + valid).max()), binary.shape[-1]), dtype=np.uint8)
    for index, (start, count) in enumerate(zip(starts, valid, strict=True)):
        track[:, start : start + count] = binary[index, :, :count]
    return track


def track_events(track: np.ndarray, class_names: tuple[str, ...]) -> list[TimelineEvent]:
    """The audio and visual events (runs of ones) of a (2, S, K) track, in seconds."""
    events = segment_events(track.transpose(0, 2, 1))
    modality, klass = events.index
    return [
        TimelineEvent(
            TRACKS[m],
            class_names[k],
            float(onset * SEGMENT_SECONDS),
            float(offset * SEGMENT_SECONDS),
        )
        for m, k, onset, offset in zip(modality, klass, events.onset, events.offset, strict=True)
    ]


def choose_timeline_videos(split: SplitTensors, count: int, seed: int) -> list[str]:
    """`count` videos of the split drawn with `seed`, among those with a true event when
    there are enough of them, in the split's order."""
    assert split.dense is not None
    ids = split.keys.video_ids.astype(str)
    order = list(dict.fromkeys(ids.tolist()))
    with_events = {str(v) for v in np.unique(ids[split.dense.reshape(len(ids), -1).any(axis=1)])}
    pool = [video for video in order if video in with_events]
    if len(pool) < count:
        pool = order
    chosen = np.random.default_rng(seed).choice(len(pool), min(count, len(pool)), replace=False)
    picked = {pool[index] for index in chosen}
    return [video for video in order if video in picked]


def timeline_figures(
    loaded: LoadedRun, split: SplitTensors, config: ReportConfig, scratch: Path
) -> tuple[list[ReportFigure], bytes]:
    """Timelines of a few videos: predictions by the run's own protocol (threshold 0.5,
    its video-level filter, runs of ones per modality and class) against the dense
    truth; and the events drawn, as JSON."""
    assert split.dense is not None
    rule = loaded.config.filter_resolved()
    videos = choose_timeline_videos(split, config.timeline_videos, config.seed)
    ids = split.keys.video_ids.astype(str)
    figures: list[ReportFigure] = []
    listing: list[dict[str, Any]] = []
    for number, video in enumerate(videos, start=1):
        rows = np.flatnonzero(ids == video)
        index = torch.from_numpy(rows).to(split.audio.device)
        outputs = predict(
            loaded.model,
            split.audio[index],
            split.visual[index],
            split.visual_st[index],
            batch_size=config.batch_size,
            amp=loaded.config.amp,
        )
        pred = binarize_predictions(
            outputs["frame_prob"], outputs["global_prob"], outputs["v_prob"], rule
        )
        predicted_track = video_tracks(split, pred, rows)
        true_track = video_tracks(split, split.dense[rows], rows)
        duration = float(predicted_track.shape[1] * SEGMENT_SECONDS)
        predicted = track_events(predicted_track, LLP_CLASSES)
        truth = track_events(true_track, LLP_CLASSES)
        name = f"timeline_{number:02d}_{_file_safe(video)}.png"
        path = plot_timeline(
            scratch / name,
            duration,
            predicted,
            truth=truth,
            title=f"{video}: predicted vs true events ({config.figure_split} split)",
        )
        caption = (
            f"Video {video} ({duration:g} s) of the {config.figure_split} split. "
            "Solid bars: the run's predicted events (segment probabilities thresholded at "
            f"0.5, kept where the {rule!r} video-level filter accepts the class, runs of "
            "consecutive positive 1-s segments joined into events); light bands: the events "
            "of the dense annotations. Audio above, visual below; audio-visual events are "
            "where both tracks hold the same class."
        )
        figures.append(ReportFigure(name, path.read_bytes(), caption))
        listing.append(
            {
                "video_id": video,
                "file": name,
                "duration_s": duration,
                "predicted": [event._asdict() for event in predicted],
                "truth": [event._asdict() for event in truth],
            }
        )
    return figures, (json.dumps(listing, indent=2) + "\n").encode()


# ---- inside MM-CSE: co-occurrence map and class features -------------------------------


def class_internals_figures(
    loaded: LoadedRun, split: SplitTensors, config: ReportConfig, scratch: Path
) -> tuple[list[ReportFigure], dict[str, bytes], list[str]]:
    """The co-occurrence heatmap and the t-SNE figures, their arrays, and notes of what
    was skipped and why."""
    model = loaded.model
    network = f"the {loaded.config.model} network"
    if not isinstance(model, MMCSE):
        return (
            [],
            {},
            [
                f"co-occurrence map skipped: {network} has no SECM class-token attention "
                "(only MM-CSE has)",
                f"t-SNE of class features skipped: {network} has no CAFD class-wise "
                "features (only MM-CSE has)",
            ],
        )
    notes: list[str] = []
    options = model.config.mmcse
    if not (options.secm and options.cross_path):
        notes.append(
            f"co-occurrence map skipped: {network} is built without "
            f"{'SECM' if not options.secm else 'the cross-modal FGSE path'}"
        )
    if not options.decoupling:
        notes.append(
            f"t-SNE of class features skipped: {network} is built without CAFD (one "
            "projection shared by every class)"
        )
    internals = co_occurrence_and_class_features(
        model, split, config.tsne_max_segments, config.seed, config.batch_size
    )
    figures: list[ReportFigure] = []
    arrays: dict[str, bytes] = {}
    if internals.co_occurrence is not None:
        name = f"{CO_OCCURRENCE_NAME}.png"
        layers = model.config.num_layers
        path = plot_cooccurrence(
            scratch / name,
            internals.co_occurrence,
            LLP_CLASSES,
            title=f"Audio-to-visual co-occurrence (SECM cross path, layer {layers} of {layers})",
            row_label="audio class feature (query)",
            column_label="visual class feature (key)",
        )
        caption = (
            "Learned co-occurrence map: the head-averaged SECM attention weights of the "
            f"cross-modal path of the last FGSE layer (layer {layers} of {layers}), audio "
            "class features as queries (rows) and visual class features as keys and values "
            "(columns), the map_av the co-occurrence loss trains toward audio x visual "
            "pseudo-label products. Network in eval mode (no attention dropout), so each row "
            f"sums to 1. Mean over the {internals.videos} videos of the {config.figure_split} "
            "split of each video's mean over its valid 1-s segments. The colours span the "
            f"map's range, {internals.co_occurrence.min():.4f} to "
            f"{internals.co_occurrence.max():.4f}; uniform attention would be "
            f"1/{len(LLP_CLASSES)} = {1 / len(LLP_CLASSES):.4f} everywhere."
        )
        figures.append(ReportFigure(name, path.read_bytes(), caption))
        arrays[f"{CO_OCCURRENCE_NAME}.npy"] = _npy_bytes(internals.co_occurrence)
    ids = split.keys.video_ids.astype(str)
    for modality, points in internals.points.items():
        if len(points.labels) < MIN_TSNE_POINTS:
            notes.append(
                f"t-SNE of {modality} class features skipped: {len(points.labels)} "
                f"(segment, true class) pairs in the {config.figure_split} split, "
                f"fewer than {MIN_TSNE_POINTS}"
            )
            continue
        embedded, perplexity = embed_tsne(points.features, config.seed)
        name = f"tsne_{modality}.png"
        path = plot_tsne(
            scratch / name,
            embedded,
            points.labels,
            LLP_CLASSES,
            title=f"t-SNE of CAFD {modality} class features of true classes",
        )
        sampled = (
            f"all {points.candidate_segments}"
            if points.sampled_segments == points.candidate_segments
            else f"{points.sampled_segments} drawn (seed {config.seed}) from the "
            f"{points.candidate_segments}"
        )
        caption = (
            f"t-SNE (scikit-learn, PCA init, perplexity {perplexity:.1f}, random_state "
            f"{config.seed}) of the CAFD {modality} class features ({model.config.class_dim}-d "
            f"tokens entering the first FGSE layer) of {len(points.labels)} (segment, class) "
            f"pairs: for {sampled} valid segments of the {config.figure_split} split with a "
            f"true {modality} event, the feature of each class in that segment's dense "
            f"{modality} annotation, coloured by that class."
        )
        figures.append(ReportFigure(name, path.read_bytes(), caption))
        arrays[f"tsne_{modality}.npz"] = _npz_bytes(
            points=embedded.astype(np.float32),
            labels=points.labels.astype(np.int64),
            video_ids=ids[points.rows],
            windows=split.keys.windows[points.rows].astype(np.int64),
            segments=points.segments.astype(np.int64),
        )
    return figures, arrays, notes


def _file_safe(name: str) -> str:
    """A video id as part of a file name (ids of non-LLP files may hold slashes)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:80]


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
