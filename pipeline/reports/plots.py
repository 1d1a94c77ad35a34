"""Figures of a parser's results as PNG files: event timelines, co-occurrence maps, t-SNE.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so no window opens and
no global backend is switched for whoever else uses matplotlib in the process. Every
function writes its PNG under a temporary name in the target folder and renames it, so
a crash never leaves a half-written image under the final name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ...storage.atomic import atomic_write

TRACKS: tuple[str, ...] = ("audio", "visual")
MODALITIES: tuple[str, ...] = ("audio", "visual", "audio-visual")
# Light full-height bands for the truth, solid thinner bars for the prediction, one
# colour per track, so that the two read apart even where they overlap exactly.
TRUTH_COLOUR = "#b9e3c6"
EVENT_COLOURS = {"audio": "#d9541e", "visual": "#2c6fbb"}
TRUTH_HEIGHT = 0.84
EVENT_HEIGHT_WITH_TRUTH = 0.42
EVENT_HEIGHT_ALONE = 0.7
DPI = 110


class EventLike(Protocol):
    """Anything with the four fields of `TimelineEvent` (a parse result row, say)."""

    @property
    def modality(self) -> str: ...
    @property
    def class_name(self) -> str: ...
    @property
    def onset_s(self) -> float: ...
    @property
    def offset_s(self) -> float: ...


class TimelineEvent(NamedTuple):
    """One event: a class on one track from onset_s to offset_s (seconds of the video)."""

    modality: str  # "audio", "visual" or "audio-visual" (not drawn as its own track)
    class_name: str
    onset_s: float
    offset_s: float


# What the timeline functions take: an event-like object or a plain 4-tuple in its order.
EventInput = EventLike | tuple[str, str, float, float]


class TimelineBar(NamedTuple):
    """One bar `plot_timeline` draws: kind "event" (prediction) or "truth"."""

    track: str  # "audio" or "visual"
    class_name: str
    kind: str
    start_s: float
    end_s: float


def timeline_bars(
    duration_s: float, events: Iterable[EventInput], truth: Iterable[EventInput] | None = None
) -> list[TimelineBar]:
    """The bars of a timeline: audio and visual events (audio-visual ones are the overlap
    of the two tracks, so they get no track of their own), clipped to [0, duration_s];
    events wholly outside the video are dropped."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    bars: list[TimelineBar] = []
    sources = (("event", events), ("truth", truth if truth is not None else ()))
    for kind, items in sources:
        for item in items:
            event = _as_event(item)
            if event.modality not in MODALITIES:
                raise ValueError(
                    f"unknown modality {event.modality!r} of a {event.class_name!r} event: "
                    f"use one of {', '.join(MODALITIES)}"
                )
            if event.modality not in TRACKS:
                continue
            start = min(max(float(event.onset_s), 0.0), duration_s)
            end = min(max(float(event.offset_s), 0.0), duration_s)
            if end > start:
                bars.append(TimelineBar(event.modality, event.class_name, kind, start, end))
    return bars


def _as_event(item: EventInput) -> EventLike:
    """Plain 4-tuples (modality, class_name, onset_s, offset_s) read as TimelineEvents."""
    if not hasattr(item, "modality") and isinstance(item, tuple):
        return TimelineEvent(*item)
    return item


