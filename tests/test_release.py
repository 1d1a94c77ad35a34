"""Released data into the store: VALOR's archives read in place, folders of <id>.npy
features and labels, refused archives, and the fetch -> train -> evaluate chain."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support import tiny_config
from typer.testing import CliRunner

from avvp.model.metrics import segment_and_event_f1
from avvp.pipeline import catalog
from avvp.pipeline.cli.app import app
from avvp.pipeline.dataset import DataConfig
from avvp.pipeline.evaluate import EvaluateConfig, evaluate_run
from avvp.pipeline.release import (
    ImportFeaturesConfig,
    ImportLabelsConfig,
    import_features,
    import_pseudo_labels,
)
from avvp.pipeline.sources import download as download_module
from avvp.pipeline.sources.download import DownloadError
from avvp.pipeline.sources.npy_files import UnsafeArchiveError
from avvp.pipeline.synthetic.features import SyntheticLLPConfig
from avvp.pipeline.synthetic.release import (
    SyntheticRelease,
    npy_bytes,
    write_synthetic_release,
    write_valor_archive,
)
from avvp.pipeline.train import train
from avvp.pipeline.valor import CorruptArchiveError, FetchConfig, fetch_valor, releases_table
from avvp.storage import FeatureStore, LabelStore, store_info

FEW = SyntheticLLPConfig(n_train=24, n_val=8, n_test=8, seed=5)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRelease:
    return write_synthetic_release(tmp_path_factory.mktemp("release"), FEW)


def from_zips(release: SyntheticRelease, **changes: object) -> FetchConfig:
    return FetchConfig(
        from_zips=[str(release.clip_zip), str(release.clap_zip)],
        labels=str(release.labels),
        **changes,
    )


def fingerprints(root: Path) -> dict[str, str]:
    return {name: table["fingerprint"] for name, table in store_info(str(root))["tables"].items()}


def test_fetch_from_zips_stores_exactly_the_archives_arrays_and_labels(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    result = fetch_valor(tmp_path, from_zips(release))
    data = release.data
    ids = data.video_ids.tolist()
    assert [(r.table, r.imported, r.skipped) for r in result.features] == [
        (catalog.VISUAL_TABLE, len(ids), []),
        (catalog.AUDIO_MAP_TABLE, len(ids), []),
    ]
    features = FeatureStore(tmp_path)
    clip = features.table(catalog.VISUAL_TABLE).read_videos(ids)
    clap = features.table(catalog.AUDIO_MAP_TABLE).read_videos(ids)
    np.testing.assert_array_equal(clip.features, data.visual.astype(np.float32))
    np.testing.assert_array_equal(clap.features, data.audio_map.astype(np.float32))
    assert (clip.valid_segments == 10).all() and clip.keys.windows.tolist() == [0] * len(ids)
    provenance = features.table(catalog.VISUAL_TABLE).provenance
    assert provenance.source == "valor-release"
    assert provenance.extras["sha256"] == result.archives[str(release.clip_zip)]

    valor = LabelStore(tmp_path).segments(catalog.pseudo_label_table("valor")).read_videos(ids)
    np.testing.assert_array_equal(valor.audio, data.pseudo[:, 0])
    np.testing.assert_array_equal(valor.visual, data.pseudo[:, 1])
    weak = LabelStore(tmp_path).weak().read(ids)
    np.testing.assert_array_equal(weak.labels, data.weak)
    assert result.missing_tables == [catalog.VISUAL_ST_TABLE]
    recorded = releases_table(tmp_path).latest().to_pylist()
    assert [(row["archive"], f"sha256:{row['sha256']}", row["origin"]) for row in recorded] == [
        (path.name, result.archives[str(path)], str(path))
        for path in (release.clip_zip, release.clap_zip)
    ]


def test_a_second_fetch_does_no_work(release: SyntheticRelease, tmp_path: Path) -> None:
    fetch_valor(tmp_path, from_zips(release))
    before = fingerprints(tmp_path)
    again = fetch_valor(tmp_path, from_zips(release))
    assert [r.imported for r in again.features] == [0, 0]
    assert [r.already_stored for r in again.features] == [len(release.data.video_ids)] * 2
    count = len(release.data.video_ids)
    labels = again.labels
    assert (labels.videos_written, labels.videos_replaced, labels.videos_unchanged) == (0, 0, count)
    assert [(r.imported, r.replaced, r.already_stored) for r in labels.staged] == [
        (0, 0, count)
    ] * 2
    assert {(rows.written, rows.replaced) for rows in again.llp_labels.tables.values()} == {(0, 0)}
    assert fingerprints(tmp_path) == before
    assert len(releases_table(tmp_path).folder.part_names()) == 1  # known archives


def test_a_fetch_of_a_release_with_one_changed_label_file_replaces_that_row(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    fetch_valor(root, from_zips(release))
    data, ids = release.data, release.data.video_ids.tolist()
    audio = data.pseudo[:, 0].copy()
    audio[3, 2, 5] = 1 - audio[3, 2, 5]
    clap = write_valor_archive(
        tmp_path / "CLAP.zip",
        "CLAP",
        {i: data.audio_map[n].astype(np.float32) for n, i in enumerate(ids)},
        {i: audio[n] for n, i in enumerate(ids)},
    )

    again = fetch_valor(
        root, FetchConfig(from_zips=[str(release.clip_zip), str(clap)], labels=str(release.labels))
    )

    labels = again.labels
    assert (labels.videos_written, labels.videos_replaced, labels.videos_unchanged) == (
        0,
        1,
        len(ids) - 1,
    )
    staged = {r.table: (r.imported, r.replaced, r.already_stored) for r in labels.staged}
    assert staged == {
        "staged-valor-visual": (0, 0, len(ids)),
        "staged-valor-audio": (0, 1, len(ids) - 1),
    }
    valor = LabelStore(root).segments(catalog.pseudo_label_table("valor")).read_videos(ids)
    np.testing.assert_array_equal(valor.audio, audio)
    np.testing.assert_array_equal(valor.visual, data.pseudo[:, 1])


def test_ids_unknown_to_the_annotations_are_reported_and_skipped(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    clip = write_valor_archive(
        tmp_path / "CLIP.zip",
        "CLIP",
        {"syn00000000": np.zeros((10, 768), np.float32), "unknown0000": np.ones((10, 768))},
        {"syn00000000": np.zeros((10, 25), np.uint8)},
    )
    clap = write_valor_archive(
        tmp_path / "CLAP.zip",
        "CLAP",
        {"syn00000000": np.zeros((64, 768), np.float32)},
        {"syn00000000": np.zeros((10, 25), np.uint8)},
    )
    config = FetchConfig(from_zips=[str(clip), str(clap)], labels=str(release.labels))
    result = fetch_valor(tmp_path / "store", config)
    assert [s.name.rsplit("!", 1)[1] for s in result.skipped] == ["CLIP/features/unknown0000.npy"]
    assert "not in the annotation files" in result.skipped[0].reason
    assert result.features[0].imported == 1 and result.labels.videos_written == 1


def unsafe_archive(path: Path, entry: str, link: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("CLIP/features/syn00000000.npy", npy_bytes(np.zeros((10, 768))))
        info = zipfile.ZipInfo(entry)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd" if link else npy_bytes(np.zeros((10, 768))))
    return path


@pytest.mark.parametrize(
    ("entry", "link", "problem"),
    [
        ("../../evil.npy", False, "climbs out"),
        ("/tmp/avvp-absolute-evil.npy", False, "absolute path"),
        ("CLIP/features/link.npy", True, "symbolic link"),
    ],
)
def test_an_archive_with_an_unsafe_entry_is_refused_and_nothing_is_written(
    release: SyntheticRelease, tmp_path: Path, entry: str, link: bool, problem: str
) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    bad = unsafe_archive(work / "CLIP.zip", entry, link)
    root = work / "store"
    config = FetchConfig(from_zips=[str(bad), str(release.clap_zip)], labels=str(release.labels))
    with pytest.raises(UnsafeArchiveError, match=problem) as refused:
        fetch_valor(root, config)
    assert "refused as a whole" in str(refused.value) and str(bad) in str(refused.value)
    assert not root.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["CLIP.zip", "a", "b"]
    assert not Path("/tmp/avvp-absolute-evil.npy").exists()

    runner = CliRunner()
    cli = runner.invoke(
        app,
        ["fetch-valor", "--store", str(root), "--from-zip", str(bad)]
        + ["--from-zip", str(release.clap_zip), "--labels", str(release.labels)],
    )
    assert cli.exit_code == 2 and "refused as a whole" in cli.output
    # The CLI makes the store folder when it checks that it can be written; nothing more.
    assert list(root.rglob("*")) == []


def test_a_wrong_sha256_for_a_local_archive_is_refused_before_importing(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not the expected"):
        fetch_valor(tmp_path / "store", from_zips(release, sha256=["0" * 64, "1" * 64]))
    assert not (tmp_path / "store").exists()


def damaged_copy(source: Path, target: Path, member: str, damage: str) -> Path:
    """`source` with one member's compressed data damaged: "crc" flips a byte past the
    .npy header (the data still inflates, to other bytes), "deflate" makes the first
    deflate block's type the reserved one (3), which zlib refuses."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        offset = archive.getinfo(member).header_offset
    name_length, extra_length = struct.unpack_from("<HH", data, offset + 26)
    start = offset + 30 + name_length + extra_length
    if damage == "crc":
        data[start + 200] ^= 0xFF
    else:
        data[start] |= 0b111  # final block, type 3
    target.write_bytes(data)
    return target


