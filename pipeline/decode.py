"""Decode a video file one 10-s window at a time: 8-FPS frames and mono audio per window.

`open_video(path)` reads only the file's index (timestamps, streams) and says how long
the video is and how many windows it gives; `VideoStream.windows()` then decodes the
frames and audio of one window at a time, so memory stays flat however long the
video is. `decode_video` collects a whole short clip (tests, notebooks).

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
  absorbs float rounding and is far below any frame interval. Frames keep the source
  resolution: the extractors' recipes resize from it, and a window's worth (80 frames)
  is all that is held at once.
- Rotation metadata (display matrix) is applied so frames come out upright. decord 0.6
  already does this itself for multiples of 90 degrees, but for some frame sizes (80 x 48
  turned by 90 degrees, for one) it fails an internal size check: the rest of the file
  then goes to PyAV, as a file decord cannot read at all does (both cases are tested).
  The PyAV path rotates by the decoded frame's `rotation`, as FFmpeg's autorotate does.
  Mirror flags and angles that are not multiples of 90 degrees are not applied.
- Audio is always read with PyAV, averaged over channels and resampled with
  torchaudio.functional.resample to every requested rate, then cut or zero-padded to
  round(duration x rate) samples. Each window is resampled from its own stretch of the
  source plus a margin wider than the resampling filter, starting on a whole period of
  the two rates, so it equals the same stretch of the whole track resampled at once (a
  test checks this). decord's AudioReader was tried and rejected: on the LLP sample clip
  its mono 48-kHz output correlates at -0.54 with the channel mean resampled by
  torchaudio, at 1.4 times its RMS.
- A file with no audio stream (or one that decodes to no samples) has has_audio False
  and audio of zeros: every window keeps one shape, and the `has_audio` flag travels
  with each window into the feature table so that later stages can tell digital silence
  from a missing track.
- Failures carry one short reason in plain words (`DecodeError.reason`: "not a media
  file", "no video stream (audio only)", "too short: 0.40 s", "corrupt video data at
  3.2 s") and the decoders' own messages apart (`DecodeError.detail`). PyAV's probe runs
  first, so decord only sees files that have a video stream; libav's console logging is
  off in both (it would print one line per bad packet).
- A file that decodes only in part (a cut download: its header declares 10 s, its
  packets end at 4 s) is decoded as far as it goes; `VideoInfo.cut_short` says where it
  ends, and the stages record it as a warning, not a failure.
- Windows (`window_valid_segments`): a video of D seconds gives floor(D / 10) full
  windows plus one padded window when the remainder is at least 1 s (so LLP clips of
  10.0-10.1 s are one window, and a 35-s video gives four). A padded window repeats the
  last frame and pads audio with zeros; its `valid_segments` counts the 1-s segments
  that start before the video ends (whole or partial): ceil(remainder) for the last
  window, 10 for full ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import av
import numpy as np
import torch
import torchaudio.functional

from avvp.contract import CLAP_SAMPLE_RATE, FPS, SEGMENT_SECONDS, WINDOW_SECONDS

try:
    import decord
except ImportError:  # no wheel for some platforms (e.g. macOS arm64): PyAV does the work
    decord = None

# libav prints its own warnings to the console, once per bad packet, from PyAV's copy and
# from the one bundled in decord; the reasons given per file replace them.
av.logging.set_level(None)
if decord is not None:
    decord.logging.set_level(decord.logging.QUIET)

TIME_TOLERANCE_S = 1e-3
# A video stream this much shorter than its header declares was cut (mp4 audio and video
# tracks differ by tens of milliseconds, never by this much).
CUT_SHORT_TOLERANCE_S = 0.5
# torchaudio.functional.resample's defaults, which fix how far its filter reaches.
_LOWPASS_FILTER_WIDTH, _ROLLOFF = 6, 0.99


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
class Window:
    """One 10-s window of a video: the unit every extractor and the parser work on."""

    index: int
    frames: np.ndarray  # (window_seconds x fps, H, W, 3) uint8, upright
    audio: dict[int, np.ndarray]  # rate -> (window_seconds x rate,) float32
    valid_segments: int
    has_audio: bool


@dataclass(frozen=True)
class VideoInfo:
    """What the file's index says, before any pixel is decoded."""

    path: Path
    fps: float
    duration: float
    declared_duration: float | None  # what the file's header says, when it says
    frame_count: int  # output frames at `fps`
    has_audio: bool
    valid_segments: tuple[int, ...]  # per window

    @property
    def windows(self) -> int:
        return len(self.valid_segments)

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


