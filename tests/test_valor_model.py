"""The VALOR baseline network, its loss and the import of official VALOR state dicts."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from avvp.model.config import ModelConfig, get_model_config
from avvp.model.outputs import ParserOutput
from avvp.model.valor import build_valor, valor_from_official_state_dict, valor_loss

BATCH, SEGMENTS, CLASSES, HEADS = 2, 10, 25, 4
TINY = {"hidden_dim": 32, "num_heads": HEADS, "ffn_dim": 64, "num_layers": 2}
FEATURE_FAMILIES = {"clapclip": (768, 768), "vggish-resnet": (128, 2048)}


def tiny_config(family: str) -> ModelConfig:
    return replace(get_model_config(f"valor-{family}"), **TINY)


def random_inputs(config: ModelConfig, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    spec = config.inputs
    audio_steps = 64 if spec.audio_kind == "clap_map" else SEGMENTS
    visual_steps = 8 * SEGMENTS if spec.visual_kind == "frames8" else SEGMENTS
    return (
        torch.randn(BATCH, audio_steps, spec.audio_dim, generator=generator),
        torch.randn(BATCH, visual_steps, spec.visual_dim, generator=generator),
        torch.randn(BATCH, SEGMENTS, spec.st_dim, generator=generator),
    )


def official_state_dict(family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the key names and shapes of VALOR's MMIL_Net (main_network.py)."""
    generator = torch.Generator().manual_seed(seed)
    audio_dim, visual_dim = FEATURE_FAMILIES[family]
    hidden, ffn = TINY["hidden_dim"], TINY["ffn_dim"]

    def random(*shape: int, scale: float) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=generator)

    def linear(name: str, fan_in: int, fan_out: int) -> dict[str, torch.Tensor]:
        return {
            f"{name}.weight": random(fan_out, fan_in, scale=1 / math.sqrt(fan_in)),
            f"{name}.bias": random(fan_out, scale=0.1),
        }

    def layer_norm(name: str) -> dict[str, torch.Tensor]:
        return {
            f"{name}.weight": 1 + random(hidden, scale=0.1),
            f"{name}.bias": random(hidden, scale=0.1),
        }

    state = {
        **linear("fc_prob", hidden, CLASSES),
        **linear("fc_frame_att", hidden, CLASSES),
        **linear("fc_av_att", hidden, CLASSES),
        **linear("fc_a", audio_dim, hidden),
        **linear("fc_v", visual_dim, hidden),
        **linear("fc_st", 512, hidden),
        **linear("fc_fusion", 2 * hidden, hidden),
    }
    for index in range(TINY["num_layers"]):
        prefix = f"hat_encoder.layers.{index}"
        for attention in ("self_attn", "cm_attn"):
            state[f"{prefix}.{attention}.in_proj_weight"] = random(
                3 * hidden, hidden, scale=1 / math.sqrt(hidden)
            )
            state[f"{prefix}.{attention}.in_proj_bias"] = random(3 * hidden, scale=0.1)
            state |= linear(f"{prefix}.{attention}.out_proj", hidden, hidden)
        state |= linear(f"{prefix}.linear1", hidden, ffn) | linear(f"{prefix}.linear2", ffn, hidden)
        state |= layer_norm(f"{prefix}.norm1") | layer_norm(f"{prefix}.norm2")
    for final_norm in ("hat_encoder.final_norm_a", "hat_encoder.final_norm_v"):
        state[f"{final_norm}.weight"] = torch.ones(hidden)
        state[f"{final_norm}.bias"] = torch.zeros(hidden)
    return state


