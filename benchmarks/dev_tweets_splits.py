"""Development splits of the built-in tweets, for choosing a method without touching the
fixed test set: 1,500 test tweets and 3 training samples per size, all drawn from the
tweets that appear in none of ../shared/data/tweets/ (its test set and its largest
training files, which contain every smaller one).

    python benchmarks/dev_tweets_splits.py            # -> benchmarks/out/dev-tweets/
    exapt compare 'benchmarks/out/dev-tweets/train_n{n}_s{seed}.csv' --test benchmarks/out/dev-tweets/test.csv \\
        --strategies lp-ft,lp-ft:pairs=2000,lp-ft:pairs=1000 --n-per-class 8,16 --seeds 3 --val-fraction 0 \\
        --max-length 64 --no-tracking --out benchmarks/out/dev-compare
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TWEETS  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "dev-tweets"


def main() -> None:
    from exapt.data import load_data

    OUT.mkdir(parents=True, exist_ok=True)
    tweets = load_data("tweets")
    fixed = set(pd.read_csv(TWEETS / "test.csv")["text"])
    for s in range(3):
        fixed |= set(pd.read_csv(TWEETS / f"train_n256_s{s}.csv")["text"])
    pool = pd.DataFrame({"text": tweets.inputs, "label": tweets.labels})
    pool = pool[~pool["text"].isin(fixed)].reset_index(drop=True)
    test = np.random.default_rng(100).choice(len(pool), 1500, replace=False)
    pool.iloc[test].to_csv(OUT / "test.csv", index=False)
    rest = pool.drop(index=test)
    for seed, state in enumerate((10, 11, 12)):
        for n in (8, 16):
            rest.groupby("label").sample(n, random_state=state).to_csv(OUT / f"train_n{n}_s{seed}.csv", index=False)
    print(f"{len(pool)} tweets outside the fixed files -> {OUT}")


if __name__ == "__main__":
    main()
