"""A synthetic release in the layouts of VALOR's and HAN's published files, for tests,
the fetch/import benchmark and users who want to try `fetch-valor` offline.

From a synthetic mini-LLP (`avvp.pipeline.synthetic.features`) it writes:

- `CLIP.zip`: `CLIP/features/<id>.npy` (10 x 768 float32) and
  `CLIP/segment_pseudo_labels/<id>.npy` (10 x 25, the visual pseudo-labels);
- `CLAP.zip`: `CLAP/features/<id>.npy` (64 x 768) and the audio pseudo-labels;
- `r2plus1d_18/<id>.npy` (10 x 512), HAN's folder layout;
- `labels/`: the six LLP-format files of these videos (weak labels of every split,
  dense events of val and test), whose ids the imports accept with `--labels`.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...model.events import segment_events
from .clips import PlantedEvent, write_llp_label_files
from .features import SyntheticLLP, SyntheticLLPConfig, generate_synthetic_llp

MODALITIES = ("audio", "visual")


@dataclass(frozen=True)
class SyntheticRelease:
    clip_zip: Path
    clap_zip: Path
    r2plus1d: Path
    labels: Path
    data: SyntheticLLP


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def write_valor_archive(
    path: Path,
    top: str,
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    """A zip in VALOR's layout: `<top>/features/<id>.npy`, `<top>/segment_pseudo_labels/`."""
    # Stored by default, not deflated: float features barely compress, and VALOR's
    # archives are read member by member in place.
    with zipfile.ZipFile(path, "w", compression) as archive:
        for folder, arrays in (("features", features), ("segment_pseudo_labels", labels)):
            for video_id, array in arrays.items():
                archive.writestr(f"{top}/{folder}/{video_id}.npy", npy_bytes(array))
    return path


def write_synthetic_release(
    folder: str | Path, config: SyntheticLLPConfig | None = None
) -> SyntheticRelease:
    """Write the release files of a synthetic mini-LLP under `folder` (module docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = generate_synthetic_llp(config)
    ids = data.video_ids.tolist()
    clip_zip = write_valor_archive(
        folder / "CLIP.zip",
        "CLIP",
        {i: data.visual[n].astype(np.float32) for n, i in enumerate(ids)},
        {i: data.pseudo[n, 1] for n, i in enumerate(ids)},
    )
    clap_zip = write_valor_archive(
        folder / "CLAP.zip",
        "CLAP",
        {i: data.audio_map[n].astype(np.float32) for n, i in enumerate(ids)},
        {i: data.pseudo[n, 0] for n, i in enumerate(ids)},
    )
    r2plus1d = folder / "r2plus1d_18"
    r2plus1d.mkdir(exist_ok=True)
    for n, video_id in enumerate(ids):
        np.save(r2plus1d / f"{video_id}.npy", data.visual_st[n].astype(np.float32))
    labels = folder / "labels"
    labels.mkdir(exist_ok=True)
    write_llp_label_files(
        labels,
        [
            (f"{video_id}_0_10", str(data.splits[n]), dense_events(data.dense[n]))
            for n, video_id in enumerate(ids)
        ],
    )
    return SyntheticRelease(clip_zip, clap_zip, r2plus1d, labels, data)


def dense_events(dense: np.ndarray) -> list[PlantedEvent]:
    """The events (runs of ones) of one video's (2, T, K) segment labels."""
    # Time last: events come out by modality, then class, then onset.
    events = segment_events(dense.transpose(0, 2, 1))
    modalities, classes = events.index
    return [
        PlantedEvent(int(k), MODALITIES[m], int(onset), int(offset))
        for m, k, onset, offset in zip(
            modalities, classes, events.onset, events.offset, strict=True
        )
    ]
