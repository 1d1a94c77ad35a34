"""Importing VALOR's release: the archives read in place against extracting them first.

A generated release in VALOR's layout (`CLIP.zip`: 10 x 768 features and visual
pseudo-labels per video; `CLAP.zip`: 64 x 768 features and audio pseudo-labels) is
imported into a fresh store two ways, alternately, `--repeats` times each:

1. in place: `fetch_valor --from-zip` (digest of each archive, safety check, members
   read straight from the zips);
2. extracted first: `zipfile.extractall` of both archives to disk, then LLP's labels
   (`import_llp_labels`, as `fetch_valor` does), `import_features` and
   `import_pseudo_labels` on the extracted folders (what a user does who unzips the
   release first), the extraction counted in its time.

Both write the same tables (the two feature tables, the `valor` pseudo-labels and LLP's
weak and dense labels); the median videos/s of each and their ratio are printed.

    python benchmarks/fetch_import.py [--videos 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from avvp.pipeline.release import (
    ImportFeaturesConfig,
    ImportLabelsConfig,
    import_features,
    import_llp_labels,
    import_pseudo_labels,
)
from avvp.pipeline.synthetic.features import SyntheticLLPConfig
from avvp.pipeline.synthetic.release import SyntheticRelease, write_synthetic_release
from avvp.pipeline.valor import FetchConfig, fetch_valor


def in_place(release: SyntheticRelease, root: Path) -> float:
    started = time.perf_counter()
    result = fetch_valor(
        root,
        FetchConfig(
            from_zips=[str(release.clip_zip), str(release.clap_zip)], labels=str(release.labels)
        ),
    )
    seconds = time.perf_counter() - started
    assert result.labels.videos_written == len(release.data.video_ids), result
    return seconds


def extracted_first(release: SyntheticRelease, root: Path, scratch: Path) -> float:
    labels = str(release.labels)
    started = time.perf_counter()
    for archive in (release.clip_zip, release.clap_zip):
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(scratch)
    # fetch_valor writes LLP's labels too: the reference does the same work.
    import_llp_labels(str(root), labels)
    for top, layout, modality in (
        ("CLIP", "valor-clip", "visual"),
        ("CLAP", "valor-clap", "audio"),
    ):
        import_features(
            scratch / top / "features", root, ImportFeaturesConfig(layout=layout, labels=labels)
        )
        result = import_pseudo_labels(
            scratch / top / "segment_pseudo_labels",
            root,
            ImportLabelsConfig(source="valor", modality=modality, labels=labels),
        )
    seconds = time.perf_counter() - started
    assert result.videos_written == len(release.data.video_ids), result
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        n_val = n_test = max(1, args.videos // 8)
        config = SyntheticLLPConfig(
            n_train=args.videos - n_val - n_test, n_val=n_val, n_test=n_test
        )
        started = time.perf_counter()
        release = write_synthetic_release(work / "release", config)
        size = sum(path.stat().st_size for path in (release.clip_zip, release.clap_zip))
        print(
            f"generated a VALOR-layout release of {len(release.data.video_ids)} videos "
            f"({size / 2**20:.0f} MiB of zips) in {time.perf_counter() - started:.0f} s"
        )
        timings: dict[str, list[float]] = {"in place": [], "extracted first": []}
        for repeat in range(args.repeats):
            timings["in place"].append(in_place(release, work / f"in-place-{repeat}"))
            scratch = work / f"scratch-{repeat}"
            timings["extracted first"].append(
                extracted_first(release, work / f"extracted-{repeat}", scratch)
            )
            for leftover in (scratch, work / f"in-place-{repeat}", work / f"extracted-{repeat}"):
                shutil.rmtree(leftover)
        videos = len(release.data.video_ids)
        rates = {name: videos / float(np.median(runs)) for name, runs in timings.items()}
        for name, runs in timings.items():
            shown = ", ".join(f"{seconds:.2f} s" for seconds in runs)
            print(f"  {name:16s} {rates[name]:8.0f} videos/s (runs: {shown})")
        ratio = rates["in place"] / rates["extracted first"]
        print(f"  ratio in place / extracted first: {ratio:.2f}")


if __name__ == "__main__":
    main()
