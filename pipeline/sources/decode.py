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
  absorbs float rounding and is far below any frame interval.
- Frame size (`decoded_size`): a frame whose shorter side is over 480 pixels, or whose
  longer side is over 960, is scaled down inside the decoder (swscale's bilinear filter
  in decord and in PyAV alike: their frames differ at a few pixels of sharp colour
  edges) by the one factor that brings both within those limits, keeping its aspect
  ratio; smaller frames keep the source resolution, untouched. The extractors squash
  each frame to 224 x 224 (CLIP) or 112 x 112 (R(2+1)D), so every one of them still
  resizes down from at least twice its size, and LLP clips (320 x 240 and below) give
  the very frames, and features, they gave before the rule. A window's worth (80
  frames) of at most 960 x 480 is all that is held at once, whatever the source
  resolution, and a large source decodes on as few threads as keep about 64 MB of its
  pictures in flight (each frame thread holds some): a 4K or 8K video costs about the
  memory of a 320 x 240 one (benchmarks/extract.py measures it).
- decord decodes ahead on a thread of its own after every read, without a bound, until
  the end of the file (dmlc/decord issues 157, 197, 208: a long video ends up decoded
  into memory while the extractors work on one window). Seeking stops it, so each read
  ends with a seek to the keyframe the next window decodes from: memory does not grow
  with length. A file whose keyframes are more than 20 s apart would then decode much
  of itself again for every window, so PyAV decodes it instead, in one pass.
- Rotation metadata (display matrix) is applied so frames come out upright. decord 0.6
  already does this itself for multiples of 90 degrees, but for some frame sizes (80 x 48
  turned by 90 degrees, for one) it fails an internal size check: the rest of the file
  then goes to PyAV, as a file decord cannot read at all does (both cases are tested).
  The PyAV path rotates by the decoded frame's `rotation`, as FFmpeg's autorotate does.
  A turned video whose frames are scaled goes to PyAV from the start: decord 0.6 scales
  turned pictures wrongly (into the unturned shape).
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
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import av
import numpy as np
import torch
import torchaudio.functional

from ...contract import CLAP_SAMPLE_RATE, FPS, SEGMENT_SECONDS, WINDOW_SECONDS

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
# The largest frames decoded as they are (module docstring, frame size): at least twice
# the largest extractor input (224 x 224) either way, and 480p (854 x 480) untouched.
MAX_SHORT_SIDE, MAX_LONG_SIDE = 480, 960
# What the decoder's frame threads may hold of a scaled (large) source's pictures:
# 4K gets 5 threads, 8K one (module docstring, frame size).
SOURCE_PICTURES_BYTES = 64 << 20
# decord re-decodes each window from the keyframe before it (module docstring): a file
# whose keyframes are further apart than this goes to PyAV, which decodes in one pass.
MAX_KEYFRAME_GAP_S = 2 * WINDOW_SECONDS
# What changes from run to run in the decoders' messages: decord's log time stamps
# ("[15:12:17] "), and the addresses in libav's log contexts ("[h264 @ 0x55d5c1f0]").
_RUN_VARYING = re.compile(r"\[\d{2}:\d{2}:\d{2}\]\s*|\s*@\s*0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")


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
        source = _probe(path)
        self._path, self._fps, self._reasons = path, fps, []
        width, height = decoded_size(source.width, source.height)
        self._scale = None
        if (width, height) != (source.width, source.height):
            threads = _decoder_threads(source.width, source.height)
            self._scale = _Scale(width, height, threads)
        # decord 0.6 scales a rotated picture wrongly (into the unrotated shape, and with
        # the wrong crop when given the turned one): PyAV scales those, then turns them.
        self._readers = [
            reader
            for reader in _FRAME_READERS
            if not (reader is _DecordFrames and self._scale and source.rotation % 360)
        ]
        self._frames = self._first_frame_reader()
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
            declared_duration=source.declared_duration,
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
        _trace: TracebackType | None,
    ) -> None:
        self.close()

    def _first_frame_reader(self) -> _FrameReader:
        for reader in self._readers:
            try:
                return reader(self._path, self._fps, self._scale)
            except _BackendError as error:
                self._reasons.append(f"{reader.name}: {error}")
        raise DecodeError(self._path, "corrupt video data", "; ".join(self._reasons))

    def _window_frames(self, outputs: np.ndarray) -> np.ndarray:
        """Frames of these output indices, from decord, else PyAV from here on."""
        while True:
            try:
                return self._frames.read(outputs)
            except _BackendError as error:
                self._reasons.append(f"{self._frames.name}: {error}")
                failed_at = error.at if error.at is not None else outputs[0] / self._fps
                self._frames.close()
                fallback = self._readers.index(type(self._frames)) + 1
                if fallback == len(self._readers):
                    raise DecodeError(
                        self._path,
                        f"corrupt video data at {failed_at:.1f} s",
                        "; ".join(self._reasons),
                    ) from None
                try:
                    self._frames = self._readers[fallback](self._path, self._fps, self._scale)
                except _BackendError as next_error:
                    self._reasons.append(f"{self._readers[fallback].name}: {next_error}")
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


def decoded_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the frames decoded from a picture of `width` x `height`: the
    same, or scaled down to fit MAX_SHORT_SIDE and MAX_LONG_SIDE (module docstring)."""
    if width <= 0 or height <= 0:  # not known before decoding: frames come as they are
        return width, height
    scale = min(1.0, MAX_SHORT_SIDE / min(width, height), MAX_LONG_SIDE / max(width, height))
    if scale == 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


class _Scale(NamedTuple):
    """How a large source is decoded: the frames' (width, height) before they are turned
    upright, and the decoder's threads."""

    width: int
    height: int
    threads: int


