"""Pseudo-label sources: VALOR's prompts and threshold rule, labels generated from stored
embeddings (text cache, weak-label restriction, refusals), the dense source, scoring."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avvp.extractors import FeatureExtractor, create_extractor
from avvp.model.classes import CLASS_INDEX, LLP_CLASSES
from avvp.model.zero_shot import (
    CLAP_PROMPTS,
    CLAP_THRESHOLDS,
    CLIP_LOGIT_SCALE,
    CLIP_PROMPTS,
    CLIP_THRESHOLDS,
    THRESHOLDS_VERSION,
    threshold_labels,
    zero_shot_logits,
)
from avvp.pipeline import catalog
from avvp.pipeline.embedding import feature_provenance
from avvp.pipeline.pseudo_labels import (
    GenerateConfig,
    generate_pseudo_labels,
    prompt_embeddings,
    score_label_source,
    write_dense_source,
)
from avvp.pipeline.release import import_llp_labels
from avvp.pipeline.sources.dense_events import PLANTED_EVENTS_FILE, planted_dense_labels
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.storage import FeatureStore, LabelStore, Provenance

K = len(LLP_CLASSES)
T = 10
CLIP_DIM, CLAP_DIM = 768, 512
CLAP_SCALE = 1 / 0.07  # LAION-CLAP's initial logit_scale_a, the tiny preset's value
# The prompts as AVVP.md lists them, written out by hand (not derived from the classes).
CLAP_PROMPTS_AS_PUBLISHED = [
    "This is a sound of speech",
    "This is a sound of car",
    "This is a sound of cheering",
    "This is a sound of dog",
    "This is a sound of cat",
    "This is a sound of frying (food)",
    "This is a sound of basketball bounce",
    "This is a sound of fire alarm",
    "This is a sound of chainsaw",
    "This is a sound of cello",
    "This is a sound of banjo",
    "This is a sound of singing",
    "This is a sound of chicken, rooster",
    "This is a sound of violin fiddle",
    "This is a sound of vacuum cleaner",
    "This is a sound of baby laughter",
    "This is a sound of accordion",
    "This is a sound of lawn mower",
    "This is a sound of motorcycle",
    "This is a sound of helicopter",
    "This is a sound of acoustic guitar",
    "This is a sound of telephone bell ringing",
    "This is a sound of baby cry, infant cry",
    "This is a sound of blender",
    "This is a sound of clapping",
]


# ---- prompts, thresholds and the rule ------------------------------------------------


def test_prompts_and_thresholds_cover_the_25_classes_with_valor_spellings():
    assert len(CLIP_PROMPTS) == len(CLIP_THRESHOLDS) == K
    assert len(CLAP_PROMPTS) == len(CLAP_THRESHOLDS) == K
    assert list(CLAP_PROMPTS) == CLAP_PROMPTS_AS_PUBLISHED
    # VALOR's typos are kept: the thresholds were tuned on these exact strings.
    assert CLIP_PROMPTS[CLASS_INDEX["Vacuum_cleaner"]] == "A photo of a vaccum cleaner."
    assert CLIP_PROMPTS[CLASS_INDEX["Acoustic_guitar"]] == "A photo of a acoustic guiter."
    assert CLIP_THRESHOLDS[0] == 20 and CLIP_THRESHOLDS[-1] == 18
    assert CLAP_THRESHOLDS[CLASS_INDEX["Frying_(food)"]] == -2
    assert CLIP_LOGIT_SCALE == 100.0


def unit_embeddings(cosines: np.ndarray, dim: int) -> np.ndarray:
    """(..., K) chosen cosines with the one-hot text vectors e_0..e_24 -> (..., dim) unit
    vectors: the cosines on the first K axes, the rest of the norm on the last axis."""
    rest = 1.0 - np.square(cosines).sum(axis=-1, keepdims=True)
    assert (rest > 0).all(), "cosines too large for a unit vector"
    vectors = np.zeros((*cosines.shape[:-1], dim))
    vectors[..., :K] = cosines
    vectors[..., -1:] = np.sqrt(rest)
    return vectors


def one_hot_text(dim: int) -> np.ndarray:
    return np.eye(K, dim, dtype=np.float32)


@pytest.mark.parametrize(
    ("thresholds", "scale", "dim"),
    [(CLIP_THRESHOLDS, CLIP_LOGIT_SCALE, CLIP_DIM), (CLAP_THRESHOLDS, CLAP_SCALE, CLAP_DIM)],
    ids=["clip", "clap"],
)
def test_a_class_is_on_just_above_its_threshold_and_off_just_below(thresholds, scale, dim):
    thresholds = np.asarray(thresholds, np.float64)
    # Video k: class k at threshold + 0.01 in segment 0 and - 0.01 in segment 1; every
    # other class one logit below the smaller of its threshold and 0.
    logits = np.broadcast_to(np.minimum(thresholds, 0) - 1, (K, 2, K)).copy()
    logits[np.arange(K), 0, np.arange(K)] = thresholds + 0.01
    logits[np.arange(K), 1, np.arange(K)] = thresholds - 0.01
    embeddings = unit_embeddings(logits / scale, dim).astype(np.float32)

    computed = zero_shot_logits(embeddings, one_hot_text(dim), scale)
    labels = threshold_labels(computed, thresholds, np.ones((K, K), np.uint8))

    np.testing.assert_allclose(computed, logits, atol=1e-3)
    expected = np.zeros((K, 2, K), np.uint8)
    expected[np.arange(K), 0, np.arange(K)] = 1
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.uint8


def test_a_logit_equal_to_its_threshold_stays_off():
    thresholds = np.asarray(CLAP_THRESHOLDS, np.float32)
    at_threshold = np.broadcast_to(thresholds, (1, T, K))

    assert not threshold_labels(at_threshold, thresholds, np.ones((1, K))).any()
    assert threshold_labels(at_threshold + 1e-3, thresholds, np.ones((1, K))).all()


def test_a_class_above_threshold_but_outside_the_weak_label_stays_off():
    logits = np.full((3, T, K), 50.0)  # every class above every threshold
    weak = np.zeros((3, K), np.uint8)
    weak[0, [CLASS_INDEX["Dog"], CLASS_INDEX["Cat"]]] = 1
    weak[2] = 1

    labels = threshold_labels(logits, CLIP_THRESHOLDS, weak)

    np.testing.assert_array_equal(labels, np.broadcast_to(weak[:, None, :], (3, T, K)))


def test_zero_shot_logits_accept_float16_embeddings_and_normalise_them():
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((2, T, CLIP_DIM)) * 3.0  # not unit norm
    text = rng.standard_normal((K, CLIP_DIM))
    cosine = (embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)) @ (
        text / np.linalg.norm(text, axis=-1, keepdims=True)
    ).T

    logits = zero_shot_logits(embeddings.astype(np.float16), torch.from_numpy(text), 100.0)

    assert logits.shape == (2, T, K) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, 100.0 * cosine, atol=0.05)


# ---- generated pseudo-labels ---------------------------------------------------------


@pytest.fixture(scope="module")
def towers() -> dict[str, FeatureExtractor]:
    """The tiny CLIP and CLAP-segment extractors, built once for the module."""
    return {
        "clip": create_extractor("clip", size="tiny", device="cpu"),
        "clap": create_extractor("clap-segments", size="tiny", device="cpu"),
    }


class CountingTexts:
    """Stands in for `embed_texts`: returns known vectors and counts its calls."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors, self.calls = vectors, 0

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        self.calls += 1
        assert len(prompts) == len(self.vectors)
        return torch.from_numpy(self.vectors)