@pytest.mark.parametrize("damage", ["crc", "deflate"])
def test_a_damaged_archive_imports_nothing_and_says_which_member(
    release: SyntheticRelease, tmp_path: Path, damage: str
) -> None:
    data, ids = release.data, release.data.video_ids.tolist()
    if damage == "crc":
        # The last feature file of CLAP.zip, imported after all of CLIP.zip.
        member, clip = f"CLAP/features/{ids[-1]}.npy", release.clip_zip
        clap = damaged_copy(release.clap_zip, tmp_path / "CLAP.zip", member, damage)
    else:
        # The last label file of a deflated CLIP.zip, read after all its features.
        member, clap = f"CLIP/segment_pseudo_labels/{ids[-1]}.npy", release.clap_zip
        deflated = write_valor_archive(
            tmp_path / "deflated.zip",
            "CLIP",
            {i: data.visual[n].astype(np.float32) for n, i in enumerate(ids)},
            {i: data.pseudo[n, 1] for n, i in enumerate(ids)},
            compression=zipfile.ZIP_DEFLATED,
        )
        clip = damaged_copy(deflated, tmp_path / "CLIP.zip", member, damage)
    root = tmp_path / "store"
    config = ImportFeaturesConfig(layout="han-r2plus1d", labels=str(release.labels))
    import_features(release.r2plus1d, root, config)
    before = store_info(str(root))

    cli = CliRunner().invoke(
        app,
        ["fetch-valor", "--store", str(root), "--from-zip", str(clip), "--from-zip", str(clap)]
        + ["--labels", str(release.labels)],
    )

    assert cli.exit_code == 1, cli.output
    damaged = clip if damage == "deflate" else clap
    assert f"error: {damaged} is damaged: its member {member} does not read back" in cli.output
    assert "Nothing was imported" in cli.output and "Traceback" not in cli.output
    assert store_info(str(root)) == before
    assert not (root / "releases").exists()
    with pytest.raises(CorruptArchiveError, match=member):
        fetch_valor(root, FetchConfig(from_zips=[str(clip), str(clap)], labels=str(release.labels)))


