"""Read speed of the feature store against one `.npy` file per video.

Writes N synthetic LLP-shaped rows (default 10,000 x 10 x 768 float16, CLIP) to a
store in a temporary folder, in several parts, and also as `<video_id>.npy` files (the
layout of the official releases). Then reads all N in one shuffled order into one
contiguous array both ways, in the same run, with a warm page cache: the best of a few
repeats is reported as videos/s, with the ratio store / npy.

    python benchmarks/store_read.py [--n 10000] [--shape 64x768] [--parts 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avvp.storage.features import FeatureStore
from avvp.storage.keys import Keys
from avvp.storage.provenance import Provenance


def best_seconds(read: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    result = read()  # warms the page cache and any lazily built state
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = read()
        timings.append(time.perf_counter() - start)
    return min(timings), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="videos (one window each)")
    parser.add_argument("--shape", default="10x768", help="feature shape per row, e.g. 64x768")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--parts", type=int, default=10, help="store parts to spread rows over")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(size) for size in args.shape.lower().split("x"))

    rng = np.random.default_rng(0)
    video_ids = np.array([f"{i:011d}" for i in range(args.n)], dtype=object)
    provenance = Provenance("synthetic", "1", dtype=args.dtype, shape=shape)

    with tempfile.TemporaryDirectory() as folder:
        npy_folder = Path(folder) / "npy"
        npy_folder.mkdir()
        table = FeatureStore(f"{folder}/store").table("synthetic")
        for part_ids in np.array_split(video_ids, args.parts):
            features = rng.standard_normal((len(part_ids), *shape), np.float32)
            features = features.astype(args.dtype)
            ones = np.ones(len(part_ids), np.int64)
            table.write(part_ids, 0 * ones, features, 10 * ones, ones.astype(bool), provenance)
            for video_id, feature in zip(part_ids, features, strict=True):
                np.save(npy_folder / f"{video_id}.npy", feature)

        order = rng.permutation(args.n)
        shuffled = Keys.of(video_ids[order])
        npy_paths = [npy_folder / f"{video_id}.npy" for video_id in video_ids[order]]

        def read_npy() -> np.ndarray:
            out = np.empty((args.n, *shape), args.dtype)
            for row, path in enumerate(npy_paths):
                out[row] = np.load(path)
            return out

        def read_fresh_table() -> np.ndarray:
            return FeatureStore(f"{folder}/store").table("synthetic").read(shuffled)

        npy_s, from_npy = best_seconds(read_npy, args.repeats)
        fresh_s, from_store = best_seconds(read_fresh_table, args.repeats)
        cached_s, _ = best_seconds(lambda: table.read(shuffled), args.repeats)
        assert np.array_equal(from_npy, from_store), "the two layouts disagree"

    print(f"{args.n} rows of {args.shape} {args.dtype}, store in {args.parts} parts")
    print(f"npy files            : {args.n / npy_s:12,.0f} videos/s")
    print(f"store, fresh table   : {args.n / fresh_s:12,.0f} videos/s")
    print(f"store, cached index  : {args.n / cached_s:12,.0f} videos/s")
    print(f"ratio store/npy      : {npy_s / fresh_s:.2f} (fresh), {npy_s / cached_s:.2f} (cached)")


if __name__ == "__main__":
    main()