@pytest.fixture
def known_texts(towers, monkeypatch) -> dict[str, CountingTexts]:
    """Both towers' text embeddings replaced by the one-hot vectors e_0..e_24."""
    texts = {
        "clip": CountingTexts(one_hot_text(CLIP_DIM)),
        "clap": CountingTexts(one_hot_text(CLAP_DIM)),
    }
    for name, counter in texts.items():
        monkeypatch.setattr(towers[name], "embed_texts", counter)
    return texts


DISTRACTOR = CLASS_INDEX["Cello"]  # above threshold everywhere, in no weak label
WEAK = {
    "vid_one": ["Speech", "Dog"],
    "vid_long": ["Car"],  # two windows, the second padded after 5 segments
    "vid_silent": ["Speech"],  # no audio track
    "vid_visual_only": ["Speech"],  # absent from the CLAP table
    "vid_new": ["Cat", "Car"],  # added after the first generation
}
WINDOWS = {"vid_one": [10], "vid_long": [10, 5], "vid_silent": [10], "vid_new": [10]}


def planned_rows(video_ids, seed: int = 0):
    """Per window: the planned on/off of each weak class in each segment, per modality.

    Returns keys (ids, windows), valid segments, has_audio and the plans (rows, T, K) bool.
    """
    rng = np.random.default_rng(seed)
    ids, windows, valid, plans = [], [], [], {"audio": [], "visual": []}
    for video_id in video_ids:
        for window, segments in enumerate(WINDOWS.get(video_id, [10])):
            ids.append(video_id)
            windows.append(window)
            valid.append(segments)
            for plan in plans.values():
                on = np.zeros((T, K), bool)
                for name in WEAK.get(video_id, ["Banjo"]):
                    on[:, CLASS_INDEX[name]] = rng.random(T) < 0.5
                plan.append(on)
    has_audio = np.array([video_id != "vid_silent" for video_id in ids])
    return (
        ids,
        np.array(windows),
        np.array(valid),
        has_audio,
        {m: np.stack(p) for m, p in plans.items()},
    )


