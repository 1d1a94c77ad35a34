"""The feature catalog declares each feature set once, and a new set needs nothing else:
a made-up 10 x 64 set added to the catalog alone is extracted, imported and trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avvp.model.config import MODEL_CONFIGS, get_model_config
from avvp.pipeline import catalog
from avvp.pipeline.catalog import FeatureSet, ReleaseLayout
from avvp.pipeline.chain import EXTRACT_AND_TRAIN, ChainConfig, run_local
from avvp.pipeline.release import ImportFeaturesConfig, import_features
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.pipeline.train_config import TrainConfig
from avvp.storage import FeatureStore, RunStore

TOY = FeatureSet(
    "toy-64",
    (10, 64),
    "visual-st",
    "a made-up 10 x 64 feature per segment",
    extractor="toy64",
    extractor_path="toy_extractor:Toy64Extractor",
    releases=(ReleaseLayout("toy-release", "toy-release", "a made-up release"),),
    dtype="float32",
)


def test_every_extracted_set_has_the_shape_its_extractor_gives() -> None:
    for name, feature in catalog.extracted_sets().items():
        assert feature.extractor_class().output_shape == feature.shape, name


def test_every_model_preset_names_tables_that_fit_its_inputs() -> None:
    assert set(catalog.MODEL_TABLES) == set(MODEL_CONFIGS)
    for preset, tables in catalog.MODEL_TABLES.items():
        inputs = get_model_config(preset).inputs
        assert catalog.input_spec(inputs, *tables) == inputs, preset
        assert TrainConfig(model=preset).model_config_resolved().inputs == inputs


def test_a_model_preset_alone_chooses_its_tables_and_explicit_tables_win() -> None:
    han = TrainConfig(model="mmcse-vggish-resnet")
    assert (han.data.audio_table, han.data.visual_table) == ("vggish", "resnet152")
    mixed = TrainConfig.model_validate(
        {"model": "mmcse-vggish-resnet", "data": {"audio_table": "clap-htsat-fusion"}}
    )
    assert mixed.data.audio_table == "clap-htsat-fusion"
    assert mixed.model_config_resolved().inputs.audio_kind == "clap_map"


def test_a_table_that_cannot_feed_a_stream_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="clip-vit-l-14 .* cannot be the parser's audio input"):
        TrainConfig.model_validate(
            {"data": {"audio_table": "clip-vit-l-14"}}
        ).model_config_resolved()


def test_layout_names_are_unique_and_name_their_table() -> None:
    names = [r.name for f in catalog.FEATURE_SETS.values() for r in f.releases]
    assert len(names) == len(set(names))
    assert catalog.release_layout("valor-clap")[0].table == catalog.AUDIO_MAP_TABLE


def test_weights_identities_read_in_plain_words() -> None:
    clip = catalog.feature_set(catalog.VISUAL_TABLE)
    (openai,) = clip.weights()
    assert openai.sha256 and len(openai.sha256) == 64
    assert "OpenAI" in clip.weights_title(openai.sha256)
    assert clip.weights_title("random-init-seed-0").startswith("random weights")
    assert "not in the catalog" in clip.weights_title("0" * 64)


@pytest.fixture
def toy_catalog(monkeypatch: pytest.MonkeyPatch) -> FeatureSet:
    monkeypatch.setitem(catalog.FEATURE_SETS, TOY.table, TOY)
    return TOY


@pytest.mark.slow
def test_a_feature_set_added_to_the_catalog_alone_is_extracted_imported_and_trained_on(
    toy_catalog: FeatureSet, tmp_path: Path
) -> None:
    clips = tmp_path / "clips"
    write_synthetic_clips(clips, n=8, seconds=10)
    store = tmp_path / "store"
    summary = run_local(
        EXTRACT_AND_TRAIN,
        ChainConfig(
            videos=[str(clips / "videos")],
            labels=str(clips),
            store=str(store),
            extractor_size="tiny",
            pseudo_labels="dense",
            epochs=1,
            config={
                "extract": {"device": "cpu", "extractors": ["clip", "toy64", "clap"]},
                "train": {
                    "device": "cpu",
                    "size": "tiny",
                    "batch_size": 4,
                    "data": {"visual_st_table": toy_catalog.table},
                },
                "evaluate": {"device": "cpu"},
                "report": {"timeline_videos": 1, "tsne_max_segments": 50},
                "splits": ["test"],
            },
        ),
    )
    assert summary.ok, summary
    extracted = FeatureStore(store).table(toy_catalog.table)
    assert len(set(extracted.video_ids())) == 8
    assert extracted.read_videos(["synclip0001"]).features.shape[1:] == toy_catalog.shape
    assert extracted.provenance.dtype == "float32"  # the set's, not the float16 of the others
    assert FeatureStore(store).table(catalog.VISUAL_TABLE).provenance.dtype == "float16"
    written = RunStore(str(store)).run(summary.train.run_id).read_json("config.json")
    assert written["train"]["data"]["visual_st_table"] == toy_catalog.table
    assert written["model"]["inputs"]["st_dim"] == 64  # the network was built for it

    released = tmp_path / "released"
    released.mkdir()
    rng = np.random.default_rng(0)
    ids = sorted(set(extracted.video_ids()))[:3]
    for video_id in ids:
        np.save(released / f"{video_id}.npy", rng.standard_normal((10, 64)).astype(np.float32))
    imported = import_features(
        released,
        tmp_path / "imported",
        ImportFeaturesConfig(layout="toy-release", labels=str(clips)),
    )
    assert (imported.table, imported.imported, imported.skipped) == (toy_catalog.table, 3, [])
    table = FeatureStore(tmp_path / "imported").table(toy_catalog.table)
    assert table.provenance.source == "toy-release"
    assert sorted(set(table.video_ids())) == ids


def test_avvp_catalog_lists_every_set_with_its_weights() -> None:
    from typer.testing import CliRunner

    from avvp.pipeline.cli.app import app

    result = CliRunner().invoke(app, ["catalog"])
    assert result.exit_code == 0, result.output
    for feature in catalog.FEATURE_SETS.values():
        assert f"{feature.table}: {' x '.join(map(str, feature.shape))}" in result.output
    assert "sha256 b8cca3fd41ae0c99" in result.output  # OpenAI's ViT-L-14.pt