def _decoder_threads(width: int, height: int) -> int:
    """Threads to decode a `width` x `height` source with: each frame thread holds
    pictures of the source's size, so a large one gets as many as keep about
    SOURCE_PICTURES_BYTES of them (in 8-bit 4:2:0) in flight, one CPU each at most."""
    picture = width * height * 3 // 2
    return max(1, min(os.cpu_count() or 1, SOURCE_PICTURES_BYTES // picture))


class _Source(NamedTuple):
    """What the probe found: the header's duration, and the stored picture."""

    declared_duration: float | None  # the video stream's, else the container's, if any
    width: int
    height: int
    rotation: float  # display rotation; read from the first frame only when scaling


def _probe(path: Path) -> _Source:
    """Check with PyAV that `path` is a media file with a video stream, and describe it."""
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
                declared = float(stream.duration * stream.time_base)
            else:
                declared = container.duration / av.time_base if container.duration else None
            width, height = stream.codec_context.width, stream.codec_context.height
            rotation = 0.0
            if decoded_size(width, height) != (width, height):
                rotation = _first_frame_rotation(container, stream)
            return _Source(declared, width, height, rotation)
    except av.FFmpegError as error:
        raise DecodeError(
            path, "not a media file (or one cut before its index)", f"pyav: {_first_line(error)}"
        ) from None


def _first_frame_rotation(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    # A first frame that does not decode leaves the verdict to the frame readers.
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError:
        return 0.0
    return float(frame.rotation) if frame is not None else 0.0


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
    """Frames by output index: `shown` maps output frames to source frames. Built with
    (path, fps, scale): how to scale a large source, or None to keep its frames."""

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

    def __init__(self, path: Path, fps: float, scale: _Scale | None) -> None:
        if decord is None:
            raise _BackendError("decord is not installed")
        options = {}
        if scale is not None:
            options = {"width": scale.width, "height": scale.height, "num_threads": scale.threads}
        try:
            self._reader = decord.VideoReader(str(path), **options)
            if len(self._reader) == 0:
                raise _BackendError("no video frames")
            spans = self._reader.get_frame_timestamp(np.arange(len(self._reader)))
            keys = np.asarray(self._reader.get_key_indices(), dtype=np.int64)
        except (RuntimeError, decord.DECORDError) as error:
            raise _BackendError(_first_line(error)) from None
        starts = spans[:, 0].astype(np.float64)
        self.shown, self.duration = _frame_grid(starts, fps, float(spans[0, 1] - spans[0, 0]))
        self._keys = keys if keys.size and keys[0] == 0 else np.insert(keys, 0, 0)
        gap = float(np.diff([*starts[self._keys], starts[0] + self.duration]).max())
        if gap > MAX_KEYFRAME_GAP_S:
            raise _BackendError(
                f"keyframes up to {gap:.0f} s apart: each window would decode again from "
                "the last one"
            )
        self._fps = fps

    def read(self, outputs: np.ndarray) -> np.ndarray:
        needed, position = np.unique(self.shown[outputs], return_inverse=True)
        following = outputs[-1] + 1
        # The keyframe the next window decodes from: decord 0.6 seeks to it correctly
        # (to other frames, it reads later frames from the wrong place).
        start = self.shown[following] if following < self.count else 0
        keyframe = int(self._keys[np.searchsorted(self._keys, start, side="right") - 1])
        try:
            batch = self._reader.get_batch(needed.tolist())
            self._reader.seek(keyframe)  # stops the decoding ahead (module docstring)
            # decord's own buffer, shared: asnumpy() would copy the window.
            frames = torch.utils.dlpack.from_dlpack(batch.to_dlpack()).numpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise _BackendError(_first_line(error), at=outputs[0] / self._fps) from None
        # Below 8 source frames a second, some are shown twice: only then is a copy made.
        return frames if len(needed) == len(outputs) else frames[position]

    def close(self) -> None:
        self._reader = None


class _PyAVFrames(_FrameReader):
    """Packet timestamps choose the frames (no decoding); then one sequential decode
    converts only those, window after window."""

    name = "pyav"

    def __init__(self, path: Path, fps: float, scale: _Scale | None) -> None:
        self._scale: dict[str, int | str] = {}
        if scale is not None:
            # swscale's bilinear filter, as decord's scaling (module docstring).
            self._scale = {"width": scale.width, "height": scale.height}
            self._scale["interpolation"] = "BILINEAR"
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
            if scale is not None:
                stream.codec_context.thread_count = scale.threads
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
                        frame.to_ndarray(format="rgb24", **self._scale), frame.rotation
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
        # One concatenation per window: joining each decoded frame's few samples to the
        # buffer as they come would copy a window's audio hundreds of times.
        pieces, reached = [self._buffer], self._buffer_start + len(self._buffer)
        while self._chunks is not None and reached < end:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._chunks = None
                break
            pieces.append(chunk)
            reached += len(chunk)
        if len(pieces) > 1:
            self._buffer = np.concatenate(pieces)
        return reached > 0

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
    """The decoder's message, first line, without what changes from run to run (so one
    bad file keeps one failure row)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return _RUN_VARYING.sub("", lines[0]).strip() if lines else type(error).__name__