def embeddings_for(plan: np.ndarray, weak_classes: np.ndarray, thresholds, scale, dim):
    """Segment embeddings whose logits sit 0.5 above the threshold where planned on and
    0.5 below where off (weak classes), with the distractor class 0.5 above everywhere."""
    thresholds = np.asarray(thresholds, np.float64)
    logits = np.zeros(plan.shape)
    scored = weak_classes[:, None, :].repeat(T, axis=1)
    logits[scored] = np.where(plan, thresholds + 0.5, thresholds - 0.5)[scored]
    logits[..., DISTRACTOR] = thresholds[DISTRACTOR] + 0.5
    return unit_embeddings(logits / scale, dim).astype(np.float16)


def weak_matrix(video_ids) -> np.ndarray:
    matrix = np.zeros((len(video_ids), K), np.uint8)
    for row, video_id in enumerate(video_ids):
        matrix[row, [CLASS_INDEX[name] for name in WEAK[video_id]]] = 1
    return matrix


def write_embeddings(root, video_ids, towers, *, audio=True, clip_weights=None):
    """CLIP and (unless audio=False) CLAP segment embeddings of the planned videos, as
    `avvp extract` writes them; returns the expected (audio, visual) labels per key."""
    ids, windows, valid, has_audio, plans = planned_rows(video_ids)
    weak = np.stack([weak_matrix([v])[0] if v in WEAK else np.zeros(K, np.uint8) for v in ids])
    weak = weak.astype(bool)
    store = FeatureStore(root)
    clip_provenance = feature_provenance(towers["clip"], "float16")
    if clip_weights is not None:
        clip_provenance = replace(clip_provenance, weights=clip_weights)
    # Per modality: table, planned events, thresholds, logit scale, width, provenance.
    modalities = [
        (
            catalog.VISUAL_TABLE,
            "visual",
            CLIP_THRESHOLDS,
            CLIP_LOGIT_SCALE,
            CLIP_DIM,
            clip_provenance,
        )
    ]
    if audio:
        clap = towers["clap"]
        clap_provenance = feature_provenance(clap, "float16")
        modalities.append(
            (
                catalog.AUDIO_SEGMENT_TABLE,
                "audio",
                CLAP_THRESHOLDS,
                clap.logit_scale_a,
                CLAP_DIM,
                clap_provenance,
            )
        )
    for table, modality, thresholds, scale, dim, provenance in modalities:
        embeddings = embeddings_for(plans[modality], weak, thresholds, scale, dim)
        store.table(table).write(ids, windows, embeddings, valid, has_audio, provenance)
    real = np.arange(T)[None, :, None] < valid[:, None, None]
    expected_visual = plans["visual"] & weak[:, None, :] & real
    expected_audio = plans["audio"] & weak[:, None, :] & real & has_audio[:, None, None]
    keys = list(zip(ids, windows.tolist(), strict=True))
    return {
        key: (a.astype(np.uint8), v.astype(np.uint8))
        for key, a, v in zip(keys, expected_audio, expected_visual, strict=True)
    }


