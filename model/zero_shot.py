"""VALOR's zero-shot segment pseudo-labels: prompts, thresholds and the scoring math.

A class is on in a segment when its zero-shot logit, ``scale x cosine(segment embedding,
prompt embedding)``, is strictly greater than the class's threshold and the class is in
the video's weak label (AVVP.md, "VALOR pseudo-labels"). Visual labels use CLIP image
embeddings, the prompts ``CLIP_PROMPTS`` and a fixed scale of 100; audio labels use CLAP
segment embeddings, ``CLAP_PROMPTS`` and CLAP's own ``logit_scale_a``.

Math only: the embeddings come in as arrays, the labels go out as arrays.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from ..contract import NUM_CLASSES
from .classes import LLP_CLASSES

# Bumped whenever a prompt, a threshold or the rule of `threshold_labels` changes, so a
# label table records which set produced its rows.
THRESHOLDS_VERSION = "valor-1"

CLIP_LOGIT_SCALE = 100.0

# VALOR's CLIP prompts in class order, spelled exactly as theirs ("vaccum", "guiter" and
# "a acoustic" included): the thresholds below were tuned on these strings.
CLIP_PROMPTS: tuple[str, ...] = (
    "A photo of people talking.",
    "A photo of a car.",
    "A photo of people cheering.",
    "A photo of a dog.",
    "A photo of a cat.",
    "A photo of frying food.",
    "A photo of people playing basketball.",
    "A photo of a fire alarm.",
    "A photo of a chainsaw.",
    "A photo of a cello.",
    "A photo of a banjo.",
    "A photo of people singing.",
    "A photo of a chicken or a rooster.",
    "A photo of a violin.",
    "A photo of a vaccum cleaner.",
    "A photo of a laughing baby.",
    "A photo of an accordion.",
    "A photo of a lawnmower.",
    "A photo of a motorcycle.",
    "A photo of a helicopter.",
    "A photo of a acoustic guiter.",
    "A photo of a ringing telephone.",
    "A photo of a crying baby.",
    "A photo of a blender.",
    "A photo of hands clapping.",
)
CLIP_THRESHOLDS: tuple[float, ...] = (
    20, 15, 18, 14, 15, 18, 18, 15, 15, 15, 15, 18, 15,
    15, 15, 15, 15, 15, 15, 16, 14, 15, 15, 15, 18,
)  # fmt: skip

CLAP_PROMPT_PREFIX = "This is a sound of "
# Class names whose CLAP prompt is not simply the lower-cased name with spaces.
CLAP_SPELLINGS: dict[str, str] = {
    "Frying_(food)": "frying (food)",
    "Chicken_rooster": "chicken, rooster",
    "Baby_cry_infant_cry": "baby cry, infant cry",
}


def clap_prompt(class_name: str) -> str:
    """VALOR's CLAP prompt of one LLP class name."""
    spoken = CLAP_SPELLINGS.get(class_name, class_name.lower().replace("_", " "))
    return CLAP_PROMPT_PREFIX + spoken


CLAP_PROMPTS: tuple[str, ...] = tuple(clap_prompt(name) for name in LLP_CLASSES)
CLAP_THRESHOLDS: tuple[float, ...] = (
    0, 0, 1, 4, 6, -2, 4, 4, 2, 2, 2, 1, 2,
    3, 0, 2, 2, 2, 0, 2, -1, 2, 3, 3, 0,
)  # fmt: skip

for _name, _values in (
    ("CLIP_PROMPTS", CLIP_PROMPTS),
    ("CLIP_THRESHOLDS", CLIP_THRESHOLDS),
    ("CLAP_PROMPTS", CLAP_PROMPTS),
    ("CLAP_THRESHOLDS", CLAP_THRESHOLDS),
):
    if len(_values) != NUM_CLASSES:
        raise ImportError(f"{_name} has {len(_values)} entries for {NUM_CLASSES} classes")


def zero_shot_logits(
    embeddings: ArrayLike | torch.Tensor, text: ArrayLike | torch.Tensor, scale: float
) -> np.ndarray:
    """``scale x cosine`` of every segment embedding with every text embedding.

    embeddings: (N, T, D), any float dtype (feature tables store float16); text: (K, D).
    Both are L2-normalised here (stored embeddings are normalised already, but float16
    storage leaves their norms slightly off one). A zero vector has cosine 0 with
    everything. Returns (N, T, K) float32 logits.
    """
    segments = torch.as_tensor(embeddings).float()
    prompts = torch.as_tensor(text).float().to(segments.device)
    if segments.ndim != 3 or prompts.ndim != 2 or segments.shape[-1] != prompts.shape[-1]:
        raise ValueError(
            f"expected embeddings (N, T, D) and text (K, D) of one width D, got "
            f"{tuple(segments.shape)} and {tuple(prompts.shape)}"
        )
    cosine = F.normalize(segments, dim=-1) @ F.normalize(prompts, dim=-1).T
    return (scale * cosine).cpu().numpy()


def threshold_labels(logits: ArrayLike, thresholds: ArrayLike, weak: ArrayLike) -> np.ndarray:
    """Segment labels (N, T, K) uint8 from zero-shot logits: VALOR's rule.

    A segment's class is 1 exactly where its logit is strictly greater than the class's
    threshold (a logit equal to the threshold stays 0) and the class is in the video's
    weak label; every other entry is 0.

    logits: (N, T, K); thresholds: (K,); weak: (N, K) 0/1 video-level labels.
    """
    logits, thresholds, weak = np.asarray(logits), np.asarray(thresholds), np.asarray(weak)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (N, T, K), got shape {logits.shape}")
    num_videos, _, num_classes = logits.shape
    if thresholds.shape != (num_classes,):
        raise ValueError(f"thresholds must be ({num_classes},), got shape {thresholds.shape}")
    if weak.shape != (num_videos, num_classes):
        raise ValueError(f"weak must be ({num_videos}, {num_classes}), got shape {weak.shape}")
    above = logits > thresholds[None, None, :]
    return (above & weak.astype(bool)[:, None, :]).astype(np.uint8)
