"""Batched extraction into the feature store: shapes, windows, skips, failures, workers."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from support import SAMPLES

from avvp.extractors import FeatureExtractor, RandomInit, create_extractor, extractor_class
from avvp.extractors.clip import CLIP_MEAN, CLIP_STD
from avvp.extractors.r2plus1d import KINETICS_MEAN, KINETICS_STD
from avvp.pipeline import catalog, embedding
from avvp.pipeline.embedding import BatchSizer, VideoEnd, table_of_extractor, threads_beside
from avvp.pipeline.extract import (
    STAGE,
    ExtractConfig,
    ExtractProgress,
    ExtractSummary,
    extract_videos,
    plan_extraction,
    window_loader,
)
from avvp.pipeline.sources.decode import decode_video
from avvp.pipeline.sources.videos import find_videos
from avvp.pipeline.synthetic.clips import (
    PlantedEvent,
    encode_clip,
    render_frames,
    write_synthetic_clips,
)
from avvp.storage import FailureLog, FeatureStore, ProvenanceMismatchError

SAMPLE = SAMPLES / "BjCEufrlXm4.mp4"
SAMPLE_ID = "BjCEufrlXm4"
SHAPES = {  # the tables of the default extractors
    catalog.VISUAL_TABLE: (10, 768),
    catalog.VISUAL_ST_TABLE: (10, 512),
    catalog.AUDIO_MAP_TABLE: (64, 768),
}
SEGMENT_SHAPE = (10, 512)  # clap-segments, extracted in the second store only
SYNTH_IDS = ["synclip0001", "synclip0002", "synclip0003"]  # the third has no audio track
LONG_ID = "long35s"
CORRUPT_ID = "corrupt"
IN_PROCESS = ExtractConfig(workers=0)
WINDOWS = {**dict.fromkeys(SYNTH_IDS, 1), LONG_ID: 4, SAMPLE_ID: 1}


@pytest.fixture(scope="module")
def tiny() -> dict[str, FeatureExtractor]:
    """The four tiny extractors, built once for the module."""
    return {
        name: create_extractor(name, size="tiny", device="cpu")
        for name in ("clip", "r2plus1d", "clap", "clap-segments")
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of three 10-s clips (one silent) and a corrupt .mp4; a 35-s clip apart."""
    folder = tmp_path_factory.mktemp("inputs")
    write_synthetic_clips(folder / "short", n=3, seconds=10, no_audio=(2,))
    videos = folder / "short" / "videos"
    (videos / f"{CORRUPT_ID}.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (long_clip,) = write_synthetic_clips(folder / "long", n=1, seconds=35)
    return {"folder": videos, "long": long_clip.rename(long_clip.with_name(f"{LONG_ID}.mp4"))}


@pytest.fixture(scope="module")
def extracted(
    tiny: dict[str, FeatureExtractor], inputs: dict[str, Path], tmp_path_factory
) -> tuple[str, ExtractSummary, list[ExtractProgress]]:
    """Everything into a fresh store with two workers; the sample clip is named twice.

    Batches of 3 and flushes every 4 rows cut batches across videos and give several parts.
    """
    root = str(tmp_path_factory.mktemp("store"))
    progress: list[ExtractProgress] = []
    summary = extract_videos(
        [inputs["folder"], inputs["long"], SAMPLE, SAMPLE],
        root,
        ExtractConfig(workers=2, batch_size=3, flush_windows=4),
        extractors=[tiny["clip"], tiny["r2plus1d"], tiny["clap"]],
        on_progress=progress.append,
    )
    return root, summary, progress


def test_every_window_gets_one_row_of_its_extractor_shape_in_each_table(extracted) -> None:
    root, summary, _ = extracted
    store = FeatureStore(root)
    assert sorted(store.table_names()) == sorted(SHAPES)
    for name, shape in SHAPES.items():
        batch = store.table(name).read_videos(list(WINDOWS))
        assert batch.features.shape == (sum(WINDOWS.values()), *shape)
        assert np.isfinite(batch.features).all()
        assert sorted(batch.keys) == sorted(
            (video_id, window) for video_id, count in WINDOWS.items() for window in range(count)
        )
        assert summary.windows_written[name] == sum(WINDOWS.values())
    assert len(store.table(catalog.VISUAL_TABLE).table.part_names()) > 1


def test_35_second_clip_gives_four_windows_with_valid_segments_10_10_10_5(extracted) -> None:
    root, _, _ = extracted
    for name in SHAPES:
        batch = FeatureStore(root).table(name).read_videos([LONG_ID])
        assert batch.keys.windows.tolist() == [0, 1, 2, 3]
        assert batch.valid_segments.tolist() == [10, 10, 10, 5]


def test_clip_without_audio_is_stored_with_has_audio_false_in_every_table(extracted) -> None:
    root, _, _ = extracted
    for name in SHAPES:
        batch = FeatureStore(root).table(name).read_videos(SYNTH_IDS)
        assert batch.has_audio.tolist() == [True, True, False]


def test_corrupt_file_is_a_failure_with_a_readable_reason_while_the_others_are_extracted(
    extracted,
) -> None:
    root, summary, _ = extracted
    assert summary.videos_extracted == len(WINDOWS)
    assert [failure.video_id for failure in summary.failures] == [CORRUPT_ID]
    rows = FailureLog(root).read(STAGE).to_pylist()
    assert [row["video_id"] for row in rows] == [CORRUPT_ID]
    (row,) = rows
    assert row["path"].endswith(f"{CORRUPT_ID}.mp4")
    assert row["reason"] == "not a media file (or one cut before its index)"
    assert row["detail"].startswith("pyav: ")


def test_a_file_named_twice_is_extracted_once(extracted) -> None:
    root, summary, _ = extracted
    assert summary.videos_found == len(WINDOWS) + 1  # the corrupt file counts as found
    keys = FeatureStore(root).table(catalog.VISUAL_TABLE).keys()
    assert keys.video_ids.tolist().count(SAMPLE_ID) == 1


def test_progress_reports_each_input_video_once_counting_up_to_the_total(extracted) -> None:
    _, _, progress = extracted
    assert sorted(update.video_id for update in progress) == sorted([*WINDOWS, CORRUPT_ID])
    assert [update.done for update in progress] == list(range(1, len(progress) + 1))
    assert {update.total for update in progress} == {len(progress)}
    windows = {update.video_id: update.windows for update in progress}
    assert windows == {**WINDOWS, CORRUPT_ID: 0}


def test_rerun_decodes_nothing_the_failed_file_still_failing_and_writes_nothing(
    extracted, tiny: dict[str, FeatureExtractor], inputs: dict[str, Path]
) -> None:
    root, _, _ = extracted
    rows_before = {name: len(FeatureStore(root).table(name).keys()) for name in SHAPES}
    failures_before = FailureLog(root).read(STAGE)["video_id"].to_pylist()
    paths = [inputs["folder"], inputs["long"], SAMPLE]
    extractors = [tiny["clip"], tiny["r2plus1d"], tiny["clap"]]
    progress: list[ExtractProgress] = []
    rerun = extract_videos(
        paths, root, IN_PROCESS, extractors=extractors, on_progress=progress.append
    )
    assert (rerun.videos_skipped, rerun.videos_decoded, rerun.videos_extracted) == (5, 0, 0)
    assert rerun.videos_failed_before == 1
    assert [failure.video_id for failure in rerun.failures] == [CORRUPT_ID]
    assert set(rerun.windows_written.values()) == {0}
    assert {name: len(FeatureStore(root).table(name).keys()) for name in SHAPES} == rows_before
    assert {update.status for update in progress} == {"skipped", "failed"}
    # Asked to, it tries the file again; the same failure adds no row.
    retried = extract_videos(
        paths, root, IN_PROCESS.model_copy(update={"retry_failed": True}), extractors=extractors
    )
    assert (retried.videos_decoded, retried.videos_failed_before) == (1, 0)
    failures = FailureLog(root).read(STAGE)["video_id"].to_pylist()
    assert failures == failures_before == [CORRUPT_ID]  # one row per file, however many runs
    assert len(list(Path(root, "failures", STAGE).glob("part-*.parquet"))) == 1


@pytest.fixture(scope="module")
def second_store(
    tiny: dict[str, FeatureExtractor], inputs: dict[str, Path], tmp_path_factory
) -> tuple[str, ExtractSummary]:
    """No workers, batches of 1: CLIP and CLAP maps first, then CLAP segments as well."""
    root = str(tmp_path_factory.mktemp("second"))
    paths = [inputs["folder"] / "synclip0001.mp4", SAMPLE]
    first = [tiny["clip"], tiny["clap"]]
    one_by_one = ExtractConfig(workers=0, batch_size=1)
    extract_videos(paths, root, one_by_one, extractors=first)
    summary = extract_videos(paths, root, one_by_one, extractors=[*first, tiny["clap-segments"]])
    return root, summary


def test_videos_missing_from_one_table_are_decoded_and_written_only_there(second_store) -> None:
    root, summary = second_store
    assert (summary.videos_skipped, summary.videos_decoded) == (0, 2)
    assert summary.windows_written == {
        catalog.VISUAL_TABLE: 0,
        catalog.AUDIO_MAP_TABLE: 0,
        catalog.AUDIO_SEGMENT_TABLE: 2,
    }
    segments = FeatureStore(root).table(catalog.AUDIO_SEGMENT_TABLE).read_videos(["synclip0001"])
    assert segments.features.shape == (1, *SEGMENT_SHAPE)


def test_features_do_not_depend_on_worker_count_or_batch_size(extracted, second_store) -> None:
    first, second = FeatureStore(extracted[0]), FeatureStore(second_store[0])
    for name in (catalog.VISUAL_TABLE, catalog.AUDIO_MAP_TABLE):
        batched = first.table(name).read_videos(["synclip0001", SAMPLE_ID])
        one_by_one = second.table(name).read_videos(["synclip0001", SAMPLE_ID])
        assert list(batched.keys) == list(one_by_one.keys)
        np.testing.assert_allclose(
            batched.features.astype(np.float32), one_by_one.features.astype(np.float32), atol=2e-3
        )


def test_two_files_with_one_video_id_are_both_failures_and_neither_is_decoded(
    tiny: dict[str, FeatureExtractor], inputs: dict[str, Path], tmp_path: Path
) -> None:
    for folder, suffix in (("a", ".mp4"), ("b", ".mkv")):
        (tmp_path / folder).mkdir()
        shutil.copy(inputs["folder"] / "synclip0001.mp4", tmp_path / folder / f"same{suffix}")
    summary = extract_videos(
        [tmp_path / "a", tmp_path / "b"], tmp_path / "store", IN_PROCESS, extractors=[tiny["clip"]]
    )
    assert summary.videos_decoded == 0
    assert [failure.video_id for failure in summary.failures] == ["same", "same"]
    assert "rename or leave out all but one" in summary.failures[0].reason
    assert FeatureStore(tmp_path / "store").table_names() == []


def test_a_table_made_with_other_weights_is_refused_before_any_work(
    extracted, inputs: dict[str, Path]
) -> None:
    root, _, _ = extracted
    other = create_extractor("clip", size="tiny", weights=RandomInit(seed=1), device="cpu")
    with pytest.raises(ProvenanceMismatchError, match="random-init-seed-0"):
        extract_videos([inputs["long"]], root, extractors=[other])


def test_a_missing_input_path_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothere.mp4: no such file or folder"):
        extract_videos([tmp_path / "nothere.mp4"], tmp_path / "store", ExtractConfig(size="tiny"))


def test_folders_are_scanned_for_video_extensions_skipping_hidden_files(tmp_path: Path) -> None:
    for name in ("a.MP4", "sub/b.webm", "notes.txt", ".cache/c.mp4", "._d.mov", "e.mkv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.mp4").mkdir()
    found = [
        video.path for video in find_videos([tmp_path, tmp_path / "notes.txt", tmp_path / "e.mkv"])
    ]
    assert [path.relative_to(tmp_path).as_posix() for path in found] == [
        "a.MP4",
        "e.mkv",
        "sub/b.webm",
        "notes.txt",
    ]


def test_failure_log_keeps_one_row_per_file_its_newest_reason(tmp_path: Path) -> None:
    log = FailureLog(tmp_path)
    assert log.read("extract").num_rows == 0
    assert log.record("extract", []) is None
    log.record("extract", [("a", "/v/a.mp4", "broken"), ("b", "/v/b.mp4", "too short")])
    assert log.record("extract", [("a", "/v/a.mp4", "broken")]) is None  # nothing new
    log.record("extract", [("a", "/v/a.mp4", "corrupt data at 3.2 s", "h264: error")])
    read = log.read("extract")
    assert read.column_names == ["video_id", "path", "reason", "detail", "digest", "recorded_at"]
    assert read["path"].to_pylist() == ["/v/b.mp4", "/v/a.mp4"]
    assert read["reason"].to_pylist() == ["too short", "corrupt data at 3.2 s"]
    assert read["detail"].to_pylist() == ["", "h264: error"]
    assert log.stages() == ["extract"]
    assert len(list((tmp_path / "failures" / "extract").glob("part-*.parquet"))) == 2


def test_a_file_that_later_succeeds_leaves_the_failures_table(tmp_path: Path) -> None:
    log = FailureLog(tmp_path)
    log.record("extract", [("a", "/v/a.mp4", "broken"), ("b", "/v/b.mp4", "broken")])
    log.record("extract", [], resolved=["/v/a.mp4", "/v/never-failed.mp4"])
    assert log.read("extract")["path"].to_pylist() == ["/v/b.mp4"]
    assert log.record("extract", [], resolved=["/v/a.mp4"]) is None


def test_failure_parts_written_before_the_detail_column_still_read(tmp_path: Path) -> None:
    folder = tmp_path / "failures" / "extract"
    folder.mkdir(parents=True)
    old = pa.table(
        {
            "video_id": ["a"],
            "path": ["/v/a.mp4"],
            "reason": ["cannot decode"],
            "recorded_at": pa.array([0], pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(old, folder / "part-00000000000000000001-000000000000.parquet")
    assert FailureLog(tmp_path).read("extract").to_pylist()[0]["detail"] == ""


def test_a_file_cut_short_is_extracted_with_a_warning_saying_where_it_ends(
    tiny: dict[str, FeatureExtractor], inputs: dict[str, Path], tmp_path: Path
) -> None:
    whole = encode_clip(
        tmp_path / "whole.mkv", render_frames([PlantedEvent(3, "visual", 0, 10)], 10.0)
    )
    cut = tmp_path / "videos" / "cut.mkv"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    progress: list[ExtractProgress] = []
    summary = extract_videos(
        [cut],
        tmp_path / "store",
        IN_PROCESS,
        extractors=[tiny["clip"]],
        on_progress=progress.append,
    )
    assert (summary.videos_extracted, summary.failures) == (1, [])
    (warning,) = summary.warnings
    assert warning.video_id == "cut" and "cut at" in warning.message
    assert progress[0].status == "extracted" and progress[0].warning == warning.message
    batch = FeatureStore(tmp_path / "store").table(catalog.VISUAL_TABLE).read_videos(["cut"])
    assert 1 <= batch.valid_segments[0] < 10


# The paper recipe of AVVP.md, rendered step by step, against our transforms.


def _recipe_frames(frames: np.ndarray, count: int, size: int, mean, std) -> torch.Tensor:
    indices = np.round(np.linspace(0, len(frames) - 1, count)).astype(int)
    images = torch.from_numpy(frames[indices]).permute(0, 3, 1, 2).float() / 255.0
    images = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=False
    )
    return (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_clip_and_r2plus1d_inputs_of_the_sample_clip_follow_the_avvp_recipe() -> None:
    (window,) = decode_video(SAMPLE).windows
    clip_input = extractor_class("clip").make_transform("paper")(window.frames)
    clip_expected = _recipe_frames(
        window.frames,
        10,
        224,
        (0.48145466, 0.4578275, 0.40821073),
        (0.26862954, 0.26130258, 0.27577711),
    )
    torch.testing.assert_close(clip_input, clip_expected, atol=1e-6, rtol=0)

    r2plus1d_input = extractor_class("r2plus1d").make_transform("paper")(window.frames)
    frames = _recipe_frames(
        window.frames, 80, 112, (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
    )
    clips = frames.reshape(10, 8, 3, 112, 112).permute(0, 2, 1, 3, 4)
    assert r2plus1d_input.shape == (10, 3, 8, 112, 112)
    torch.testing.assert_close(r2plus1d_input, clips, atol=1e-6, rtol=0)


def test_llp_sized_clips_give_the_features_of_full_resolution_frames_resized_at_once(
    tiny: dict[str, FeatureExtractor], tmp_path: Path
) -> None:
    # The reference is extraction as it was before frames could be scaled in the decoder
    # and resized one at a time: decord's full-resolution frames, all made float, then
    # resized together. An LLP clip (320 x 240) must give the same features, bit for bit.
    reader = decord.VideoReader(str(SAMPLE))
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0].astype(np.float64)
    shown = np.searchsorted(starts - starts[0], np.arange(80) / 8 + 1e-3, side="right") - 1
    frames = reader.get_batch(shown.tolist()).asnumpy()
    reference = {
        "clip": _recipe_frames(frames, 10, 224, CLIP_MEAN, CLIP_STD)[None],
        "r2plus1d": _recipe_frames(frames, 80, 32, KINETICS_MEAN, KINETICS_STD)
        .reshape(10, 8, 3, 32, 32)
        .transpose(1, 2)
        .contiguous()[None],
    }
    (window,) = decode_video(SAMPLE).windows
    extract_videos(SAMPLE, tmp_path, IN_PROCESS, extractors=[tiny["clip"], tiny["r2plus1d"]])
    store = FeatureStore(tmp_path)
    for name, inputs in reference.items():
        extractor = tiny[name]
        assert torch.equal(extractor.transform(window.frames)[None], inputs), name
        stored = store.table(table_of_extractor(name)).read_videos([SAMPLE_ID]).features
        expected = extractor.embed(inputs).cpu().numpy().astype(np.float16)
        np.testing.assert_array_equal(stored, expected, err_msg=name)


def test_a_fixed_batch_size_stays_as_given() -> None:
    sizer = BatchSizer(3)
    sizer.record(3, 1.0)
    assert sizer.size == 3


def test_auto_batch_size_doubles_while_faster_per_window_then_keeps_the_fastest() -> None:
    sizer = BatchSizer("auto")
    seconds_per_window = {1: 0.010, 2: 0.008, 4: 0.007, 8: 0.009}
    tried = []
    for _ in range(10):
        size = sizer.size
        tried.append(size)
        sizer.record(size, size * seconds_per_window[size])
    assert tried == [1, 1, 2, 2, 4, 4, 8, 8, 4, 4]  # each size is timed twice


def test_auto_batch_size_keeps_the_faster_of_two_calls_of_a_size() -> None:
    sizer = BatchSizer("auto")
    # The first call of each size pays a warm-up: compared by it alone, 2 would lose to 1.
    for size, seconds in ((1, 0.050), (1, 0.010), (2, 0.100), (2, 0.016), (4, 0.080)):
        assert sizer.size == size
        sizer.record(size, seconds)
    sizer.record(4, 0.080)
    assert sizer.size == 2


def test_auto_batch_size_stays_at_one_when_one_window_is_slow_on_a_cpu() -> None:
    on_cpu, elsewhere = BatchSizer("auto", on_cpu=True), BatchSizer("auto", on_cpu=False)
    for sizer in (on_cpu, elsewhere):
        sizer.record(1, BatchSizer.CPU_SLOW_S)
    assert on_cpu.size == 1 and elsewhere.size == 1  # the other still times size 1 again
    for _ in range(4):
        for sizer in (on_cpu, elsewhere):
            sizer.record(sizer.size, sizer.size * BatchSizer.CPU_SLOW_S * 0.9)
    assert on_cpu.size == 1 and elsewhere.size > 1
    quick = BatchSizer("auto", on_cpu=True)
    for _ in range(4):
        quick.record(quick.size, quick.size * 0.01)
    assert quick.size > 1  # a quick window on a CPU is still searched for


def test_torch_threads_leave_the_decoding_workers_their_cpus(tiny) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with threads_beside(0, [tiny["clip"]]):
            assert torch.get_num_threads() == 4  # decoding in this process: left alone
        with threads_beside(1, [tiny["clip"]]):
            assert torch.get_num_threads() == max(1, min(4, (os.cpu_count() or 1) - 1))
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_a_shard_of_one_video_decodes_in_this_process_and_larger_ones_in_workers(
    tiny, inputs: dict[str, Path], tmp_path: Path
) -> None:
    config = ExtractConfig(workers=2)
    extractors = [tiny["clip"]]
    (lone,) = plan_extraction(inputs["long"], tmp_path / "one", config).shards
    (several,) = plan_extraction(inputs["folder"], tmp_path / "several", config).shards
    assert len(lone.videos) == 1 and len(several.videos) == 4  # the corrupt file too
    # Nothing would overlap a lone video's decoding: a process for it only adds its start.
    assert window_loader(lone, extractors, tmp_path / "one", config).num_workers == 0
    assert window_loader(several, extractors, tmp_path / "several", config).num_workers == 2


class _Worker:
    """What torch's get_worker_info gives inside loader worker `id` of `num_workers`."""

    def __init__(self, id: int, num_workers: int) -> None:
        self.id, self.num_workers = id, num_workers


@pytest.mark.parametrize(
    ("worker", "setting", "expected"),
    [
        (None, None, None),  # in this process: the decoder's own choice
        (_Worker(0, 2), None, max(1, (os.cpu_count() or 1) // 2)),
        (_Worker(0, 4 * (os.cpu_count() or 1)), None, 1),
        (_Worker(1, 2), 3, 3),  # a setting wins
    ],
)
def test_decoding_workers_share_the_cpus_out_among_their_decoders(
    tiny, inputs: dict[str, Path], tmp_path: Path, monkeypatch, worker, setting, expected
) -> None:
    config = ExtractConfig(workers=2, decoder_threads=setting)
    (shard,) = plan_extraction(inputs["long"], tmp_path, config).shards
    dataset = window_loader(shard, [tiny["clip"]], tmp_path, config).dataset
    asked: list[int | None] = []
    original = embedding.open_video

    def recorded(path, *args, threads=None, **kwargs):
        asked.append(threads)
        return original(path, *args, threads=threads, **kwargs)

    monkeypatch.setattr(embedding, "open_video", recorded)
    monkeypatch.setattr(embedding, "get_worker_info", lambda: worker)
    mine = shard.videos if worker is None else shard.videos[worker.id :: worker.num_workers]
    ends = [item for item in dataset if isinstance(item, VideoEnd)]
    assert len(ends) == len(mine) and all(end.failure is None for end in ends)
    assert asked == [expected] * len(mine)


# Minor page faults of writing six fresh 64-MB tensors (16,384 pages of 4 kB each), after
# ten such tensors settled the heap: with glibc's defaults, then with freed memory kept.
_PAGE_FAULTS = """
import resource
import torch
from avvp.pipeline.embedding import keep_freed_memory

def faults():
    for _ in range(10):
        torch.ones(16 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(6):
        torch.ones(16 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(faults(), keep_freed_memory(), faults())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_with_freed_memory_kept_a_large_tensor_reuses_pages_instead_of_faulting_new_ones() -> None:
    # A fresh process: the setting lasts for a process's life.
    run = subprocess.run([sys.executable, "-c", _PAGE_FAULTS], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    default, kept, faults = run.stdout.split()
    assert kept == "True"
    assert int(default) > 6 * 10_000  # glibc mapped each tensor afresh
    assert int(faults) < 1_000


def test_auto_batch_size_never_passes_its_limit() -> None:
    sizer = BatchSizer("auto")
    for _ in range(20):
        sizer.record(sizer.size, 0.01)  # ever faster
    assert sizer.size == BatchSizer.LIMIT


def test_the_extraction_summary_is_json(extracted) -> None:
    _, summary, _ = extracted
    assert ExtractSummary.model_validate_json(summary.model_dump_json()) == summary