def write_weak(root, video_ids) -> None:
    LabelStore(root).weak().write(
        video_ids, weak_matrix(video_ids), ["train"] * len(video_ids), Provenance("test-weak", "1")
    )


TINY = GenerateConfig(size="tiny", device="cpu")


def labelled_store(root, towers) -> dict:
    write_weak(root, ["vid_one", "vid_long", "vid_silent", "vid_visual_only"])
    expected = write_embeddings(root, ["vid_one", "vid_long", "vid_silent", "vid_noweak"], towers)
    write_embeddings(root, ["vid_visual_only"], towers, audio=False)
    return expected


def test_generate_labels_videos_from_their_embeddings_within_weak_labels(
    tmp_path, towers, known_texts
):
    expected = labelled_store(tmp_path, towers)

    result = generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])

    assert result.source == "generated-tiny-random-init-seed-0+tiny-random-init-seed-0"
    assert result.table == catalog.pseudo_label_table(result.source)
    assert (result.videos_labelled, result.windows_written) == (3, 4)
    assert result.videos_without_weak_labels == 1  # vid_noweak
    assert result.videos_missing_embeddings == 1  # vid_visual_only
    assert not result.text_cache_used
    table = LabelStore(tmp_path).segments(result.table)
    assert sorted(table.video_ids()) == ["vid_long", "vid_one", "vid_silent"]
    labelled = [key for key in expected if key[0] != "vid_noweak"]
    stored = table.read(labelled)
    for row, key in enumerate(labelled):
        np.testing.assert_array_equal(stored.audio[row], expected[key][0], err_msg=str(key))
        np.testing.assert_array_equal(stored.visual[row], expected[key][1], err_msg=str(key))
    # The planted labels are not trivial: some on, padding and silence off.
    assert stored.visual.any() and stored.audio.any()
    assert not stored.visual[labelled.index(("vid_long", 1)), 5:].any()
    assert not stored.audio[labelled.index(("vid_silent", 0))].any()
    assert not stored.visual[..., DISTRACTOR].any()
    provenance = table.provenance
    assert provenance.weights == "random-init-seed-0+random-init-seed-0"
    assert provenance.extras["thresholds_version"] == THRESHOLDS_VERSION
    assert set(provenance.extras["input_provenance"]) == {
        f"features/{catalog.VISUAL_TABLE}",
        f"features/{catalog.AUDIO_SEGMENT_TABLE}",
        "labels/weak",
    }


def test_generate_again_reads_the_text_cache_and_writes_no_rows(tmp_path, towers, known_texts):
    labelled_store(tmp_path, towers)
    first = generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])
    table = LabelStore(tmp_path).segments(first.table)
    parts = table.table.part_names()

    again = generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])

    assert {name: texts.calls for name, texts in known_texts.items()} == {"clip": 1, "clap": 1}
    assert again.text_cache_used
    windows = (again.windows_written, again.windows_replaced, again.windows_unchanged)
    assert (again.videos_labelled, *windows) == (3, 0, 0, 4)
    assert table.table.part_names() == parts
    assert again.source == first.source


