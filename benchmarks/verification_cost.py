"""What checking shards against their recorded SHA-256 costs, on the caches of a finished run.

For the configured dataset (params.yaml in the current directory, after `dvc repro`), reports
per shard directory: its size, the time to hash every shard (what `sample` / `features` spend
verifying a resumed directory, and `pipeline verify`), and, for feature caches, the time to
read every shard checked (`read_features`: one read, hash, parse) against reading it with h5py
alone. Best of `--repeat` runs, files in the page cache. Run on demand:

    python benchmarks/verification_cost.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from pathlib import Path

import h5py

from pipeline.core.params import load_params
from pipeline.core.shards import ShardFile, read_shard_index, verify_shards
from pipeline.features.feature_cache import read_features


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """Seconds of the fastest of `repeat` runs of `work`."""
    return min(timeit.repeat(work, number=1, repeat=repeat))


def read_unchecked(shards: list[ShardFile]) -> None:
    for shard in shards:
        with h5py.File(shard.path, "r") as f:
            f["features"][:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    params = load_params(args.params)
    layout = params.layout
    directories = [layout.patches(params.dataset.train_split)] + [
        layout.features(net, split) for net in params.features.nets for split in params.splits(None)
    ]
    for directory in directories:
        shards = read_shard_index(directory)
        megabytes = sum(s.path.stat().st_size for s in shards) / 1e6
        hashing = best_of(args.repeat, lambda shards=shards: verify_shards(shards, "-"))
        line = f"{directory}: {len(shards)} shards, {megabytes:.1f} MB, hash all {hashing:.3f} s"
        if "features" in directory.parts:
            checked = best_of(args.repeat, lambda s=shards: [read_features(x) for x in s])
            plain = best_of(args.repeat, lambda s=shards: read_unchecked(s))
            line += f"; read checked {checked:.3f} s vs h5py alone {plain:.3f} s"
        print(line)


if __name__ == "__main__":
    main()
