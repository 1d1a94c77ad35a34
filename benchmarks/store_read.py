"""Read speed of the feature store against one `.npy` file per video, for both row shapes.

For each row shape (CLIP rows, 10 x 768, and CLAP maps, 64 x 768), writes N synthetic
one-window videos to a store in a temporary folder, in several parts, and the same rows
as `<video_id>.npy` files (the layout of the official releases). Both routes then read
the same N videos in the same shuffled order into one contiguous (N, *shape) array, the
store opened afresh for every read (its key index included); one read of each warms the
page cache first. Reads come in alternating pairs (store then npy, npy then store, ...)
so that load from other processes falls on both sides alike; every pair's ratio
npy seconds / store seconds is printed (above 1: the store is faster), then the median
and the spread.

    python benchmarks/store_read.py [--n-clip 10000] [--n-clap 2000] [--pairs 5]
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


def write_both(folder: Path, n: int, shape: tuple[int, ...], dtype: str, parts: int) -> np.ndarray:
    """N rows as store parts and as .npy files; returns the video ids."""
    rng = np.random.default_rng(0)
    video_ids = np.array([f"{i:011d}" for i in range(n)], dtype=object)
    provenance = Provenance("synthetic", "1", dtype=dtype, shape=shape)
    table = FeatureStore(folder / "store").table("synthetic")
    (folder / "npy").mkdir()
    for part_ids in np.array_split(video_ids, parts):
        features = rng.standard_normal((len(part_ids), *shape), np.float32).astype(dtype)
        ones = np.ones(len(part_ids), np.int64)
        table.write(part_ids, 0 * ones, features, 10 * ones, ones.astype(bool), provenance)
        for video_id, feature in zip(part_ids, features, strict=True):
            np.save(folder / "npy" / f"{video_id}.npy", feature)
    return video_ids


def seconds(read: Callable[[], np.ndarray]) -> float:
    start = time.perf_counter()
    read()
    return time.perf_counter() - start


def compare(label: str, n: int, shape: tuple[int, ...], args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        video_ids = write_both(folder, n, shape, args.dtype, args.parts)
        order = np.random.default_rng(1).permutation(n)
        keys = Keys.of(video_ids[order])
        npy_paths = [folder / "npy" / f"{video_id}.npy" for video_id in video_ids[order]]

        def read_npy() -> np.ndarray:
            out = np.empty((n, *shape), args.dtype)
            for row, path in enumerate(npy_paths):
                out[row] = np.load(path)
            return out

        def read_store() -> np.ndarray:
            return FeatureStore(folder / "store").table("synthetic").read(keys)

        # The warm-up reads, checked equal: both routes return the same array.
        assert np.array_equal(read_npy(), read_store()), "the two layouts disagree"
        ratios, store_s, npy_s = [], [], []
        print(
            f"{label}: {n} videos of {'x'.join(map(str, shape))} {args.dtype}, "
            f"store in {args.parts} parts"
        )
        for pair in range(args.pairs):
            if pair % 2 == 0:
                store, npy = seconds(read_store), seconds(read_npy)
            else:
                npy, store = seconds(read_npy), seconds(read_store)
            store_s.append(store)
            npy_s.append(npy)
            ratios.append(npy / store)
            print(
                f"  pair {pair + 1} ({'store, npy' if pair % 2 == 0 else 'npy, store'}): "
                f"store {n / store:9,.0f} videos/s, npy {n / npy:9,.0f} videos/s, "
                f"ratio {npy / store:.2f}"
            )
    median = float(np.median(ratios))
    print(
        f"  store/npy ratio: median {median:.2f} (spread {min(ratios):.2f}-{max(ratios):.2f}); "
        f"median videos/s store {n / np.median(store_s):,.0f}, npy {n / np.median(npy_s):,.0f}"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-clip", type=int, default=10_000, help="videos of 10 x 768 rows")
    parser.add_argument("--n-clap", type=int, default=2_000, help="videos of 64 x 768 maps")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--parts", type=int, default=10, help="store parts to spread rows over")
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs per shape")
    args = parser.parse_args()
    results = {
        "CLIP rows": compare("CLIP rows", args.n_clip, (10, 768), args),
        "CLAP maps": compare("CLAP maps", args.n_clap, (64, 768), args),
    }
    print("summary (median store/npy): " + ", ".join(f"{k} {v:.2f}x" for k, v in results.items()))


if __name__ == "__main__":
    main()