def test_generate_after_a_weak_label_edit_replaces_the_rows_it_restricts(
    tmp_path, towers, known_texts
):
    expected = labelled_store(tmp_path, towers)
    first = generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])
    table = LabelStore(tmp_path).segments(first.table)
    assert table.read([("vid_one", 0)]).visual[..., CLASS_INDEX["Dog"]].any()
    weak = weak_matrix(["vid_one"])
    weak[0, CLASS_INDEX["Dog"]] = 0  # vid_one: Speech, Dog -> Speech
    LabelStore(tmp_path).weak().write(["vid_one"], weak, ["train"], Provenance("test-weak", "1"))

    again = generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])

    windows = (again.windows_written, again.windows_replaced, again.windows_unchanged)
    assert (again.videos_labelled, *windows) == (3, 0, 1, 3)
    assert again.input_fingerprints["labels/weak"] != first.input_fingerprints["labels/weak"]
    stored = table.read([("vid_one", 0)])
    audio, visual = (labels.copy() for labels in expected[("vid_one", 0)])
    audio[:, CLASS_INDEX["Dog"]] = visual[:, CLASS_INDEX["Dog"]] = 0
    np.testing.assert_array_equal(stored.audio[0], audio)
    np.testing.assert_array_equal(stored.visual[0], visual)
    np.testing.assert_array_equal(
        table.read([("vid_long", 1)]).visual[0], expected[("vid_long", 1)][1]
    )


def test_generate_labels_newly_extracted_videos_into_the_same_source(tmp_path, towers, known_texts):
    labelled_store(tmp_path, towers)
    first = generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])
    write_weak(tmp_path, ["vid_new"])
    expected = write_embeddings(tmp_path, ["vid_new"], towers)

    later = generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])

    windows = (later.windows_written, later.windows_replaced, later.windows_unchanged)
    assert (later.videos_labelled, *windows) == (4, 1, 0, 4)
    assert later.input_fingerprints != first.input_fingerprints
    stored = LabelStore(tmp_path).segments(later.table).read_videos(["vid_new"])
    np.testing.assert_array_equal(stored.audio[0], expected[("vid_new", 0)][0])
    np.testing.assert_array_equal(stored.visual[0], expected[("vid_new", 0)][1])


def test_generate_only_the_videos_asked_for(tmp_path, towers, known_texts):
    labelled_store(tmp_path, towers)

    result = generate_pseudo_labels(
        tmp_path, TINY, ["vid_one", "unknown"], clip=towers["clip"], clap=towers["clap"]
    )

    assert (result.videos_labelled, result.videos_without_weak_labels) == (1, 1)
    assert LabelStore(tmp_path).segments(result.table).video_ids() == ["vid_one"]


def test_generate_refuses_embeddings_of_other_weights_than_the_text_tower(
    tmp_path, towers, known_texts
):
    write_weak(tmp_path, ["vid_one"])
    write_embeddings(tmp_path, ["vid_one"], towers, clip_weights="random-init-seed-1")

    with pytest.raises(ValueError, match="same weights") as refused:
        generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])

    message = str(refused.value)
    assert catalog.VISUAL_TABLE in message and "random-init-seed-1" in message
    assert "--extractors clip,clap-segments" in message
    assert known_texts["clip"].calls == 0  # refused before any work
    assert not [n for n in LabelStore(tmp_path).table_names() if n.startswith("segment-")]


def test_generate_refuses_a_store_without_clap_segment_embeddings(tmp_path, towers):
    write_weak(tmp_path, ["vid_one"])
    write_embeddings(tmp_path, ["vid_one"], towers, audio=False)

    with pytest.raises(ValueError, match=catalog.AUDIO_SEGMENT_TABLE) as refused:
        generate_pseudo_labels(tmp_path, TINY, clip=towers["clip"], clap=towers["clap"])

    assert "avvp extract" in str(refused.value)
    assert "--extractors clip,clap-segments" in str(refused.value)


