"""The encoders exapt pre-trains on the tweets: candidates of the rank benchmark (issue 7).

Issue 7's candidate set is "MiniLM layers 1..6, the scratch twin and any encoder exapt has
pre-trained"; on the tweets, exapt pre-trains two:

- `tweets-dapt`: all-MiniLM-L6-v2 continued on the tweets with masked-LM (domain-adaptive
  pre-training, Gururangan et al. 2020); its sentence-transformers pooling is kept.
- `tweets-tiny`: a tiny BERT (128-d, 4 layers) from scratch, with a WordPiece vocabulary
  learnt from the same tweets.

No leak: the corpus is the built-in `tweets` corpus minus every text of the fixed splits
in the shared tweets folder (the test set, every training sample, the throughput sample),
so pre-training never sees a tweet the benchmarks score, train or test on. It is written
to benchmarks/results/models/tweets-minus-splits.txt (gitignored, rebuilt identically),
one tweet per line, in the built-in corpus's order.

    python benchmarks/pretrain_tweets_encoders.py     # builds what is missing (~30 min on 2 cores, one thread)
which runs, after writing the corpus file:
    exapt pretrain benchmarks/results/models/tweets-minus-splits.txt --init minilm-l6 --max-length 64 \
        --steps 100 --eval-every 50 --out benchmarks/results/models/tweets-dapt
    exapt pretrain benchmarks/results/models/tweets-minus-splits.txt --arch tiny --max-length 64 \
        --steps 1200 --out benchmarks/results/models/tweets-tiny
From Python: `ensure_encoders()` returns the two folders, building any that is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import RESULTS, TWEETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

MODELS = RESULTS / "models"
CORPUS = MODELS / "tweets-minus-splits.txt"
# Steps chosen so each run takes about 15 minutes on one thread of the shared 2-core machine
# (measured in short runs: ~8 s per MiniLM step, ~0.6 s per tiny step, batch 64 windows of
# ~33 tokens; one held-out evaluation of MiniLM ~40 s, hence fewer of them).
ENCODERS = {
    "tweets-dapt": ["--init", "minilm-l6", "--max-length", "64", "--steps", "100", "--eval-every", "50"],
    "tweets-tiny": ["--arch", "tiny", "--max-length", "64", "--steps", "1200"],
}


def corpus_texts() -> tuple[list[str], dict]:
    """The built-in tweets corpus minus every text of the fixed splits, and the counts."""
    import pandas as pd

    from exapt.data.builtin import load_builtin

    splits = sorted(TWEETS.glob("*.csv"))
    if not any(p.name == "test.csv" for p in splits):
        sys.exit(f"no test.csv in {TWEETS}: set EXAPT_TWEETS to the fixed tweet splits")
    excluded: set[str] = set()
    for path in splits:
        excluded.update(pd.read_csv(path)["text"].astype(str))
    texts = [str(t) for t in load_builtin("tweets").inputs]
    kept = [t for t in texts if t not in excluded]
    # one tweet per line must stay one record per line, and a first line starting with '>' would be read as FASTA
    bad = [t for t in kept if "\n" in t or "\r" in t or not t.strip()]
    if bad or kept[0].startswith(">"):
        sys.exit(f"{len(bad)} corpus texts cannot be written one per line (or the first starts with '>')")
    counts = {"corpus": len(texts), "excluded_texts": len(excluded),
              "excluded_found_in_corpus": len(texts) - len(kept), "kept": len(kept),
              "split_files": [p.name for p in splits]}
    return kept, counts


def write_corpus() -> dict:
    """Write CORPUS (atomically); return the counts. The same splits give the same file, byte for byte."""
    texts, counts = corpus_texts()
    CORPUS.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(t + "\n" for t in texts)
    if not CORPUS.exists() or CORPUS.read_text(encoding="utf-8") != body:
        tmp = CORPUS.with_suffix(".tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, CORPUS)
    print(f"pre-training corpus: {counts['corpus']:,} tweets minus {counts['excluded_found_in_corpus']:,} of the "
          f"fixed splits -> {counts['kept']:,} in {CORPUS}", flush=True)
    return counts


def finished(name: str) -> bool:
    return (MODELS / name / "exapt.json").exists()


def check_no_leak(folder: Path) -> None:
    """Refuse an encoder that was not pre-trained on the corpus file written here (e.g. on the whole
    built-in corpus, test tweets included)."""
    from exapt.backbones.hf import file_sha256

    recorded = json.loads((folder / "exapt.json").read_text())["pretrain"]["corpus_sha256"]
    if recorded != file_sha256(CORPUS):
        sys.exit(f"{folder} was pre-trained on another corpus than {CORPUS} (sha256 differs); delete the folder "
                 f"and run benchmarks/pretrain_tweets_encoders.py again")


def build(name: str) -> None:
    from exapt.cli import main as exapt_main

    out = MODELS / name
    argv = ["pretrain", str(CORPUS), *ENCODERS[name], "--out", str(out)]
    if (out / ".train").exists():
        argv.append("--resume")  # an interrupted run continues bit for bit
    elif out.exists():
        argv.append("--overwrite")  # a folder without exapt.json and without state is half-written
    print("exapt " + " ".join(argv), flush=True)
    code = exapt_main(argv)
    if code:
        sys.exit(f"exapt pretrain {name} failed (exit {code})")


def ensure_encoders(names: list[str] | None = None) -> list[Path]:
    """The encoder folders, each built first if missing, each checked to be trained on the leak-free corpus."""
    names = names or list(ENCODERS)
    write_corpus()
    for name in names:
        if not finished(name):
            print(f"{name}: not pre-trained yet; building it now (~15 min)", flush=True)
            build(name)
        check_no_leak(MODELS / name)
    return [MODELS / name for name in names]


def summary(name: str) -> dict:
    p = json.loads((MODELS / name / "exapt.json").read_text())["pretrain"]
    return {k: p[k] for k in ("steps", "tokens_seen", "tokens_per_second", "parameters", "train_windows",
                              "heldout_windows", "heldout_before", "heldout_after")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=list(ENCODERS), help="build just this encoder")
    args = ap.parse_args()
    names = [args.only] if args.only else list(ENCODERS)
    for folder in ensure_encoders(names):
        s = summary(folder.name)
        b, a = s["heldout_before"], s["heldout_after"]
        print(f"{folder.name}: {s['steps']} steps, {s['tokens_seen']:,} tokens, {s['parameters'] / 1e6:.1f}M "
              f"parameters; held-out masked-LM loss {b['loss']:.3f} -> {a['loss']:.3f}, accuracy "
              f"{b['accuracy']:.3f} -> {a['accuracy']:.3f}", flush=True)


if __name__ == "__main__":
    main()
