"""LAION-CLAP HTSAT-tiny (630k fusion checkpoint): the CLAP map and segment embeddings.

Two extractors share one audio tower (HTSAT plus the audio projection):

- ``clap`` (64 x 768): the window's mono audio at 48 kHz forced to exactly 480,000
  samples by picking samples at ``round(linspace(0, L - 1, 480000))``, an int16 round
  trip, the fusion mel input (a 10-s clip is not "longer", so its log-mel is stacked 4
  times, as laion-clap's ``get_audio_features`` does), then HTSAT's tokens after its
  final norm (an 8 x 8 frequency x time grid), regrouped as HTSAT's token-semantic head
  groups them (4 frequency groups of 2 rows laid side by side in time: 2 rows x 32
  steps) and flattened row-major. This is the audio input of MM-CSE and VALOR.
- ``clap-segments`` (10 x 512): 10 chunks of ``L // 10`` samples starting at
  ``round(linspace(0, L, 11))``, each int16 round-tripped and repeat-padded to 10 s
  (repeat whole copies, zero-fill the rest), fusion mel, HTSAT's pooled embedding
  through the audio projection, L2-normalised. Used for audio pseudo-labels, with
  ``embed_texts`` and ``logit_scale_a`` (logit = ``logit_scale_a`` x cosine).

Why laion_clap is never imported: its package ``__init__`` imports its training code,
which builds Hugging Face tokenizers at import time (with HF_HUB_OFFLINE=1 that raises a
TypeError; online and unreachable it hangs retrying), and ``CLAP_Module`` downloads
RoBERTa when constructed. Only ``clap_module/htsat.py`` is needed for audio, and it
imports just two sibling files, so the ``clap_module`` folder is mounted as a private
package (``_laion_module``) and ``htsat`` is imported from it without running either
``__init__``. The text side builds RoBERTa from a local copy (``roberta=DIR`` or the
Hugging Face cache), never from the hub.
"""

from __future__ import annotations

import enum
import functools
import importlib
import importlib.util
import logging
import math
import sys
import types
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..contract import CLAP_SAMPLE_RATE, SEGMENTS_PER_WINDOW
from .base import (
    FeatureExtractor,
    RandomInit,
    Size,
    WeightsArg,
    WeightsNotFoundError,
    WeightsSource,
    WindowInput,
    copy_weights,
    hf_cached_file,
    load_state_dict_file,
    rounded_linspace,
    seeded,
)
from .precision import Precision

logger = logging.getLogger(__name__)

_PRIVATE_PACKAGE = f"{__package__}._laion_module"
_CHECKPOINT_URL = "https://huggingface.co/lukewys/laion_clap/resolve/main/630k-fusion-best.pt"
_EXPECTED = "a LAION-CLAP HTSAT-tiny fusion checkpoint"
_FIX = f"use 630k-fusion-best.pt from {_CHECKPOINT_URL}"
_ROBERTA = "roberta-base"
TEXT_CONTEXT = 77
JOINT_DIM = 512
FUSION_CHANNELS = 4


@dataclass(frozen=True)
class AudioConfig:
    """HTSAT-tiny's audio settings (laion-clap's model_configs/HTSAT-tiny.json).

    HTSAT reads its mel settings from this object, so the field names are theirs.
    """

    sample_rate: int = CLAP_SAMPLE_RATE
    clip_samples: int = 480_000
    window_size: int = 1024
    hop_size: int = 480
    mel_bins: int = 64
    fmin: int = 50
    fmax: int = 14_000

    @property
    def mel_frames(self) -> int:
        # A centred STFT has one frame per hop plus one.
        return self.clip_samples // self.hop_size + 1


AUDIO = AudioConfig()


@dataclass(frozen=True)
class HtsatShape:
    """Arguments of ``HTSAT_Swin_Transformer`` that differ between sizes."""

    patch_size: int
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratio: float


