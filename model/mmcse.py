"""MM-CSE: the multimodal class-aware semantic enhancement parser (AAAI 2025).

The modules follow Fig. 2 of the paper: feature projection, class-aware feature
decoupling (CAFD), and a stack of fine-grained semantic enhancement (FGSE) layers, each
with an intra-modal and a cross-modal path made of semantic co-occurrence modelling
(SECM) and local-global semantic fusion (LGSF); then the attentive MMIL head. Where the
paper and the official code differ, this computes what the official code computes (see
AVVP.md), since that produced the published numbers and the released checkpoints.

Per-class layers (the 26 CAFD branches, the 3 x 25 head Linears) are stacked parameters
evaluated in one batched op, and both modalities go through each FGSE layer as one
batch, so a training step has no Python loop over classes, heads or modalities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .activations import FeedForward, FreshReLU, relu_fresh
from .attention import ClassTokenAttention
from .config import MMCSEOptions, ModelConfig
from .cosine import cosine
from .dropout import Dropout
from .inputs import FeatureProjection
from .outputs import ParserOutput


def _init_like_linear(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """The default nn.Linear initialisation, for stacks of Linears (last dim = fan-in)."""
    bound = 1.0 / math.sqrt(weight.shape[-1])
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


PASS_FLOATS = 1 << 20  # floats of a layer tensor per encoder pass on a CPU: see FGSEEncoder


class ClassBranches(nn.Module):
    """n independent branch MLPs on one segment feature, evaluated as one batched op.

    Each branch is ReLU, Linear(in -> out), ReLU and, with two_layers, Dropout,
    Linear(out -> out), ReLU. Input (..., in) -> output (..., n, out).
    """

    def __init__(
        self, num_branches: int, in_dim: int, out_dim: int, two_layers: bool, dropout: float
    ) -> None:
        super().__init__()
        self.in_weight = nn.Parameter(torch.empty(num_branches, out_dim, in_dim))
        self.in_bias = nn.Parameter(torch.empty(num_branches, out_dim))
        _init_like_linear(self.in_weight, self.in_bias)
        self.out_weight: nn.Parameter | None = None
        self.out_bias: nn.Parameter | None = None
        if two_layers:
            self.out_weight = nn.Parameter(torch.empty(num_branches, out_dim, out_dim))
            self.out_bias = nn.Parameter(torch.empty(num_branches, out_dim))
            _init_like_linear(self.out_weight, self.out_bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches, out_dim, in_dim = self.in_weight.shape
        # All first Linears share their input: one GEMM with the stacked weights.
        hidden = F.linear(
            F.relu(x), self.in_weight.reshape(branches * out_dim, in_dim), self.in_bias.flatten()
        )
        hidden = relu_fresh(hidden.unflatten(-1, (branches, out_dim)))
        if self.out_weight is None:
            return hidden
        hidden = torch.einsum("...nc,noc->...no", self.dropout(hidden), self.out_weight)
        return relu_fresh(hidden + self.out_bias)


class ClassFeatures(NamedTuple):
    """tokens: (B, T, K, C) class features for FGSE; branches: (B, T, n, C) every branch
    output (the K event features, then the background one when it exists)."""

    tokens: torch.Tensor
    branches: torch.Tensor


class CAFD(nn.Module):
    """Class-aware feature decoupling of one modality.

    K event branches plus a background branch; a gate alpha from the segment feature
    mixes each event feature with the background, and a shared Linear + ReLU of
    [alpha * event_k ; (1 - alpha) * background] gives the class feature. Without
    background the event features are the class features.
    """

    def __init__(
        self,
        in_dim: int,
        class_dim: int,
        num_classes: int,
        two_layers: bool,
        background: bool,
        mean_event_orthogonality: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.mean_event_orthogonality = mean_event_orthogonality
        self.branches = ClassBranches(
            num_classes + int(background), in_dim, class_dim, two_layers, dropout
        )
        self.gate: nn.Sequential | None = None
        self.fuse: nn.Linear | None = None
        if background:
            self.gate = nn.Sequential(
                nn.ReLU(),
                nn.Linear(in_dim, in_dim // 2),
                FreshReLU(),
                Dropout(dropout),
                nn.Linear(in_dim // 2, 1),
            )
            self.fuse = nn.Linear(2 * class_dim, class_dim)

    def forward(self, x: torch.Tensor) -> ClassFeatures:
        branches = self.branches(x)
        if self.gate is None or self.fuse is None:
            return ClassFeatures(branches, branches)
        events, background = branches[..., : self.num_classes, :], branches[..., -1:, :]
        alpha = torch.sigmoid(self.gate(x)).unsqueeze(-1)  # (B, T, 1, 1)
        # fuse([a*e ; (1-a)*b]) split by input halves: the background half is computed once
        # per segment rather than for each of the K repeated copies.
        event_weight, background_weight = self.fuse.weight.chunk(2, dim=1)
        fused = (
            alpha * F.linear(events, event_weight)
            + (1 - alpha) * F.linear(background, background_weight)
            + self.fuse.bias
        )
        return ClassFeatures(relu_fresh(fused), branches)

    def orthogonality_loss(self, branches: torch.Tensor) -> torch.Tensor:
        """Mean cosine between event and background features (the official code compares
        the mean event feature for the visual modality and each event for the audio)."""
        events, background = branches[..., : self.num_classes, :], branches[..., -1, :]
        if self.mean_event_orthogonality:
            return cosine(events.mean(dim=-2), background).mean()
        return cosine(events, background.unsqueeze(-2)).mean()


class SharedClassProjection(nn.Module):
    """The no-decoupling ablation: one branch shared by all K classes."""

    def __init__(
        self, in_dim: int, class_dim: int, num_classes: int, two_layers: bool, dropout: float
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.branches = ClassBranches(1, in_dim, class_dim, two_layers, dropout)

    def forward(self, x: torch.Tensor) -> ClassFeatures:
        shared = self.branches(x)
        return ClassFeatures(shared.expand(*shared.shape[:-2], self.num_classes, -1), shared)


class SECM(nn.Module):
    """Semantic co-occurrence modelling: attention across the K class features of each
    segment; Z = X + attention output. The head-averaged weights are the co-occurrence map."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = ClassTokenAttention(dim, num_heads, dropout)

    def forward(
        self, x: torch.Tensor, source: torch.Tensor | None, need_map: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention output Z - X (the layer adds X) and the map (N, T, K, K)."""
        return self.attn(x, source, need_map)


class Relevance(NamedTuple):
    """LGSF's output as its two factors, relevance (N, T, K, 1) x global_feature
    (N, 1, K, C): kept apart so a Linear after it runs on T times fewer rows."""

    relevance: torch.Tensor
    global_feature: torch.Tensor


class LGSF(nn.Module):
    """Local-global semantic fusion: sigmoid(cosine(local, global)) x global, per segment
    and class, where global is the temporal mean. Intra: two Linears on Z; cross: one
    Linear shared by the local side (Z) and the global side (the other modality)."""

    def __init__(self, dim: int, cross: bool) -> None:
        super().__init__()
        self.local_proj = nn.Linear(dim, dim)
        self.global_proj = None if cross else nn.Linear(dim, dim)

    def forward(self, z: torch.Tensor, other: torch.Tensor | None) -> Relevance:
        """z: (N, T, K, C); other: the other modality's layer input for the cross path."""
        local = relu_fresh(self.local_proj(z))
        global_proj = self.local_proj if self.global_proj is None else self.global_proj
        global_side = relu_fresh(global_proj(other if other is not None else z))
        return self.relevance(local, global_side.mean(dim=1, keepdim=True))

    @staticmethod
    def relevance(local: torch.Tensor, global_feature: torch.Tensor) -> Relevance:
        """sigmoid(cosine(local, global_feature)) with the global feature (N, 1, K, C),
        whose norm `cosine` takes once per class, not for each of the T segments."""
        return Relevance(torch.sigmoid(cosine(local, global_feature)).unsqueeze(-1), global_feature)


class FGSEPath(nn.Module):
    """One path of an FGSE layer: SECM, then LGSF with the layer input as residual, then a
    Linear. The intra path attends within the modality, the cross path to the other one.

    The path's output is out_proj(X + U) for U the LGSF output (or SECM's attention
    output without LGSF, or nothing without either); `update` returns U, so the layer
    can project X once for all paths (see FGSELayer)."""

    def __init__(
        self, dim: int, num_heads: int, dropout: float, cross: bool, options: MMCSEOptions
    ) -> None:
        super().__init__()
        self.cross = cross
        self.secm = SECM(dim, num_heads, dropout) if options.secm else None
        self.lgsf = LGSF(dim, cross) if options.lgsf else None
        self.out_proj = nn.Linear(dim, dim)

    def update(
        self, x: torch.Tensor, other: torch.Tensor, pairs: int, need_map: bool
    ) -> tuple[Relevance | torch.Tensor | None, torch.Tensor | None]:
        """U as Relevance factors (LGSF), a tensor (SECM only) or None, and SECM's map;
        `other` is x rolled by `pairs` along the batch (FGSEEncoder's pairing)."""
        source = other if self.cross else None
        if self.cross and self.secm is not None and self.lgsf is not None:
            return self._cross_update(x, other, pairs, need_map)
        attended, co_occurrence = (
            (None, None) if self.secm is None else self.secm(x, source, need_map)
        )
        if self.lgsf is None:
            return attended, co_occurrence
        z = x if attended is None else x + attended
        return self.lgsf(z, source), co_occurrence

    def _cross_update(
        self, x: torch.Tensor, other: torch.Tensor, pairs: int, need_map: bool
    ) -> tuple[Relevance, torch.Tensor | None]:
        """The cross path's U in two GEMMs, not three: LGSF's L reads Z = X + O(A) (O the
        attention's out_proj) and the other modality, X rolled; so L X serves both sides
        (the global one rolled after its mean) and L O is one composed weight on A."""
        assert self.secm is not None and self.lgsf is not None
        attention, local_proj = self.secm.attn, self.lgsf.local_proj
        heads, co_occurrence = attention(x, other, need_map, project=False)
        projected = F.linear(x, local_proj.weight, local_proj.bias)  # L X + b
        composed = local_proj.weight @ attention.out_proj.weight
        local = torch.addmm(projected.flatten(0, -2), heads.flatten(0, -2), composed.t()).view_as(
            projected
        )
        local = relu_fresh(local + local_proj.weight @ attention.out_proj.bias)
        global_feature = F.relu(projected).mean(dim=1, keepdim=True).roll(pairs, dims=0)
        return self.lgsf.relevance(local, global_feature), co_occurrence


class FGSELayer(nn.Module):
    """Sum of the intra and cross paths, LayerNorm, feed-forward (no residual)."""

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, dropout: float, options: MMCSEOptions
    ) -> None:
        super().__init__()
        paths = {"intra": options.intra_path, "cross": options.cross_path}
        self.paths = nn.ModuleDict(
            {
                name: FGSEPath(dim, num_heads, dropout, name == "cross", options)
                for name, enabled in paths.items()
                if enabled
            }
        )
        self.norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)

    def forward(
        self, x: torch.Tensor, pairs: int, need_maps: bool, hidden: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x: (N, T, K, C), each sample's other modality `pairs` rows along (x rolled by
        `pairs`). Returns the update (with `hidden`, the feed-forward's hidden layer
        (N, T, K, ffn_dim) instead) and the co-occurrence maps by path."""
        paths = list(self.paths.items())
        other = x.roll(pairs, dims=0) if "cross" in self.paths else x  # a copy: only if read
        # sum_p out_proj_p(X + U_p) = X (sum_p W_p)^T + sum_p b_p + sum_p U_p W_p^T: X is
        # projected once for all paths, and an LGSF U_p = r_p g_p is projected on its
        # T-times-smaller global factor g_p before r_p scales it.
        total = F.linear(
            x,
            torch.stack([path.out_proj.weight for _, path in paths]).sum(dim=0),
            torch.stack([path.out_proj.bias for _, path in paths]).sum(dim=0),
        )
        maps: dict[str, torch.Tensor] = {}
        for name, path in paths:
            update, co_occurrence = path.update(x, other, pairs, need_maps)
            if isinstance(update, Relevance):
                projected = F.linear(update.global_feature, path.out_proj.weight)
                total = torch.addcmul(total, update.relevance, projected)
            elif update is not None:
                total = total + F.linear(update, path.out_proj.weight)
            if co_occurrence is not None:
                maps[name] = co_occurrence
        normed = self.norm(total)
        return (self.ffn.hidden(normed) if hidden else self.ffn(normed)), maps


class FGSEEncoder(nn.Module):
    """FGSE layers; each updates audio from (audio, visual) and visual from (visual,
    audio) with the same weights, both from the previous layer's outputs.

    On a CPU the windows go through in passes of `windows_per_pass` (16 at paper size):
    each window is encoded alone (its audio pairs with its own visual stream), so the
    outputs are the same, and a pass's tensors (a layer's (2 x 16, T, K, C) near 4 MB,
    its attention projections 12 MB) stay under the 32 MB above which glibc maps memory
    afresh for each tensor: the page faults of one 49-MB projection cost more than the
    ops on it. Against one pass of 64 windows, inference took 0.79x the time and a
    training step 0.85x (2 threads)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            FGSELayer(
                config.class_dim, config.num_heads, config.ffn_dim, config.dropout, config.mmcse
            )
            for _ in range(config.num_layers)
        )
        per_window = 2 * config.inputs.num_segments * config.inputs.num_classes * config.class_dim
        self.windows_per_pass = max(1, PASS_FLOATS // per_window)

    @property
    def last_projection(self) -> nn.Linear:
        """The Linear that makes the output streams from the last feed-forward's hidden
        layer (no residual after it: the streams are this Linear of that layer)."""
        return self.layers[-1].ffn[-1]

    def forward(
        self,
        audio: torch.Tensor,
        visual: torch.Tensor,
        return_maps: bool,
        readout: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """audio, visual: (B, T, K, C) -> `readout` of the last layer's feed-forward
        hidden layer (2, b, T, K, ffn_dim), batch first (the streams are that layer's
        `last_projection`), joined over the passes; and the last layer's maps."""
        windows = self.windows_per_pass if audio.device.type == "cpu" else audio.shape[0]
        if audio.shape[0] <= windows:
            return self._encode(audio, visual, return_maps, readout)
        parts = [
            self._encode(*pair, return_maps, readout)
            for pair in zip(audio.split(windows), visual.split(windows), strict=True)
        ]
        read = torch.cat([part_read for part_read, _ in parts])
        first_maps = parts[0][1]
        maps = {name: torch.cat([part_maps[name] for _, part_maps in parts]) for name in first_maps}
        return read, maps

    def _encode(
        self,
        audio: torch.Tensor,
        visual: torch.Tensor,
        return_maps: bool,
        readout: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = audio.shape[0]
        # Both modalities run as one batch of 2B; rolling by B pairs each sample with its
        # other modality.
        streams = torch.cat([audio, visual])
        maps: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            streams, maps = layer(streams, batch, return_maps and last, hidden=last)
        named_maps: dict[str, torch.Tensor] = {}
        if "intra" in maps:
            named_maps["map_aa"], named_maps["map_vv"] = maps["intra"].chunk(2)
        if "cross" in maps:
            named_maps["map_av"], named_maps["map_va"] = maps["cross"].chunk(2)
        return readout(streams.unflatten(0, (2, batch))), named_maps


class MMILHead(nn.Module):
    """Attentive MMIL pooling with per-class heads: three banks of K Linear(C -> 1)
    (segment logit, temporal attention, modality attention) as one (3, K, C) weight.

    The heads read the streams through `scores`, with their weights composed with the
    Linear that makes the streams (`readout`): the last FGSE layer's feed-forward ends
    in Linear(ffn_dim -> C) with no residual, so the K x 3 heads read its hidden layer
    directly, and the 2BT x K x C streams are never made. That saves the largest
    product of the last layer (forward and backward), with the same outputs up to float
    rounding."""

    def __init__(self, class_dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(3, num_classes, class_dim))
        self.bias = nn.Parameter(torch.empty(3, num_classes))
        _init_like_linear(self.weight, self.bias)

    def readout(self, before: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads applied after `before`, as one map: weight (K, D, 3), bias (K, 3)."""
        weight = torch.einsum("jkc,cd->kdj", self.weight, before.weight)
        return weight, self.bias.t() + torch.einsum("jkc,c->kj", self.weight, before.bias)

    @staticmethod
    def scores(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """hidden (2, B, T, K, D), modality order [audio, visual], read by `readout`'s
        weight and bias -> scores (B, T, 2, K, 3)."""
        modalities, batch, segments, classes, dim = hidden.shape
        # Class k's rows are a strided (2BT, D) slice that bmm reads in place; einsum
        # copied the streams class-major first (16 MB at paper size, batch 64): the head
        # took 4x the time of this bmm (2 threads).
        rows = hidden.reshape(-1, classes, dim).transpose(0, 1)
        scores = torch.bmm(rows, weight).view(classes, modalities, batch, segments, -1)
        return scores.permute(2, 3, 1, 0, 4) + bias

    @staticmethod
    def pool(scores: torch.Tensor) -> ParserOutput:
        """The outputs from `scores` (B, T, 2, K, 3)."""
        frame_logits, temporal_scores, modality_scores = scores.unbind(-1)  # (B, T, 2, K)
        frame_prob = torch.sigmoid(frame_logits)
        temporal_prob = torch.softmax(temporal_scores, dim=1) * frame_prob
        return ParserOutput(
            global_prob=(temporal_prob * torch.softmax(modality_scores, dim=2)).sum(dim=(1, 2)),
            a_prob=temporal_prob[:, :, 0].sum(dim=1),
            v_prob=temporal_prob[:, :, 1].sum(dim=1),
            frame_prob=frame_prob,
            frame_logits=frame_logits,
        )


class ReconstructionDecoders(nn.Module):
    """Training-only decoders: all branch features of a segment back to the projected
    segment feature, Linear, ReLU, Linear, ReLU per modality; MSE losses.

    The official visual decoder starts with a ReLU; its input is a ReLU output, so that
    ReLU is the identity and both decoders have one shape.
    """

    def __init__(self, branch_features: int, hidden_dim: int) -> None:
        super().__init__()
        self.audio = self._decoder(branch_features, hidden_dim)
        self.visual = self._decoder(branch_features, hidden_dim)

    @staticmethod
    def _decoder(in_dim: int, hidden_dim: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            FreshReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            FreshReLU(),
        )

    def forward(
        self,
        audio_branches: torch.Tensor,
        visual_branches: torch.Tensor,
        audio_feature: torch.Tensor,
        visual_feature: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        return {
            "loss_a_rec": F.mse_loss(audio_feature, self.audio(audio_branches.flatten(-2))),
            "loss_v_rec": F.mse_loss(visual_feature, self.visual(visual_branches.flatten(-2))),
        }


class _Encoded(NamedTuple):
    """What MMCSE's steps before the pooling give: the projected features (B, T, C), the
    class features, the heads' scores (B, T, 2, K, 3) and the last layer's maps."""

    audio_feature: torch.Tensor
    visual_feature: torch.Tensor
    audio_classes: ClassFeatures
    visual_classes: ClassFeatures
    scores: torch.Tensor
    maps: dict[str, torch.Tensor]


class MMCSE(nn.Module):
    """The MM-CSE parser. forward(audio, visual, visual_st, with_aux) -> ParserOutput.

    with_aux=True adds the training-only auxiliaries to `aux`: loss_a_rec, loss_v_rec,
    loss_a_ort, loss_v_ort and the last layer's head-averaged co-occurrence maps map_aa,
    map_av, map_vv, map_va (B, T, K, K), as far as the ablation options keep them.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.kind != "mmcse":
            raise ValueError(f"MMCSE needs a config of kind 'mmcse', got {config.kind!r}")
        self.config = config
        options, hidden = config.mmcse, config.hidden_dim
        classes, class_dim = config.inputs.num_classes, config.class_dim
        self.features = FeatureProjection(config.inputs, hidden)
        self.audio_classes: CAFD | SharedClassProjection
        self.visual_classes: CAFD | SharedClassProjection
        self.decoders: ReconstructionDecoders | None = None
        if options.decoupling:
            # The official branches differ per modality: the visual ones have a second
            # Linear, and the orthogonality loss compares the mean visual event feature.
            self.audio_classes = CAFD(
                hidden,
                class_dim,
                classes,
                two_layers=False,
                background=options.background,
                mean_event_orthogonality=False,
                dropout=config.dropout,
            )
            self.visual_classes = CAFD(
                hidden,
                class_dim,
                classes,
                two_layers=True,
                background=options.background,
                mean_event_orthogonality=True,
                dropout=config.dropout,
            )
            branches = classes + int(options.background)
            self.decoders = ReconstructionDecoders(branches * class_dim, hidden)
        else:
            self.audio_classes = SharedClassProjection(
                hidden, class_dim, classes, two_layers=False, dropout=config.dropout
            )
            self.visual_classes = SharedClassProjection(
                hidden, class_dim, classes, two_layers=True, dropout=config.dropout
            )
        self.encoder = FGSEEncoder(config)
        self.head = MMILHead(class_dim, classes)

    def forward(
        self,
        audio: torch.Tensor,
        visual: torch.Tensor,
        visual_st: torch.Tensor,
        with_aux: bool = False,
    ) -> ParserOutput:
        """Parse a batch of windows; input shapes as described by `InputSpec`."""
        encoded = self._encode(audio, visual, visual_st, with_aux)
        output = self.head.pool(encoded.scores)
        if not with_aux:
            return output
        audio_feature, visual_feature = encoded.audio_feature, encoded.visual_feature
        audio_classes, visual_classes = encoded.audio_classes, encoded.visual_classes
        aux: dict[str, torch.Tensor] = {}
        if self.decoders is not None:
            aux.update(
                self.decoders(
                    audio_classes.branches, visual_classes.branches, audio_feature, visual_feature
                )
            )
        if self.config.mmcse.decoupling and self.config.mmcse.background:
            aux["loss_a_ort"] = self.audio_classes.orthogonality_loss(audio_classes.branches)
            aux["loss_v_ort"] = self.visual_classes.orthogonality_loss(visual_classes.branches)
        aux.update(encoded.maps)
        output.aux = aux
        return output

    def _encode(
        self,
        audio: torch.Tensor,
        visual: torch.Tensor,
        visual_st: torch.Tensor,
        with_maps: bool,
    ) -> _Encoded:
        """The steps before the head, shared by `forward` and `forward_internals` so a
        report inspects exactly the tensors the parser computes."""
        audio_feature, visual_feature = self.features(audio, visual, visual_st)
        audio_classes = self.audio_classes(audio_feature)
        visual_classes = self.visual_classes(visual_feature)
        weight, bias = self.head.readout(self.encoder.last_projection)
        scores, maps = self.encoder(
            audio_classes.tokens,
            visual_classes.tokens,
            with_maps,
            lambda hidden: self.head.scores(hidden, weight, bias),
        )
        return _Encoded(audio_feature, visual_feature, audio_classes, visual_classes, scores, maps)


def build_mmcse(config: ModelConfig) -> MMCSE:
    return MMCSE(config)
