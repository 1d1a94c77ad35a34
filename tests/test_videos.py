"""Ids for any file, and the manifest of what a store holds."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from avvp.pipeline.embedding import build_extractors
from avvp.pipeline.extract import ExtractConfig, extract_videos, plan_extraction
from avvp.pipeline.sources.llp import llp_video_ids
from avvp.pipeline.sources.videos import find_videos, video_id_for
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.storage import FailureLog, FeatureStore, VideoManifest

LLP_IDS = llp_video_ids()


@pytest.mark.parametrize(
    ("path", "folder", "video_id"),
    [
        ("BjCEufrlXm4_20_30.mp4", None, "BjCEufrlXm4"),  # an LLP name the annotations know
        ("/data/BjCEufrlXm4.mp4", None, "BjCEufrlXm4"),
        ("/data/videos/llp/BjCEufrlXm4_20_30.mp4", "/data/videos", "BjCEufrlXm4"),
        ("cat_and_dog_5_15.mp4", None, "cat_and_dog_5_15"),  # 11 characters, not LLP's
        ("/in/cam1/clip.mp4", "/in", "cam1/clip"),
        ("/in/holiday.final.mov", "/in", "holiday.final"),
        ("holiday.final.mov", None, "holiday.final"),
        ("synclip0001.mp4", None, "synclip0001"),
    ],
)
def test_a_video_id_is_the_llp_id_or_the_path_without_extension(
    path: str, folder: str | None, video_id: str
) -> None:
    assert video_id_for(path, folder, LLP_IDS) == video_id


def test_an_id_does_not_depend_on_the_other_files_present(tmp_path: Path) -> None:
    for name in ("a/x.mp4", "b/x.mp4", "c_1_2.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    alone = {video.video_id for video in find_videos([tmp_path / "a"], LLP_IDS)}
    together = {video.video_id for video in find_videos([tmp_path], LLP_IDS)}
    assert alone == {"x"} and together == {"a/x", "b/x", "c_1_2"}


@pytest.fixture(scope="module")
def users_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Names that collided before: `_<n>_<n>` tails, one name in two folders, an LLP name."""
    clips = write_synthetic_clips(tmp_path_factory.mktemp("clips"), n=5, seconds=3, seed=2)
    folder = tmp_path_factory.mktemp("users")
    names = [
        "cat_and_dog_5_15.mp4",
        "cat_and_dog_15_25.mp4",
        "cam1/clip.mp4",
        "cam2/clip.mp4",
        "llp/BjCEufrlXm4_20_30.mp4",
    ]
    for clip, name in zip(clips, names, strict=True):
        (folder / name).parent.mkdir(exist_ok=True)
        shutil.copy(clip, folder / name)
    return folder


TINY = ExtractConfig(extractors=["clip"], size="tiny", device="cpu", workers=0)
USER_IDS = ["cam1/clip", "cam2/clip", "cat_and_dog_15_25", "cat_and_dog_5_15", "BjCEufrlXm4"]


def test_users_files_get_distinct_stable_ids_and_a_manifest_row_each(
    users_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = extract_videos(users_folder, store, TINY)
    assert (first.videos_found, first.videos_extracted, first.failures) == (5, 5, [])
    table = FeatureStore(store).table("clip-vit-l-14")
    assert sorted(table.video_ids()) == sorted(USER_IDS)

    second = extract_videos(users_folder, store, TINY)
    assert (second.videos_skipped, second.videos_decoded, second.shards) == (5, 0, 0)
    assert sorted(table.video_ids()) == sorted(USER_IDS)

    manifest = VideoManifest(store).read()
    assert sorted(manifest) == sorted(USER_IDS)
    for video in find_videos([users_folder], LLP_IDS):
        record = manifest[video.video_id]
        assert record.path == str(video.path)
        assert record.size == video.path.stat().st_size
        assert record.digest == "sha256:" + hashlib.sha256(video.path.read_bytes()).hexdigest()
        assert (record.windows, record.has_audio, record.backend) == (1, True, "decord")
        assert record.duration == pytest.approx(3.0, abs=0.01)


def test_another_file_claiming_a_stored_id_is_refused_naming_both_paths(
    users_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    extract_videos(users_folder / "cam1", store, TINY)  # stored as "clip"
    other = tmp_path / "elsewhere" / "clip.mp4"
    other.parent.mkdir()
    shutil.copy(users_folder / "cam2" / "clip.mp4", other)  # other content, same id

    summary = extract_videos(other, store, TINY)

    (failure,) = summary.failures
    assert str(users_folder / "cam1" / "clip.mp4") in failure.reason
    assert str(other) in failure.reason
    assert summary.videos_extracted == 0
    assert FailureLog(store).read("extract")["path"].to_pylist() == [str(other)]
    assert len(FeatureStore(store).table("clip-vit-l-14").keys()) == 1


def test_the_same_file_under_another_path_is_recognised_by_its_digest(
    users_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    extract_videos(users_folder / "cam1", store, TINY)
    moved = tmp_path / "moved" / "clip.mp4"
    moved.parent.mkdir()
    shutil.copy(users_folder / "cam1" / "clip.mp4", moved)

    summary = extract_videos(moved, store, TINY)

    assert (summary.videos_skipped, summary.failures) == (1, [])


def test_shard_keys_follow_the_videos_and_the_output_settings(
    users_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    plan = plan_extraction(users_folder, store, TINY.model_copy(update={"shard_videos": 2}))
    again = plan_extraction(users_folder, store, TINY.model_copy(update={"shard_videos": 2}))
    assert [len(shard.videos) for shard in plan.shards] == [2, 2, 1]
    assert [s.key for s in plan.shards] == [s.key for s in again.shards]
    faster = plan_extraction(
        users_folder, store, TINY.model_copy(update={"shard_videos": 2, "batch_size": 64})
    )
    assert [s.key for s in faster.shards] == [s.key for s in plan.shards]  # speed settings
    other = plan_extraction(
        users_folder, store, TINY.model_copy(update={"shard_videos": 2, "dtype": "float32"})
    )
    assert not {s.key for s in other.shards} & {s.key for s in plan.shards}


def test_extractors_are_built_once_per_process() -> None:
    first, second = build_extractors(TINY), build_extractors(TINY)
    assert first[0] is second[0]
    other_size = build_extractors(TINY.model_copy(update={"extractors": ["r2plus1d"]}))
    assert other_size[0] is not first[0]


def test_the_extract_settings_precision_reaches_the_extractors() -> None:
    (rounded,) = build_extractors(TINY.model_copy(update={"precision": "bfloat16"}))
    (default,) = build_extractors(TINY)
    assert rounded.dtype == torch.bfloat16
    assert default.dtype == torch.float32  # auto: tiny networks stay float32 on a CPU