def reference_forward(
    state: dict[str, torch.Tensor], audio: torch.Tensor, visual: torch.Tensor, st: torch.Tensor
) -> dict[str, torch.Tensor]:
    """VALOR's forward in plain tensor math, in the official order of operations."""

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def norm(x: torch.Tensor, name: str) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        variance = centred.pow(2).mean(-1, keepdim=True)
        return (
            centred / torch.sqrt(variance + 1e-5) * state[f"{name}.weight"] + state[f"{name}.bias"]
        )

    def attention(query: torch.Tensor, source: torch.Tensor, name: str) -> torch.Tensor:
        weight_q, weight_k, weight_v = state[f"{name}.in_proj_weight"].chunk(3)
        bias_q, bias_k, bias_v = state[f"{name}.in_proj_bias"].chunk(3)
        batch, steps, width = query.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, -1, HEADS, width // HEADS).transpose(1, 2)

        q = heads(query @ weight_q.T + bias_q)
        k = heads(source @ weight_k.T + bias_k)
        v = heads(source @ weight_v.T + bias_v)
        scores = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // HEADS), dim=-1)
        merged = (scores @ v).transpose(1, 2).reshape(batch, steps, width)
        return linear(merged, f"{name}.out_proj")

    def han_layer(x: torch.Tensor, other: torch.Tensor, index: int) -> torch.Tensor:
        prefix = f"hat_encoder.layers.{index}"
        x = x + attention(x, other, f"{prefix}.cm_attn") + attention(x, x, f"{prefix}.self_attn")
        x = norm(x, f"{prefix}.norm1")
        hidden = torch.relu(linear(x, f"{prefix}.linear1"))
        return norm(x + linear(hidden, f"{prefix}.linear2"), f"{prefix}.norm2")

    batch = audio.shape[0]
    if audio.shape[1] == 64:
        grid = audio.permute(0, 2, 1).reshape(batch, -1, 2, 32)
        upsampled = F.interpolate(grid, size=(2, 1024), mode="bicubic")  # (B, D, 2, 1024)
        projected = linear(upsampled.permute(0, 2, 3, 1), "fc_a").mean(dim=1)  # (B, 1024, H)
        audio_x = F.adaptive_avg_pool1d(projected.transpose(1, 2), SEGMENTS).transpose(1, 2)
    else:
        audio_x = linear(audio, "fc_a")
    visual_x = linear(visual, "fc_v")
    if visual.shape[1] == 8 * SEGMENTS:
        visual_x = visual_x.reshape(batch, SEGMENTS, 8, -1).mean(dim=2)
    visual_x = linear(torch.cat([visual_x, linear(st, "fc_st")], -1), "fc_fusion")
    for index in range(TINY["num_layers"]):
        audio_x = han_layer(audio_x, visual_x, index)
        visual_x = han_layer(visual_x, audio_x, index)

    both = torch.stack([audio_x, visual_x], dim=2)
    logits = linear(both, "fc_prob")
    over_time = torch.softmax(linear(both, "fc_frame_att"), dim=1) * torch.sigmoid(logits)
    return {
        "frame_logits": logits,
        "global_prob": (over_time * torch.softmax(linear(both, "fc_av_att"), dim=2)).sum((1, 2)),
        "a_prob": over_time[:, :, 0].sum(1),
        "v_prob": over_time[:, :, 1].sum(1),
    }


@pytest.mark.parametrize("family", FEATURE_FAMILIES)
def test_forward_gives_contract_shapes_for_each_feature_family(family: str) -> None:
    config = tiny_config(family)
    output = build_valor(config).eval()(*random_inputs(config))
    assert isinstance(output, ParserOutput)
    for name in ("global_prob", "a_prob", "v_prob"):
        assert getattr(output, name).shape == (BATCH, CLASSES)
    assert output.frame_prob.shape == output.frame_logits.shape == (BATCH, SEGMENTS, 2, CLASSES)
    assert output.aux == {}


@pytest.mark.parametrize("family", FEATURE_FAMILIES)
def test_probabilities_lie_in_unit_interval(family: str) -> None:
    config = tiny_config(family)
    output = build_valor(config).eval()(*random_inputs(config))
    for name in ("global_prob", "a_prob", "v_prob", "frame_prob"):
        probabilities = getattr(output, name)
        assert bool(((probabilities >= 0) & (probabilities <= 1)).all()), name


def test_mmil_attention_sums_to_one_over_time_and_over_modalities() -> None:
    config = tiny_config("clapclip")
    aux = build_valor(config).eval()(*random_inputs(config), with_aux=True).aux
    torch.testing.assert_close(aux["temporal_attention"].sum(dim=1), torch.ones(BATCH, 2, CLASSES))
    torch.testing.assert_close(
        aux["modality_attention"].sum(dim=2), torch.ones(BATCH, SEGMENTS, CLASSES)
    )


@pytest.mark.parametrize("family", FEATURE_FAMILIES)
def test_imported_official_state_dict_reproduces_reference_math(family: str) -> None:
    official = official_state_dict(family)
    config, ours = valor_from_official_state_dict(official, num_heads=HEADS)
    assert config == tiny_config(family)
    model = build_valor(config).eval()
    model.load_state_dict(ours)
    inputs = random_inputs(config, seed=1)
    with torch.no_grad():
        output = model(*inputs)
        expected = reference_forward(official, *inputs)
    for name, value in expected.items():
        torch.testing.assert_close(getattr(output, name), value, atol=1e-5, rtol=1e-5)


def test_import_accepts_wrapped_and_data_parallel_state_dicts() -> None:
    official = official_state_dict("clapclip")
    wrapped = {
        "epoch": 3,
        "state_dict": {f"module.{key}": value for key, value in official.items()},
    }
    wrapped_config, wrapped_ours = valor_from_official_state_dict(wrapped, num_heads=HEADS)
    plain_config, plain_ours = valor_from_official_state_dict(official, num_heads=HEADS)
    assert wrapped_config == plain_config
    assert wrapped_ours.keys() == plain_ours.keys()
    assert wrapped_ours["segment_head.weight"] is official["fc_prob.weight"]


