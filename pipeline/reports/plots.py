"""Figures of a parser's results as PNG files: event timelines, co-occurrence maps, t-SNE.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so no window opens and
no global backend is switched for whoever else uses matplotlib in the process. Every
function writes its PNG under a temporary name in the target folder and renames it, so
a crash never leaves a half-written image under the final name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

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
    """One event: a class on one track from onset_s to offset_s (seconds of the video),
    with its score when it is a prediction that has one (written on its bar)."""

    modality: str  # "audio", "visual" or "audio-visual" (not drawn as its own track)
    class_name: str
    onset_s: float
    offset_s: float
    score: float | None = None


# What the timeline functions take: an event-like object or a plain 4-tuple in its order.
EventInput = EventLike | tuple[str, str, float, float]


class TimelineBar(NamedTuple):
    """One bar `plot_timeline` draws: kind "event" (prediction) or "truth"."""

    track: str  # "audio" or "visual"
    class_name: str
    kind: str
    start_s: float
    end_s: float
    score: float | None = None


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
                score = getattr(event, "score", None)
                bars.append(TimelineBar(event.modality, event.class_name, kind, start, end, score))
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
    has_audio: bool = True,
    cut_at_s: float | None = None,
) -> Path:
    """`timeline_figure` written as a PNG to `path`."""
    figure = timeline_figure(
        duration_s, events, title=title, truth=truth, has_audio=has_audio, cut_at_s=cut_at_s
    )
    return _save(figure, path)


def timeline_figure(
    duration_s: float,
    events: Sequence[EventInput],
    *,
    title: str,
    truth: Sequence[EventInput] | None = None,
    has_audio: bool = True,
    cut_at_s: float | None = None,
) -> Figure:
    """One video's events as two panels, audio above visual, over 0..duration_s seconds.

    One row per class present in the events or the truth (the same rows in both panels,
    so a class lines up across them); an event is a horizontal bar from onset to offset,
    its score written on it when it has one and the bar is wide enough. With `truth`,
    true events are light full-height bands in the same rows and the predictions thinner
    bars over them. A video without an audio track says so in the audio panel; for a
    file cut short, the time from `cut_at_s` (where its content ends) to `duration_s`
    (what its header declares) is hatched. A legend under the panels says what each
    mark is.
    """
    bars = timeline_bars(duration_s, events, truth)
    classes = sorted({bar.class_name for bar in bars})
    rows = {name: index for index, name in enumerate(classes)}
    height = 1.6 + 2 * (0.45 + 0.32 * max(len(classes), 1))
    figure = Figure(figsize=(9.0, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 1, sharex=True)
    figure.suptitle(title)
    event_height = EVENT_HEIGHT_ALONE if truth is None else EVENT_HEIGHT_WITH_TRUTH
    cut = cut_at_s is not None and cut_at_s < duration_s
    for ax, track in zip(axes, TRACKS, strict=True):
        silent = track == "audio" and not has_audio
        for bar in bars:
            if bar.track != track or silent:
                continue
            truth_bar = bar.kind == "truth"
            row = rows[bar.class_name]
            ax.barh(
                row,
                bar.end_s - bar.start_s,
                left=bar.start_s,
                height=TRUTH_HEIGHT if truth_bar else event_height,
                color=TRUTH_COLOUR if truth_bar else EVENT_COLOURS[track],
                zorder=1 if truth_bar else 2,
            )
            # A score needs about 0.045 of the axis to fit inside its bar.
            if bar.score is not None and (bar.end_s - bar.start_s) >= 0.045 * duration_s:
                ax.text(
                    bar.start_s + 0.01 * duration_s,
                    row,
                    f"{bar.score:.2f}",
                    va="center",
                    fontsize="x-small",
                    color="white",
                    zorder=3,
                )
        if cut:
            ax.axvspan(cut_at_s, duration_s, facecolor="none", edgecolor="#999999", hatch="//")
        ax.set_xlim(0, duration_s)
        ax.set_ylim(-0.6, max(len(classes), 1) - 0.4)
        ax.set_yticks(range(len(classes)), [name.replace("_", " ") for name in classes])
        ax.invert_yaxis()
        ax.set_ylabel(track, fontweight="bold")
        ax.grid(axis="x", color="#dddddd", zorder=0)
        ax.set_axisbelow(True)
        if silent or not classes:
            ax.set_yticks([])
        if silent or not any(bar.track == track for bar in bars):
            ax.text(
                0.5,
                0.5,
                "no audio track" if silent else "no events",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="#555555",
            )
    if duration_s <= 30:
        axes[-1].set_xticks(np.arange(0, np.floor(duration_s) + 1))
    axes[-1].set_xlabel("time (s)")
    scored = any(bar.score is not None for bar in bars)
    figure.legend(
        handles=_timeline_legend(truth is not None, cut_at_s if cut else None),
        loc="outside lower center",
        ncols=4,
        fontsize="small",
        title="numbers on bars: the event's score" if scored else None,
        title_fontsize="small",
        frameon=False,
    )
    return figure


def _timeline_legend(with_truth: bool, cut_at_s: float | None) -> list[Patch]:
    prediction = "predicted event" if with_truth else "event"
    handles = [
        Patch(color=EVENT_COLOURS["audio"], label=f"audio {prediction}"),
        Patch(color=EVENT_COLOURS["visual"], label=f"visual {prediction}"),
    ]
    if with_truth:
        handles.append(Patch(color=TRUTH_COLOUR, label="ground truth"))
    if cut_at_s is not None:
        handles.append(
            Patch(
                facecolor="none",
                edgecolor="#999999",
                hatch="//",
                label=f"not in the file: cut at {cut_at_s:.1f} s",
            )
        )
    return handles


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


def plot_training_curves(
    path: str | Path,
    epochs: Sequence[int],
    loss: Sequence[float],
    metrics: Mapping[str, Sequence[float]],
    *,
    title: str,
    best_epoch: int | None = None,
) -> Path:
    """Training loss (top) and validation metrics in percent (bottom) per epoch; with
    `best_epoch`, a dashed line in both panels marks the epoch the run kept. NaN values
    (an epoch without that metric) leave a gap."""
    if len(loss) != len(epochs) or any(len(v) != len(epochs) for v in metrics.values()):
        raise ValueError(
            f"loss and every metric need one value per epoch ({len(epochs)}), got "
            f"{len(loss)} losses and {dict((k, len(v)) for k, v in metrics.items())}"
        )
    figure = Figure(figsize=(9.0, 6.0), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(2, 1, sharex=True)
    figure.suptitle(title)
    loss_axes.plot(epochs, loss, marker="o", markersize=3, color="#444444", label="training loss")
    loss_axes.set_ylabel("training loss")
    for name, values in metrics.items():
        metric_axes.plot(epochs, values, marker="o", markersize=3, label=f"val {name}")
    metric_axes.set_ylabel("validation metric (%)")
    metric_axes.set_xlabel("epoch")
    metric_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (loss_axes, metric_axes):
        axes.grid(color="#dddddd")
        if best_epoch is not None:
            axes.axvline(
                best_epoch, color="#c0392b", linestyle="--", label=f"kept: epoch {best_epoch}"
            )
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return _save(figure, path)


def plot_class_scores(
    path: str | Path,
    scores: np.ndarray,
    class_names: Sequence[str],
    *,
    series: Sequence[str],
    title: str,
    xlabel: str,
) -> Path:
    """Scores (S, K) in percent as grouped horizontal bars: a row per class, a bar per
    series (audio, visual, ...). NaN (no score) draws no bar, and the class's row says
    "n/a" for it so that it does not read as 0."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(series), len(class_names)):
        raise ValueError(
            f"scores must be ({len(series)}, {len(class_names)}) for {len(series)} series "
            f"and {len(class_names)} classes, got {scores.shape}"
        )
    palette = matplotlib.colormaps["tab10"].colors
    height = 0.8 / len(series)
    figure = Figure(figsize=(9.0, 1.2 + 0.32 * len(class_names)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    rows = np.arange(len(class_names))
    for index, name in enumerate(series):
        offsets = rows - 0.4 + height * (index + 0.5)
        known = ~np.isnan(scores[index])
        axes.barh(
            offsets[known], scores[index, known], height=height, color=palette[index], label=name
        )
        for offset in offsets[~known]:
            axes.text(1, offset, "n/a", va="center", fontsize="x-small", color="#777777")
    axes.set_yticks(rows, [name.replace("_", " ") for name in class_names], fontsize="small")
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.grid(axis="x", color="#dddddd")
    axes.set_axisbelow(True)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
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
