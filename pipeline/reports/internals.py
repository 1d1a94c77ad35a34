"""What the report reads inside MM-CSE: the learned audio-to-visual co-occurrence map
(Fig. 4 of the MM-CSE paper) and the CAFD class features of true classes, with their
2-D t-SNE (Fig. 5). `report.py` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...model.internals import forward_internals
from ...model.mmcse import MMCSE
from ..dataset import SplitTensors
from .plots import TRACKS

MAX_PERPLEXITY = 30.0  # scikit-learn's default


@dataclass
class ClassFeaturePoints:
    """CAFD class features of sampled (segment, true class) pairs of one modality.

    rows, segments: the window (row of the split) and segment of each point; labels: its
    class index; features: (P, C). candidate_segments counts the segments with a true
    event of this modality, sampled_segments those kept (at most the cap).
    """

    modality: str
    rows: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    candidate_segments: int
    sampled_segments: int


@dataclass
class ClassInternals:
    """What the report reads inside MM-CSE for one split."""

    co_occurrence: np.ndarray | None  # (K, K), None when the network has no cross SECM
    videos: int  # videos averaged into co_occurrence
    points: dict[str, ClassFeaturePoints]  # by modality; empty without CAFD


def sample_truth_segments(
    split: SplitTensors, modality: int, cap: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(rows, segments) of at most `cap` valid segments with a true event of `modality`
    (0 audio, 1 visual), drawn with `seed` and kept in split order; and how many there were."""
    assert split.dense is not None
    valid = split.valid_segments.cpu().numpy()
    in_window = np.arange(split.dense.shape[2])[None, :] < valid[:, None]
    rows, segments = np.nonzero(split.dense[:, modality].any(axis=-1) & in_window)
    candidates = len(rows)
    if candidates > cap:
        kept = np.sort(np.random.default_rng(seed).choice(candidates, cap, replace=False))
        rows, segments = rows[kept], segments[kept]
    return rows, segments, candidates


@torch.no_grad()
def co_occurrence_and_class_features(
    model: MMCSE,
    split: SplitTensors,
    max_segments: int,
    seed: int,
    batch_size: int = 256,
) -> ClassInternals:
    """The learned co-occurrence map and the class features of true classes of a split.

    Co-occurrence: `map_av` of `forward_internals`, the head-averaged SECM attention
    weights of the cross-modal path of the last FGSE layer, with the audio class
    features as queries and the visual class features as keys and values (the map the
    co-occurrence loss trains against audio x visual pseudo-label products); in eval
    mode, so each row is a softmax (sums to 1). Averaged over the valid segments of each
    video, then over the videos. None when the network has no cross-path SECM.

    Class features: the CAFD class features (the tokens entering the first FGSE layer)
    of each sampled segment (see `sample_truth_segments`) for each class in that
    segment's dense truth of the same modality, one point per (segment, class).
    Computed in float32, without autocast.
    """
    model.eval()
    options = model.config.mmcse
    want_map = options.secm and options.cross_path
    n, num_classes = len(split), model.config.inputs.num_classes
    valid = split.valid_segments
    window_sums = np.zeros((n, num_classes, num_classes)) if want_map else None
    window_counts = valid.cpu().numpy().astype(np.float64)

    requests: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int, int]] = {}
    if options.decoupling:
        assert split.dense is not None
        for index, modality in enumerate(TRACKS):
            rows, segments, candidates = sample_truth_segments(split, index, max_segments, seed)
            which, labels = np.nonzero(split.dense[rows, index, segments])
            requests[modality] = (rows[which], segments[which], labels, candidates, len(rows))
    features = {
        modality: np.zeros((len(request[0]), model.config.class_dim), dtype=np.float32)
        for modality, request in requests.items()
    }

    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        internals = forward_internals(
            model, split.audio[start:stop], split.visual[start:stop], split.visual_st[start:stop]
        )
        if window_sums is not None:
            attention = internals.co_occurrence["map_av"].float()  # (B, T, K, K)
            steps = torch.arange(attention.shape[1], device=attention.device)
            in_window = (steps[None, :] < valid[start:stop, None]).to(attention.dtype)
            summed = (attention * in_window[..., None, None]).sum(dim=1)
            window_sums[start:stop] = summed.cpu().numpy()
        tokens = {
            "audio": internals.audio_class_features,
            "visual": internals.visual_class_features,
        }
        for modality, (rows, segments, labels, _, _) in requests.items():
            here = np.flatnonzero((rows >= start) & (rows < stop))
            if not len(here):
                continue
            device = tokens[modality].device
            picked = tokens[modality][
                torch.from_numpy(rows[here] - start).to(device),
                torch.from_numpy(segments[here]).to(device),
                torch.from_numpy(labels[here]).to(device),
            ]
            features[modality][here] = picked.float().cpu().numpy()

    co_occurrence, videos = None, 0
    if window_sums is not None:
        _, video_of_row = np.unique(split.keys.video_ids.astype(str), return_inverse=True)
        video_sums = np.zeros((video_of_row.max() + 1, num_classes, num_classes))
        video_counts = np.zeros(video_of_row.max() + 1)
        np.add.at(video_sums, video_of_row, window_sums)
        np.add.at(video_counts, video_of_row, window_counts)
        present = video_counts > 0
        videos = int(present.sum())
        co_occurrence = (video_sums[present] / video_counts[present, None, None]).mean(axis=0)
    points = {
        modality: ClassFeaturePoints(
            modality, rows, segments, labels, features[modality], candidates, sampled
        )
        for modality, (rows, segments, labels, candidates, sampled) in requests.items()
    }
    return ClassInternals(co_occurrence, videos, points)


def embed_tsne(features: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """2-D t-SNE of (P, C) features (PCA init, fixed random_state) and its perplexity."""
    from sklearn.manifold import TSNE  # imported here: heavy, and only reports need it

    perplexity = min(MAX_PERPLEXITY, (len(features) - 1) / 3)
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return embedding.fit_transform(features.astype(np.float64)), perplexity
