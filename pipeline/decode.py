"""Decode a video file once into 8-FPS frames and mono audio, then cut it into 10-s windows.

Rules (the feature extractors and the feature store rely on them):

- Time zero is each stream's first frame or sample; a few milliseconds of offset between
  the audio and video tracks are ignored (segments are one second long).
- Duration is the end of the video stream: the last frame's start plus the median
  interval between frames (containers often omit the last frame's own duration).
- Frames: output frame i is the source frame on screen at t_i = i / fps, i.e. the last
  one whose presentation time is at or before t_i (a player never shows a frame before
  its time, and variable frame rates are handled because only timestamps count). There
  is one output frame for each t_i before the end of the video: a 10.0-s clip gives 80
  frames at 0, 0.125, ..., 9.875 s. Timestamps are compared with a 1-ms tolerance, which
  absorbs float rounding and is far below any frame interval.
- Rotation metadata (display matrix) is applied so frames come out upright. decord 0.6
  already does this itself for multiples of 90 degrees, but for some frame sizes (80 x 48
  turned by 90 degrees, for one) it fails an internal size check: the file then goes to
  PyAV like any file decord cannot read (both cases are tested). The PyAV path rotates
  by the decoded frame's `rotation`, as FFmpeg's autorotate does. Mirror flags and
  angles that are not multiples of 90 degrees are not applied.
- Audio is always read with PyAV, averaged over channels, resampled with
  torchaudio.functional.resample to every requested rate, then cut or zero-padded to
  round(duration x rate) samples. decord's AudioReader was tried and rejected: on the
  LLP sample clip its mono 48-kHz output correlates at -0.54 with the channel mean
  resampled by torchaudio, at 1.4 times its RMS.
- A file with no audio stream (or one that decodes to no samples) has has_audio False
  and audio of zeros of the same length: every window keeps one shape, and the
  `has_audio` flag travels with each window into the feature table so that later
  stages can tell digital silence from a missing track.
- Failures carry one short reason in plain words (`DecodeError.reason`: "not a media
  file", "no video stream (audio only)", "too short: 0.40 s", "corrupt data at 3.2 s")
  and the decoders' own messages apart (`DecodeError.detail`). PyAV's probe runs first,
  so decord only sees files that have a video stream; libav's console logging is off
  in both (it would print one line per bad packet).
- A file that decodes only in part (a cut download: its header declares 10 s, its
  packets end at 4 s) is decoded as far as it goes; `DecodedVideo.cut_short` says where
  it ends, and the stages record it as a warning, not a failure.
- Windows: a video of D seconds gives floor(D / 10) full windows plus one padded window
  when the remainder is at least 1 s (so LLP clips of 10.0-10.1 s are one window, and a
  35-s video gives four). A padded window repeats the last frame and pads audio with
  zeros; its `valid_segments` counts the 1-s segments that start before the video ends
  (whole or partial): ceil(remainder) for the last window, 10 for full ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio.functional

from avvp.contract import CLAP_SAMPLE_RATE, FPS, SEGMENT_SECONDS, WINDOW_SECONDS
from avvp.pipeline.llp import AnnotationError, youtube_id

try:
    import decord
except ImportError:  # no wheel for some platforms (e.g. macOS arm64): PyAV does the work
    decord = None

# libav prints its own warnings to the console, once per bad packet, from PyAV's copy and
# from the one bundled in decord; the reasons given per file replace them.
av.logging.set_level(None)
if decord is not None:
    decord.logging.set_level(decord.logging.QUIET)

YOUTUBE_ID_LENGTH = 11
TIME_TOLERANCE_S = 1e-3
# A video stream this much shorter than its header declares was cut (mp4 audio and video
# tracks differ by tens of milliseconds, never by this much).
CUT_SHORT_TOLERANCE_S = 0.5


class DecodeError(RuntimeError):
    """A video file cannot be decoded (or is too short to give a window).

    `reason` is one short sentence in plain words; `detail` keeps what the decoders said.
    """

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        super().__init__(f"cannot decode {path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


class _BackendError(Exception):
    """One decoder could not read the file; the message says why, `at` since when (s)."""

    def __init__(self, message: str, at: float | None = None) -> None:
        super().__init__(message)
        self.at = at


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """A whole video at a fixed frame rate, with mono audio at each requested rate."""

    video_id: str
    path: Path
    fps: float
    frames: np.ndarray  # (N, H, W, 3) uint8, upright
    frame_times: np.ndarray  # (N,) float64 seconds, i / fps
    audio: dict[int, np.ndarray]  # rate -> (round(duration x rate),) float32
    duration: float
    has_audio: bool
    backend: str  # "decord" or "pyav", whichever decoded the frames
    declared_duration: float | None = None  # what the file's header says, when it says

    @property
    def cut_short(self) -> str | None:
        """Where a file that decodes only in part ends, in words; None when it is whole."""
        declared = self.declared_duration
        if declared is None or self.duration >= declared - CUT_SHORT_TOLERANCE_S:
            return None
        return (
            f"cut at {self.duration:.1f} s of the {declared:.1f} s its header declares "
            f"(an incomplete file); only the first {self.duration:.1f} s are used"
        )


@dataclass(frozen=True, eq=False)
class Window:
    """One 10-s window of a video: the unit every extractor and the parser work on."""

    video_id: str
    index: int
    frames: np.ndarray  # (window_seconds x fps, H, W, 3) uint8
    audio: dict[int, np.ndarray]  # rate -> (window_seconds x rate,) float32
    valid_segments: int
    has_audio: bool


def video_id_for(path: str | Path) -> str:
    """The id features are stored under: the file stem, or the YouTube id of an LLP name.

    `BjCEufrlXm4_20_30.mp4` and `BjCEufrlXm4.mp4` both give `BjCEufrlXm4`.
    """
    stem = Path(path).stem
    try:
        candidate = youtube_id(stem)
    except AnnotationError:
        return stem
    return candidate if len(candidate) == YOUTUBE_ID_LENGTH else stem


def decode_video(
    path: str | Path,
    fps: float = FPS,
    sample_rates: Iterable[int] = (CLAP_SAMPLE_RATE,),
) -> DecodedVideo:
    """Decode `path` once: frames at `fps` (decord, else PyAV) and audio at each rate.

    Raises DecodeError naming the file and every decoder's reason when it cannot be read.
    """
    path = Path(path)
    rates = sorted({int(rate) for rate in sample_rates})
    if fps <= 0 or any(rate <= 0 for rate in rates):
        raise ValueError(f"fps ({fps}) and sample rates ({rates}) must be positive")
    declared_duration = _probe(path)
    reasons, corrupt_at = [], []
    for backend, read_frames in _FRAME_READERS.items():
        try:
            frames, frame_times, duration = read_frames(path, fps)
            break
        except _BackendError as error:
            reasons.append(f"{backend}: {error}")
            corrupt_at += [error.at] if error.at is not None else []
    else:
        where = f" at {min(corrupt_at):.1f} s" if corrupt_at else ""
        raise DecodeError(path, f"corrupt video data{where}", "; ".join(reasons))
    try:
        mono, source_rate = _read_mono_audio(path)
    except _BackendError as error:
        where = f" at {error.at:.1f} s" if error.at is not None else ""
        raise DecodeError(path, f"corrupt audio data{where}", f"pyav: {error}") from None
    has_audio = mono.size > 0
    audio = {
        rate: _fit_length(
            _resample(mono, source_rate, rate) if has_audio else mono,
            round(duration * rate),
            mode="constant",
        )
        for rate in rates
    }
    return DecodedVideo(
        video_id=video_id_for(path),
        path=path,
        fps=fps,
        frames=frames,
        frame_times=frame_times,
        audio=audio,
        duration=duration,
        has_audio=has_audio,
        backend=backend,
        declared_duration=declared_duration,
    )


def _probe(path: Path) -> float | None:
    """Check with PyAV that `path` is a media file with a video stream; return the
    duration its header declares (the video stream's, else the container's), if any."""
    if not path.is_file():
        raise DecodeError(path, "no such file")
    if path.stat().st_size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                other = "audio only" if container.streams.audio else "no audio stream either"
                raise DecodeError(path, f"no video stream ({other})")
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration else None
    except av.FFmpegError as error:
        raise DecodeError(
            path, "not a media file (or one cut before its index)", f"pyav: {error}"
        ) from None


def split_windows(decoded: DecodedVideo, window_seconds: int = WINDOW_SECONDS) -> list[Window]:
    """Cut a decoded video into consecutive windows by the rules in this module's docstring."""
    frames_per_window = window_seconds * decoded.fps
    if frames_per_window != round(frames_per_window):
        raise ValueError(
            f"a {window_seconds}-s window at {decoded.fps} FPS is not a whole number of frames"
        )
    frames_per_window = round(frames_per_window)
    full_windows = math.floor((decoded.duration + TIME_TOLERANCE_S) / window_seconds)
    remainder = decoded.duration - full_windows * window_seconds
    padded_window = remainder >= SEGMENT_SECONDS - TIME_TOLERANCE_S
    if full_windows == 0 and not padded_window:
        raise DecodeError(
            decoded.path,
            f"too short: {decoded.duration:.2f} s (a segment needs {SEGMENT_SECONDS} s)",
        )
    segments_per_window = window_seconds // SEGMENT_SECONDS
    last_valid = min(
        segments_per_window, math.ceil((remainder - TIME_TOLERANCE_S) / SEGMENT_SECONDS)
    )
    windows = []
    for index in range(full_windows + padded_window):
        first_frame = index * frames_per_window
        windows.append(
            Window(
                video_id=decoded.video_id,
                index=index,
                frames=_fit_length(
                    decoded.frames[first_frame : first_frame + frames_per_window],
                    frames_per_window,
                    mode="edge",
                ),
                audio={
                    rate: _fit_length(
                        samples[index * window_seconds * rate :][: window_seconds * rate],
                        window_seconds * rate,
                        mode="constant",
                    )
                    for rate, samples in decoded.audio.items()
                },
                valid_segments=segments_per_window if index < full_windows else last_valid,
                has_audio=decoded.has_audio,
            )
        )
    return windows


