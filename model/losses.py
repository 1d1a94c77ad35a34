"""MM-CSE training losses, composed as the official training step composes them.

total = video BCE + audio and visual segment BCE-with-logits vs the pseudo-labels
      + reconstruction_weight x (rec_a + rec_v) + lambda1 x (ort_a + ort_v)
      + lambda2 x (sum of the MSE of the co-occurrence maps vs their targets)
Term names are those of the official code (loss_video, loss_valor_a, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .outputs import ParserOutput

# Video probabilities are clamped before the BCE, as in the official training step.
PROB_CLAMP = 1e-7
MAP_TERMS = {"map_aa": "loss_aa", "map_av": "loss_av", "map_vv": "loss_vv", "map_va": "loss_va"}


@dataclass(frozen=True)
class MMCSELossConfig:
    """Which auxiliary losses are on and their weights; defaults are the paper's recipe."""

    reconstruction: bool = True
    orthogonality: bool = True
    co_occurrence: bool = True
    reconstruction_weight: float = 0.5
    lambda1: float = 0.1  # orthogonality
    lambda2: float = 0.1  # co-occurrence maps


@dataclass
class MMCSELoss:
    """The total to minimise and every term under its official name; as there, loss_rec
    already carries reconstruction_weight while loss_ort and loss_ec are unweighted."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def co_occurrence_targets(
    audio_pseudo_labels: torch.Tensor, visual_pseudo_labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-segment outer products of the pseudo-labels (B, T, K) -> (B, T, K, K) each:
    map_aa = a a^T, map_av = a v^T, map_vv = v v^T, map_va = v a^T."""
    audio, visual = audio_pseudo_labels.float(), visual_pseudo_labels.float()
    rows = {"a": audio.unsqueeze(-1), "v": visual.unsqueeze(-1)}
    columns = {"a": audio.unsqueeze(-2), "v": visual.unsqueeze(-2)}
    return {name: rows[name[-2]] * columns[name[-1]] for name in MAP_TERMS}


def mmcse_loss(
    output: ParserOutput,
    labels: torch.Tensor,
    audio_pseudo_labels: torch.Tensor,
    visual_pseudo_labels: torch.Tensor,
    config: MMCSELossConfig | None = None,
) -> MMCSELoss:
    """MM-CSE's training loss for a forward run with with_aux=True.

    labels: (B, K) weak video labels; *_pseudo_labels: (B, T, K) segment pseudo-labels.
    Auxiliary terms the model's ablation options removed are left out of the total.
    """
    config = config or MMCSELossConfig()
    aux = output.aux
    if not aux and (config.reconstruction or config.orthogonality or config.co_occurrence):
        raise ValueError(
            "the MM-CSE auxiliary losses need the model's auxiliaries: call the model "
            "with with_aux=True, or switch them off in MMCSELossConfig"
        )
    # BCE on probabilities is refused under autocast and float16 cannot hold 1 - 1e-7.
    with torch.autocast(output.global_prob.device.type, enabled=False):
        video_prob = output.global_prob.float().clamp(PROB_CLAMP, 1 - PROB_CLAMP)
        logits = output.frame_logits.float()
        terms = {
            "loss_video": F.binary_cross_entropy(video_prob, labels.float()),
            "loss_valor_a": F.binary_cross_entropy_with_logits(
                logits[:, :, 0], audio_pseudo_labels.float()
            ),
            "loss_valor_v": F.binary_cross_entropy_with_logits(
                logits[:, :, 1], visual_pseudo_labels.float()
            ),
        }
        total = terms["loss_video"] + terms["loss_valor_a"] + terms["loss_valor_v"]
        if config.reconstruction and "loss_a_rec" in aux:
            terms["loss_a_rec"], terms["loss_v_rec"] = aux["loss_a_rec"], aux["loss_v_rec"]
            terms["loss_rec"] = config.reconstruction_weight * (
                terms["loss_a_rec"] + terms["loss_v_rec"]
            )
            total = total + terms["loss_rec"]
        if config.orthogonality and "loss_a_ort" in aux:
            terms["loss_a_ort"], terms["loss_v_ort"] = aux["loss_a_ort"], aux["loss_v_ort"]
            terms["loss_ort"] = terms["loss_a_ort"] + terms["loss_v_ort"]
            total = total + config.lambda1 * terms["loss_ort"]
        present_maps = [name for name in MAP_TERMS if name in aux]
        if config.co_occurrence and present_maps:
            targets = co_occurrence_targets(audio_pseudo_labels, visual_pseudo_labels)
            for name in present_maps:
                terms[MAP_TERMS[name]] = F.mse_loss(aux[name].float(), targets[name])
            terms["loss_ec"] = torch.stack([terms[MAP_TERMS[n]] for n in present_maps]).sum()
            total = total + config.lambda2 * terms["loss_ec"]
    return MMCSELoss(total=total, terms=terms)