def test_generate_config_refuses_weights_for_other_extractors():
    with pytest.raises(ValueError, match="clip and clap"):
        GenerateConfig(weights={"r2plus1d": "x.pt"})


def test_prompt_embeddings_are_computed_once_by_the_real_text_towers(tmp_path, towers, monkeypatch):
    calls = {}
    for name, tower in towers.items():
        original = tower.embed_texts

        def counted(prompts, name=name, original=original):
            calls[name] = calls.get(name, 0) + 1
            return original(prompts)

        monkeypatch.setattr(tower, "embed_texts", counted)
    prompts = {"clip": CLIP_PROMPTS, "clap": CLAP_PROMPTS}
    scales = {"clip": towers["clip"].logit_scale, "clap": towers["clap"].logit_scale_a}

    first = {name: prompt_embeddings(tmp_path, towers[name], prompts[name]) for name in towers}
    again = {name: prompt_embeddings(tmp_path, towers[name], prompts[name]) for name in towers}

    assert calls == {"clip": 1, "clap": 1}
    for name, dim in (("clip", CLIP_DIM), ("clap", CLAP_DIM)):
        assert first[name].embeddings.shape == (K, dim)
        assert first[name].embeddings.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(first[name].embeddings, axis=1), 1, atol=1e-5)
        assert not first[name].cached and again[name].cached
        np.testing.assert_array_equal(again[name].embeddings, first[name].embeddings)
        assert first[name].logit_scale == again[name].logit_scale == pytest.approx(scales[name])
    # Other prompts are another cache entry.
    prompt_embeddings(tmp_path, towers["clip"], [p.upper() for p in CLIP_PROMPTS])
    assert calls["clip"] == 2


# ---- the dense source ----------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_synthetic_clips(folder, n=4, seconds=10)
    return folder


def test_dense_source_from_planted_events_covers_every_clip(tmp_path, synthetic_clips):
    result = write_dense_source(tmp_path, labels_dir=synthetic_clips)
    again = write_dense_source(tmp_path, labels_dir=synthetic_clips)

    assert (result.source, result.origin, result.videos) == ("dense", "planted-events", 4)
    assert result.windows_written == 4
    assert (again.windows_written, again.windows_replaced, again.windows_already_stored) == (
        0,
        0,
        4,
    )
    names = [f"synclip{i:04d}_0_10" for i in range(1, 5)]  # train clips included
    truth = planted_dense_labels(synthetic_clips, names)
    table = LabelStore(tmp_path).segments(catalog.pseudo_label_table("dense"))
    stored = table.read_videos([name[:11] for name in names])
    np.testing.assert_array_equal(stored.audio, truth[:, 0])
    np.testing.assert_array_equal(stored.visual, truth[:, 1])
    assert table.provenance.extras["origin"] == "planted-events"


def test_an_edited_planted_events_file_replaces_the_windows_it_changes(tmp_path, synthetic_clips):
    folder = tmp_path / "labels"
    folder.mkdir()
    planted = (synthetic_clips / PLANTED_EVENTS_FILE).read_text().splitlines(keepends=True)
    (folder / PLANTED_EVENTS_FILE).write_text("".join(planted))
    write_dense_source(tmp_path / "store", labels_dir=folder)
    names = [f"synclip{i:04d}_0_10" for i in range(1, 5)]
    before = planted_dense_labels(folder, names)
    edited = planted[1].split("\t")
    edited[2], edited[3] = "0", "10"  # the first event now lasts the whole clip
    (folder / PLANTED_EVENTS_FILE).write_text(
        "".join([planted[0], "\t".join(edited), *planted[2:]])
    )
    after = planted_dense_labels(folder, names)
    changed = [name for n, name in enumerate(names) if (before[n] != after[n]).any()]
    assert changed == [edited[0]]

    result = write_dense_source(tmp_path / "store", labels_dir=folder)

    assert (result.windows_written, result.windows_replaced, result.windows_already_stored) == (
        0,
        1,
        3,
    )
    stored = (
        LabelStore(tmp_path / "store")
        .segments("segment-dense")
        .read_videos([name[:11] for name in names])
    )
    np.testing.assert_array_equal(stored.audio, after[:, 0])
    np.testing.assert_array_equal(stored.visual, after[:, 1])