def plot_timeline(
    path: str | Path,
    duration_s: float,
    events: Sequence[EventInput],
    *,
    title: str,
    truth: Sequence[EventInput] | None = None,
) -> Path:
    """One video's events as two panels, audio above visual, over 0..duration_s seconds.

    One row per class present in the events or the truth (the same rows in both panels,
    so a class lines up across them); an event is a horizontal bar from onset to offset.
    With `truth`, true events are light full-height bands in the same rows and the
    predictions thinner bars over them, and a legend says which is which.
    """
    bars = timeline_bars(duration_s, events, truth)
    classes = sorted({bar.class_name for bar in bars})
    rows = {name: index for index, name in enumerate(classes)}
    height = 1.2 + 2 * (0.45 + 0.32 * max(len(classes), 1))
    figure = Figure(figsize=(9.0, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 1, sharex=True)
    figure.suptitle(title)
    event_height = EVENT_HEIGHT_ALONE if truth is None else EVENT_HEIGHT_WITH_TRUTH
    for ax, track in zip(axes, TRACKS, strict=True):
        for bar in bars:
            if bar.track != track:
                continue
            truth_bar = bar.kind == "truth"
            ax.barh(
                rows[bar.class_name],
                bar.end_s - bar.start_s,
                left=bar.start_s,
                height=TRUTH_HEIGHT if truth_bar else event_height,
                color=TRUTH_COLOUR if truth_bar else EVENT_COLOURS[track],
                zorder=1 if truth_bar else 2,
            )
        ax.set_xlim(0, duration_s)
        ax.set_ylim(-0.6, max(len(classes), 1) - 0.4)
        ax.set_yticks(range(len(classes)), [name.replace("_", " ") for name in classes])
        ax.invert_yaxis()
        ax.set_ylabel(track, fontweight="bold")
        ax.grid(axis="x", color="#dddddd", zorder=0)
        ax.set_axisbelow(True)
        if not classes:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no events", transform=ax.transAxes, ha="center", va="center")
        if truth is not None:
            ax.legend(
                handles=[
                    Patch(color=TRUTH_COLOUR, label="ground truth"),
                    Patch(color=EVENT_COLOURS[track], label="prediction"),
                ],
                loc="upper left",
                bbox_to_anchor=(1.0, 1.0),
                fontsize="small",
                frameon=False,
            )
    if duration_s <= 30:
        axes[-1].set_xticks(np.arange(0, np.floor(duration_s) + 1))
    axes[-1].set_xlabel("time (s)")
    return _save(figure, path)


def plot_cooccurrence(
    path: str | Path,
    matrix: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
    row_label: str = "query class",
    column_label: str = "key class",
) -> Path:
    """A (K, K) matrix as a heatmap with the class names on both axes and a colour bar."""
    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"matrix must be ({k}, {k}) for {k} class names, got {matrix.shape}")
    labels = [name.replace("_", " ") for name in class_names]
    figure = Figure(figsize=(9.5, 8.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    # The colours span the matrix's own range: attention rows sum to 1, so a map near
    # uniform (1/K everywhere) would look flat on a 0..1 scale however telling its
    # deviations are.
    image = ax.imshow(matrix, cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(k), labels, rotation=90, fontsize="small")
    ax.set_yticks(range(k), labels, fontsize="small")
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    figure.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
    return _save(figure, path)


def plot_tsne(
    path: str | Path,
    points: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
) -> Path:
    """A 2-D embedding as a scatter coloured by class (labels index class_names), with a
    legend of the classes present. A class keeps its colour across figures."""
    points, labels = np.asarray(points), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),):
        raise ValueError(
            f"points must be (N, 2) and labels (N,), got {points.shape} and {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels must index the {len(class_names)} class names")
    colours = class_colours(len(class_names))
    figure = Figure(figsize=(9.5, 7.0), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for index in np.unique(labels):
        chosen = labels == index
        ax.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=12,
            color=colours[index],
            label=class_names[index].replace("_", " "),
            alpha=0.85,
            linewidths=0,
        )
    if not len(labels):
        ax.text(0.5, 0.5, "no points", transform=ax.transAxes, ha="center", va="center")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if len(labels):
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            fontsize="small",
            markerscale=1.6,
            frameon=False,
        )
    return _save(figure, path)


def class_colours(num_classes: int) -> list[tuple[float, float, float, float]]:
    """Distinct colours, one per class index: tab20, then tab20b for the rest."""
    palette = [*matplotlib.colormaps["tab20"].colors, *matplotlib.colormaps["tab20b"].colors]
    return [(*palette[index % len(palette)][:3], 1.0) for index in range(num_classes)]


def _save(figure: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG under a temporary name beside `path`, then rename."""
    # No "Software" entry: the PNG holds no link and the same figure gives the same bytes.
    atomic_write(
        path,
        lambda temporary: figure.savefig(
            temporary, format="png", dpi=DPI, metadata={"Software": None}
        ),
    )
    return Path(path)