def window_valid_segments(
    duration: float, path: str | Path = "video", window_seconds: int = WINDOW_SECONDS
) -> tuple[int, ...]:
    """Valid segments of each window of a video of `duration` s (the module's rule).

    Raises DecodeError when the video is too short for one segment.
    """
    full_windows = math.floor((duration + TIME_TOLERANCE_S) / window_seconds)
    remainder = duration - full_windows * window_seconds
    padded_window = remainder >= SEGMENT_SECONDS - TIME_TOLERANCE_S
    if full_windows == 0 and not padded_window:
        raise DecodeError(
            path, f"too short: {duration:.2f} s (a segment needs {SEGMENT_SECONDS} s)"
        )
    segments = window_seconds // SEGMENT_SECONDS
    last = min(segments, math.ceil((remainder - TIME_TOLERANCE_S) / SEGMENT_SECONDS))
    return (segments,) * full_windows + ((last,) if padded_window else ())


class VideoStream:
    """An open video: its `info`, and its windows decoded one at a time.

    Use as a context manager (or call `close`); `windows()` may be iterated once.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = FPS,
        sample_rates: Iterable[int] = (CLAP_SAMPLE_RATE,),
    ) -> None:
        path = Path(path)
        rates = sorted({int(rate) for rate in sample_rates})
        if fps <= 0 or any(rate <= 0 for rate in rates):
            raise ValueError(f"fps ({fps}) and sample rates ({rates}) must be positive")
        declared = _probe(path)
        self._path, self._fps, self._reasons = path, fps, []
        self._frames = self._first_frame_reader(path, fps)
        self._audio: _AudioReader | None = None
        try:
            duration = self._frames.duration
            valid_segments = window_valid_segments(duration, path)
            try:
                self._audio = _AudioReader(path, rates, duration)
            except _BackendError as error:
                raise DecodeError(path, "corrupt audio data at 0.0 s", f"pyav: {error}") from None
        except BaseException:
            self.close()
            raise
        self.info = VideoInfo(
            path=path,
            fps=fps,
            duration=duration,
            declared_duration=declared,
            frame_count=self._frames.count,
            has_audio=self._audio.has_audio,
            valid_segments=valid_segments,
        )

    @property
    def backend(self) -> str:
        """ "decord" or "pyav": the decoder of the frames so far (PyAV after a fallback)."""
        return self._frames.name

    def windows(self) -> Iterator[Window]:
        frames_per_window = WINDOW_SECONDS * self._fps
        if frames_per_window != round(frames_per_window):
            raise ValueError(f"a {WINDOW_SECONDS}-s window at {self._fps} FPS is not whole frames")
        frames_per_window = round(frames_per_window)
        for index, valid in enumerate(self.info.valid_segments):
            first = index * frames_per_window
            outputs = np.arange(first, min(first + frames_per_window, self.info.frame_count))
            frames = self._window_frames(outputs)
            try:
                audio = self._audio.window(index)
            except _BackendError as error:
                where = f" at {error.at:.1f} s" if error.at is not None else ""
                raise DecodeError(
                    self._path, f"corrupt audio data{where}", f"pyav: {error}"
                ) from None
            yield Window(
                index=index,
                frames=_fit_length(frames, frames_per_window, mode="edge"),
                audio=audio,
                valid_segments=valid,
                has_audio=self.info.has_audio,
            )

    def close(self) -> None:
        self._frames.close()
        if self._audio is not None:
            self._audio.close()

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _first_frame_reader(self, path: Path, fps: float) -> _FrameReader:
        for reader in _FRAME_READERS:
            try:
                return reader(path, fps)
            except _BackendError as error:
                self._reasons.append(f"{reader.name}: {error}")
        raise DecodeError(path, "corrupt video data", "; ".join(self._reasons))

    def _window_frames(self, outputs: np.ndarray) -> np.ndarray:
        """Frames of these output indices, from decord, else PyAV from here on."""
        while True:
            try:
                return self._frames.read(outputs)
            except _BackendError as error:
                self._reasons.append(f"{self._frames.name}: {error}")
                failed_at = error.at if error.at is not None else outputs[0] / self._fps
                self._frames.close()
                fallback = _FRAME_READERS.index(type(self._frames)) + 1
                if fallback == len(_FRAME_READERS):
                    raise DecodeError(
                        self._path,
                        f"corrupt video data at {failed_at:.1f} s",
                        "; ".join(self._reasons),
                    ) from None
                try:
                    self._frames = _FRAME_READERS[fallback](self._path, self._fps)
                except _BackendError as next_error:
                    self._reasons.append(f"{_FRAME_READERS[fallback].name}: {next_error}")
                    raise DecodeError(
                        self._path,
                        f"corrupt video data at {failed_at:.1f} s",
                        "; ".join(self._reasons),
                    ) from None


def open_video(
    path: str | Path, fps: float = FPS, sample_rates: Iterable[int] = (CLAP_SAMPLE_RATE,)
) -> VideoStream:
    """Open `path` for window-by-window decoding; raises DecodeError naming the file and
    a plain reason when it is not a readable video."""
    return VideoStream(path, fps, sample_rates)


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """A whole short clip: its windows, and their frames and audio joined without the
    padding (a remainder under 1 s after the last window gives no window, so it is not
    here either)."""

    info: VideoInfo
    frames: np.ndarray  # (at most frame_count, H, W, 3) uint8, upright
    frame_times: np.ndarray  # (len(frames),) float64 seconds, i / fps
    audio: dict[int, np.ndarray]  # rate -> (at most round(duration x rate),) float32
    windows: list[Window]
    backend: str


def decode_video(
    path: str | Path, fps: float = FPS, sample_rates: Iterable[int] = (CLAP_SAMPLE_RATE,)
) -> DecodedVideo:
    """Decode a whole clip through `open_video`, keeping every window (short clips only:
    stages stream with `VideoStream.windows()` instead)."""
    with open_video(path, fps, sample_rates) as stream:
        windows = list(stream.windows())
        info, backend = stream.info, stream.backend
    frames = np.concatenate([w.frames for w in windows])[: info.frame_count]
    audio = {
        rate: np.concatenate([w.audio[rate] for w in windows])[: round(info.duration * rate)]
        for rate in windows[0].audio
    }
    return DecodedVideo(info, frames, np.arange(len(frames)) / fps, audio, windows, backend)


def upright(frame: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as PyAV reports it).

    A phone's portrait video is stored landscape with rotation -90: it is turned 90
    degrees clockwise here, like FFmpeg's autorotate. Rounded to a multiple of 90.
    """
    return np.rot90(frame, k=round(rotation / 90) % 4)


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