def test_dense_source_from_planted_events_of_a_long_clip_fills_every_window(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / PLANTED_EVENTS_FILE).write_text(
        "filename\tmodality\tonset\toffset\tevent_labels\n"
        "longclip001_0_25\tvisual\t8\t22\tDog\n"
        "longclip001_0_25\taudio\t0\t3\tSpeech\n"
    )

    result = write_dense_source(tmp_path / "store", labels_dir=folder)

    assert (result.videos, result.windows_written) == (1, 3)  # 10 + 10 + 5 s
    stored = LabelStore(tmp_path / "store").segments("segment-dense").read_videos(["longclip001"])
    dog = stored.visual[:, :, CLASS_INDEX["Dog"]]
    np.testing.assert_array_equal(dog.reshape(-1), (np.arange(30) >= 8) & (np.arange(30) < 22))
    assert stored.audio[0, :3, CLASS_INDEX["Speech"]].all() and stored.audio.sum() == 3


def test_dense_source_copies_the_stored_dense_annotations(tmp_path):
    rng = np.random.default_rng(1)
    audio, visual = (rng.integers(0, 2, (2, T, K), dtype=np.uint8) for _ in range(2))
    LabelStore(tmp_path).segments(catalog.dense_table("corrected")).write(
        ["vidA", "vidB"], [0, 0], audio, visual, Provenance("llp-vendored", "1")
    )

    result = write_dense_source(tmp_path, labels_dir=tmp_path / "no-planted-events-here")

    assert (result.origin, result.videos, result.windows_written) == ("dense-corrected", 2, 2)
    stored = LabelStore(tmp_path).segments("segment-dense").read_videos(["vidA", "vidB"])
    np.testing.assert_array_equal(stored.audio, audio)
    np.testing.assert_array_equal(stored.visual, visual)


def test_dense_source_without_planted_events_or_annotations_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="import-labels") as refused:
        write_dense_source(tmp_path, labels_dir=tmp_path)

    assert PLANTED_EVENTS_FILE in str(refused.value)


# ---- scoring -------------------------------------------------------------------------


def test_the_dense_source_scores_100_on_every_metric(tmp_path, synthetic_clips):
    import_llp_labels(str(tmp_path), synthetic_clips)
    write_dense_source(tmp_path, labels_dir=synthetic_clips)

    for split in ("val", "test"):
        score = score_label_source(tmp_path, "dense", split=split)

        assert (score.split, score.annotations, score.videos) == (split, "corrected", 1)
        assert score.metrics == pytest.approx(dict.fromkeys(score.metrics, 100.0))
        assert len(score.metrics) == 11


def hand_built_store(root) -> None:
    """One test video: audio Speech true in segments 0-4 and predicted in 2-6, visual
    Speech true and predicted in every segment."""
    truth_audio, truth_visual = np.zeros((1, T, K), np.uint8), np.zeros((1, T, K), np.uint8)
    truth_audio[0, 0:5, 0] = 1
    truth_visual[0, :, 0] = 1
    pred_audio = np.zeros_like(truth_audio)
    pred_audio[0, 2:7, 0] = 1
    labels = LabelStore(root)
    weak = np.zeros((2, K), np.uint8)
    weak[:, 0] = 1
    labels.weak().write(["vid_test", "vid_val"], weak, ["test", "val"], Provenance("hand", "1"))
    labels.segments("dense-corrected").write(
        ["vid_test"], [0], truth_audio, truth_visual, Provenance("hand", "1")
    )
    labels.segments("segment-handmade").write(
        ["vid_test"], [0], pred_audio, truth_visual, Provenance("hand", "1")
    )


