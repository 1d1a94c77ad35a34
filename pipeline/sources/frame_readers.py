"""The frame readers behind `avvp.pipeline.sources.decode`: which source frame each
output frame shows (`frame_grid`), and the two decoders that read them, decord
(`DecordFrames`, seeking to stop its decoding ahead) and PyAV (`PyAVFrames`, one
sequential pass, which skips what no output frame needs and scales in swscale), tried in
that order (`FRAME_READERS`). The rules are in `decode`'s module docstring."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from ...contract import WINDOW_SECONDS
from .decoder_errors import BackendError, first_line
from .frame_shape import Scale, upright

try:
    import decord
except ImportError:  # no wheel for some platforms (e.g. macOS arm64): PyAV does the work
    decord = None

# decord bundles its own libav, which prints a warning per bad packet like PyAV's.
if decord is not None:
    decord.logging.set_level(decord.logging.QUIET)

# Timestamps are compared with this tolerance (`decode`'s docstring, frames).
TIME_TOLERANCE_S = 1e-3
# decord re-decodes each window from the keyframe before it (`decode`'s docstring): a
# file whose keyframes are further apart than this goes to PyAV, which decodes in one pass.
MAX_KEYFRAME_GAP_S = 2 * WINDOW_SECONDS
# Pixel formats swscale scales plane by plane (SIMD) before its unscaled RGB converter.
PLANAR_420 = frozenset({"yuv420p", "yuvj420p"})


def frame_grid(
    starts: np.ndarray, fps: float, fallback_interval: float
) -> tuple[np.ndarray, float]:
    """Which source frame each output frame shows, by the rule in `decode`'s docstring.

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