def _frame_grid(
    starts: np.ndarray, fps: float, fallback_interval: float
) -> tuple[np.ndarray, float]:
    """Which source frame each output frame shows, by the rule in the module docstring.

    starts: presentation times of the source frames in seconds, ascending. Returns (index
    into `starts` per output frame, duration of the video).
    """
    starts = starts - starts[0]
    interval = float(np.median(np.diff(starts))) if len(starts) > 1 else fallback_interval
    duration = float(starts[-1]) + interval
    count = max(1, math.ceil((duration - TIME_TOLERANCE_S) * fps))
    times = np.arange(count) / fps
    shown = np.searchsorted(starts, times + TIME_TOLERANCE_S, side="right") - 1
    return shown.clip(min=0), duration


class _FrameReader:
    """Frames by output index: `shown` maps output frames to source frames."""

    name: str
    shown: np.ndarray
    duration: float

    @property
    def count(self) -> int:
        return len(self.shown)

    def read(self, outputs: np.ndarray) -> np.ndarray:
        """(len(outputs), H, W, 3) uint8; raises _BackendError."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""


class _DecordFrames(_FrameReader):
    name = "decord"

    def __init__(self, path: Path, fps: float) -> None:
        if decord is None:
            raise _BackendError("decord is not installed")
        try:
            self._reader = decord.VideoReader(str(path))
            if len(self._reader) == 0:
                raise _BackendError("no video frames")
            spans = self._reader.get_frame_timestamp(np.arange(len(self._reader)))
        except (RuntimeError, decord.DECORDError) as error:
            raise _BackendError(_first_line(error)) from None
        self.shown, self.duration = _frame_grid(
            spans[:, 0].astype(np.float64), fps, float(spans[0, 1] - spans[0, 0])
        )
        self._fps = fps

    def read(self, outputs: np.ndarray) -> np.ndarray:
        needed, position = np.unique(self.shown[outputs], return_inverse=True)
        try:
            return self._reader.get_batch(needed.tolist()).asnumpy()[position]
        except (RuntimeError, decord.DECORDError) as error:
            raise _BackendError(_first_line(error), at=outputs[0] / self._fps) from None

    def close(self) -> None:
        self._reader = None


class _PyAVFrames(_FrameReader):
    """Packet timestamps choose the frames (no decoding); then one sequential decode
    converts only those, window after window."""

    name = "pyav"

    def __init__(self, path: Path, fps: float) -> None:
        try:
            self._container = av.open(str(path))
            if not self._container.streams.video:
                raise _BackendError("no video stream")
            stream = self._container.streams.video[0]
            self._pts = np.unique(
                [
                    packet.pts
                    for packet in self._container.demux(stream)
                    if packet.size and packet.pts is not None and not packet.is_discard
                ]
            )
            if self._pts.size == 0:
                raise _BackendError("no video frames")
            self._time_base = float(stream.time_base)
            rate = stream.average_rate or stream.guessed_rate
            self.shown, self.duration = _frame_grid(
                self._pts * self._time_base, fps, 1 / float(rate) if rate else 1 / fps
            )
            self._container.seek(0)
            stream.thread_type = "AUTO"
            self._decoded = self._container.decode(stream)
        except av.FFmpegError as error:
            raise _BackendError(_first_line(error)) from None
        self._kept: dict[int, np.ndarray] = {}
        self._last_pts = -1

    def read(self, outputs: np.ndarray) -> np.ndarray:
        # After a fallback from decord this grid may end a frame earlier than decord's.
        stamps = self._pts[self.shown[np.minimum(outputs, self.count - 1)]].tolist()
        wanted = set(stamps)
        # Frames come in presentation order; keep those this window shows.
        self._kept = {pts: image for pts, image in self._kept.items() if pts in wanted}
        try:
            while self._last_pts < max(wanted):
                frame = next(self._decoded, None)
                if frame is None:
                    break
                self._last_pts = frame.pts
                if frame.pts in wanted:
                    self._kept[frame.pts] = upright(
                        frame.to_ndarray(format="rgb24"), frame.rotation
                    )
        except av.FFmpegError as error:
            at = (self._last_pts - int(self._pts[0])) * self._time_base
            raise _BackendError(_first_line(error), at=max(at, 0.0)) from None
        if missing := wanted - self._kept.keys():
            raise _BackendError(
                f"{len(missing)} frames listed in the container did not decode",
                at=(min(missing) - int(self._pts[0])) * self._time_base,
            )
        return np.stack([self._kept[stamp] for stamp in stamps])

    def close(self) -> None:
        self._container.close()


_FRAME_READERS: list[type[_FrameReader]] = [_DecordFrames, _PyAVFrames]


class _AudioReader:
    """Mono audio of the first audio stream, decoded in order and resampled per window."""

    def __init__(self, path: Path, rates: list[int], duration: float) -> None:
        self._rates, self._duration = rates, duration
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # source sample index of the buffer's first sample
        self._container = av.open(str(path))
        self._chunks: Iterator[np.ndarray] | None = None
        self.source_rate = 0
        if self._container.streams.audio:
            stream = self._container.streams.audio[0]
            self.source_rate = stream.rate
            self._chunks = self._decode(stream)
        # A stream that decodes to no samples counts as no audio.
        self.has_audio = self._fill(1) and self.source_rate > 0

    def window(self, index: int) -> dict[int, np.ndarray]:
        """(window_seconds x rate,) float32 per rate; zeros past the end or without audio."""
        out = {}
        spans = {rate: self._source_span(index, rate) for rate in self._rates}
        if self.has_audio and spans:
            self._fill(max(end for _, end in spans.values()))
            self._drop_before(min(start for start, _ in spans.values()))
        for rate in self._rates:
            samples = WINDOW_SECONDS * rate
            first = index * samples
            # Samples past round(duration x rate) are padding, as for the whole track.
            valid = max(0, min(samples, round(self._duration * rate) - first))
            audio = np.zeros(samples, np.float32)
            if self.has_audio and valid:
                audio[:valid] = self._resampled(rate, first, valid, *spans[rate])
            out[rate] = audio
        return out

    def close(self) -> None:
        self._container.close()

    def _source_span(self, index: int, rate: int) -> tuple[int, int]:
        """Source samples whose resampling gives output samples [first, first + 10 s):
        whole periods of the two rates, with a margin past the filter's reach."""
        if self.source_rate == 0 or rate == self.source_rate:
            first = index * WINDOW_SECONDS * rate
            return first, first + WINDOW_SECONDS * rate
        source, target = self._reduced(rate)
        reach = math.ceil(_LOWPASS_FILTER_WIDTH * source / (min(source, target) * _ROLLOFF))
        margin = math.ceil(reach / source) + 1  # in periods of `source` samples
        first = index * WINDOW_SECONDS * rate
        start_period = max(0, first // target - margin)
        end_period = -(-(first + WINDOW_SECONDS * rate) // target) + margin
        return start_period * source, end_period * source

    def _reduced(self, rate: int) -> tuple[int, int]:
        common = math.gcd(self.source_rate, rate)
        return self.source_rate // common, rate // common

    def _resampled(self, rate: int, first: int, count: int, start: int, end: int) -> np.ndarray:
        chunk = self._buffer[start - self._buffer_start : end - self._buffer_start]
        if chunk.size == 0:  # the audio track ends before this window
            return np.zeros(count, np.float32)
        if rate == self.source_rate:
            resampled, offset = chunk, start
        else:
            source, target = self._reduced(rate)
            resampled = torchaudio.functional.resample(
                torch.from_numpy(np.ascontiguousarray(chunk)), self.source_rate, rate
            ).numpy()
            offset = start // source * target
        piece = resampled[first - offset : first - offset + count]
        return np.pad(piece, (0, count - len(piece)))

    def _fill(self, end: int) -> bool:
        """Decode until the buffer reaches source sample `end` or the track ends;
        whether the buffer holds any sample."""
        while self._chunks is not None and self._buffer_start + len(self._buffer) < end:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._chunks = None
                break
            self._buffer = np.concatenate([self._buffer, chunk])
        return self._buffer_start + len(self._buffer) > 0

    def _drop_before(self, start: int) -> None:
        drop = min(max(0, start - self._buffer_start), len(self._buffer))
        self._buffer, self._buffer_start = self._buffer[drop:], self._buffer_start + drop

    def _decode(self, stream: av.audio.stream.AudioStream) -> Iterator[np.ndarray]:
        to_planar_float = av.AudioResampler(format="fltp")
        decoded = 0
        try:
            for frame in self._container.decode(stream):
                for chunk in to_planar_float.resample(frame):
                    samples = chunk.to_ndarray().mean(axis=0, dtype=np.float32)
                    decoded += len(samples)
                    yield samples
            for chunk in to_planar_float.resample(None):
                yield chunk.to_ndarray().mean(axis=0, dtype=np.float32)
        except av.FFmpegError as error:
            raise _BackendError(_first_line(error), at=decoded / self.source_rate) from None


def _fit_length(array: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Cut or pad along the first axis: mode "constant" pads zeros, "edge" repeats the last."""
    if len(array) >= length:
        return array[:length]
    widths = [(0, length - len(array))] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, widths, mode=mode)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