def test_corrupted_state_dict_names_missing_and_unexpected_keys() -> None:
    official = official_state_dict("clapclip")
    del official["hat_encoder.layers.1.norm2.bias"]
    official["hat_encoder.layers.1.extra.weight"] = torch.zeros(3)
    official["fc_fusion.weight"] = torch.zeros(5, 5)
    with pytest.raises(ValueError) as error:
        valor_from_official_state_dict(official, num_heads=HEADS)
    message = str(error.value)
    assert "hat_encoder.layers.1.norm2.bias" in message
    assert "hat_encoder.layers.1.extra.weight" in message
    assert "fc_fusion.weight: (5, 5)" in message


def test_state_dict_without_valor_heads_is_refused_before_shape_inference() -> None:
    official = official_state_dict("clapclip")
    del official["fc_prob.weight"]
    with pytest.raises(ValueError, match=r"missing \['fc_prob.weight'\]"):
        valor_from_official_state_dict(official)


def test_pre_norm_checkpoint_is_refused() -> None:
    official = official_state_dict("clapclip")
    official["hat_encoder.final_norm_v.bias"] += 0.5
    with pytest.raises(ValueError, match="pre_norm"):
        valor_from_official_state_dict(official)


def test_loss_gradients_reach_every_parameter() -> None:
    config = tiny_config("clapclip")
    model = build_valor(config).train()
    generator = torch.Generator().manual_seed(2)
    weak = torch.randint(0, 2, (BATCH, CLASSES), generator=generator).float()
    pseudo = torch.randint(0, 2, (2, BATCH, SEGMENTS, CLASSES), generator=generator).float()
    valor_loss(model(*random_inputs(config)), weak, pseudo[0], pseudo[1])["total"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name


def test_eval_forward_is_deterministic_while_training_forward_uses_dropout() -> None:
    config = tiny_config("vggish-resnet")
    model = build_valor(config)
    inputs = random_inputs(config)
    with torch.no_grad():
        train_outputs = [model.train()(*inputs).frame_logits for _ in range(2)]
        eval_outputs = [model.eval()(*inputs).frame_logits for _ in range(2)]
    assert not torch.equal(*train_outputs)
    assert torch.equal(*eval_outputs)


def test_loss_terms_pair_audio_and_visual_logits_with_their_own_pseudo_labels() -> None:
    frame_logits = torch.zeros(1, SEGMENTS, 2, CLASSES)
    frame_logits[:, :, 0] = 30.0  # confident audio, uninformed visual
    output = ParserOutput(
        global_prob=torch.zeros(1, CLASSES),
        a_prob=torch.zeros(1, CLASSES),
        v_prob=torch.zeros(1, CLASSES),
        frame_prob=torch.sigmoid(frame_logits),
        frame_logits=frame_logits,
    )
    ones = torch.ones(1, SEGMENTS, CLASSES)
    terms = valor_loss(output, torch.ones(1, CLASSES), audio_pseudo=ones, visual_pseudo=ones)
    assert terms["audio_pseudo"].item() < 1e-6
    assert terms["visual_pseudo"].item() == pytest.approx(math.log(2))
    # A video prob of exactly 0 against a positive label is clamped to 1e-7, not infinite.
    assert terms["video"].item() == pytest.approx(-math.log(1e-7), rel=1e-4)
    assert terms["total"].item() == pytest.approx(
        sum(terms[name].item() for name in ("video", "audio_pseudo", "visual_pseudo"))
    )


@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        ("cpu", torch.bfloat16),
        pytest.param(
            "cuda",
            torch.float16,
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
            ],
        ),
    ],
)
def test_forward_and_loss_run_under_autocast(device: str, dtype: torch.dtype) -> None:
    config = tiny_config("clapclip")
    model = build_valor(config).train().to(device)
    labels = torch.ones(BATCH, CLASSES, device=device)
    pseudo = torch.ones(BATCH, SEGMENTS, CLASSES, device=device)
    inputs = [tensor.to(device) for tensor in random_inputs(config)]
    with torch.autocast(device, dtype=dtype):
        terms = valor_loss(model(*inputs), labels, pseudo, pseudo)
    assert terms["total"].dtype == torch.float32
    assert bool(torch.isfinite(terms["total"]))


def test_features_not_matching_the_input_spec_get_a_readable_error() -> None:
    config = tiny_config("clapclip")
    audio, visual, visual_st = random_inputs(config)
    with pytest.raises(ValueError, match=r"audio features must be \(2, 64, 768\)"):
        build_valor(config)(audio[..., :128], visual, visual_st)


def test_clapclip_preset_matches_valor_plus_plus_script() -> None:
    # scripts/train_valor++.sh: hidden 256, 8 heads, feed-forward 1024, 4 layers.
    preset = get_model_config("valor-clapclip")
    official = (256, 8, 1024, 4)
    assert (preset.hidden_dim, preset.num_heads, preset.ffn_dim, preset.num_layers) == official