# paper: laion-clap's "tiny" HTSAT. tiny: two stages on 16 x 16 patches still end on
# an 8 x 8 grid of 768-d tokens, so the map keeps its 64 x 768 shape at a sixth of the cost.
HTSAT_SHAPES: dict[Size, HtsatShape] = {
    "paper": HtsatShape(4, 96, (2, 2, 6, 2), (4, 8, 16, 32), 4.0),
    "tiny": HtsatShape(16, 384, (1, 1), (2, 4), 1.0),
}
_SPEC_SIZE = 256
_WINDOW_SIZE = 8
_AUDIOSET_CLASSES = 527
_TINY_ROBERTA = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "type_vocab_size": 1,
}


def _laion_clap_folder() -> Path | None:
    """Where laion-clap is installed; found without running any of its code."""
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _clap_cached_paths() -> list[Path]:
    paths = [hf_cached_file("lukewys/laion_clap", "630k-fusion-best.pt")]
    folder = _laion_clap_folder()
    if folder is not None:
        # laion-clap's own load_ckpt() looks for (and downloads to) its package folder.
        paths.append(folder / "630k-fusion-best.pt")
    return paths


class ClapWeights(enum.Enum):
    LAION_630K_FUSION = WeightsSource(
        title="LAION-CLAP HTSAT-tiny 630k fusion",
        file_name="630k-fusion-best.pt",
        download=_CHECKPOINT_URL,
        cached_paths=_clap_cached_paths,
        preprocessing="mono 48 kHz audio, 480,000 samples per window, int16 round "
        "trip, fusion mel input stacked 4 times",
    )


def _htsat_module() -> types.ModuleType:
    """laion-clap's ``htsat.py``, imported without running any laion-clap ``__init__``."""
    if _PRIVATE_PACKAGE not in sys.modules:
        folder = _laion_clap_folder()
        if folder is None:
            raise ImportError("the CLAP extractors need laion-clap: pip install laion-clap==1.1.7")
        package = types.ModuleType(_PRIVATE_PACKAGE)
        package.__path__ = [str(folder / "clap_module")]
        sys.modules[_PRIVATE_PACKAGE] = package
    return importlib.import_module(f"{_PRIVATE_PACKAGE}.htsat")


def quantize_int16(audio: np.ndarray) -> np.ndarray:
    """The int16 round trip every CLAP input goes through (truncation, not rounding)."""
    return ((np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)


def fit_to_clip(audio: np.ndarray, samples: int = AUDIO.clip_samples) -> np.ndarray:
    """Exactly ``samples`` samples, picked at ``round(linspace(0, L - 1, samples))``."""
    return audio[rounded_linspace(0, len(audio) - 1, samples)]


def segment_chunks(audio: np.ndarray, segments: int = SEGMENTS_PER_WINDOW) -> np.ndarray:
    """(segments, L // segments) chunks starting at ``round(linspace(0, L, segments + 1))``.

    The last start is at most ``L - L // segments``, so every chunk is complete.
    """
    length = len(audio) // segments
    starts = rounded_linspace(0, len(audio), segments + 1)[:-1]
    return audio[starts[:, None] + np.arange(length)]


def repeat_pad(chunks: np.ndarray, samples: int = AUDIO.clip_samples) -> np.ndarray:
    """CLAP's "repeatpad" for short audio: whole repeats, then zeros up to ``samples``."""
    repeats = samples // chunks.shape[-1]
    tiled = np.tile(chunks, (1, repeats))
    return np.pad(tiled, ((0, 0), (0, samples - tiled.shape[-1])))


@functools.lru_cache(maxsize=1)
def _log_mel() -> nn.Module:
    # Imported here: torchaudio costs a second and only audio preprocessing needs it.
    import torchaudio

    return nn.Sequential(
        torchaudio.transforms.MelSpectrogram(
            sample_rate=AUDIO.sample_rate,
            n_fft=AUDIO.window_size,
            win_length=AUDIO.window_size,
            hop_length=AUDIO.hop_size,
            center=True,
            pad_mode="reflect",
            power=2.0,
            norm=None,
            n_mels=AUDIO.mel_bins,
            f_min=AUDIO.fmin,
            f_max=AUDIO.fmax,
        ),
        torchaudio.transforms.AmplitudeToDB(top_db=None),
    )


def fusion_mel(clips: np.ndarray) -> torch.Tensor:
    """(..., 480000) audio -> (..., 4, 1001, 64): log-mel stacked 4 times (not 'longer')."""
    mel = _log_mel()(torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32)))
    return mel.transpose(-1, -2).unsqueeze(-3).repeat_interleave(FUSION_CHANNELS, dim=-3)