def test_score_of_a_hand_built_label_set_matches_the_counts_by_hand(tmp_path):
    hand_built_store(tmp_path)

    score = score_label_source(tmp_path, "handmade")

    # Audio segments: TP 3 (2-4), FP 2 (5, 6), FN 2 (0, 1): F = 6 / 10. Visual perfect.
    # AV = audio AND visual: the audio counts again. Pooled a + v: 2 x 13 / (26 + 2 + 2).
    # Events: audio [0, 5) vs [2, 7) has IoU 3/7 < 0.5, so one FP and one FN: F = 0.
    by_hand = {
        "Seg-a": 60.0,
        "Seg-v": 100.0,
        "Seg-av": 60.0,
        "Seg-type": 220 / 3,
        "Seg-event": 2600 / 30,
        "Event-a": 0.0,
        "Event-v": 100.0,
        "Event-av": 0.0,
        "Event-type": 100 / 3,
        "Event-event": 50.0,  # pooled: TP 1, FP 1, FN 1
    }
    by_hand["Avg"] = sum(by_hand.values()) / 10
    assert score.videos == 1 and score.annotations == "corrected"
    assert score.metrics == pytest.approx(by_hand)
    assert list(score.metrics) == list(by_hand)


def test_score_refuses_an_unknown_source_naming_the_stored_ones(tmp_path):
    hand_built_store(tmp_path)

    with pytest.raises(ValueError, match="'handmade'") as refused:
        score_label_source(tmp_path, "valor")

    assert "segment-valor" in str(refused.value)


def test_score_refuses_a_split_without_overlapping_videos(tmp_path):
    hand_built_store(tmp_path)

    with pytest.raises(ValueError, match="none of the 1 videos of split 'val'"):
        score_label_source(tmp_path, "handmade", split="val")
    with pytest.raises(ValueError, match="no video of split 'train'"):
        score_label_source(tmp_path, "handmade", split="train")


def test_the_cli_regenerates_labels_of_extracted_clips_and_trains_on_them(tmp_path: Path) -> None:
    """synth clips -> extract (clip, clap-segments, tiny) -> pseudo-labels generate ->
    train --pseudo-labels generated-...: every step through the `avvp` command."""
    import json

    from typer.testing import CliRunner

    from avvp.pipeline.cli.app import app

    runner = CliRunner()
    clips, root = tmp_path / "clips", str(tmp_path / "store")
    write_synthetic_clips(clips, n=8, seconds=10)
    extracted = runner.invoke(
        app,
        ["extract", str(clips / "videos"), "--store", root, "--size", "tiny", "--device"]
        + ["cpu", "--extractors", "clip,r2plus1d,clap,clap-segments", "--labels", str(clips)],
    )
    assert extracted.exit_code == 0, extracted.output
    generate = ["pseudo-labels", "generate", "--store", root, "--size", "tiny"]
    first = runner.invoke(app, [*generate, "--labels", str(clips), "--device", "cpu", "--json"])
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    assert result["videos_labelled"] == 8 and not result["text_cache_used"]
    again = json.loads(runner.invoke(app, [*generate, "--device", "cpu", "--json"]).stdout)
    assert again["text_cache_used"] and again["videos_labelled"] == 8
    assert (again["windows_written"], again["windows_replaced"]) == (0, 0)
    assert again["windows_unchanged"] == 8

    trained = runner.invoke(
        app,
        ["train", "--store", root, "--pseudo-labels", result["source"], "--size", "tiny"]
        + ["--device", "cpu", "--epochs", "1", "--json"],
    )
    assert trained.exit_code == 0, trained.output
    run = json.loads(trained.stdout)["run"]
    config = json.loads((Path(run) / "config.json").read_text())
    assert config["train"]["data"]["pseudo_labels"] == result["source"]
