"""Tiny real video files with planted audio and visual events, labelled in LLP's format.

Each LLP class has an audio signature and a visual signature:

- audio (class k): a tone at 220 x 2^(k/8) Hz, steady (k % 3 == 0), in bursts mixed
  with noise bursts at 2 + k % 4 per second (k % 3 == 1), or chirping up one octave
  every second (k % 3 == 2), over a faint white-noise background;
- visual (class k): a shape of hue k / 25 (square, disc or diamond by k % 3) moving by
  k % 4 (left-right, up-down, on a circle, diagonally), over a grey drifting gradient.

A clip holds one to three classes; each class is audible, visible or both, with the
audio and visual events drawn independently (asynchronous, sometimes overlapping),
lasting whole seconds, and segments covered by no event hold background only. Clips go
to `DIR/videos/<id>.mp4` with 11-character ids `synclip0001`, ... and the six LLP files
to `DIR/`: weak labels for every clip (splits train, val, test cycling 2:1:1) and dense
per-modality events for the val and test clips, so `LLPAnnotations.load(DIR)` reads them.
"""

from __future__ import annotations

import colorsys
import csv
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from ...model.classes import LLP_CLASSES, NUM_CLASSES
from ..sources.dense_events import write_planted_events
from ..sources.llp import AUDIO_FILES, SPLIT_FILES, VISUAL_FILE

CLIP_ID_PREFIX = "synclip"  # + 4 digits: 11 characters, like a YouTube id
FRAME_SIZE = 64
VIDEO_FPS = 12
AUDIO_RATE = 16_000
SPLIT_CYCLE = ("train", "train", "val", "test")
_MAX_CLASSES_PER_CLIP = 3
# Of the frame size: the shapes cover a third of the frame or more.
_SHAPE_RADIUS = 0.3
# A grey background near the CLIP and Kinetics normalisation means (about 0.45 x 255):
# after normalisation it is close to zero, so what the demo's randomly initialised tiny
# extractors output is driven by the shapes, as a trained network's output is by the
# objects. On the earlier dark background (36 +- 12) their features varied by 9-20% of
# their norm across segments, and neither parser found the visual events (Seg-v 20-33,
# under the weak-label baseline's 40); on this one they vary by about 80%.
_BACKGROUND_LEVEL, _BACKGROUND_SWING = 112, 24
_EDGE_RAMP_S = 0.01  # fade in and out of an audio event, so it does not click
_MILLISECONDS = Fraction(1, 1000)

Modality = Literal["audio", "visual"]


@dataclass(frozen=True)
class PlantedEvent:
    """One event of one class in one modality, covering segments onset..offset-1."""

    class_index: int
    modality: Modality
    onset: int
    offset: int


def write_synthetic_clips(
    out_dir: str | Path,
    n: int = 8,
    seconds: float = 10.0,
    seed: int = 0,
    no_audio: Collection[int] = (),
    active_classes: int | None = None,
) -> list[Path]:
    """Write `n` clips of `seconds` and the six LLP label files; return the clip paths.

    no_audio: indices (0-based) of clips written without an audio stream; their events
    are all visual. active_classes: draw events from a random subset of this many
    classes only (more examples per class for small demos); default all 25. Every
    clip's events, train clips included, also go to `planted_events.csv` (the answer
    key, not an LLP file).
    """
    if n < 1 or n > 9999 or seconds < 1:
        raise ValueError(f"need 1 <= n <= 9999 and seconds >= 1, got n={n}, seconds={seconds}")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = (
        np.arange(NUM_CLASSES)
        if active_classes is None
        else np.sort(rng.choice(NUM_CLASSES, size=active_classes, replace=False))
    )
    paths, labelled = [], []
    for index in range(n):
        clip_id = f"{CLIP_ID_PREFIX}{index + 1:04d}"
        with_audio = index not in no_audio
        events = plant_events(rng, seconds, with_audio=with_audio, classes=classes)
        paths.append(
            encode_clip(
                out_dir / "videos" / f"{clip_id}.mp4",
                render_frames(events, seconds),
                audio=render_audio(events, seconds, rng) if with_audio else None,
            )
        )
        filename = f"{clip_id}_0_{round(seconds)}"
        labelled.append((filename, SPLIT_CYCLE[index % len(SPLIT_CYCLE)], events))
    write_llp_label_files(out_dir, labelled)
    _write_planted_events(out_dir, labelled)
    return paths


