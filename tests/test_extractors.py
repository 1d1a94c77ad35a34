"""Feature extractors: recipes, shapes, sizes, weights resolution, offline imports."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import REPO

from avvp.extractors import (
    EXTRACTOR_NAMES,
    RandomInit,
    WeightsNotFoundError,
    create_extractor,
    extractor_class,
)
from avvp.extractors import precision as extractor_precision
from avvp.extractors.clap import (
    AUDIO,
    fit_to_clip,
    quantize_int16,
    repeat_pad,
    segment_chunks,
)

SAMPLE_RATE = 48_000


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """81 frames (a 10.1-s LLP clip at 8 FPS) of 90 x 160 random RGB."""
    return np.random.default_rng(7).integers(0, 256, size=(81, 90, 160, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    """A little over 10 s of noise with tones, peaking above full scale."""
    rng = np.random.default_rng(8)
    time = np.arange(SAMPLE_RATE * 10 + 4805) / SAMPLE_RATE
    signal = 0.6 * np.sin(2 * np.pi * 440 * time) + 0.5 * rng.standard_normal(time.size)
    return signal.astype(np.float32)


def _window_for(name: str, frames: np.ndarray, audio: np.ndarray) -> np.ndarray:
    return frames if extractor_class(name).input.kind == "frames" else audio


def _features(name: str, window: np.ndarray, **options: object) -> torch.Tensor:
    extractor = create_extractor(name, device="cpu", **options)
    return extractor.embed(extractor.preprocess(window)[None])[0]


# Recipes, rendered step by step with plain torch/NumPy.


def _reference_frames(
    frames: np.ndarray, count: int, size: int, mean: tuple, std: tuple
) -> torch.Tensor:
    indices = np.round(np.linspace(0, len(frames) - 1, count)).astype(int)
    images = torch.from_numpy(frames[indices]).permute(0, 3, 1, 2).float() / 255.0
    images = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=False
    )
    return (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_clip_input_follows_the_recipe_step_by_step(frames: np.ndarray) -> None:
    clip_input = extractor_class("clip").make_transform("paper")(frames)
    reference = _reference_frames(
        frames,
        10,
        224,
        (0.48145466, 0.4578275, 0.40821073),
        (0.26862954, 0.26130258, 0.27577711),
    )
    assert clip_input.shape == (10, 3, 224, 224)
    torch.testing.assert_close(clip_input, reference, atol=1e-6, rtol=0)


def test_r2plus1d_input_is_ten_clips_of_eight_recipe_frames(frames: np.ndarray) -> None:
    clips = extractor_class("r2plus1d").make_transform("paper")(frames)
    reference = _reference_frames(
        frames, 80, 112, (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
    )
    assert clips.shape == (10, 3, 8, 112, 112)
    torch.testing.assert_close(
        clips, reference.reshape(10, 8, 3, 112, 112).permute(0, 2, 1, 3, 4), atol=1e-6, rtol=0
    )


def test_clap_audio_is_fitted_to_480000_samples_by_rounded_linspace() -> None:
    ramp = np.arange(SAMPLE_RATE * 10 + 4805, dtype=np.float32)
    fitted = fit_to_clip(ramp)
    assert fitted.shape == (480_000,)
    np.testing.assert_array_equal(fitted, np.round(np.linspace(0, len(ramp) - 1, 480_000)))


def test_int16_round_trip_clips_scales_and_truncates() -> None:
    samples = np.array([0.5, -1.5, 1.0, 3.0e-5, -3.0e-5, 0.99999], dtype=np.float32)
    expected = np.array([16383, -32767, 32767, 0, 0, 32766]) / 32767
    np.testing.assert_allclose(quantize_int16(samples), expected, rtol=0, atol=1e-7)
    assert quantize_int16(samples).dtype == np.float32


def _reference_log_mel(wave: np.ndarray) -> torch.Tensor:
    """laion-clap's mel settings from first principles: (1001, 64) dB for 480,000 samples."""
    import torchaudio

    power = (
        torch.stft(
            torch.from_numpy(wave),
            n_fft=1024,
            hop_length=480,
            window=torch.hann_window(1024),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        ** 2
    )
    filters = torchaudio.functional.melscale_fbanks(
        513, f_min=50.0, f_max=14000.0, n_mels=64, sample_rate=48000, norm=None, mel_scale="htk"
    )
    return 10 * torch.log10(torch.clamp(power.T @ filters, min=1e-10))


def test_clap_map_input_is_the_log_mel_of_the_fitted_clip_stacked_four_times(
    audio: np.ndarray,
) -> None:
    mel_fusion = extractor_class("clap").make_transform("paper")(audio)
    assert mel_fusion.shape == (4, 1001, 64)
    assert all(torch.equal(mel_fusion[0], channel) for channel in mel_fusion[1:])
    reference = _reference_log_mel(quantize_int16(fit_to_clip(audio)))
    torch.testing.assert_close(mel_fusion[0], reference, atol=1e-3, rtol=1e-4)


def test_segment_chunks_start_at_rounded_linspace_and_are_repeat_padded() -> None:
    length = 480_005  # a tenth is 48000.5: NumPy rounds the odd starts to even
    ramp = np.arange(length, dtype=np.float32)
    chunks = segment_chunks(ramp)
    starts = np.round(np.linspace(0, length, 11)).astype(int)[:-1]
    assert chunks.shape == (10, 48_000)
    np.testing.assert_array_equal(chunks[:, 0], starts)
    assert chunks[1, 0] == 48_000 and chunks[3, 0] == 144_002  # 48000.5 and 144001.5
    np.testing.assert_array_equal(chunks[:, -1], starts + 47_999)
    padded = repeat_pad(np.arange(1, 44_101, dtype=np.float32)[None])
    assert padded.shape == (1, AUDIO.clip_samples)
    np.testing.assert_array_equal(padded[0, 44_100:44_102], [1, 2])  # whole copies repeat
    assert padded[0, 10 * 44_100 - 1] == 44_100
    assert not padded[0, 10 * 44_100 :].any()  # the remainder is zero-filled


def test_clap_segment_input_holds_ten_fusion_mels(audio: np.ndarray) -> None:
    mels = extractor_class("clap-segments").make_transform("paper")(audio)
    assert mels.shape == (10, 4, 1001, 64)
    last_chunk = repeat_pad(quantize_int16(segment_chunks(audio)[-1:]))[0]
    torch.testing.assert_close(mels[-1, 3], _reference_log_mel(last_chunk), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_transforms_survive_pickling_for_dataloader_workers(
    name: str, frames: np.ndarray, audio: np.ndarray
) -> None:
    transform = extractor_class(name).make_transform("tiny")
    window = _window_for(name, frames, audio)
    assert torch.equal(pickle.loads(pickle.dumps(transform))(window), transform(window))


# Networks and presets.


def test_registry_names_the_four_extractors_and_rejects_others() -> None:
    assert EXTRACTOR_NAMES == ("clip", "r2plus1d", "clap", "clap-segments")
    with pytest.raises(ValueError, match="unknown extractor 'vggish'"):
        create_extractor("vggish")


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_tiny_size_has_paper_shapes_and_is_deterministic_for_its_seed(
    name: str, frames: np.ndarray, audio: np.ndarray
) -> None:
    window = _window_for(name, frames, audio)
    before = torch.random.get_rng_state()
    first = _features(name, window, size="tiny")
    assert torch.equal(torch.random.get_rng_state(), before)  # nobody's stream moved
    again = _features(name, window, size="tiny")
    other_seed = _features(name, window, size="tiny", weights=RandomInit(seed=1))
    assert first.shape == extractor_class(name).output_shape
    assert first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.allclose(first, other_seed)


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_bfloat16_on_a_cpu_gives_float32_features_within_bf16_rounding(
    name: str, frames: np.ndarray, audio: np.ndarray
) -> None:
    window = _window_for(name, frames, audio)
    exact = _features(name, window, size="tiny", precision="float32")
    extractor = create_extractor(name, size="tiny", device="cpu", precision="bfloat16")
    rounded = extractor.embed(extractor.preprocess(window)[None])[0]
    assert extractor.dtype == torch.bfloat16 and rounded.dtype == torch.float32
    weights = [p for p in extractor.network.parameters() if p.ndim > 0]
    assert {p.dtype for p in weights} == {torch.bfloat16}
    # Scalars such as the logit scales stay exact.
    assert {p.dtype for p in extractor.network.parameters() if p.ndim == 0} <= {torch.float32}
    assert not torch.equal(rounded, exact)
    assert ((rounded - exact).norm() / exact.norm()).item() < 2e-2
    assert F.cosine_similarity(rounded, exact, dim=-1).min().item() > 0.999


@pytest.mark.parametrize(
    ("precision", "device", "size", "native", "expected"),
    [
        ("auto", "cpu", "paper", True, torch.bfloat16),
        ("auto", "cpu", "paper", False, torch.float32),
        ("auto", "cpu", "tiny", True, torch.float32),  # the same features on every machine
        ("auto", "cuda", "tiny", False, torch.bfloat16),
        ("float32", "cuda", "paper", True, torch.float32),
        ("bfloat16", "cpu", "tiny", False, torch.bfloat16),
    ],
)
def test_auto_precision_is_bf16_on_cuda_and_for_paper_networks_on_cpus_with_native_bf16(
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    device: str,
    size: str,
    native: bool,
    expected: torch.dtype,
) -> None:
    monkeypatch.setattr(extractor_precision, "cpu_has_native_bf16", lambda: native)
    dtype = extractor_precision.network_dtype(precision, torch.device(device), size)  # type: ignore[arg-type]
    assert dtype == expected


def test_r2plus1d_in_channels_last_layout_on_cpu_equals_the_default_layout(
    frames: np.ndarray,
) -> None:
    extractor = create_extractor("r2plus1d", size="tiny", device="cpu")
    stem = extractor.network.stem[0].weight
    assert stem.is_contiguous(memory_format=torch.channels_last_3d) and not stem.is_contiguous()
    batch = extractor.preprocess(frames)[None]
    default = copy.deepcopy(extractor.network).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        expected = default(batch.flatten(0, 1)).view(1, 10, 512)
    torch.testing.assert_close(extractor.embed(batch), expected, rtol=1e-5, atol=1e-5)


def test_paper_r2plus1d_with_random_weights_gives_10_by_512(frames: np.ndarray) -> None:
    features = _features("r2plus1d", frames, weights=RandomInit())
    assert features.shape == (10, 512)


@pytest.fixture(scope="module")
def paper_clap_map():
    return create_extractor("clap", weights=RandomInit(), device="cpu")


def test_paper_clap_map_with_random_weights_gives_64_by_768(paper_clap_map, audio) -> None:
    features = paper_clap_map.embed(paper_clap_map.preprocess(audio)[None])
    assert features.shape == (1, 64, 768)


def test_paper_clap_segments_with_random_weights_give_10_unit_vectors(audio) -> None:
    features = _features("clap-segments", audio, weights=RandomInit())
    assert features.shape == (10, 512)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(10))


@pytest.mark.slow
def test_paper_clip_with_random_weights_gives_10_unit_vectors_of_768(frames) -> None:
    features = _features("clip", frames, weights=RandomInit())
    assert features.shape == (10, 768)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(10))


