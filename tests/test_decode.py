"""Decoding a video window by window into 8-FPS frames and mono audio."""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torchaudio
from support import SAMPLES

from avvp.pipeline.sources import frame_readers
from avvp.pipeline.sources.decode import (
    DecodeError,
    decode_video,
    open_video,
    window_valid_segments,
)
from avvp.pipeline.sources.frame_shape import decoded_size, upright
from avvp.pipeline.synthetic.clips import PlantedEvent, encode_clip, render_audio, render_frames

SAMPLE_ID = "BjCEufrlXm4"
CLAP_RATE = 48_000
WINDOW_SAMPLES = 480_000


@pytest.fixture(scope="module")
def sample_clip() -> Path:
    path = SAMPLES / f"{SAMPLE_ID}.mp4"
    if not path.is_file():
        pytest.fail(f"expected the LLP sample clip at {path} (tests/data/)")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic clips: 10 s, 10.03 s, 35 s (with a tone in its last 5 s), and no audio."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    events = [PlantedEvent(0, "audio", 1, 4), PlantedEvent(7, "visual", 2, 6)]
    paths = {}
    for name, seconds in (("ten", 10.0), ("ten_and_a_bit", 10.03), ("long", 35.0)):
        paths[name] = encode_clip(
            folder / f"{name}.mp4",
            render_frames(events, seconds),
            audio=render_audio(events, seconds, rng),
        )
    paths["silent"] = encode_clip(folder / "silent.mp4", render_frames(events, 10.0))
    return paths


def numbered_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Flat grey frames whose level encodes their index (robust to lossy coding)."""
    levels = 16 + 6 * np.arange(count, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def frame_numbers(frames: np.ndarray) -> np.ndarray:
    return np.round((frames.mean(axis=(1, 2, 3)) - 16) / 6).astype(int)


def marked_frames(count: int, height: int = 64, width: int = 96) -> np.ndarray:
    """Landscape frames with a red block in the top-left corner, to see orientation."""
    frames = np.full((count, height, width, 3), 60, dtype=np.uint8)
    frames[:, :16, :16] = (255, 0, 0)
    return frames


@pytest.fixture(params=["decord", "pyav"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with decord, then with decord failing so that PyAV decodes."""
    if request.param == "pyav":
        monkeypatch.setattr(frame_readers.decord, "VideoReader", _failing_reader)
    return request.param


def _failing_reader(*args: object, **kwargs: object) -> None:
    raise RuntimeError("forced failure for the test")


def test_ten_second_clip_gives_80_frames_at_eighth_second_timestamps(
    clips: dict[str, Path], backend: str
) -> None:
    decoded = decode_video(clips["ten"])

    assert decoded.backend == backend
    assert decoded.frames.shape == (80, 64, 64, 3)
    assert decoded.frames.dtype == np.uint8
    np.testing.assert_array_equal(decoded.frame_times, np.arange(80) * 0.125)
    assert decoded.info.duration == pytest.approx(10.0, abs=1e-3)


def test_frames_are_the_source_frames_shown_at_each_output_time_with_a_variable_rate(
    tmp_path: Path, backend: str
) -> None:
    # Intervals of 40, 130 and 70 ms: output times fall on source frames, nearer the
    # next frame than the one shown, and twice on one frame; the median interval (the
    # last frame's duration) is 70 ms.
    source_times = np.cumsum([0.0] + [0.04, 0.13, 0.07] * 5)
    path = encode_clip(
        tmp_path / "vfr.mp4", numbered_frames(len(source_times)), frame_times=source_times
    )

    decoded = decode_video(path)

    expected = [
        max(k for k, start in enumerate(source_times) if start <= t + 1e-9)
        for t in decoded.frame_times
    ]
    assert decoded.info.duration == pytest.approx(source_times[-1] + 0.07, abs=1e-3)
    assert len(decoded.frames) == np.ceil(decoded.info.duration * 8 - 1e-6)
    np.testing.assert_array_equal(frame_numbers(decoded.frames), expected)