def _write_planted_events(
    out_dir: Path, labelled: Sequence[tuple[str, str, Sequence[PlantedEvent]]]
) -> None:
    write_planted_events(
        out_dir,
        (
            (filename, e.modality, e.onset, e.offset, LLP_CLASSES[e.class_index])
            for filename, _, events in labelled
            for e in events
        ),
    )


def plant_events(
    rng: np.random.Generator,
    seconds: float,
    with_audio: bool = True,
    classes: np.ndarray | None = None,
) -> list[PlantedEvent]:
    """One to three of `classes` (default all), each audible, visible or both, in whole
    seconds."""
    whole_seconds = int(seconds)
    pool = np.arange(NUM_CLASSES) if classes is None else classes
    count = min(int(rng.integers(1, _MAX_CLASSES_PER_CLIP + 1)), len(pool))
    classes = rng.choice(pool, size=count, replace=False)
    events = []
    for class_index in classes.tolist():
        kind = (
            rng.choice(["audio", "visual", "both"], p=[0.25, 0.25, 0.5]) if with_audio else "visual"
        )
        for modality in ("audio", "visual"):
            if kind in (modality, "both"):
                length = int(rng.integers(2, max(3, whole_seconds // 2 + 1)))
                length = min(length, whole_seconds)
                onset = int(rng.integers(0, whole_seconds - length + 1))
                events.append(PlantedEvent(class_index, modality, onset, onset + length))
    return events


def render_frames(
    events: Sequence[PlantedEvent],
    seconds: float,
    fps: int = VIDEO_FPS,
    size: int = FRAME_SIZE,
) -> np.ndarray:
    """(ceil(seconds x fps), size, size, 3) uint8 frames with each visual event's shape."""
    times = np.arange(int(np.ceil(seconds * fps))) / fps
    rows, columns = np.mgrid[0:size, 0:size] / size
    drift = 0.5 + 0.5 * np.sin(
        2 * np.pi * (columns[None] + rows[None] / 2 + 0.05 * times[:, None, None])
    )
    background = _BACKGROUND_LEVEL + _BACKGROUND_SWING * (drift - 0.5)
    frames = np.repeat(background[..., None], 3, axis=-1).astype(np.uint8)
    for event in events:
        if event.modality != "visual":
            continue
        k = event.class_index
        active = (times >= event.onset) & (times < event.offset)
        phase = (times[active] - event.onset) * (0.25 + 0.05 * (k % 5))
        centre_row, centre_column = _motion(k % 4, phase, k)
        dy = rows[None] - centre_row[:, None, None]
        dx = columns[None] - centre_column[:, None, None]
        frames[active] = np.where(_shape(k % 3, dx, dy)[..., None], _colour(k), frames[active])
    return frames


def render_audio(
    events: Sequence[PlantedEvent],
    seconds: float,
    rng: np.random.Generator,
    rate: int = AUDIO_RATE,
) -> np.ndarray:
    """Mono float32 audio of round(seconds x rate) samples with each audio event's sound."""
    times = np.arange(round(seconds * rate)) / rate
    audio = 0.01 * rng.standard_normal(times.size)
    for event in events:
        if event.modality != "audio":
            continue
        k = event.class_index
        frequency = 220 * 2 ** (k / 8)
        inside = np.minimum(times - event.onset, event.offset - times)
        envelope = np.clip(inside / _EDGE_RAMP_S, 0, 1)
        style = k % 3
        if style == 0:
            sound = np.sin(2 * np.pi * frequency * times)
        elif style == 1:
            gate = (times * (2 + k % 4)) % 1 < 0.5
            sound = gate * (
                np.sin(2 * np.pi * frequency * times) + 0.5 * rng.standard_normal(times.size)
            )
        else:
            sweep = frequency * (1 + times % 1)
            sound = np.sin(2 * np.pi * np.cumsum(sweep) / rate)
        audio += 0.25 * envelope * sound
    return np.clip(audio, -1, 1).astype(np.float32)


def encode_clip(
    path: str | Path,
    frames: np.ndarray,
    fps: int = VIDEO_FPS,
    *,
    audio: np.ndarray | None = None,
    audio_rate: int = AUDIO_RATE,
    frame_times: Sequence[float] | None = None,
    rotation: int = 0,
    preset: str = "ultrafast",
) -> Path:
    """Encode RGB frames (and mono float audio) into an MP4 file at `path`.

    H.264 (libx264, at x264's `preset`) when this FFmpeg build has it, else MPEG-4 part
    2; AAC audio, else MP3. frame_times (seconds, ascending) give a variable frame rate,
    at millisecond precision; rotation writes a display matrix (degrees
    counter-clockwise, as `av.VideoFrame.rotation` reads it back).
    """
    path = Path(path)
    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        video = container.add_stream(_encoder("libx264", "mpeg4"), rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if video.codec_context.name == "libx264":
            video.options = {"preset": preset}
        time_base = Fraction(1, fps)
        if frame_times is not None:
            time_base = _MILLISECONDS
            video.time_base = video.codec_context.time_base = time_base
        if rotation:
            video.set_display_rotation(rotation)
        # Every stream must exist before the first packet is muxed (that writes the header).
        sound = None
        if audio is not None:
            sound = container.add_stream(
                _encoder("aac", "libmp3lame"), rate=audio_rate, layout="mono"
            )
        pts = (
            np.arange(len(frames))
            if frame_times is None
            else np.round(np.asarray(frame_times) / float(time_base)).astype(int)
        )
        for image, stamp in zip(frames, pts.tolist(), strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            _encode_audio(container, sound, audio, audio_rate)
    return path


def _encode_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    audio: np.ndarray,
    rate: int,
) -> None:
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, len(audio), chunk):
        frame = av.AudioFrame.from_ndarray(
            audio[None, start : start + chunk].astype(np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def _encoder(*names: str) -> str:
    """The first of `names` this FFmpeg build can encode with."""
    for name in names:
        try:
            av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    raise RuntimeError(f"this FFmpeg build (PyAV {av.__version__}) has none of {names}")


def _motion(kind: int, phase: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre (row, column) as fractions of the frame, per active frame."""
    lane = 0.25 + 0.5 * (k % 5) / 4
    triangle = 0.2 + 0.6 * (1 - np.abs(2 * (phase % 1) - 1))
    if kind == 0:
        return np.full_like(phase, lane), triangle
    if kind == 1:
        return triangle, np.full_like(phase, lane)
    if kind == 2:
        angle = 2 * np.pi * phase
        return 0.5 + 0.25 * np.sin(angle), 0.5 + 0.25 * np.cos(angle)
    return triangle, triangle


def _shape(kind: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    if kind == 0:
        return np.maximum(np.abs(dx), np.abs(dy)) <= _SHAPE_RADIUS
    if kind == 1:
        return dx**2 + dy**2 <= _SHAPE_RADIUS**2
    return np.abs(dx) + np.abs(dy) <= 1.3 * _SHAPE_RADIUS


def _colour(k: int) -> np.ndarray:
    return np.round(255 * np.array(colorsys.hsv_to_rgb(k / NUM_CLASSES, 1.0, 1.0))).astype(np.uint8)


def write_llp_label_files(
    out_dir: Path, labelled: Sequence[tuple[str, str, Sequence[PlantedEvent]]]
) -> None:
    """The six LLP files: weak labels per split and in full, dense events for val/test."""
    weak = {split: [] for split in SPLIT_FILES}
    dense: dict[Modality, list[tuple[str, int, int, str]]] = {"audio": [], "visual": []}
    for filename, split, events in labelled:
        classes = ",".join(LLP_CLASSES[k] for k in sorted({e.class_index for e in events}))
        weak[split].append((filename, classes))
        weak["full"].append((filename, classes))
        if split in ("val", "test"):
            for event in events:
                dense[event.modality].append(
                    (filename, event.onset, event.offset, LLP_CLASSES[event.class_index])
                )
    tables = {
        SPLIT_FILES[split]: (("filename", "event_labels"), rows) for split, rows in weak.items()
    }
    dense_header = ("filename", "onset", "offset", "event_labels")
    tables[AUDIO_FILES["corrected"]] = (dense_header, dense["audio"])
    tables[VISUAL_FILE] = (dense_header, dense["visual"])
    for name, (header, rows) in tables.items():
        with (out_dir / name).open("w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
            writer.writerows([header, *rows])