def test_clap_map_regroups_tokens_as_the_htsat_token_semantic_head(audio) -> None:
    extractor = create_extractor("clap", size="tiny", device="cpu")
    mel_fusion = extractor.preprocess(audio)[None]
    clap_map = extractor.embed(mel_fusion)
    htsat = extractor.network.audio_branch
    with torch.inference_mode():
        own = htsat({"mel_fusion": mel_fusion, "longer": torch.tensor([[False]])}, device="cpu")
        # Undo our flattening to (B, C, 2 rows, 32 steps) and run HTSAT's own head on it:
        # the rows' order matters to its (2 x 3) convolution.
        grid = clap_map.transpose(1, 2).reshape(1, 768, 2, 32)
        clipwise = torch.sigmoid(htsat.avgpool(htsat.tscam_conv(grid).flatten(2)).flatten(1))
    torch.testing.assert_close(clipwise, own["clipwise_output"])
    torch.testing.assert_close(clap_map.mean(dim=1), own["embedding"])


def test_text_sides_give_unit_prompt_embeddings_and_logit_scales() -> None:
    prompts = ["A photo of a dog.", "This is a sound of dog"]
    clip = create_extractor("clip", size="tiny", device="cpu")
    clap = create_extractor("clap-segments", size="tiny", device="cpu")
    clip_texts, clap_texts = clip.embed_texts(prompts), clap.embed_texts(prompts)
    assert clip_texts.shape == (2, 768) and clap_texts.shape == (2, 512)
    torch.testing.assert_close(clip_texts.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(clap_texts.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(clap_texts[0], clap_texts[1])
    assert clip.logit_scale == pytest.approx(1 / 0.07)  # untrained value; OpenAI's is 100
    assert clap.logit_scale_a == pytest.approx(1 / 0.07)


def _write_small_roberta(folder: Path) -> None:
    """A RoBERTa tokenizer and config in the layout of a local roberta-base download."""
    from transformers import RobertaConfig

    # Without merges byte-level BPE keeps single characters ("Ġ" marks a space).
    letters = sorted(set("This is a sound of dog cat".replace(" ", "Ġ")))
    words = ["<s>", "<pad>", "</s>", "<unk>", *letters]
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({word: i for i, word in enumerate(words)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    RobertaConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        type_vocab_size=1,
    ).save_pretrained(folder)


def test_paper_clap_prompts_use_the_given_local_roberta(tmp_path: Path) -> None:
    _write_small_roberta(tmp_path / "roberta")
    extractor = create_extractor(
        "clap-segments", weights=RandomInit(), device="cpu", roberta=tmp_path / "roberta"
    )
    texts = extractor.embed_texts(["This is a sound of dog", "This is a sound of cat"])
    assert texts.shape == (2, 512)
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(texts[0], texts[1])


def test_paper_clap_prompts_without_a_local_roberta_name_what_to_fetch(tmp_path: Path) -> None:
    extractor = create_extractor(
        "clap", weights=RandomInit(), device="cpu", roberta=tmp_path / "no-roberta-here"
    )
    with pytest.raises(WeightsNotFoundError, match="roberta-base.*roberta=DIR"):
        extractor.embed_texts(["This is a sound of dog"])


# Weights.


@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("clip", "ViT-L-14.pt"),
        ("r2plus1d", "r2plus1d_18-91a641e6.pth"),
        ("clap", "630k-fusion-best.pt"),
        ("clap-segments", "630k-fusion-best.pt"),
    ],
)
def test_missing_weight_file_names_the_download_and_the_fix(
    name: str, file_name: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(WeightsNotFoundError) as caught:
        create_extractor(name, weights=missing)
    message = str(caught.value)
    assert str(missing) in message and file_name in message and "https://" in message


def test_uncached_default_weights_list_the_places_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="no weight file given") as caught:
        create_extractor("r2plus1d")
    assert str(tmp_path / "hub" / "checkpoints" / "r2plus1d_18-91a641e6.pth") in str(caught.value)


def test_tiny_sizes_refuse_weight_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny sizes are randomly initialised"):
        create_extractor("r2plus1d", size="tiny", weights=tmp_path / "w.pth")


def test_r2plus1d_loads_a_weight_file_and_reports_its_sha256(tmp_path: Path) -> None:
    source = create_extractor("r2plus1d", weights=RandomInit(seed=5), device="cpu")
    file = tmp_path / "r2plus1d_18-91a641e6.pth"
    state = source.network.state_dict()
    torch.save({**state, "fc.weight": torch.zeros(400, 512), "fc.bias": torch.zeros(400)}, file)
    loaded = create_extractor("r2plus1d", weights=file, device="cpu")
    assert loaded.weights_identity == hashlib.sha256(file.read_bytes()).hexdigest()
    for key, value in loaded.network.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_clap_loads_the_laion_checkpoint_layout(paper_clap_map, tmp_path: Path) -> None:
    # The release wraps a DistributedDataParallel state dict and pickles numpy scalars
    # with protocol 4, which torch's weights-only reader refuses.
    state = paper_clap_map.network.state_dict()
    file = tmp_path / "630k-fusion-best.pt"
    checkpoint = {"epoch": np.int64(45), "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(checkpoint, file, pickle_protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(file, weights_only=True)
    loaded = create_extractor("clap-segments", weights=file, device="cpu")
    for key, value in loaded.network.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_a_file_of_other_weights_is_refused_with_the_expected_file(tmp_path: Path) -> None:
    file = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, file)
    with pytest.raises(
        ValueError, match=r"is not R\(2\+1\)D-18 weights \(tensors missing"
    ) as refused:
        create_extractor("r2plus1d", weights=file, device="cpu")
    assert "\n" not in str(refused.value) and "r2plus1d_18-91a641e6.pth from" in str(refused.value)


# Bad input.


def test_bad_windows_get_clear_errors(frames: np.ndarray) -> None:
    clip_transform = extractor_class("clip").make_transform("paper")
    with pytest.raises(ValueError, match=r"uint8 array \(N, H, W, 3\)"):
        clip_transform(frames.astype(np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        clip_transform(frames[:0])
    clap_transform = extractor_class("clap").make_transform("paper")
    with pytest.raises(ValueError, match="1-D float array"):
        clap_transform(np.zeros((2, 48_000), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        clap_transform(np.full(48_000, np.nan, dtype=np.float32))


def test_embed_rejects_a_batch_that_preprocess_did_not_make() -> None:
    extractor = create_extractor("r2plus1d", size="tiny", device="cpu")
    with pytest.raises(ValueError, match=r"expected a batch of shape \(B, 10, 3, 8, 32, 32\)"):
        extractor.embed(torch.zeros(10, 3, 8, 32, 32))


# Offline import.

_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket, sys

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    import numpy as np
    import avvp.extractors.clap
    from avvp.extractors import create_extractor

    extractor = create_extractor("clap-segments", size="tiny", device="cpu")
    audio = np.zeros(480_000, dtype=np.float32)
    print(tuple(extractor.embed(extractor.preprocess(audio)[None]).shape))
    print(tuple(extractor.embed_texts(["This is a sound of dog"]).shape))
    print("laion_clap" in sys.modules)
    """
)


def test_clap_imports_builds_and_embeds_offline_without_running_laion_clap_init() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(REPO / "nonexistent")},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["(1, 10, 512)", "(1, 512)", "False"]


def test_protocol_4_checkpoints_naming_other_globals_are_refused(tmp_path: Path) -> None:
    from avvp.extractors.base import WeightsFileError, load_tensor_file

    file = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "hook": print}, file, pickle_protocol=4)
    with pytest.raises(WeightsFileError, match="names a Python object, print,"):
        load_tensor_file(file, expected="weights", fix="re-download it")
    torch.save({"weights": torch.ones(2), "epoch": np.int64(3)}, file, pickle_protocol=4)
    loaded = load_tensor_file(file, expected="weights", fix="re-download it")
    assert torch.equal(loaded["weights"], torch.ones(2)) and loaded["epoch"] == 3