def test_pyav_fallback_gives_the_same_frames_and_audio_as_decord(
    sample_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_decord = decode_video(sample_clip)
    monkeypatch.setattr(frame_readers.decord, "VideoReader", _failing_reader)
    with_pyav = decode_video(sample_clip)

    assert (with_decord.backend, with_pyav.backend) == ("decord", "pyav")
    np.testing.assert_array_equal(with_pyav.frame_times, with_decord.frame_times)
    np.testing.assert_allclose(with_pyav.frames, with_decord.frames, atol=2)
    np.testing.assert_array_equal(with_pyav.audio[CLAP_RATE], with_decord.audio[CLAP_RATE])


def test_pyav_decodes_when_decord_is_not_installed(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frame_readers, "decord", None)

    decoded = decode_video(clips["ten"])

    assert decoded.backend == "pyav"
    assert decoded.frames.shape == (80, 64, 64, 3)


def test_llp_sample_is_one_window_of_80_frames_and_480000_samples_at_48_khz(
    sample_clip: Path,
) -> None:
    decoded = decode_video(sample_clip)

    assert decoded.info.duration == pytest.approx(10.028, abs=1e-3)
    assert decoded.info.has_audio and decoded.info.windows == 1
    assert decoded.audio[CLAP_RATE].dtype == np.float32
    assert len(decoded.audio[CLAP_RATE]) == WINDOW_SAMPLES  # the last 28 ms give no segment
    (window,) = decoded.windows
    assert (window.index, window.valid_segments) == (0, 10)
    assert window.frames.shape == (80, 240, 320, 3)
    assert window.audio[CLAP_RATE].shape == (WINDOW_SAMPLES,)
    assert np.abs(window.audio[CLAP_RATE]).max() > 0.1


def test_clip_slightly_over_ten_seconds_is_one_full_window(clips: dict[str, Path]) -> None:
    with open_video(clips["ten_and_a_bit"]) as stream:
        windows = list(stream.windows())
        assert 10.0 < stream.info.duration < 10.1

    assert [w.valid_segments for w in windows] == [10]
    np.testing.assert_array_equal(windows[0].frames, source_frames(clips["ten_and_a_bit"], 0, 80))


def test_35_second_clip_streams_three_full_windows_and_a_padded_one_with_5_valid_segments(
    clips: dict[str, Path],
) -> None:
    with open_video(clips["long"]) as stream:
        assert stream.info.valid_segments == (10, 10, 10, 5)
        windows = list(stream.windows())

    assert [(w.index, w.valid_segments) for w in windows] == [(0, 10), (1, 10), (2, 10), (3, 5)]
    assert all(w.frames.shape == (80, 64, 64, 3) for w in windows)
    assert all(w.audio[CLAP_RATE].shape == (WINDOW_SAMPLES,) for w in windows)
    np.testing.assert_array_equal(windows[2].frames, source_frames(clips["long"], 160, 240))
    last = windows[3]
    np.testing.assert_array_equal(last.frames[:40], source_frames(clips["long"], 240, 280))
    assert (last.frames[40:] == last.frames[39]).all()  # padding repeats the last frame
    whole = whole_track(clips["long"], CLAP_RATE)
    np.testing.assert_array_equal(windows[2].audio[CLAP_RATE], whole[960_000:1_440_000])
    half = WINDOW_SAMPLES // 2
    np.testing.assert_array_equal(last.audio[CLAP_RATE][:half], whole[1_440_000:])
    assert not last.audio[CLAP_RATE][half:].any()  # padding is silence


@pytest.mark.parametrize("source_rate", [16_000, 44_100, 48_000])
def test_window_audio_equals_the_whole_track_resampled_at_once(
    tmp_path: Path, source_rate: int
) -> None:
    events = [PlantedEvent(0, "audio", 1, 4), PlantedEvent(3, "audio", 12, 25)]
    rng = np.random.default_rng(1)
    path = encode_clip(
        tmp_path / "long.mp4",
        render_frames(events, 25.0),
        audio=render_audio(events, 25.0, rng, rate=source_rate),
        audio_rate=source_rate,
    )
    rates = (16_000, 32_000, CLAP_RATE)
    with open_video(path, sample_rates=rates) as stream:
        windows = list(stream.windows())
        duration = stream.info.duration
    for rate in rates:
        streamed = np.concatenate([w.audio[rate] for w in windows])[: round(duration * rate)]
        np.testing.assert_array_equal(streamed, whole_track(path, rate), err_msg=str(rate))


def source_frames(path: Path, first: int, end: int) -> np.ndarray:
    """Output frames first..end-1 read with decord directly: a clip written at 12 FPS
    shows source frame floor(i x 12 / 8) at output time i / 8."""
    reader = frame_readers.decord.VideoReader(str(path))
    return reader.get_batch([i * 12 // 8 for i in range(first, end)]).asnumpy()


def whole_track(path: Path, rate: int) -> np.ndarray:
    """The whole audio track read with PyAV, averaged over channels and resampled at once
    with torchaudio, cut or padded to the video's length: what every window cuts from."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")
        chunks = [c.to_ndarray() for f in container.decode(stream) for c in to_float.resample(f)]
        chunks += [c.to_ndarray() for c in to_float.resample(None)]
        mono, source_rate = (
            np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32),
            stream.rate,
        )
    resampled = (
        torchaudio.functional.resample(torch.from_numpy(mono), source_rate, rate).numpy()
        if rate != source_rate
        else mono
    )
    with open_video(path) as video:
        length = round(video.info.duration * rate)
    return np.pad(resampled[:length], (0, max(0, length - len(resampled))))


def test_audio_is_resampled_to_every_requested_rate_keeping_its_pitch(
    clips: dict[str, Path],
) -> None:
    # The clip's 16-kHz track holds a 220-Hz tone (class 0) from 1 s to 4 s.
    decoded = decode_video(clips["ten"], sample_rates=(16_000, CLAP_RATE, 32_000))

    assert sorted(decoded.audio) == [16_000, 32_000, CLAP_RATE]
    for rate, samples in decoded.audio.items():
        assert samples.dtype == np.float32
        assert samples.shape == (round(decoded.info.duration * rate),)
        tone = samples[int(1.5 * rate) : int(3.5 * rate)]
        peak_hz = np.argmax(np.abs(np.fft.rfft(tone))) * rate / len(tone)
        assert peak_hz == pytest.approx(220, abs=1)
        quiet = samples[int(5 * rate) : int(9 * rate)]
        assert np.sqrt(np.mean(tone**2)) > 10 * np.sqrt(np.mean(quiet**2))


def test_clip_without_audio_has_zero_audio_of_full_length_and_no_audio_flag(
    clips: dict[str, Path],
) -> None:
    decoded = decode_video(clips["silent"])

    assert not decoded.info.has_audio
    assert decoded.audio[CLAP_RATE].shape == (round(decoded.info.duration * CLAP_RATE),)
    assert not decoded.audio[CLAP_RATE].any()
    assert [(w.has_audio, w.audio[CLAP_RATE].shape) for w in decoded.windows] == [
        (False, (WINDOW_SAMPLES,))
    ]


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_rotation_metadata_is_applied_so_frames_are_upright(
    tmp_path: Path, backend: str, rotation: int
) -> None:
    frames = marked_frames(16)
    plain = decode_video(encode_clip(tmp_path / "plain.mp4", frames)).frames
    rotated = decode_video(encode_clip(tmp_path / "rotated.mp4", frames, rotation=rotation))

    assert rotated.backend == backend
    np.testing.assert_allclose(
        rotated.frames, np.rot90(plain, k=rotation // 90, axes=(1, 2)), atol=2
    )


def test_frames_decord_cannot_rotate_are_decoded_upright_by_pyav(tmp_path: Path) -> None:
    # decord 0.6 fails an array-size check when it rotates some frame sizes (80 x 48 here).
    frames = marked_frames(16, height=48, width=80)
    plain = decode_video(encode_clip(tmp_path / "plain.mp4", frames)).frames

    rotated = decode_video(encode_clip(tmp_path / "rotated.mp4", frames, rotation=-90))

    assert rotated.backend == "pyav"
    np.testing.assert_allclose(rotated.frames, np.rot90(plain, k=-1, axes=(1, 2)), atol=2)


def test_upright_turns_a_portrait_phone_video_clockwise() -> None:
    frame = np.zeros((2, 3), dtype=np.uint8)
    frame[0, 0] = 1  # top-left of the stored picture

    turned = upright(frame, -90)

    assert turned.shape == (3, 2)
    assert turned[0, 1] == 1  # top-left goes to the top-right corner


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files users hand over by mistake, and an mkv download cut at half its bytes."""
    folder = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    events = [PlantedEvent(3, "visual", 0, 10)]
    files = {
        "empty": folder / "empty.mp4",
        "text": folder / "notes.mp4",
        "random": folder / "junk.mp4",
        "audio_only": folder / "voice.m4a",
        "short": folder / "blink.mp4",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("these are my notes, not a video\n" * 50)
    files["random"].write_bytes(rng.bytes(4096))
    _encode_audio_only(files["audio_only"], render_audio([], 3.0, rng))
    encode_clip(files["short"], render_frames(events, 0.4))
    whole = encode_clip(folder / "whole.mkv", render_frames(events, 10.0))
    files["cut"] = folder / "cut.mkv"
    files["cut"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return files


def _encode_audio_only(path: Path, audio: np.ndarray, rate: int = 16_000) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(
                audio[None, start : start + 1024], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "empty file (0 bytes)"),
        ("text", "not a media file (or one cut before its index)"),
        ("random", "not a media file (or one cut before its index)"),
        ("audio_only", "no video stream (audio only)"),
        ("short", "too short: 0.42 s (a segment needs 1 s)"),
    ],
)
def test_a_file_that_cannot_be_decoded_gets_one_plain_reason_and_nothing_on_the_console(
    bad_files: dict[str, Path], kind: str, reason: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = bad_files[kind]
    with pytest.raises(DecodeError) as caught:
        decode_video(path)

    assert caught.value.reason == reason
    assert caught.value.path == str(path) and str(path) in str(caught.value)
    # libav's own lines (from PyAV's copy or decord's) never reach the console.
    assert capfd.readouterr() == ("", "")


def test_the_decoders_own_words_are_kept_apart_as_the_detail(bad_files: dict[str, Path]) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_video(bad_files["random"])
    assert caught.value.detail.startswith("pyav: ")
    assert "Invalid data" in caught.value.detail
    assert "pyav" not in caught.value.reason


def test_a_file_cut_short_decodes_as_far_as_it_goes_and_says_where_it_ends(
    bad_files: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    decoded = decode_video(bad_files["cut"])
    (window,) = decoded.windows
    info = decoded.info

    assert info.declared_duration == pytest.approx(10.0, abs=0.1)
    assert 1 <= info.duration < 9
    assert window.valid_segments == math.ceil(info.duration - 1e-3)
    assert info.cut_short is not None
    assert f"cut at {info.duration:.1f} s of the 10.0 s" in info.cut_short
    assert capfd.readouterr() == ("", "")


def test_a_whole_file_is_not_cut_short(clips: dict[str, Path]) -> None:
    info = decode_video(clips["ten"]).info
    assert info.declared_duration == pytest.approx(10.0, abs=0.1)
    assert info.cut_short is None


def test_missing_file_raises_decode_error(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="no such file"):
        decode_video(tmp_path / "absent.mp4")


@pytest.mark.parametrize(
    ("duration", "valid_segments"),
    [
        (10.0, (10,)),
        (10.99, (10,)),
        (9.5, (10,)),  # a slightly short clip is one padded window
        (11.0, (10, 1)),
        (20.0, (10, 10)),
        (25.2, (10, 10, 6)),  # a partial segment counts
        (35.0, (10, 10, 10, 5)),
    ],
)
def test_windows_drop_a_remainder_under_one_second_and_count_valid_segments(
    duration: float, valid_segments: tuple[int, ...]
) -> None:
    assert window_valid_segments(duration) == valid_segments


def test_video_shorter_than_one_second_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"memory\.mp4: too short: 0\.90 s"):
        window_valid_segments(0.9, "memory.mp4")


# Frame size and decoding memory: frames over 960 x 480 are scaled in the decoder,
# smaller ones come as the source has them; decord is kept from decoding ahead.


def encode_frames(path: Path, frames: np.ndarray, fps: int, keyframe_every: int) -> Path:
    """H.264 at `fps` with a keyframe every `keyframe_every` frames and nowhere else."""
    try:
        av.codec.Codec("libx264", "w")
    except av.codec.codec.UnknownCodecError:
        pytest.skip("this FFmpeg build has no libx264 to place keyframes with")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        every = str(keyframe_every)
        stream.options = {
            "preset": "ultrafast",
            "x264-params": f"keyint={every}:min-keyint={every}:scenecut=0",
        }
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def moving_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A diagonal ramp that moves by a pixel a frame: every frame differs."""
    rows, columns = np.mgrid[:height, :width]
    shift = np.arange(count)[:, None, None]
    ramp = ((rows[None] + columns[None] + shift) * 4 % 256).astype(np.uint8)
    return np.repeat(ramp[..., None], 3, axis=-1)


def assert_alike_but_for_sharp_edges(frames: np.ndarray, others: np.ndarray) -> None:
    """Frames scaled by decord and by PyAV: one filter, called two ways, gives the same
    pixels but at a few of the red block's edges."""
    assert frames.shape == others.shape
    assert (np.abs(frames.astype(int) - others.astype(int)) > 2).mean() < 1e-4


@pytest.mark.parametrize(
    ("width", "height", "decoded"),
    [
        (320, 240, (320, 240)),  # LLP: as it is
        (854, 480, (854, 480)),  # 480p: as it is
        (1280, 720, (853, 480)),
        (3840, 2160, (853, 480)),
        (7680, 4320, (853, 480)),
        (2048, 2048, (480, 480)),
        (1080, 1920, (480, 853)),  # portrait
        (4000, 400, (960, 96)),  # a panorama: its longer side is capped
    ],
)
def test_frames_over_960_by_480_are_scaled_down_in_the_decoder_keeping_their_aspect(
    width: int, height: int, decoded: tuple[int, int]
) -> None:
    assert decoded_size(width, height) == decoded


def test_a_large_video_is_decoded_scaled_and_alike_by_decord_and_pyav(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = encode_clip(tmp_path / "hd.mp4", marked_frames(16, height=720, width=1280))
    with_decord = decode_video(path)
    monkeypatch.setattr(frame_readers.decord, "VideoReader", _failing_reader)
    with_pyav = decode_video(path)

    assert (with_decord.backend, with_pyav.backend) == ("decord", "pyav")
    assert with_decord.frames.shape[1:] == with_pyav.frames.shape[1:] == (480, 853, 3)
    assert_alike_but_for_sharp_edges(with_pyav.frames, with_decord.frames)


def test_a_large_rotated_video_is_scaled_then_turned_upright_by_pyav(tmp_path: Path) -> None:
    # decord 0.6 scales turned pictures wrongly, so PyAV decodes them.
    frames = marked_frames(16, height=720, width=1280)
    plain = decode_video(encode_clip(tmp_path / "plain.mp4", frames)).frames

    rotated = decode_video(encode_clip(tmp_path / "rotated.mp4", frames, rotation=-90))

    assert rotated.backend == "pyav"
    assert rotated.frames.shape[1:] == (853, 480, 3)
    assert_alike_but_for_sharp_edges(rotated.frames, np.rot90(plain, k=-1, axes=(1, 2)))


def test_the_llp_sample_keeps_its_full_resolution_frames_bit_for_bit(sample_clip: Path) -> None:
    reader = frame_readers.decord.VideoReader(str(sample_clip))
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0].astype(np.float64)
    shown = np.searchsorted(starts - starts[0], np.arange(80) / 8 + 1e-3, side="right") - 1
    expected = reader.get_batch(shown.tolist()).asnumpy()

    decoded = decode_video(sample_clip)

    assert decoded.backend == "decord"
    np.testing.assert_array_equal(decoded.frames, expected)


def test_decord_windows_after_its_seeks_are_the_frames_it_reads_in_one_go(tmp_path: Path) -> None:
    # 25 FPS, a keyframe every 10 s: each window is read, then decord seeks to the next
    # window's keyframe (which stops it decoding ahead of the reads).
    path = encode_frames(tmp_path / "long.mp4", moving_frames(25 * 35), fps=25, keyframe_every=250)
    with open_video(path, sample_rates=()) as stream:
        windows = list(stream.windows())
        backend = stream.backend
    reader = frame_readers.decord.VideoReader(str(path))
    expected = reader.get_batch([i * 25 // 8 for i in range(280)]).asnumpy()

    assert backend == "decord"
    assert [w.valid_segments for w in windows] == [10, 10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([w.frames for w in windows])[:280], expected)


def test_a_file_with_keyframes_over_20_seconds_apart_is_decoded_by_pyav_in_one_pass(
    tmp_path: Path,
) -> None:
    path = encode_frames(
        tmp_path / "sparse.mp4", moving_frames(25 * 35), fps=25, keyframe_every=625
    )
    with open_video(path, sample_rates=()) as stream:
        windows = list(stream.windows())
        backend = stream.backend

    assert backend == "pyav"
    assert [w.valid_segments for w in windows] == [10, 10, 10, 5]


def test_the_decoders_words_are_the_same_on_every_run(tmp_path: Path) -> None:
    # Bytes overwritten early in the file: decord fails reading, and its messages carry
    # the time of day ("[15:12:17] ..."), which would make each run a new failure row.
    whole = encode_clip(
        tmp_path / "whole.mp4", render_frames([PlantedEvent(3, "visual", 0, 10)], 10.0)
    )
    data = bytearray(whole.read_bytes())
    start = len(data) // 10
    data[start : start + 20_000] = np.random.default_rng(1).bytes(20_000)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))

    details = []
    for _ in range(2):
        with pytest.raises(DecodeError) as caught:
            decode_video(broken)
        details.append(caught.value.detail)

    assert "decord: " in details[0]
    assert not re.search(r"\[\d\d:\d\d:\d\d\]|0x[0-9a-f]{6}", details[0])
    assert details[0] == details[1]


# Frames at an extractor's input size (`frame_size`) and the decoder's threads. PyAV
# decodes those, skipping the non-reference frames no output time shows.


def test_pyav_skipping_unshown_frames_gives_the_frames_of_a_full_decode(
    sample_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with av.open(str(sample_clip)) as container:
        stream = container.streams.video[0]
        decoded = sorted((f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(stream))
        time_base = float(stream.time_base)
    with av.open(str(sample_clip)) as container:
        container.streams.video[0].codec_context.skip_frame = "NONREF"
        references = sum(1 for _ in container.decode(video=0))
    starts = np.array([pts for pts, _ in decoded]) * time_base
    shown, _ = frame_readers.frame_grid(starts, 8, 1 / 30)
    monkeypatch.setattr(frame_readers.decord, "VideoReader", _failing_reader)

    skipping = decode_video(sample_clip)

    assert skipping.backend == "pyav"
    # The LLP clip has B-frames no other frame refers to: there is something to skip.
    assert references < len(decoded) == 300
    np.testing.assert_array_equal(skipping.frames, np.stack([decoded[i][1] for i in shown[:80]]))


def test_frames_at_a_frame_size_are_the_frames_shown_resized_as_the_extractors_do(
    sample_clip: Path,
) -> None:
    as_they_are = decode_video(sample_clip)

    sized = decode_video(sample_clip, frame_size=(224, 224))

    assert sized.backend == "pyav"
    assert sized.frames.shape == (80, 224, 224, 3)
    np.testing.assert_array_equal(sized.frame_times, as_they_are.frame_times)
    recipe = torch.nn.functional.interpolate(
        torch.from_numpy(as_they_are.frames).permute(0, 3, 1, 2).float(),
        size=(224, 224),
        mode="bilinear",
        antialias=False,
    )
    levels = (torch.from_numpy(sized.frames).permute(0, 3, 1, 2).float() - recipe).abs()
    # swscale against torch, both bilinear: under a level and a half apart in every frame
    # (a neighbouring source frame would be about 20 levels away in this clip).
    assert levels.mean(dim=(1, 2, 3)).max() < 1.5


def test_a_frame_size_is_the_upright_frames_size(tmp_path: Path) -> None:
    frames = marked_frames(16, height=64, width=96)
    plain = decode_video(encode_clip(tmp_path / "plain.mp4", frames), frame_size=(48, 32))
    path = encode_clip(tmp_path / "rotated.mp4", frames, rotation=-90)

    rotated = decode_video(path, frame_size=(32, 48))

    assert plain.frames.shape[1:] == (32, 48, 3)
    assert rotated.frames.shape[1:] == (48, 32, 3)
    np.testing.assert_allclose(rotated.frames, np.rot90(plain.frames, k=-1, axes=(1, 2)), atol=2)


def test_the_decoders_thread_count_changes_no_frame(clips: dict[str, Path], backend: str) -> None:
    default = decode_video(clips["ten"])

    one_thread = decode_video(clips["ten"], threads=1)

    assert one_thread.backend == backend
    np.testing.assert_array_equal(one_thread.frames, default.frames)


@pytest.mark.parametrize(("frame_size", "threads"), [((0, 224), None), (None, 0)])
def test_frame_size_and_threads_must_be_positive(
    clips: dict[str, Path], frame_size: tuple[int, int] | None, threads: int | None
) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        open_video(clips["ten"], frame_size=frame_size, threads=threads)


def test_closing_a_stream_mid_video_leaves_no_converter_thread_running(
    clips: dict[str, Path],
) -> None:
    # PyAV's frames are converted to RGB on a thread beside the decoder.
    with open_video(clips["long"], frame_size=(32, 32)) as stream:
        first = next(stream.windows())
        converting = [t for t in threading.enumerate() if t.name.startswith("avvp-rgb")]

    assert stream.backend == "pyav" and first.frames.shape == (80, 32, 32, 3)
    assert converting, "the frames were not converted on a thread of their own"
    assert not any(thread.is_alive() for thread in converting)


def test_a_conversion_failing_on_its_thread_is_a_decode_error_saying_where(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_conversion(self: frame_readers.PyAVFrames, frame: av.VideoFrame) -> np.ndarray:
        raise av.error.InvalidDataError(-1094995529, "Invalid data found")

    monkeypatch.setattr(frame_readers.PyAVFrames, "_rgb", failing_conversion)
    with (
        open_video(clips["long"], frame_size=(32, 32)) as stream,
        pytest.raises(DecodeError) as caught,
    ):
        next(stream.windows())

    assert caught.value.reason == "corrupt video data at 0.0 s"
    assert caught.value.detail.startswith("pyav: ")
    assert "Invalid data found" in caught.value.detail
