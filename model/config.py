"""Model configurations as data, in the manner of open_clip: named presets plus one factory.

Input kinds are always explicit: nothing is guessed from folder or file names. The
checkpoint importer infers them from weight shapes and writes them here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..contract import NUM_CLASSES, SEGMENTS_PER_WINDOW

AudioKind = Literal["clap_map", "segment"]
VisualKind = Literal["segment", "frames8"]
ModelKind = Literal["mmcse", "valor"]

# A CLAP map is HTSAT's 64 tokens regrouped as 2 frequency rows x 32 time steps.
CLAP_MAP_ROWS = 2
CLAP_MAP_STEPS = 32
FRAMES_PER_SEGMENT = 8  # ResNet-152 features of the HAN release: 8 frames per second


@dataclass(frozen=True)
class InputSpec:
    """Shapes of the three feature streams a parser consumes.

    audio_kind "clap_map": (B, 64, audio_dim) CLAP token maps; "segment": (B, T, audio_dim)
    (e.g. VGGish 128). visual_kind "segment": (B, T, visual_dim) (CLIP 768);
    "frames8": (B, 8T, visual_dim) (ResNet-152 2048). visual_st: (B, T, st_dim) R(2+1)D.
    """

    audio_kind: AudioKind = "clap_map"
    audio_dim: int = 768
    visual_kind: VisualKind = "segment"
    visual_dim: int = 768
    st_dim: int = 512
    num_segments: int = SEGMENTS_PER_WINDOW
    num_classes: int = NUM_CLASSES

    @property
    def audio_steps(self) -> int:
        """Rows of one window's audio features."""
        return (
            CLAP_MAP_ROWS * CLAP_MAP_STEPS if self.audio_kind == "clap_map" else self.num_segments
        )

    @property
    def visual_steps(self) -> int:
        """Rows of one window's visual (2-D CNN / CLIP) features."""
        per_segment = FRAMES_PER_SEGMENT if self.visual_kind == "frames8" else 1
        return per_segment * self.num_segments

    def feature_shapes(self) -> dict[str, tuple[int, int]]:
        """Shape of one window of each input stream: audio, visual, visual_st."""
        return {
            "audio": (self.audio_steps, self.audio_dim),
            "visual": (self.visual_steps, self.visual_dim),
            "visual_st": (self.num_segments, self.st_dim),
        }


@dataclass(frozen=True)
class MMCSEOptions:
    """Ablation switches of MM-CSE; the defaults build the full model of the paper.

    decoupling=False replaces CAFD by one projection shared by all classes (so also no
    background, gate, reconstruction or orthogonality). background=False keeps the 25
    class branches but drops the background branch and its gate. secm, lgsf, intra_path
    and cross_path remove that part of every FGSE layer; at least one path must stay.
    """

    decoupling: bool = True
    background: bool = True
    secm: bool = True
    lgsf: bool = True
    intra_path: bool = True
    cross_path: bool = True

    def __post_init__(self) -> None:
        if not (self.intra_path or self.cross_path):
            raise ValueError("MMCSEOptions: intra_path and cross_path cannot both be off")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a parser; stored beside every checkpoint."""

    kind: ModelKind = "mmcse"
    inputs: InputSpec = InputSpec()
    hidden_dim: int = 256
    class_dim: int = 128
    num_layers: int = 4
    num_heads: int = 8
    ffn_dim: int = 512
    dropout: float = 0.1
    mmcse: MMCSEOptions = MMCSEOptions()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        inputs = InputSpec(**data.pop("inputs", {}))
        mmcse = MMCSEOptions(**data.pop("mmcse", {}))
        return cls(inputs=inputs, mmcse=mmcse, **data)


CLAP_CLIP = InputSpec(audio_kind="clap_map", audio_dim=768, visual_kind="segment", visual_dim=768)
VGGISH_RESNET = InputSpec(
    audio_kind="segment", audio_dim=128, visual_kind="frames8", visual_dim=2048
)

# Presets: the official settings of each network for each feature family.
MODEL_CONFIGS: dict[str, ModelConfig] = {
    "mmcse-clapclip": ModelConfig(kind="mmcse", inputs=CLAP_CLIP),
    "mmcse-vggish-resnet": ModelConfig(kind="mmcse", inputs=VGGISH_RESNET),
    "valor-clapclip": ModelConfig(
        kind="valor", inputs=CLAP_CLIP, hidden_dim=256, num_layers=4, num_heads=8, ffn_dim=1024
    ),
    # VALOR (train_valor.sh) and VALOR+ (train_valor+.sh) on the HAN features.
    "valor-vggish-resnet": ModelConfig(
        kind="valor", inputs=VGGISH_RESNET, hidden_dim=512, num_layers=1, num_heads=8, ffn_dim=1024
    ),
    "valorplus-vggish-resnet": ModelConfig(
        kind="valor", inputs=VGGISH_RESNET, hidden_dim=256, num_layers=4, num_heads=8, ffn_dim=1024
    ),
}


# Short names for the paper's setting (CLAP + CLIP + R(2+1)D features).
MODEL_ALIASES: dict[str, str] = {"mmcse": "mmcse-clapclip", "valor": "valor-clapclip"}


def resolve_model_name(name: str) -> str:
    """The preset an alias stands for; other names unchanged."""
    return MODEL_ALIASES.get(name, name)


def get_model_config(name: str) -> ModelConfig:
    try:
        return MODEL_CONFIGS[resolve_model_name(name)]
    except KeyError:
        known = ", ".join(sorted(MODEL_CONFIGS))
        raise ValueError(f"unknown model config {name!r}; known: {known}") from None