class FrameReader:
    """Frames by output index: `shown` maps output frames to source frames. Built with
    (path, fps, scale, threads): how to scale the source, or None to keep its frames, and
    the decoder's threads (None: its own choice; `scale.threads` bounds it)."""

    name: str
    shown: np.ndarray
    duration: float

    @property
    def count(self) -> int:
        return len(self.shown)

    def read(self, outputs: np.ndarray) -> np.ndarray:
        """(len(outputs), H, W, 3) uint8; raises BackendError."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""


class DecordFrames(FrameReader):
    name = "decord"

    def __init__(self, path: Path, fps: float, scale: Scale | None, threads: int | None) -> None:
        if decord is None:
            raise BackendError("decord is not installed")
        options = {} if threads is None else {"num_threads": threads}
        if scale is not None:
            options = {"width": scale.width, "height": scale.height}
            options["num_threads"] = min(scale.threads, threads or scale.threads)
        try:
            self._reader = decord.VideoReader(str(path), **options)
            if len(self._reader) == 0:
                raise BackendError("no video frames")
            spans = self._reader.get_frame_timestamp(np.arange(len(self._reader)))
            keys = np.asarray(self._reader.get_key_indices(), dtype=np.int64)
        except (RuntimeError, decord.DECORDError) as error:
            raise BackendError(first_line(error)) from None
        starts = spans[:, 0].astype(np.float64)
        self.shown, self.duration = frame_grid(starts, fps, float(spans[0, 1] - spans[0, 0]))
        self._keys = keys if keys.size and keys[0] == 0 else np.insert(keys, 0, 0)
        gap = float(np.diff([*starts[self._keys], starts[0] + self.duration]).max())
        if gap > MAX_KEYFRAME_GAP_S:
            raise BackendError(
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
            self._reader.seek(keyframe)  # stops the decoding ahead (`decode`'s docstring)
            # decord's own buffer, shared: asnumpy() would copy the window.
            frames = torch.utils.dlpack.from_dlpack(batch.to_dlpack()).numpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise BackendError(first_line(error), at=outputs[0] / self._fps) from None
        # Below 8 source frames a second, some are shown twice: only then is a copy made.
        return frames if len(needed) == len(outputs) else frames[position]

    def close(self) -> None:
        self._reader = None


class PyAVFrames(FrameReader):
    """Packet timestamps choose the frames (no decoding); then one sequential decode
    converts only those, window after window, and skips the frames nothing needs. The
    conversion to RGB runs on a thread of its own while the next frames decode (both
    release the GIL): on 2 cores the LLP sample's 320 x 240 frames gain nothing from a
    second decoder thread, but do from converting beside the decoder."""

    name = "pyav"

    def __init__(self, path: Path, fps: float, scale: Scale | None, threads: int | None) -> None:
        self._scale = scale
        # One swscale context each, reused: a fresh one per frame costs its set-up again.
        self._scaler, self._converter = VideoReformatter(), VideoReformatter()
        try:
            self._container = av.open(str(path))
            if not self._container.streams.video:
                raise BackendError("no video stream")
            stream = self._container.streams.video[0]
            self._pts = np.unique(
                [
                    packet.pts
                    for packet in self._container.demux(stream)
                    if packet.size and packet.pts is not None and not packet.is_discard
                ]
            )
            if self._pts.size == 0:
                raise BackendError("no video frames")
            self._time_base = float(stream.time_base)
            rate = stream.average_rate or stream.guessed_rate
            self.shown, self.duration = frame_grid(
                self._pts * self._time_base, fps, 1 / float(rate) if rate else 1 / fps
            )
            self._container.seek(0)
            stream.thread_type = "AUTO"
            # All CPUs but the converter's, unless told; a scaled source's bound caps it.
            count = threads if threads is not None else max(1, (os.cpu_count() or 1) - 1)
            stream.codec_context.thread_count = min(count, scale.threads) if scale else count
            self._needed = frozenset(self._pts[np.unique(self.shown)].tolist())
            self._decoded = self._frames(stream)
        except av.FFmpegError as error:
            raise BackendError(first_line(error)) from None
        self._kept: dict[int, Future[np.ndarray]] = {}
        self._last_pts = -1
        self._converter_thread = ThreadPoolExecutor(1, thread_name_prefix="avvp-rgb")

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
                    self._kept[frame.pts] = self._converter_thread.submit(self._upright, frame)
        except av.FFmpegError as error:
            raise BackendError(first_line(error), at=self._seconds(self._last_pts)) from None
        if missing := wanted - self._kept.keys():
            raise BackendError(
                f"{len(missing)} frames listed in the container did not decode",
                at=self._seconds(min(missing)),
            )
        try:
            return np.stack([self._kept[stamp].result() for stamp in stamps])
        except av.FFmpegError as error:  # raised by the conversion, on its thread
            raise BackendError(first_line(error), at=self._seconds(stamps[0])) from None

    def close(self) -> None:
        self._converter_thread.shutdown(cancel_futures=True)
        self._container.close()

    def _frames(self, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order, without the unneeded non-reference ones:
        no other frame is predicted from those, so skipping them changes no picture."""
        codec = stream.codec_context
        for packet in self._container.demux(stream):
            # Most frames of a 25-30 FPS source are not shown at 8 FPS; libavcodec drops
            # the non-reference ones (B-frames) before decoding them.
            skip = packet.pts is not None and packet.pts not in self._needed
            codec.skip_frame = "NONREF" if skip else "DEFAULT"
            yield from codec.decode(packet)

    def _seconds(self, pts: int) -> float:
        """Where a timestamp lies in the video (before its first frame: 0)."""
        return max((pts - int(self._pts[0])) * self._time_base, 0.0)

    def _upright(self, frame: av.VideoFrame) -> np.ndarray:
        return upright(self._rgb(frame), frame.rotation)

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame in RGB, at the scale's size when there is one (swscale's bilinear
        filter, as decord's scaling: `decode`'s docstring); one swscale thread each, as
        frames this small gain nothing from more."""
        if self._scale is not None:
            width, height = self._scale.width, self._scale.height
            if self._scale.planes_first and frame.format.name in PLANAR_420:
                # swscale scales 4:2:0 planes with SIMD but writes scaled RGB in plain C:
                # scaling first, then converting unscaled, is several times faster.
                frame = self._scaler.reformat(
                    frame, width, height, interpolation="BILINEAR", threads=1
                )
            else:
                return self._scaler.reformat(
                    frame, width, height, "rgb24", interpolation="BILINEAR", threads=1
                ).to_ndarray()
        return self._converter.reformat(frame, format="rgb24", threads=1).to_ndarray()


FRAME_READERS: list[type[FrameReader]] = [DecordFrames, PyAVFrames]
