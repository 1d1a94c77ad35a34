"""Decode a video file one 10-s window at a time: 8-FPS frames and mono audio per window.

`open_video(path)` reads only the file's index (timestamps, streams) and says how long
the video is and how many windows it gives; `VideoStream.windows()` then decodes the
frames and audio of one window at a time, so memory stays flat however long the
video is. `decode_video` collects a whole short clip (tests, notebooks).

This module is the public API and the rules below; the work is done by `frame_readers`
(decord and PyAV), `audio_reader`, `frame_shape` (the size rule and rotation) and
`decoder_errors` (what a decoder's failure says).

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
- Frame size asked for (`open_video(..., frame_size=(width, height))`, an extractor's
  input size such as CLIP's 224 x 224): every upright frame is squashed to exactly that
  size in the decoder, without crop, instead of the rule above. PyAV decodes these (it
  skips frames no output shows, see below; decord cannot): swscale scales the YUV planes
  with its bilinear filter and then converts them to RGB, at a fraction of the cost of
  converting full frames. On the LLP sample they are within a level (mean) of the
  extractors' own resize of the full frames (bilinear, antialias off); from larger
  sources swscale's filter averages what that resize samples, so sharp detail differs
  more (a test checks the former). The output times and the frames they show are the
  same as without a size.
- Decoder threads: `threads` sets the video decoder's threads (decord's and PyAV's); the
  default is decord's own choice, and for PyAV every CPU but one, as PyAV's frames are
  converted to RGB on a thread of their own beside the decoder. A large source's memory
  bound above still caps it. The thread count changes no frame.
- PyAV decodes in one pass and skips the non-reference frames (most B-frames) that no
  output time shows: no other frame is predicted from them, so no picture changes (a test
  checks it); at 8 FPS from a 30-FPS source with B-frames a quarter to a third of the
  frames are never decoded.
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import av
import numpy as np

from ...contract import CLAP_SAMPLE_RATE, FPS, SEGMENT_SECONDS, WINDOW_SECONDS
from .audio_reader import AudioReader
from .decoder_errors import BackendError, first_line
from .frame_readers import FRAME_READERS, TIME_TOLERANCE_S, DecordFrames, FrameReader
from .frame_shape import Scale, decoded_size, decoder_threads

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
        frame_size: tuple[int, int] | None = None,
        threads: int | None = None,
    ) -> None:
        path = Path(path)
        rates = sorted({int(rate) for rate in sample_rates})
        if fps <= 0 or any(rate <= 0 for rate in rates):
            raise ValueError(f"fps ({fps}) and sample rates ({rates}) must be positive")
        if min(frame_size or (1,)) <= 0 or (threads is not None and threads < 1):
            raise ValueError(f"frame size {frame_size} and threads {threads} must be positive")
        # A quarter turn swaps the sides of a frame size unless it is square.
        oblong = frame_size is not None and frame_size[0] != frame_size[1]
        source = _probe(path, always_rotation=oblong)
        self._path, self._fps, self._threads, self._reasons = path, fps, threads, []
        width, height = decoded_size(source.width, source.height)
        if frame_size is not None:
            # Scaled before it is turned upright.
            turned = round(source.rotation / 90) % 2
            width, height = frame_size[::-1] if turned else frame_size
        self._scale = None
        if (width, height) != (source.width, source.height):
            threads = decoder_threads(source.width, source.height)
            self._scale = Scale(width, height, threads, planes_first=frame_size is not None)
        # decord 0.6 scales a rotated picture wrongly (into the unrotated shape, and with
        # the wrong crop when given the turned one): PyAV scales those, then turns them.
        # A frame size goes to PyAV too: it skips the frames nothing shows, decord cannot.
        self._readers = [
            reader
            for reader in FRAME_READERS
            if not (
                reader is DecordFrames
                and (frame_size is not None or self._scale and source.rotation % 360)
            )
        ]
        self._frames = self._first_frame_reader()
        self._audio: AudioReader | None = None
        try:
            duration = self._frames.duration
            valid_segments = window_valid_segments(duration, path)
            try:
                self._audio = AudioReader(path, rates, duration)
            except BackendError as error:
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
            except BackendError as error:
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

    def _first_frame_reader(self) -> FrameReader:
        for reader in self._readers:
            try:
                return reader(self._path, self._fps, self._scale, self._threads)
            except BackendError as error:
                self._reasons.append(f"{reader.name}: {error}")
        raise DecodeError(self._path, "corrupt video data", "; ".join(self._reasons))

    def _window_frames(self, outputs: np.ndarray) -> np.ndarray:
        """Frames of these output indices, from decord, else PyAV from here on."""
        while True:
            try:
                return self._frames.read(outputs)
            except BackendError as error:
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
                    self._frames = self._readers[fallback](
                        self._path, self._fps, self._scale, self._threads
                    )
                except BackendError as next_error:
                    self._reasons.append(f"{self._readers[fallback].name}: {next_error}")
                    raise DecodeError(
                        self._path,
                        f"corrupt video data at {failed_at:.1f} s",
                        "; ".join(self._reasons),
                    ) from None


def open_video(
    path: str | Path,
    fps: float = FPS,
    sample_rates: Iterable[int] = (CLAP_SAMPLE_RATE,),
    frame_size: tuple[int, int] | None = None,
    threads: int | None = None,
) -> VideoStream:
    """Open `path` for window-by-window decoding; raises DecodeError naming the file and
    a plain reason when it is not a readable video.

    frame_size: (width, height) every upright frame is scaled to in the decoder, as an
    extractor's input size (None: the size rule). threads: the video decoder's threads
    (None: the decoder's own choice)."""
    return VideoStream(path, fps, sample_rates, frame_size, threads)


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
    path: str | Path,
    fps: float = FPS,
    sample_rates: Iterable[int] = (CLAP_SAMPLE_RATE,),
    frame_size: tuple[int, int] | None = None,
    threads: int | None = None,
) -> DecodedVideo:
    """Decode a whole clip through `open_video` (same arguments), keeping every window
    (short clips only: stages stream with `VideoStream.windows()` instead)."""
    with open_video(path, fps, sample_rates, frame_size, threads) as stream:
        windows = list(stream.windows())
        info, backend = stream.info, stream.backend
    frames = np.concatenate([w.frames for w in windows])[: info.frame_count]
    audio = {
        rate: np.concatenate([w.audio[rate] for w in windows])[: round(info.duration * rate)]
        for rate in windows[0].audio
    }
    return DecodedVideo(info, frames, np.arange(len(frames)) / fps, audio, windows, backend)


class _Source(NamedTuple):
    """What the probe found: the header's duration, and the stored picture."""

    declared_duration: float | None  # the video stream's, else the container's, if any
    width: int
    height: int
    rotation: float  # display rotation; read from the first frame only when it matters


def _probe(path: Path, always_rotation: bool = False) -> _Source:
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
            if always_rotation or decoded_size(width, height) != (width, height):
                rotation = _first_frame_rotation(container, stream)
            return _Source(declared, width, height, rotation)
    except av.FFmpegError as error:
        raise DecodeError(
            path, "not a media file (or one cut before its index)", f"pyav: {first_line(error)}"
        ) from None


def _first_frame_rotation(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    # A first frame that does not decode leaves the verdict to the frame readers.
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError:
        return 0.0
    return float(frame.rotation) if frame is not None else 0.0


def _fit_length(array: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Cut or pad along the first axis: mode "constant" pads zeros, "edge" repeats the last."""
    if len(array) >= length:
        return array[:length]
    widths = [(0, length - len(array))] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, widths, mode=mode)