def upright(frame: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as PyAV reports it).

    A phone's portrait video is stored landscape with rotation -90: it is turned 90
    degrees clockwise here, like FFmpeg's autorotate. Rounded to a multiple of 90.
    """
    return np.rot90(frame, k=round(rotation / 90) % 4)


def _frame_grid(
    starts: np.ndarray, fps: float, fallback_interval: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Which source frame each output frame shows, by the rule in the module docstring.

    starts: presentation times of the source frames in seconds, ascending. Returns (index
    into `starts` per output frame, output times, duration of the video).
    """
    starts = starts - starts[0]
    interval = float(np.median(np.diff(starts))) if len(starts) > 1 else fallback_interval
    duration = float(starts[-1]) + interval
    count = max(1, math.ceil((duration - TIME_TOLERANCE_S) * fps))
    times = np.arange(count) / fps
    shown = np.searchsorted(starts, times + TIME_TOLERANCE_S, side="right") - 1
    return shown.clip(min=0), times, duration


def _frames_with_decord(path: Path, fps: float) -> tuple[np.ndarray, np.ndarray, float]:
    if decord is None:
        raise _BackendError("decord is not installed")
    try:
        reader = decord.VideoReader(str(path))
        if len(reader) == 0:
            raise _BackendError("no video frames")
        spans = reader.get_frame_timestamp(np.arange(len(reader)))
        shown, times, duration = _frame_grid(
            spans[:, 0].astype(np.float64), fps, float(spans[0, 1] - spans[0, 0])
        )
        needed, position = np.unique(shown, return_inverse=True)
        frames = reader.get_batch(needed.tolist()).asnumpy()[position]
    except (RuntimeError, decord.DECORDError) as error:
        raise _BackendError(_first_line(error)) from None
    return frames, times, duration