def as_audio(window: Any, minimum: int = SEGMENTS_PER_WINDOW) -> np.ndarray:
    """The window's mono audio as float32, or a ValueError saying what is wrong."""
    audio = window.numpy() if isinstance(window, torch.Tensor) else window
    if not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.dtype.kind != "f":
        described = (
            f"{audio.dtype} array of shape {audio.shape}"
            if isinstance(audio, np.ndarray)
            else type(window).__name__
        )
        raise ValueError(
            f"expected the window's audio as a 1-D float array of mono samples at "
            f"{AUDIO.sample_rate} Hz; got {described}"
        )
    if len(audio) < minimum:
        raise ValueError(f"the window's audio has {len(audio)} samples; at least {minimum} needed")
    if not np.isfinite(audio).all():
        raise ValueError("the window's audio contains NaN or infinite samples")
    return audio.astype(np.float32, copy=False)


@dataclass(frozen=True)
class ClapMapTransform:
    """Window audio (L,) at 48 kHz -> (4, 1001, 64) fusion mel of the whole window."""

    def __call__(self, window: Any) -> torch.Tensor:
        return fusion_mel(quantize_int16(fit_to_clip(as_audio(window))))


@dataclass(frozen=True)
class ClapSegmentTransform:
    """Window audio (L,) at 48 kHz -> (10, 4, 1001, 64) fusion mels of its 10 chunks."""

    def __call__(self, window: Any) -> torch.Tensor:
        audio = as_audio(window, minimum=SEGMENTS_PER_WINDOW)
        if len(audio) // SEGMENTS_PER_WINDOW > AUDIO.clip_samples:
            raise ValueError(
                f"the window's audio is {len(audio) / AUDIO.sample_rate:.1f} s long; CLAP "
                "segment embeddings expect a window of about 10 s"
            )
        return fusion_mel(repeat_pad(quantize_int16(segment_chunks(audio))))