def write_feature_folder(folder: Path, release: SyntheticRelease) -> dict[str, str]:
    """HAN's r2plus1d_18 layout plus one file of each kind of problem."""
    folder.mkdir()
    for path in release.r2plus1d.glob("*.npy"):
        (folder / path.name).write_bytes(path.read_bytes())
    first, second, third = release.data.video_ids[:3]
    np.save(folder / f"{first}.npy", np.zeros((10, 256), np.float32))
    nan = np.zeros((10, 512), np.float32)
    nan[3, 7] = np.nan
    np.save(folder / f"{second}.npy", nan)
    (folder / f"{third}.npy").write_bytes(b"not a numpy file at all")
    np.save(folder / "unknown0000.npy", np.zeros((10, 512), np.float32))
    return {
        first: "shape 10 x 256, expected 10 x 512",
        second: "NaN or Inf",
        third: "header is unreadable",
        "unknown0000": "not in the annotation files",
    }


def test_import_features_reports_each_bad_file_once_and_imports_the_rest(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    folder = tmp_path / "r2plus1d_18"
    problems = write_feature_folder(folder, release)
    config = ImportFeaturesConfig(layout="han-r2plus1d", labels=str(release.labels))
    result = import_features(folder, tmp_path / "store", config)
    reasons = {Path(s.name).stem: s.reason for s in result.skipped}
    assert reasons.keys() == problems.keys()
    for video_id, words in problems.items():
        assert words in reasons[video_id]
    good = [v for v in release.data.video_ids.tolist() if v not in problems]
    assert result.table == catalog.VISUAL_ST_TABLE and result.imported == len(good)
    stored = FeatureStore(tmp_path / "store").table(catalog.VISUAL_ST_TABLE).read_videos(good)
    expected = release.data.visual_st[[release.data.video_ids.tolist().index(v) for v in good]]
    np.testing.assert_array_equal(stored.features, expected.astype(np.float32))

    again = import_features(folder, tmp_path / "store", config)
    assert (again.imported, again.already_stored) == (0, len(good))

    cli = CliRunner().invoke(
        app,
        ["import-features", str(folder), "--store", str(tmp_path / "store")]
        + ["--layout", "han-r2plus1d", "--labels", str(release.labels)],
    )
    assert cli.exit_code == 1
    assert sum(line.startswith("skipped ") for line in cli.output.splitlines()) == len(problems)


def test_a_tiny_npy_whose_header_declares_gigabytes_is_skipped_by_name(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    folder, (first, second) = tmp_path / "huge", release.data.video_ids[:2]
    folder.mkdir()
    # 160 GB of float32, and 10 x 4e9 items of 100 MB each: the files hold 72 data bytes.
    for video_id, descr in ((first, "<f4"), (second, "|V100000000")):
        header = io.BytesIO()
        shape = (10, 4_000_000_000)
        np.lib.format.write_array_header_1_0(
            header, {"descr": descr, "fortran_order": False, "shape": shape}
        )
        npy = header.getvalue()
        (folder / f"{video_id}.npy").write_bytes(npy + bytes(200 - len(npy)))

    cli = CliRunner().invoke(
        app,
        ["import-features", str(folder), "--store", str(tmp_path / "store")]
        + ["--table", "huge", "--shape", "10x4000000000", "--labels", str(release.labels)],
    )

    assert cli.exit_code == 1, cli.output
    assert f"skipped {folder / first}.npy: is cut short: its header declares 160000000000" in (
        cli.output
    )
    assert f"skipped {folder / second}.npy: holds |V100000000, not floating" in cli.output
    assert "huge: 0 videos imported" in cli.output


def test_import_features_needs_a_layout_or_a_table_and_shape() -> None:
    with pytest.raises(ValueError, match="give a layout"):
        ImportFeaturesConfig(table="vggish")
    assert ImportFeaturesConfig(table="mine", shape=(10, 128)).shape == (10, 128)
    with pytest.raises(ValueError, match="has shape 10 x 512"):
        ImportFeaturesConfig(layout="han-r2plus1d", shape=(10, 128))


def test_the_old_preset_key_still_names_a_layout_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="'preset' is now 'layout'"):
        config = ImportFeaturesConfig(preset="han-r2plus1d")
    assert (config.layout, config.table) == ("han-r2plus1d", "r2plus1d-18")


def test_label_folders_of_one_modality_wait_for_the_other_one(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    data, root = release.data, tmp_path / "store"
    for m, modality in enumerate(("audio", "visual")):
        (tmp_path / modality).mkdir()
        for n, video_id in enumerate(data.video_ids):
            np.save(tmp_path / modality / f"{video_id}.npy", data.dense[n, m])
    config = ImportLabelsConfig(source="mine", modality="visual", labels=str(release.labels))
    first = import_pseudo_labels(tmp_path / "visual", root, config)
    assert first.videos_written == 0 and first.waiting == {"audio": len(data.video_ids)}
    audio = config.model_copy(update={"modality": "audio"})
    second = import_pseudo_labels(tmp_path / "audio", root, audio)
    assert second.videos_written == len(data.video_ids) and second.waiting == {}
    labels = LabelStore(root).segments("segment-mine").read_videos(data.video_ids)
    np.testing.assert_array_equal(labels.audio, data.dense[:, 0])
    np.testing.assert_array_equal(labels.visual, data.dense[:, 1])
    assert import_pseudo_labels(tmp_path / "audio", root, audio).videos_written == 0


def test_importing_an_edited_label_file_replaces_that_video_and_says_so(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    data, root = release.data, tmp_path / "store"
    for m, modality in enumerate(("audio", "visual")):
        (tmp_path / "labels" / modality).mkdir(parents=True)
        for n, video_id in enumerate(data.video_ids):
            np.save(tmp_path / "labels" / modality / f"{video_id}.npy", data.dense[n, m])
    config = ImportLabelsConfig(source="mine", labels=str(release.labels))
    import_pseudo_labels(tmp_path / "labels", root, config)
    edited = data.dense[2, 1].copy()
    edited[:, 0] = 1 - edited[:, 0]
    np.save(tmp_path / "labels" / "visual" / f"{data.video_ids[2]}.npy", edited)

    cli = CliRunner().invoke(
        app,
        ["pseudo-labels", "import", str(tmp_path / "labels"), "--source", "mine"]
        + ["--store", str(root), "--labels", str(release.labels)],
    )

    count = len(data.video_ids)
    assert cli.exit_code == 0, cli.output
    assert f"staged-mine-visual: 0 videos imported, 1 replaced, {count - 1} already" in cli.stdout
    assert f"segment-mine: 0 videos written, 1 replaced, {count - 1} unchanged" in cli.stdout
    stored = LabelStore(root).segments("segment-mine").read_videos(data.video_ids)
    expected = data.dense[:, 1].copy()
    expected[2] = edited
    np.testing.assert_array_equal(stored.visual, expected)
    np.testing.assert_array_equal(stored.audio, data.dense[:, 0])


def test_fetch_then_import_r2plus1d_then_train_evaluate_and_score_the_labels(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    runner = CliRunner()
    fetched = runner.invoke(
        app,
        ["fetch-valor", "--store", str(root), "--from-zip", str(release.clip_zip)]
        + ["--from-zip", str(release.clap_zip), "--labels", str(release.labels)],
    )
    assert fetched.exit_code == 0, fetched.output
    assert "--layout han-r2plus1d" in fetched.output
    imported = runner.invoke(
        app,
        ["import-features", str(release.r2plus1d), "--store", str(root)]
        + ["--layout", "han-r2plus1d", "--labels", str(release.labels)],
    )
    assert imported.exit_code == 0, imported.output

    result = train(str(root), tiny_config("mmcse", data=DataConfig(), batch_size=8))
    run_url = result.run_url
    assert Path(run_url).exists()
    scored = evaluate_run(run_url, EvaluateConfig(split="test", device="cpu"))
    assert scored.annotations == "corrected" and len(scored.metrics) == 11
    assert all(0.0 <= value <= 100.0 for value in scored.metrics.values())

    # The labels themselves, scored before any training: the dense oracle scores 100,
    # VALOR's labels what the metrics give for the release's arrays.
    dense = runner.invoke(app, ["pseudo-labels", "dense", "--store", str(root)])
    assert dense.exit_code == 0, dense.output
    scores = {}
    for source in ("dense", "valor"):
        shown = runner.invoke(
            app, ["pseudo-labels", "score", "--store", str(root), "--source", source, "--json"]
        )
        assert shown.exit_code == 0, shown.output
        scores[source] = json.loads(shown.stdout)["metrics"]
    assert set(scores["dense"].values()) == {100.0}
    test = release.data.splits == "test"
    expected = segment_and_event_f1(release.data.pseudo[test], release.data.dense[test])
    assert scores["valor"] == pytest.approx(expected, abs=1e-9)


def test_fetch_over_http_resumes_a_cut_download_and_a_second_fetch_does_no_work(
    release: SyntheticRelease, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from http_server import PayloadServer

    monkeypatch.setattr(download_module.time, "sleep", lambda seconds: None)
    clap = release.clap_zip.read_bytes()
    with PayloadServer() as server:
        urls = [
            server.add("/valor/CLIP.zip", release.clip_zip.read_bytes()),
            server.add("/valor/CLAP.zip", clap),
        ]
        # Four cuts outlast the download's three retries: the first fetch stops with
        # part of CLAP.zip kept; the next one resumes from there.
        server.cut_next("/valor/CLAP.zip", after_bytes=len(clap) // 5, times=4)
        config = FetchConfig(urls=urls, cache=str(tmp_path / "cache"), labels=str(release.labels))
        with pytest.raises(DownloadError, match="again to resume"):
            fetch_valor(tmp_path / "store", config)
        assert [entry.status for entry in server.log[-4:]] == [200, 206, 206, 206]
        assert not (tmp_path / "store" / "features").exists()
        kept = next((tmp_path / "cache").rglob("CLAP.zip.part")).stat().st_size
        result = fetch_valor(tmp_path / "store", config)
        assert server.log[-1].range == f"bytes={kept}-" and server.log[-1].status == 206
        assert [d["resumed_from"] for d in result.downloads] == [None, kept]
        assert result.features[1].imported == len(release.data.video_ids)
        stored = FeatureStore(tmp_path / "store").table(catalog.AUDIO_MAP_TABLE)
        np.testing.assert_array_equal(
            stored.read_videos(release.data.video_ids).features,
            release.data.audio_map.astype(np.float32),
        )
        origins = [row["origin"] for row in releases_table(tmp_path / "store").latest().to_pylist()]
        assert origins == urls
        requests = len(server.log)
        before = fingerprints(tmp_path / "store")
        again = fetch_valor(tmp_path / "store", config)
        assert len(server.log) == requests  # the cached archives are used as they are
        assert [r.imported for r in again.features] == [0, 0]
        assert fingerprints(tmp_path / "store") == before


def test_a_damaged_download_is_refused_and_removed_from_the_cache(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    from http_server import PayloadServer

    member = f"CLAP/features/{release.data.video_ids[0]}.npy"
    damaged = damaged_copy(release.clap_zip, tmp_path / "CLAP.zip", member, "crc")
    with PayloadServer() as server:
        urls = [
            server.add("/valor/CLIP.zip", release.clip_zip.read_bytes()),
            server.add("/valor/CLAP.zip", damaged.read_bytes()),
        ]
        config = FetchConfig(urls=urls, cache=str(tmp_path / "cache"), labels=str(release.labels))
        with pytest.raises(CorruptArchiveError, match="removed from the cache"):
            fetch_valor(tmp_path / "store", config)
    assert [path.name for path in (tmp_path / "cache").rglob("*.zip")] == ["CLIP.zip"]
    assert not (tmp_path / "store").exists()


def test_fetch_with_a_wrong_sha256_downloads_but_imports_nothing(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    from http_server import PayloadServer

    with PayloadServer() as server:
        urls = [
            server.add("/valor/CLIP.zip", release.clip_zip.read_bytes()),
            server.add("/valor/CLAP.zip", release.clap_zip.read_bytes()),
        ]
        cli = CliRunner().invoke(
            app,
            ["fetch-valor", "--store", str(tmp_path / "store"), "--cache", str(tmp_path / "c")]
            + ["--url", urls[0], "--url", urls[1], "--labels", str(release.labels)]
            + ["--sha256", "0" * 64, "--sha256", "1" * 64],
        )
    assert cli.exit_code == 1 and "sha256" in cli.output
    assert list((tmp_path / "store").rglob("*")) == []


def test_fetch_with_no_features_imports_only_the_pseudo_labels(
    release: SyntheticRelease, tmp_path: Path
) -> None:
    cli = CliRunner().invoke(
        app,
        ["fetch-valor", "--store", str(tmp_path), "--no-features", "--labels", str(release.labels)]
        + ["--from-zip", str(release.clip_zip), "--from-zip", str(release.clap_zip)],
    )
    assert cli.exit_code == 0, cli.output
    assert FeatureStore(tmp_path).table_names() == []
    valor = LabelStore(tmp_path).segments(catalog.pseudo_label_table("valor"))
    assert sorted(valor.video_ids()) == sorted(release.data.video_ids.tolist())
