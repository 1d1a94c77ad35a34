"""The catalog of tables: every feature set the pipeline knows, declared once, and the
names of the label tables.

A feature set is one table of the feature store: its name, the shape and dtype of one
window's row, the extractor that computes it (if any), the released layouts that fill
it from folders of `<id>.npy` files, and the parser input it can be. Extraction, import,
the command line, training configs and the model presets' tables all read it from here:
adding a feature set is one `FeatureSet` entry in `FEATURE_SETS` (and its tests).

The weights of an extracted feature set are its extractor's weights entries (the
`weights_enum` of the extractor class, in the manner of torchvision's `Weights`: file,
source, sha256, preprocessing); `FeatureSet.weights()` lists them without building a
network, and `FeatureSet.weights_title(identity)` names a stored table's weights in
plain words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from ..model.config import InputSpec

if TYPE_CHECKING:
    from ..extractors.base import FeatureExtractor, WeightsSource

ModelInput = Literal["audio-map", "audio-segment", "visual-segment", "visual-frames", "visual-st"]

AUDIO_MAP_TABLE = "clap-htsat-fusion"
AUDIO_SEGMENT_TABLE = "clap-htsat-segment"
VISUAL_TABLE = "clip-vit-l-14"
VISUAL_ST_TABLE = "r2plus1d-18"
VGGISH_TABLE = "vggish"
RESNET_TABLE = "resnet152"

# Label tables: LLP's weak labels, segment pseudo-labels of a source, dense annotations.
WEAK_LABELS_TABLE = "weak"


PSEUDO_LABEL_PREFIX = "segment-"
DENSE_PREFIX = "dense-"


def pseudo_label_table(source: str) -> str:
    """Segment pseudo-labels of one source: `valor`, `generated-<model>`, `synthetic`."""
    return f"{PSEUDO_LABEL_PREFIX}{source}"


def dense_table(annotations: str) -> str:
    """Dense evaluation annotations: `corrected`, `published` (LLP) or `synthetic`."""
    return f"{DENSE_PREFIX}{annotations}"


@dataclass(frozen=True)
class ReleaseLayout:
    """A released layout: folders of `<id>.npy` files, one per video, of this set's shape."""

    name: str  # what `avvp import-features --layout` takes
    source: str  # the provenance source of the rows it imports
    title: str


@dataclass(frozen=True)
class FeatureSet:
    """One feature table: what a row is, what computes it, what releases fill it."""

    table: str
    shape: tuple[int, int]
    model_input: ModelInput
    title: str
    # The extractor that computes it, by the name configs and `--extractors` use (one of
    # avvp.extractors' names unless `extractor_path` is given). None: only imported.
    extractor: str | None = None
    releases: tuple[ReleaseLayout, ...] = ()
    dtype: str = "float16"  # what extraction stores unless ExtractConfig.dtype says otherwise
    extractor_path: str | None = None  # `module:Class` of an extractor outside avvp

    @property
    def extractor_ref(self) -> str:
        """What `create_extractor` and `extractor_class` take for its extractor: an
        avvp name, or `module:Class` (`extractor_path`)."""
        if self.extractor is None:
            raise ValueError(f"feature set {self.table} has no extractor: import a release")
        return self.extractor_path or self.extractor

    def extractor_class(self) -> type[FeatureExtractor]:
        # Imported here: the catalog is read by the command line's option parsing, which
        # must not wait for torch.
        from ..extractors import extractor_class

        return extractor_class(self.extractor_ref)

    def weights(self) -> tuple[WeightsSource, ...]:
        """The weights entries of the extractor (none for a set only imported)."""
        if self.extractor is None:
            return ()
        return tuple(member.value for member in self.extractor_class().weights_enum)

    def weights_title(self, identity: str) -> str:
        """A stored table's weights identity in plain words: a known file's title, random
        initialisation, or an unknown file."""
        from ..extractors.base import RandomInit

        if RandomInit.names(identity):
            return f"random weights ({identity}), not a trained network"
        for source in self.weights():
            if source.sha256 and identity.startswith(source.sha256):
                return f"{source.title} ({identity[:12]})"
        return f"a weight file not in the catalog (sha256 {identity[:12]})"


FEATURE_SETS: dict[str, FeatureSet] = {
    feature.table: feature
    for feature in (
        FeatureSet(
            AUDIO_MAP_TABLE,
            (64, 768),
            "audio-map",
            "CLAP HTSAT-tiny 630k fusion token map per window",
            extractor="clap",
            releases=(ReleaseLayout("valor-clap", "valor-release", "VALOR's CLAP map"),),
        ),
        FeatureSet(
            AUDIO_SEGMENT_TABLE,
            (10, 512),
            "audio-segment",
            "CLAP joint-space embedding per 1-s segment (audio pseudo-labels)",
            extractor="clap-segments",
        ),
        FeatureSet(
            VISUAL_TABLE,
            (10, 768),
            "visual-segment",
            "CLIP ViT-L/14 image embedding per 1-s segment",
            extractor="clip",
            releases=(ReleaseLayout("valor-clip", "valor-release", "VALOR's CLIP ViT-L/14"),),
        ),
        FeatureSet(
            VISUAL_ST_TABLE,
            (10, 512),
            "visual-st",
            "R(2+1)D-18 Kinetics-400 clip embedding per 1-s segment",
            extractor="r2plus1d",
            releases=(ReleaseLayout("han-r2plus1d", "han-release", "HAN's R(2+1)D-18"),),
        ),
        FeatureSet(
            VGGISH_TABLE,
            (10, 128),
            "audio-segment",
            "VGGish embedding per 1-s segment",
            releases=(ReleaseLayout("han-vggish", "han-release", "HAN's VGGish"),),
        ),
        FeatureSet(
            RESNET_TABLE,
            (80, 2048),
            "visual-frames",
            "ResNet-152 frame features at 8 FPS",
            releases=(ReleaseLayout("han-res152", "han-release", "HAN's ResNet-152 at 8 FPS"),),
        ),
    )
}

