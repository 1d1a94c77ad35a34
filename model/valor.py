"""The VALOR baseline: a hybrid attention network (HAN) with attentive MMIL pooling.

Facts from VALOR's public code (Franklin905/VALOR, main_network.py and main_avvp.py):
one encoder layer per depth is shared by both modalities; it sums self-attention within
the modality and cross-modal attention to the other one onto the residual, then
post-norm and a ReLU feed-forward block with its own residual and norm. Audio is updated
first and the visual update attends to the freshly updated audio. The MMIL head is three
Linear(hidden -> 25): segment logits, temporal attention (softmax over T) and modality
attention (softmax over the two modalities).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import InputSpec, ModelConfig
from .inputs import FeatureProjection
from .outputs import ParserOutput


class HybridAttentionLayer(nn.Module):
    """One HAN layer (post-norm), applied in turn to each modality with the same weights."""

    def __init__(self, hidden_dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            hidden_dim, num_heads, dropout=dropout, batch_first=True
        )
        self.cross_attn = nn.MultiheadAttention(
            hidden_dim, num_heads, dropout=dropout, batch_first=True
        )
        self.attention_norm = nn.LayerNorm(hidden_dim)
        self.ffn_in = nn.Linear(hidden_dim, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, hidden_dim)
        self.ffn_norm = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, stream: torch.Tensor, other_stream: torch.Tensor) -> torch.Tensor:
        """Update `stream` (B, T, H) from itself and from `other_stream` (B, T, H)."""
        cross, _ = self.cross_attn(stream, other_stream, other_stream, need_weights=False)
        own, _ = self.self_attn(stream, stream, stream, need_weights=False)
        stream = self.attention_norm(stream + self.dropout(cross) + self.dropout(own))
        update = self.ffn_out(self.dropout(F.relu(self.ffn_in(stream))))
        return self.ffn_norm(stream + self.dropout(update))


class ValorNet(nn.Module):
    """VALOR's MMIL_Net: input projections, HAN encoder and attentive MMIL pooling."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.kind != "valor":
            raise ValueError(f"ValorNet needs a config of kind 'valor', got {config.kind!r}")
        self.config = config
        inputs, hidden = config.inputs, config.hidden_dim
        self.features = FeatureProjection(inputs, hidden)
        self.layers = nn.ModuleList(
            HybridAttentionLayer(hidden, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.segment_head = nn.Linear(hidden, inputs.num_classes)
        self.temporal_attention_head = nn.Linear(hidden, inputs.num_classes)
        self.modality_attention_head = nn.Linear(hidden, inputs.num_classes)

    def forward(
        self,
        audio: torch.Tensor,
        visual: torch.Tensor,
        visual_st: torch.Tensor,
        with_aux: bool = False,
    ) -> ParserOutput:
        """Parse a batch; shapes as described by `InputSpec`.

        VALOR has no auxiliary losses; `with_aux` returns the two MMIL attention maps,
        (B, T, 2, K) each, under "temporal_attention" and "modality_attention".
        """
        audio_stream, visual_stream = self.features(audio, visual, visual_st)
        for layer in self.layers:
            audio_stream = layer(audio_stream, visual_stream)
            visual_stream = layer(visual_stream, audio_stream)

        streams = torch.stack([audio_stream, visual_stream], dim=2)  # (B, T, 2, H)
        frame_logits = self.segment_head(streams)
        frame_prob = torch.sigmoid(frame_logits)
        temporal_attention = torch.softmax(self.temporal_attention_head(streams), dim=1)
        modality_attention = torch.softmax(self.modality_attention_head(streams), dim=2)
        pooled = temporal_attention * frame_prob
        aux = (
            {"temporal_attention": temporal_attention, "modality_attention": modality_attention}
            if with_aux
            else {}
        )
        return ParserOutput(
            global_prob=(pooled * modality_attention).sum(dim=(1, 2)),
            a_prob=pooled[:, :, 0].sum(dim=1),
            v_prob=pooled[:, :, 1].sum(dim=1),
            frame_prob=frame_prob,
            frame_logits=frame_logits,
            aux=aux,
        )


def build_valor(config: ModelConfig) -> ValorNet:
    """Build a randomly initialised VALOR network for `config` (kind "valor")."""
    return ValorNet(config)


def valor_loss(
    output: ParserOutput,
    weak_labels: torch.Tensor,
    audio_pseudo: torch.Tensor,
    visual_pseudo: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """VALOR's training loss, terms weighted 1 each as in its training step.

    weak_labels: (B, K); audio_pseudo, visual_pseudo: (B, T, K) segment pseudo-labels.
    Returns "video", "audio_pseudo", "visual_pseudo" and their sum "total".
    """
    # BCE on probabilities is refused under CUDA autocast, and float16 cannot hold 1 - 1e-7.
    with torch.autocast(output.global_prob.device.type, enabled=False):
        video_prob = output.global_prob.float().clamp(1e-7, 1 - 1e-7)
        terms = {
            "video": F.binary_cross_entropy(video_prob, weak_labels.float()),
            "audio_pseudo": F.binary_cross_entropy_with_logits(
                output.frame_logits[:, :, 0].float(), audio_pseudo.float()
            ),
            "visual_pseudo": F.binary_cross_entropy_with_logits(
                output.frame_logits[:, :, 1].float(), visual_pseudo.float()
            ),
        }
    terms["total"] = terms["video"] + terms["audio_pseudo"] + terms["visual_pseudo"]
    return terms


# Official MMIL_Net module names -> ours; encoder layers carry an index in both.
_TOP_LEVEL_NAMES = {
    "fc_a": "features.audio_proj",
    "fc_v": "features.visual_proj",
    "fc_st": "features.st_proj",
    "fc_fusion": "features.fusion",
    "fc_prob": "segment_head",
    "fc_frame_att": "temporal_attention_head",
    "fc_av_att": "modality_attention_head",
}
_LAYER_NAMES = {
    "self_attn": "self_attn",
    "cm_attn": "cross_attn",
    "norm1": "attention_norm",
    "linear1": "ffn_in",
    "linear2": "ffn_out",
    "norm2": "ffn_norm",
}
_OFFICIAL_LAYERS, _OUR_LAYERS = "hat_encoder.layers", "layers"
# Only VALOR's pre-norm variant uses these; post-norm training leaves them untouched.
_FINAL_NORMS = ("hat_encoder.final_norm_a", "hat_encoder.final_norm_v")


def _rename(key: str, to_ours: bool) -> str | None:
    """Translate a parameter name between VALOR's naming and ours; None if unknown."""
    top_names, layer_names = _TOP_LEVEL_NAMES, _LAYER_NAMES
    source_layers, target_layers = _OFFICIAL_LAYERS, _OUR_LAYERS
    if not to_ours:
        top_names = {ours: official for official, ours in top_names.items()}
        layer_names = {ours: official for official, ours in layer_names.items()}
        source_layers, target_layers = target_layers, source_layers
    for module, renamed in top_names.items():
        if key.startswith(f"{module}."):
            return renamed + key[len(module) :]
    match = re.fullmatch(rf"{re.escape(source_layers)}\.(\d+)\.(\w+)\.(.+)", key)
    if match and match[2] in layer_names:
        return f"{target_layers}.{match[1]}.{layer_names[match[2]]}.{match[3]}"
    return None


def _unwrap_state_dict(state_dict: Mapping[str, object]) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
    tensors = {key.removeprefix("module."): value for key, value in state_dict.items()}
    not_tensors = sorted(key for key, value in tensors.items() if not torch.is_tensor(value))
    if not_tensors:
        raise ValueError(f"not a VALOR state dict: entries {not_tensors} are not tensors")
    return tensors


def _infer_valor_config(tensors: dict[str, torch.Tensor], num_heads: int) -> ModelConfig:
    needed = (
        "fc_a.weight",
        "fc_v.weight",
        "fc_st.weight",
        "fc_prob.weight",
        f"{_OFFICIAL_LAYERS}.0.linear1.weight",
    )
    absent = [key for key in needed if key not in tensors]
    if absent:
        raise ValueError(f"not a VALOR MMIL_Net state dict (main_network.py): missing {absent}")
    audio_dim = tensors["fc_a.weight"].shape[1]
    visual_dim = tensors["fc_v.weight"].shape[1]
    num_classes, hidden_dim = tensors["fc_prob.weight"].shape
    layer_indices = {
        int(match[1])
        for key in tensors
        if (match := re.match(rf"{re.escape(_OFFICIAL_LAYERS)}\.(\d+)\.", key))
    }
    # VALOR's input kinds follow its feature families: 768-d audio is always the CLAP
    # token map and 2048-d visual is always ResNet-152 at 8 frames per segment.
    inputs = InputSpec(
        audio_kind="clap_map" if audio_dim == 768 else "segment",
        audio_dim=audio_dim,
        visual_kind="frames8" if visual_dim == 2048 else "segment",
        visual_dim=visual_dim,
        st_dim=tensors["fc_st.weight"].shape[1],
        num_classes=num_classes,
    )
    return ModelConfig(
        kind="valor",
        inputs=inputs,
        hidden_dim=hidden_dim,
        num_layers=max(layer_indices) + 1,
        num_heads=num_heads,
        ffn_dim=tensors[f"{_OFFICIAL_LAYERS}.0.linear1.weight"].shape[0],
    )


def _refuse_pre_norm(tensors: dict[str, torch.Tensor]) -> None:
    for norm in _FINAL_NORMS:
        weight, bias = tensors.get(f"{norm}.weight"), tensors.get(f"{norm}.bias")
        trained = (weight is not None and not bool((weight == 1).all())) or (
            bias is not None and bool(bias.any())
        )
        if trained:
            raise ValueError(
                f"{norm} holds trained weights, so this checkpoint was trained with "
                "norm_where=pre_norm; only post_norm (every official VALOR script) is supported"
            )


def valor_from_official_state_dict(
    state_dict: Mapping[str, object], num_heads: int = 8
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map a state dict of VALOR's official MMIL_Net to a config and our parameter names.

    Accepts the raw dict or one nested under "state_dict" / "model", with or without
    DataParallel's "module." prefix. Input kinds, dims, hidden width, layer count and
    feed-forward width come from weight shapes; the head count cannot be read from
    shapes, and every official script uses 8.
    """
    tensors = _unwrap_state_dict(state_dict)
    config = _infer_valor_config(tensors, num_heads)
    _refuse_pre_norm(tensors)
    with torch.device("meta"):
        expected_shapes = {key: value.shape for key, value in ValorNet(config).state_dict().items()}

    ours: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for official_key, tensor in tensors.items():
        if official_key.startswith(_FINAL_NORMS):
            continue
        our_key = _rename(official_key, to_ours=True)
        if our_key in expected_shapes:
            ours[our_key] = tensor
        else:
            unexpected.append(official_key)
    missing = sorted(_rename(key, to_ours=False) for key in set(expected_shapes) - set(ours))
    wrong_shapes = [
        f"{_rename(key, to_ours=False)}: {tuple(ours[key].shape)} "
        f"instead of {tuple(expected_shapes[key])}"
        for key in sorted(ours)
        if ours[key].shape != expected_shapes[key]
    ]
    if missing or unexpected or wrong_shapes:
        raise ValueError(
            "VALOR state dict does not match MMIL_Net (main_network.py) "
            f"with {config.num_layers} layers: missing {missing}, "
            f"unexpected {sorted(unexpected)}, wrong shapes {wrong_shapes}"
        )
    return config, ours
