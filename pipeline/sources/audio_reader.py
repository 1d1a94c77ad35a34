"""The audio of a video, window by window: `AudioReader` decodes the first audio
stream with PyAV, averages its channels and resamples each window from its own stretch
of the source (the rules are in the module docstring of `decode`, audio)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio.functional

from ...contract import WINDOW_SECONDS
from .decoder_errors import BackendError, first_line

# torchaudio.functional.resample's defaults, which fix how far its filter reaches.
_LOWPASS_FILTER_WIDTH, _ROLLOFF = 6, 0.99


class AudioReader:
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
            raise BackendError(first_line(error), at=decoded / self.source_rate) from None
