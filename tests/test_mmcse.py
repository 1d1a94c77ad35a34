"""MM-CSE: equality with the official network and training step, import, ablations, shapes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avvp.model.activations import FeedForward, softmax_short_rows
from avvp.model.attention import ClassTokenAttention
from avvp.model.config import MMCSEOptions, ModelConfig, get_model_config
from avvp.model.cosine import COSINE_EPS, clamped_norm
from avvp.model.dropout import dropout, relu_dropout
from avvp.model.losses import MMCSELossConfig, co_occurrence_targets, mmcse_loss
from avvp.model.mmcse import LGSF, MMCSE, build_mmcse
from avvp.model.mmcse_import import mmcse_from_official_state_dict
from avvp.model.outputs import ParserOutput

ATOL = 1e-5
PREDICTIONS = ("global_prob", "a_prob", "v_prob", "frame_prob", "frame_logits")
TINY = {"hidden_dim": 32, "class_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 24}


@pytest.fixture(scope="module")
def reference(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "mmcse_official_clapclip.pt", weights_only=True)


def operating_point(reference: dict, name: str) -> tuple[dict, dict, dict, dict]:
    """(official state dict, train outputs, test outputs, loss terms) of a fixture point."""
    if name == "default":
        return (
            reference["state_dict"],
            reference["train"],
            reference["test"],
            reference["loss"]["terms"],
        )
    sharp = reference["sharp_x2"]
    # The fixture's rule: tensors with dim >= 2 times the scale, 1-D tensors unchanged.
    state = {
        key: tensor * sharp["scale"] if tensor.dim() >= 2 else tensor
        for key, tensor in reference["state_dict"].items()
    }
    return state, sharp["train"], sharp["test"], sharp["loss_terms"]


def imported_model(state: dict) -> MMCSE:
    config, ours = mmcse_from_official_state_dict(state)
    model = build_mmcse(config)
    model.load_state_dict(ours, strict=True)
    return model.eval()


def run(model: MMCSE, reference: dict, with_aux: bool):
    inputs = reference["inputs"]
    return model(inputs["audio"], inputs["visual"], inputs["visual_st"], with_aux=with_aux)


def official_loss(output, reference: dict, config: MMCSELossConfig | None = None):
    labels = reference["loss"]
    return mmcse_loss(
        output,
        labels["labels"],
        labels["audio_pseudo_labels"],
        labels["visual_pseudo_labels"],
        config,
    )


def assert_close(ours: torch.Tensor, official: torch.Tensor, name: str) -> None:
    assert ours.shape == official.shape, name
    torch.testing.assert_close(ours, official, atol=ATOL, rtol=0, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("point", ["default", "sharp_x2"])
def test_training_forward_equals_official_outputs_maps_and_aux_losses(
    reference: dict, point: str
) -> None:
    state, train, _, _ = operating_point(reference, point)
    with torch.no_grad():
        output = run(imported_model(state), reference, with_aux=True)
    assert set(output.aux) == set(train) - set(PREDICTIONS)
    for name, official in train.items():
        ours = getattr(output, name) if name in PREDICTIONS else output.aux[name]
        assert_close(ours, official, f"{point} train {name}")


@pytest.mark.parametrize("point", ["default", "sharp_x2"])
def test_inference_forward_equals_official_and_has_no_aux(reference: dict, point: str) -> None:
    state, _, test, _ = operating_point(reference, point)
    with torch.no_grad():
        output = run(imported_model(state), reference, with_aux=False)
    assert output.aux == {}
    for name, official in test.items():
        assert_close(getattr(output, name), official, f"{point} test {name}")


@pytest.mark.parametrize("point", ["default", "sharp_x2"])
def test_every_loss_term_equals_the_official_training_step(reference: dict, point: str) -> None:
    state, _, _, official_terms = operating_point(reference, point)
    with torch.no_grad():
        loss = official_loss(run(imported_model(state), reference, with_aux=True), reference)
    ours = {**loss.terms, "loss_total": loss.total}
    assert set(ours) == set(official_terms)
    for name, official in official_terms.items():
        assert_close(ours[name], official, f"{point} {name}")


def test_co_occurrence_targets_equal_the_official_maps(reference: dict) -> None:
    labels = reference["loss"]
    targets = co_occurrence_targets(labels["audio_pseudo_labels"], labels["visual_pseudo_labels"])
    for name, target in targets.items():
        torch.testing.assert_close(target, labels[name.removeprefix("map_") + "_map"])


def test_parameters_equal_official_counts_of_train_graph_and_inference_forward(
    reference: dict,
) -> None:
    counts = reference["num_params"]
    model = imported_model(reference["state_dict"])
    total = sum(p.numel() for p in model.parameters())
    inference = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("decoders."))
    assert total == counts["used_in_train_loss_graph"]
    assert inference == counts["used_in_test_forward"]

    official_loss(run(model, reference, with_aux=True), reference).total.backward()
    assert sum(p.numel() for p in model.parameters() if p.grad is not None) == total
    model.zero_grad(set_to_none=True)
    output = run(model, reference, with_aux=False)
    sum(getattr(output, name).sum() for name in PREDICTIONS).backward()
    assert sum(p.numel() for p in model.parameters() if p.grad is not None) == inference


def test_import_unwraps_checkpoint_and_strips_dataparallel_prefix(reference: dict) -> None:
    state = reference["state_dict"]
    _, plain = mmcse_from_official_state_dict(state)
    wrapped = {"epoch": 3, "model": {f"module.{key}": value for key, value in state.items()}}
    config, ours = mmcse_from_official_state_dict(wrapped)
    assert config == get_model_config("mmcse-clapclip")
    assert ours.keys() == plain.keys()
    assert all(torch.equal(ours[key], plain[key]) for key in plain)


def test_import_rejects_corrupted_state_dict_listing_missing_and_unexpected_keys(
    reference: dict,
) -> None:
    state = dict(reference["state_dict"])
    del state["a_unmix.7.1.weight"]
    state["av_enhance.layers.0.SECM_3.attn.in_proj_weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="checkpoint_best.pth") as error:
        mmcse_from_official_state_dict(state, source="broken.pth")
    message = str(error.value)
    assert "broken.pth" in message
    assert "missing keys: a_unmix.7.1.weight;" in message
    assert "unexpected keys: av_enhance.layers.0.SECM_3.attn.in_proj_weight" in message


def test_import_rejects_a_tensor_of_the_wrong_shape_naming_it(reference: dict) -> None:
    state = dict(reference["state_dict"])
    state["v_unmix.3.4.weight"] = state["v_unmix.3.4.weight"][:, :64]
    with pytest.raises(ValueError, match=r"v_unmix\.3\.4\.weight has shape \(128, 64\)"):
        mmcse_from_official_state_dict(state)


def test_import_infers_vggish_and_resnet_inputs_from_weight_shapes(reference: dict) -> None:
    state = dict(reference["state_dict"])
    state["fc_a.weight"] = torch.randn(256, 128)
    state["fc_v.weight"] = torch.randn(256, 2048)
    config, ours = mmcse_from_official_state_dict(state)
    assert config == get_model_config("mmcse-vggish-resnet")
    build_mmcse(config).load_state_dict(ours, strict=True)


def test_vggish_and_resnet_frame_inputs_give_the_output_shapes() -> None:
    model = build_mmcse(get_model_config("mmcse-vggish-resnet"))
    audio, visual, visual_st = (
        torch.randn(2, 10, 128),
        torch.randn(2, 80, 2048),
        torch.randn(2, 10, 512),
    )
    output = model(audio, visual, visual_st, with_aux=True)
    for name in ("global_prob", "a_prob", "v_prob"):
        assert getattr(output, name).shape == (2, 25)
    assert output.frame_prob.shape == output.frame_logits.shape == (2, 10, 2, 25)
    assert {output.aux[f"map_{pair}"].shape for pair in ("aa", "av", "vv", "va")} == {
        (2, 10, 25, 25)
    }


def test_frame_inputs_are_averaged_per_segment_after_projection() -> None:
    model = build_mmcse(replace(get_model_config("mmcse-vggish-resnet"), **TINY)).eval()
    visual = torch.randn(2, 80, 2048)
    repeated = visual.unflatten(1, (10, 8)).mean(dim=2).repeat_interleave(8, dim=1)
    audio, visual_st = torch.randn(2, 10, 128), torch.randn(2, 10, 512)
    with torch.no_grad():
        a = model(audio, visual, visual_st).frame_logits
        b = model(audio, repeated, visual_st).frame_logits
    torch.testing.assert_close(a, b)


def test_wrong_input_shape_is_refused_with_a_readable_error() -> None:
    model = build_mmcse(replace(get_model_config("mmcse-clapclip"), **TINY))
    with pytest.raises(ValueError, match=r"audio features must be \(2, 64, 768\)"):
        model(torch.randn(2, 10, 768), torch.randn(2, 10, 768), torch.randn(2, 10, 512))


ABLATIONS = {
    "no_decoupling": MMCSEOptions(decoupling=False),
    "no_background": MMCSEOptions(background=False),
    "no_secm": MMCSEOptions(secm=False),
    "no_lgsf": MMCSEOptions(lgsf=False),
    "no_intra_path": MMCSEOptions(intra_path=False),
    "no_cross_path": MMCSEOptions(cross_path=False),
}


def tiny_training_step(options: MMCSEOptions) -> tuple[set[str], set[str], set[str]]:
    """(parameters built, parameters given a gradient, loss terms) of one tiny step."""
    torch.manual_seed(0)
    config = replace(get_model_config("mmcse-clapclip"), mmcse=options, **TINY)
    model = build_mmcse(config)
    output = model(
        torch.randn(2, 64, 768), torch.randn(2, 10, 768), torch.randn(2, 10, 512), with_aux=True
    )
    pseudo = (torch.rand(2, 2, 10, 25) > 0.7).float()
    loss = mmcse_loss(output, pseudo.amax(dim=(0, 2)), pseudo[0], pseudo[1])
    loss.total.backward()
    built = {name for name, _ in model.named_parameters()}
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    return built, with_grad, set(loss.terms)


@pytest.mark.parametrize("ablation", list(ABLATIONS))
def test_each_ablation_changes_the_loss_graph_and_leaves_no_parameter_unused(
    ablation: str,
) -> None:
    _, full_graph, full_terms = tiny_training_step(MMCSEOptions())
    built, graph, terms = tiny_training_step(ABLATIONS[ablation])
    assert graph == built
    assert graph != full_graph
    rec, ort = {"loss_a_rec", "loss_v_rec", "loss_rec"}, {"loss_a_ort", "loss_v_ort", "loss_ort"}
    dropped_terms = {
        "no_decoupling": rec | ort,
        "no_background": ort,
        "no_secm": {"loss_aa", "loss_av", "loss_vv", "loss_va", "loss_ec"},
        "no_lgsf": set(),
        "no_intra_path": {"loss_aa", "loss_vv"},
        "no_cross_path": {"loss_av", "loss_va"},
    }
    assert full_terms - terms == dropped_terms[ablation]


def test_loss_switches_drop_their_terms_from_the_total(reference: dict) -> None:
    with torch.no_grad():
        output = run(imported_model(reference["state_dict"]), reference, with_aux=True)
    full = official_loss(output, reference)
    off = MMCSELossConfig(reconstruction=False, orthogonality=False, co_occurrence=False)
    base = official_loss(output, reference, off)
    assert set(base.terms) == {"loss_video", "loss_valor_a", "loss_valor_v"}
    torch.testing.assert_close(base.total, sum(base.terms.values()))
    doubled = official_loss(output, reference, MMCSELossConfig(lambda1=0.2, lambda2=0.2))
    expected = full.total + 0.1 * (full.terms["loss_ort"] + full.terms["loss_ec"])
    torch.testing.assert_close(doubled.total, expected)


def test_loss_asks_for_with_aux_when_auxiliaries_are_missing(reference: dict) -> None:
    with torch.no_grad():
        output = run(imported_model(reference["state_dict"]), reference, with_aux=False)
    with pytest.raises(ValueError, match="with_aux=True"):
        official_loss(output, reference)


ON_CPU_AND_GPU = pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
            ],
        ),
    ],
)


def tiny_inputs(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.randn(2, 64, 768, device=device),
        torch.randn(2, 10, 768, device=device),
        torch.randn(2, 10, 512, device=device),
    )


@ON_CPU_AND_GPU
def test_training_step_runs_under_bfloat16_autocast(device: str) -> None:
    torch.manual_seed(0)
    model = build_mmcse(replace(get_model_config("mmcse-clapclip"), **TINY)).to(device)
    pseudo = (torch.rand(2, 2, 10, 25, device=device) > 0.7).float()
    with torch.autocast(device, dtype=torch.bfloat16):
        output = model(*tiny_inputs(device), True)
        loss = mmcse_loss(output, pseudo.amax(dim=(0, 2)), pseudo[0], pseudo[1])
    loss.total.backward()
    assert torch.isfinite(loss.total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@ON_CPU_AND_GPU
def test_inference_under_bfloat16_autocast_is_close_to_float32(device: str) -> None:
    # Inference (no grad) takes paths of its own (FeedForward's row blocks on a CPU):
    # they once wrote bf16 products into float32 buffers and failed under autocast.
    torch.manual_seed(0)
    model = build_mmcse(replace(get_model_config("mmcse-clapclip"), **TINY)).to(device).eval()
    inputs = tiny_inputs(device)
    with torch.no_grad():
        exact = model(*inputs, False)
        with torch.autocast(device, dtype=torch.bfloat16):
            rounded = model(*inputs, False)
    torch.testing.assert_close(rounded.frame_prob.float(), exact.frame_prob, atol=0.03, rtol=0)
    torch.testing.assert_close(rounded.global_prob.float(), exact.global_prob, atol=0.03, rtol=0)


def test_ablation_options_round_trip_through_the_config_dict() -> None:
    config = replace(get_model_config("mmcse-clapclip"), mmcse=MMCSEOptions(secm=False))
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="cannot both be off"):
        MMCSEOptions(intra_path=False, cross_path=False)


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
@pytest.mark.parametrize("need_map", [False, True], ids=["no-map", "map"])
def test_class_token_attention_equals_torch_multihead_attention_values_and_gradients(
    cross: bool, need_map: bool
) -> None:
    torch.manual_seed(0)
    ours = ClassTokenAttention(16, 4, dropout=0.0)
    theirs = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 5, 16, requires_grad=True)
    source = torch.randn(2, 3, 5, 16) if cross else None
    attended, weights = ours(x, source, need_map)
    query = x.reshape(6, 5, 16)
    key = query if source is None else source.reshape(6, 5, 16)
    expected, expected_weights = theirs(query, key, key, need_weights=need_map)
    torch.testing.assert_close(attended, expected.view(2, 3, 5, 16), atol=1e-6, rtol=1e-5)
    if need_map:
        torch.testing.assert_close(weights, expected_weights.view(2, 3, 5, 5))
    else:
        assert weights is None
    (ours_grad,) = torch.autograd.grad(attended.square().sum(), x)
    (theirs_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(ours_grad, theirs_grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_class_token_attention_without_autograd_runs_in_blocks_with_the_same_result(
    cross: bool,
) -> None:
    torch.manual_seed(0)
    attention = ClassTokenAttention(256, 8, dropout=0.1).eval()
    # 160 segments of 25 tokens of 256: blocks of 109 segments, the second one partial.
    x = torch.randn(4, 40, 25, 256)
    source = torch.randn(4, 40, 25, 256) if cross else None
    whole, whole_map = attention(x, source, need_map=True)
    with torch.inference_mode():
        blocked, blocked_map = attention(x, source, need_map=True)
        unmapped, no_map = attention(x, source, need_map=False)
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(blocked_map, whole_map)
    torch.testing.assert_close(unmapped, whole)
    assert no_map is None


def test_on_a_cpu_the_encoder_runs_in_passes_of_few_windows_with_the_same_results() -> None:
    torch.manual_seed(0)
    model = build_mmcse(replace(get_model_config("mmcse-clapclip"), **TINY)).eval()
    windows = model.encoder.windows_per_pass
    batch = windows + windows // 2 + 1  # one whole pass and a part
    shapes = model.config.inputs.feature_shapes()
    inputs = [torch.randn(batch, *shapes[name]) for name in ("audio", "visual", "visual_st")]

    def parse() -> tuple[ParserOutput, dict[str, torch.Tensor], ParserOutput]:
        model.zero_grad(set_to_none=True)
        output = model(*inputs, with_aux=True)
        losses = [value for name, value in output.aux.items() if name.startswith("loss_")]
        (output.global_prob.sum() + output.frame_logits.square().mean() + sum(losses)).backward()
        with torch.inference_mode():
            inferred = model(*inputs)
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return output, grads, inferred

    passes, passes_grads, passes_inferred = parse()
    model.encoder.windows_per_pass = batch
    whole, whole_grads, whole_inferred = parse()
    assert passes.aux.keys() == whole.aux.keys() and "map_av" in whole.aux
    for name in passes.aux:
        torch.testing.assert_close(passes.aux[name], whole.aux[name])
    for name in PREDICTIONS:
        torch.testing.assert_close(getattr(passes, name), getattr(whole, name))
        torch.testing.assert_close(getattr(passes_inferred, name), getattr(whole_inferred, name))
    # A weight's gradient sums the passes' sums: the same terms, another float rounding,
    # whose error scales with the terms summed (the gradient's scale), not with an
    # element that they nearly cancel to.
    assert (
        passes_grads.keys() == whole_grads.keys() and "encoder.layers.0.norm.weight" in whole_grads
    )
    for name, at_once in whole_grads.items():
        scale = max(1.0, at_once.abs().max().item())
        torch.testing.assert_close(passes_grads[name], at_once, rtol=1e-4, atol=1e-6 * scale)


def test_class_token_attention_drops_weights_only_in_training() -> None:
    torch.manual_seed(0)
    attention = ClassTokenAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 3, 5, 16)
    _, training_map = attention(x, None, need_map=True)
    assert training_map is not None
    # The returned map is taken after dropout, as nn.MultiheadAttention returns it.
    assert not torch.allclose(training_map.sum(-1), torch.ones(2, 3, 5))
    attention.eval()
    _, eval_map = attention(x, None, need_map=True)
    assert eval_map is not None
    torch.testing.assert_close(eval_map.sum(-1), torch.ones(2, 3, 5))


def test_lgsf_relevance_equals_torch_cosine_similarity_in_values_and_gradients() -> None:
    torch.manual_seed(0)
    lgsf = LGSF(8, cross=False)
    z = torch.randn(2, 4, 3, 8, requires_grad=True)
    # Only the first channel can be non-zero, so about half the local features are all
    # zero after the ReLU and the eps clamp decides their cosine (and zeroes their grad).
    with torch.no_grad():
        lgsf.local_proj.bias[:] = -100.0
        lgsf.local_proj.bias[0] = 0.0
    global_side = F.relu(lgsf.global_proj(z)).mean(dim=1, keepdim=True)
    local = F.relu(lgsf.local_proj(z))
    assert (local.norm(dim=-1) == 0).any() and (local.norm(dim=-1) > 0).any()
    relevance = torch.sigmoid(F.cosine_similarity(local, global_side, dim=-1))
    fused = lgsf(z, None)
    torch.testing.assert_close(fused.relevance, relevance.unsqueeze(-1))
    torch.testing.assert_close(fused.global_feature, global_side)
    grad = torch.randn_like(relevance)
    expected = torch.autograd.grad(relevance, [z, *lgsf.parameters()], grad)
    ours = torch.autograd.grad(fused.relevance.squeeze(-1), [z, *lgsf.parameters()], grad)
    for mine, torchs in zip(ours, expected, strict=True):
        torch.testing.assert_close(mine, torchs)


def test_clamped_norm_has_torch_s_norm_and_clamp_gradient_also_at_zero_and_below_the_clamp() -> (
    None
):
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64)
    x[1] = 0.0  # a zero norm: torch's norm backward masks its 0 / 0
    x[2] = 1e-10  # a norm under the clamp: clamp_min's backward gives nothing back
    grad = torch.randn(6, dtype=torch.float64)
    ours_x, torch_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = clamped_norm(ours_x)
    expected = torch.linalg.vector_norm(torch_x, dim=-1).clamp_min(COSINE_EPS)
    ours.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(ours_x.grad, torch_x.grad)
    assert (ours_x.grad[1:3] == 0).all() and ours_x.grad.isfinite().all()


def test_relu_dropout_in_place_equals_relu_then_dropout_in_values_and_gradients() -> None:
    torch.manual_seed(0)
    x = torch.randn(1000, 37)
    grad = torch.randn(1000, 37)
    reference_input = x.clone().requires_grad_()
    torch.manual_seed(3)
    reference = dropout(F.relu(reference_input), 0.2, training=True)
    reference.backward(grad)
    fused_input = x.clone().requires_grad_()
    fresh = fused_input * 1.0  # a fresh non-leaf result, as a Linear's
    torch.manual_seed(3)
    fused = relu_dropout(fresh, 0.2, training=True)
    fused.backward(grad)
    assert fused.data_ptr() == fresh.data_ptr()  # in place: no new tensor
    assert torch.equal(fused, reference)
    assert torch.equal(fused_input.grad, reference_input.grad)
    assert (fused == 0).float().mean().item() - (x <= 0).float().mean().item() > 0


@pytest.mark.parametrize("offset", [0.0, 120.0, -300.0], ids=["usual", "overflow", "underflow"])
def test_short_row_softmax_equals_torch_softmax_in_values_and_gradients(offset: float) -> None:
    torch.manual_seed(0)
    scores = torch.randn(64, 8, 25, 25) * 4
    scores[3, 2] += offset  # exp of these rows alone overflows or underflows to 0
    grad = torch.randn_like(scores)
    ours_scores, torch_scores = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    ours, expected = softmax_short_rows(ours_scores), torch.softmax(torch_scores, -1)
    ours.backward(grad)
    expected.backward(grad)
    assert ours.isfinite().all()
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_scores.grad, torch_scores.grad, rtol=1e-5, atol=1e-6)


def test_feed_forward_keeps_the_official_keys_and_computes_the_sequential_block() -> None:
    torch.manual_seed(0)
    block = FeedForward(8, 1 << 14, dropout=0.1)  # without autograd: blocks of 128 rows
    assert [name for name, _ in block.named_parameters()] == [
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
    ]
    x = torch.randn(3, 4, 50, 8)  # 600 rows: 4 whole blocks and a part
    expected = block[3](F.relu(block[0](x)))
    torch.testing.assert_close(block.eval()(x), expected)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), expected)
    block.train()
    torch.manual_seed(5)
    trained = block(x)
    torch.manual_seed(5)
    hidden = dropout(F.relu(block[0](x)), 0.1, training=True)
    torch.testing.assert_close(trained, block[3](hidden))


def test_cpu_dropout_drops_a_fraction_p_and_keeps_the_mean_in_values_and_gradients() -> None:
    torch.manual_seed(0)
    x = torch.ones(400_003, requires_grad=True)  # not a multiple of the 4 masks per word
    out = dropout(x, 0.1, training=True)
    out.sum().backward()
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 0.1 rounded to 1/65536; binomial sd ~5e-4
    assert abs(out.mean().item() - 1.0) < 0.01
    kept = out != 0
    torch.testing.assert_close(x.grad[kept], out[kept].detach())  # scaled like the value
    assert (x.grad[~kept] == 0).all()
    assert dropout(x, 0.1, training=False) is x
    # Fresh masks each call, and torch's generator decides them (seeded runs repeat).
    assert not torch.equal(dropout(x, 0.5, True), dropout(x, 0.5, True))
    torch.manual_seed(1)
    first = dropout(x, 0.5, True)
    torch.manual_seed(1)
    torch.testing.assert_close(dropout(x, 0.5, True), first)