# The tables a model preset reads (audio, visual, visual_st), by preset family.
_CLAP_CLIP_TABLES = (AUDIO_MAP_TABLE, VISUAL_TABLE, VISUAL_ST_TABLE)
_HAN_TABLES = (VGGISH_TABLE, RESNET_TABLE, VISUAL_ST_TABLE)
MODEL_TABLES: dict[str, tuple[str, str, str]] = {
    "mmcse-clapclip": _CLAP_CLIP_TABLES,
    "mmcse-vggish-resnet": _HAN_TABLES,
    "valor-clapclip": _CLAP_CLIP_TABLES,
    "valor-vggish-resnet": _HAN_TABLES,
    "valorplus-vggish-resnet": _HAN_TABLES,
}

# Which parser input stream each kind of feature set feeds, and as what.
_STREAM_KINDS: dict[str, dict[ModelInput, str]] = {
    "audio": {"audio-map": "clap_map", "audio-segment": "segment"},
    "visual": {"visual-segment": "segment", "visual-frames": "frames8"},
    "visual_st": {"visual-st": "segment"},
}


def feature_set(table: str) -> FeatureSet:
    try:
        return FEATURE_SETS[table]
    except KeyError:
        raise ValueError(
            f"{table!r} is not in the feature catalog; known: {', '.join(FEATURE_SETS)}"
        ) from None


def extracted_sets() -> dict[str, FeatureSet]:
    """The feature sets an extractor computes, by extractor name."""
    return {f.extractor: f for f in FEATURE_SETS.values() if f.extractor is not None}


def set_of_extractor(extractor: str) -> FeatureSet:
    sets = extracted_sets()
    if extractor not in sets:
        raise ValueError(f"unknown extractor {extractor!r}; known: {', '.join(sets)}")
    return sets[extractor]


def release_layouts() -> dict[str, tuple[FeatureSet, ReleaseLayout]]:
    """Every released layout by name, with the feature set it fills."""
    return {r.name: (f, r) for f in FEATURE_SETS.values() for r in f.releases}


def release_layout(name: str) -> tuple[FeatureSet, ReleaseLayout]:
    layouts = release_layouts()
    if name not in layouts:
        raise ValueError(f"unknown layout {name!r}: use one of {', '.join(layouts)}")
    return layouts[name]


def input_spec(base: InputSpec, audio: str, visual: str, visual_st: str) -> InputSpec:
    """`base` (a model preset's inputs) with the kinds and widths of the three tables.

    A table outside the catalog (imported with an explicit shape) keeps `base`'s input
    for its stream. Raises ValueError naming the table when a catalogued one cannot feed
    its stream (a visual table given as audio, rows that are not the stream's steps).
    """
    changes: dict[str, object] = {}
    chosen = {"audio": audio, "visual": visual, "visual_st": visual_st}
    for stream, table in chosen.items():
        feature = FEATURE_SETS.get(table)
        if feature is None:
            continue
        kind = _STREAM_KINDS[stream].get(feature.model_input)
        if kind is None:
            raise ValueError(
                f"table {table} ({feature.model_input}) cannot be the parser's {stream} input"
            )
        if stream == "visual_st":
            changes["st_dim"] = feature.shape[1]
        else:
            changes[f"{stream}_kind"] = kind
            changes[f"{stream}_dim"] = feature.shape[1]
    spec = replace(base, **changes)
    expected = spec.feature_shapes()
    for stream, table in chosen.items():
        if table in FEATURE_SETS and FEATURE_SETS[table].shape != expected[stream]:
            raise ValueError(
                f"table {table} has rows of {FEATURE_SETS[table].shape}, the parser's "
                f"{stream} input takes {expected[stream]}"
            )
    return spec


def describe() -> list[str]:
    """One line per feature set: table, shape, what computes it, the layouts that fill it."""
    lines = []
    for feature in FEATURE_SETS.values():
        shape = " x ".join(map(str, feature.shape))
        made_by = f"extractor {feature.extractor}" if feature.extractor else "releases only"
        layouts = ", ".join(r.name for r in feature.releases) or "-"
        lines.append(f"{feature.table}: {shape} {feature.dtype}, {made_by}; layouts: {layouts}")
    return lines
