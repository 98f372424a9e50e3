"""Do today's exapt cells reproduce the committed tweet accuracies to the last digit?

    python benchmarks/reproduce_tweets.py [--sizes 8,16,64] [--seeds 0,1,2] [--methods linear-probe,lp-ft,full]

Runs the exapt cells of benchmarks/accuracy_tweets.py (same files, same options, seeded)
into a temporary folder and compares accuracy and macro-F1 with the rows committed in
results/accuracy_tweets.csv, exactly (the float as written, not a tolerance). A refactor
that changes no computation must print `identical` for every cell. Prints one line per
cell and a last line `N passed, M failed`; exits 1 when any cell differs.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_tweets import run_cell  # noqa: E402
from common import RESULTS, TWEETS, read_csv  # noqa: E402


def committed() -> dict:
    with open(RESULTS / "accuracy_tweets.csv") as fh:
        return {(r["method"], r["n"], r["seed"]): r for r in csv.DictReader(fh) if r["tool"] == "exapt"}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="8,16,64")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="linear-probe,linear-probe:names=2,lp-ft,full")
    a = p.parse_args()
    rows, test = committed(), read_csv(TWEETS / "test.csv")
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        import accuracy_tweets

        accuracy_tweets.RESULTS = Path(tmp)   # the runs go to a scratch folder, not results/
        for n in a.sizes.split(","):
            for seed in a.seeds.split(","):
                for method in a.methods.split(","):
                    want = rows.get((method, n, seed))
                    if want is None:
                        print(f"{method} n={n} seed={seed}: no committed row, skipped")
                        continue
                    # the committed cells predate the cheaper dropout masks (train/dropout.py), which
                    # draw another random stream: they are reproduced with PyTorch's masks
                    got = run_cell("exapt", method, int(n), int(seed), test, cheap_dropout=False)
                    same = all(repr(got[k]) == repr(float(want[k])) for k in ("accuracy", "macro_f1"))
                    passed, failed = passed + same, failed + (not same)
                    print(f"{method} n={n} seed={seed}: accuracy {got['accuracy']!r} (committed {want['accuracy']}), "
                          f"macro_f1 {got['macro_f1']!r} ({want['macro_f1']}): "
                          f"{'identical' if same else 'DIFFERENT'}  [{got['seconds']:.0f} s]", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