class ClapAudioTower(nn.Module):
    """HTSAT and the audio projection, named as in the LAION checkpoint."""

    def __init__(self, audio_branch: nn.Module) -> None:
        super().__init__()
        self.audio_branch = audio_branch
        self.audio_projection = nn.Sequential(
            nn.Linear(audio_branch.num_features, JOINT_DIM),
            nn.ReLU(),
            nn.Linear(JOINT_DIM, JOINT_DIM),
        )
        self.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def token_map(self, mel_fusion: torch.Tensor) -> torch.Tensor:
        """(B, 4, T, 64) fusion mels -> (B, 64, C) tokens in token-semantic order.

        HTSAT's tokens after its final norm are row-major in an (F, T) grid. Its
        token-semantic head splits F into ``freq_ratio`` groups of rows and lays the
        groups side by side in time; row r of group g at time t becomes position
        r * (groups * T) + g * T + t of the flattened map.
        """
        htsat = self.audio_branch
        x = htsat.bn0(mel_fusion.transpose(1, 3)).transpose(1, 3)
        x = htsat.patch_embed(htsat.reshape_wav2img(x), longer_idx=[])
        for layer in htsat.layers:
            x, _ = layer(x)
        x = htsat.norm(x)
        grid = htsat.spec_size // htsat.patch_stride[0] // 2 ** (len(htsat.depths) - 1)
        groups = htsat.freq_ratio
        batch, tokens, channels = x.shape
        grouped = x.view(batch, groups, grid // groups, grid, channels).transpose(1, 2)
        return grouped.reshape(batch, tokens, channels)

    def embedding(self, mel_fusion: torch.Tensor) -> torch.Tensor:
        """(B, 4, T, 64) fusion mels -> (B, 512) L2-normalised joint-space embeddings."""
        pooled = self.token_map(mel_fusion).mean(dim=1)
        return F.normalize(self.audio_projection(pooled).float(), dim=-1)


class ClapTextTower(nn.Module):
    """RoBERTa and the text projection, named as in the LAION checkpoint."""

    def __init__(self, text_branch: nn.Module) -> None:
        super().__init__()
        self.text_branch = text_branch
        self.text_projection = nn.Sequential(
            nn.Linear(text_branch.config.hidden_size, JOINT_DIM),
            nn.ReLU(),
            nn.Linear(JOINT_DIM, JOINT_DIM),
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_branch(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled).float(), dim=-1)


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The LAION checkpoint's state dict, without its DistributedDataParallel prefix.

    The release is pickled with protocol 4 and holds numpy scalars beside the weights,
    both of which `load_state_dict_file` reads.
    """
    state = load_state_dict_file(path, _EXPECTED, _FIX)
    return {key.removeprefix("module."): value for key, value in state.items()}


def _load_part(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    # The checkpoint holds both towers (and more); each tower takes its own tensors.
    wanted = module.state_dict().keys()
    copy_weights(module, {key: state[key] for key in wanted if key in state}, path, _EXPECTED, _FIX)


def _build_audio_tower(size: Size, weights: Path | RandomInit) -> ClapAudioTower:
    # The file is read first: a bad one is refused before the tower is built.
    state = _read_checkpoint(weights) if isinstance(weights, Path) else None
    htsat = _htsat_module()
    shape = HTSAT_SHAPES[size]
    seed = weights.seed if isinstance(weights, RandomInit) else 0
    with seeded(seed), warnings.catch_warnings():
        # laion-clap's Swin code calls torch.meshgrid without `indexing`; harmless.
        warnings.filterwarnings("ignore", message="torch.meshgrid")
        tower = ClapAudioTower(
            htsat.HTSAT_Swin_Transformer(
                spec_size=_SPEC_SIZE,
                patch_size=shape.patch_size,
                patch_stride=(shape.patch_size, shape.patch_size),
                num_classes=_AUDIOSET_CLASSES,
                embed_dim=shape.embed_dim,
                depths=list(shape.depths),
                num_heads=list(shape.num_heads),
                window_size=_WINDOW_SIZE,
                mlp_ratio=shape.mlp_ratio,
                config=AUDIO,
                enable_fusion=True,
                fusion_type="aff_2d",
            )
        )
    if state is not None:
        _load_part(tower, state, weights)
    return tower


class _ClapExtractor(FeatureExtractor):
    """What both CLAP extractors share: the audio tower and the text side."""

    version = "1"
    input = WindowInput("audio", sample_rate=AUDIO.sample_rate)
    weights_enum = ClapWeights
    default_weights = ClapWeights.LAION_630K_FUSION

    def __init__(
        self,
        size: Size = "paper",
        weights: WeightsArg = None,
        device: str | torch.device | None = None,
        precision: Precision = "auto",
        roberta: str | Path | None = None,
    ) -> None:
        resolved = self.resolve(size, weights)
        super().__init__(
            size=size,
            weights=resolved,
            network=_build_audio_tower(size, resolved),
            device=device,
            precision=precision,
        )
        self.roberta = roberta
        self._text: tuple[ClapTextTower, Any] | None = None

    @classmethod
    def read_weights(cls, path: Path) -> dict[str, torch.Tensor]:
        return _read_checkpoint(path)

    @property
    def logit_scale_a(self) -> float:
        """Multiplier of the audio-text cosine in CLAP logits (exp of the stored value)."""
        return float(self.network.logit_scale_a.exp())

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised prompt embeddings (P, 512), float32 on the extractor's device.

        The paper size tokenises with RoBERTa's tokenizer exactly as laion-clap does
        (padded to 77 tokens) and needs a local roberta-base (config, vocab.json,
        merges.txt): the folder given as ``roberta``, else the Hugging Face cache. The
        tiny size uses open_clip's bundled tokenizer, so it works offline anywhere.
        """
        if self._text is None:
            self._text = self._build_text_side()
        tower, tokenize = self._text
        input_ids, attention_mask = tokenize(list(prompts))
        with torch.no_grad(), self._autocast():
            return tower(input_ids.to(self.device), attention_mask.to(self.device))

    def _build_text_side(self) -> tuple[ClapTextTower, Any]:
        from transformers import RobertaConfig, RobertaModel  # heavy: only for prompts

        seed = self.weights.seed if isinstance(self.weights, RandomInit) else 0
        if self.size == "tiny":
            import open_clip

            def tokenize(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
                ids = open_clip.tokenize(prompts, context_length=TEXT_CONTEXT)
                return ids, (ids != 0).long()

            config = RobertaConfig(
                vocab_size=open_clip.SimpleTokenizer().vocab_size,
                max_position_embeddings=TEXT_CONTEXT + 2,
                pad_token_id=0,
                **_TINY_ROBERTA,
            )
        else:
            tokenizer, config = self._local_roberta()

            def tokenize(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
                encoded = tokenizer(
                    prompts,
                    padding="max_length",
                    truncation=True,
                    max_length=TEXT_CONTEXT,
                    return_tensors="pt",
                )
                return encoded["input_ids"], encoded["attention_mask"]

        with seeded(seed):
            tower = ClapTextTower(RobertaModel(config))
        if isinstance(self.weights, Path):
            _load_part(tower, _read_checkpoint(self.weights), self.weights)
        return tower.eval().requires_grad_(False).to(self.device), tokenize

    def _local_roberta(self) -> tuple[Any, Any]:
        from transformers import RobertaConfig, RobertaTokenizer

        source = str(self.roberta) if self.roberta is not None else _ROBERTA
        try:
            tokenizer = RobertaTokenizer.from_pretrained(source, local_files_only=True)
            config = RobertaConfig.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as error:
            raise WeightsNotFoundError(
                f"CLAP prompt embeddings need a local {_ROBERTA} (config.json, vocab.json, "
                f"merges.txt); none found at {source!r} ({error.__class__.__name__}). Download "
                f"them from https://huggingface.co/FacebookAI/{_ROBERTA} and pass the folder "
                "as roberta=DIR, or put roberta-base in the Hugging Face cache; nothing is "
                "downloaded automatically."
            ) from None
        return tokenizer, config


class ClapMapExtractor(_ClapExtractor):
    """The 64 x 768 CLAP token map of a window (the parser's audio input)."""

    name = "clap"
    output_shape = (64, 768)

    @classmethod
    def make_transform(cls, size: Size) -> ClapMapTransform:
        return ClapMapTransform()

    def _batch_item_shape(self) -> tuple[int, ...]:
        return (FUSION_CHANNELS, AUDIO.mel_frames, AUDIO.mel_bins)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network.token_map(batch)


class ClapSegmentExtractor(_ClapExtractor):
    """The 10 x 512 CLAP embeddings of a window's 1-s segments (audio pseudo-labels)."""

    name = "clap-segments"
    output_shape = (SEGMENTS_PER_WINDOW, JOINT_DIM)

    @classmethod
    def make_transform(cls, size: Size) -> ClapSegmentTransform:
        return ClapSegmentTransform()

    def _batch_item_shape(self) -> tuple[int, ...]:
        return (SEGMENTS_PER_WINDOW, FUSION_CHANNELS, AUDIO.mel_frames, AUDIO.mel_bins)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        embeddings = self.network.embedding(batch.flatten(0, 1))
        return embeddings.view(batch.shape[0], *self.output_shape)