def _frames_with_pyav(path: Path, fps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Two passes: packet timestamps choose the frames, then only those are converted."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _BackendError("no video stream")
            stream = container.streams.video[0]
            pts = np.unique(
                [
                    packet.pts
                    for packet in container.demux(stream)
                    if packet.size and packet.pts is not None and not packet.is_discard
                ]
            )
            if pts.size == 0:
                raise _BackendError("no video frames")
            time_base = float(stream.time_base)
            rate = stream.average_rate or stream.guessed_rate
            shown, times, duration = _frame_grid(
                pts * time_base, fps, 1 / float(rate) if rate else 1 / fps
            )
            needed = set(pts[shown].tolist())
            container.seek(0)
            stream.thread_type = "AUTO"
            converted: dict[int, np.ndarray] = {}
            try:
                for frame in container.decode(stream):
                    if frame.pts in needed:
                        converted[frame.pts] = upright(
                            frame.to_ndarray(format="rgb24"), frame.rotation
                        )
            except av.FFmpegError as error:
                last = max(converted, default=int(pts[0])) - int(pts[0])
                raise _BackendError(_first_line(error), at=last * time_base) from None
    except av.FFmpegError as error:
        raise _BackendError(_first_line(error)) from None
    missing = needed - converted.keys()
    if missing:
        raise _BackendError(f"{len(missing)} frames listed in the container did not decode")
    return np.stack([converted[stamp] for stamp in pts[shown].tolist()]), times, duration


_FRAME_READERS = {"decord": _frames_with_decord, "pyav": _frames_with_pyav}


def _read_mono_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream averaged over channels, and its rate; empty when none."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return np.zeros(0, dtype=np.float32), 0
            stream = container.streams.audio[0]
            to_planar_float = av.AudioResampler(format="fltp")
            chunks, rate = [], stream.rate
            try:
                for frame in container.decode(stream):
                    rate = frame.sample_rate
                    chunks.extend(chunk.to_ndarray() for chunk in to_planar_float.resample(frame))
            except av.FFmpegError as error:
                decoded = sum(chunk.shape[-1] for chunk in chunks) / max(rate, 1)
                raise _BackendError(_first_line(error), at=decoded) from None
            chunks.extend(chunk.to_ndarray() for chunk in to_planar_float.resample(None))
    except av.FFmpegError as error:
        raise _BackendError(_first_line(error)) from None
    if not chunks:
        return np.zeros(0, dtype=np.float32), rate
    return np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32), rate


def _resample(mono: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    if source_rate == rate:
        return mono
    return torchaudio.functional.resample(torch.from_numpy(mono), source_rate, rate).numpy()


def _fit_length(array: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Cut or pad along the first axis: mode "constant" pads zeros, "edge" repeats the last."""
    if len(array) >= length:
        return array[:length]
    widths = [(0, length - len(array))] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, widths, mode=mode)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
