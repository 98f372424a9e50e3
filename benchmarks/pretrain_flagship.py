"""Issue 8 flagship: a DNA encoder pre-trained on the E. coli genome, transferred to
splice junctions (3,186 primate sequences, n/ei/ie) and promoters (106 E. coli
sequences, +/-), against its scratch twin (same architecture, random weights).

Pre-training (once; ~25 min each on 2 cores, see docs/pretrain.md):
    exapt pretrain ecoli --kmer 6 --max-length 64 --batch-size 128 --steps 1000 \
        --out benchmarks/results/models/ecoli-tiny-6mer
    exapt pretrain ecoli --steps 1500 --out benchmarks/results/models/ecoli-tiny
Then:
    python benchmarks/pretrain_flagship.py [--model FOLDER] [--data splice,promoters]
Proteins (AntiBERTy, and a tiny encoder pre-trained on 20,000 UniProt proteins):
    exapt pretrain uniprot --steps 400 --out benchmarks/results/models/uniprot-tiny
    python benchmarks/pretrain_flagship.py --model antiberty --data amp-tm --lr default
    python benchmarks/pretrain_flagship.py --model benchmarks/results/models/uniprot-tiny --data amp-tm

Each data set runs one `exapt compare` panel: linear-probe, full and scratch at n = 8,
16, 32, 64 per class (promoters: 8, 16, 32; it has 53 per class) x 3 seeds, max length 64
tokens, learning rate 1e-3 for full and scratch alike (chosen on one seed of the
single-base model at n = 64; the default 5e-5 barely moves a 0.9 M-parameter encoder),
up to 40 epochs with patience 10. `--lrs 1e-4,3e-4,1e-3 [--jobs 3]` runs one panel per
rate instead, and each (strategy, n, seed) keeps the rate with the best validation
accuracy (test accuracy plays no part; docs/pretrain.md's GPU run).
Target: full (or linear-probe) beats scratch on splice
at n = 64 per class by >= 5 accuracy points (mean over 3 seeds).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import RESULTS, machine, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SIZES = {"splice": "8,16,32,64", "promoters": "8,16,32", "amp-tm": "8,16,32,64", "amp-uniprot": "8,16,32,64"}
TARGET = 0.05


def panel_dir(data: str, model: Path, lr: str | None) -> Path:
    return RESULTS / "runs" / (f"flagship-{data}-{model.name}" + (f"-lr{lr}" if lr else ""))


def run_panel(data: str, model: Path, lr: str, args, out: Path):
    """One `exapt compare` panel; its results.csv rows gain each cell's validation metrics."""
    import pandas as pd

    from exapt.compare import compare

    overrides = () if lr == "default" else (f"train.lr={lr}",)
    cmp = compare(data, str(model), args.strategies, args.sizes or SIZES[data], args.seeds, out, max_length=64,
                  epochs=40, patience=10, overrides=overrides, tracking=False, progress=False)
    df = pd.read_csv(out / "results.csv")
    val = [json.loads((out / "runs" / c / "metrics.json").read_text()).get("val", {}) for c in df["cell"]]
    df["val_accuracy"] = [v.get("accuracy", float("nan")) for v in val]
    df["val_loss"] = [v.get("loss", float("nan")) for v in val]
    df["lr"] = lr
    return cmp, df


def choose_on_validation(frames):
    """Per (strategy, n, seed), the learning rate whose run has the best validation accuracy
    (ties: lower validation loss, then the smaller rate). Test accuracy plays no part."""
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    df["lr_value"] = df["lr"].astype(float)
    df = df.sort_values(["val_accuracy", "val_loss", "lr_value"], ascending=[False, True, True])
    return df.groupby(["strategy", "n", "seed"], as_index=False).head(1).drop(columns="lr_value")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(RESULTS / "models" / "ecoli-tiny-6mer"))
    ap.add_argument("--data", default="splice,promoters")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", default="0.001", help="for full and scratch; 'default' keeps each strategy's own")
    ap.add_argument("--lrs", help="several rates, comma-separated: one panel each, and every (strategy, n, seed) "
                                  "keeps the rate with the best validation accuracy")
    ap.add_argument("--jobs", type=int, default=1, help="with --lrs: panels run at once (a GPU has room for several)")
    ap.add_argument("--panel-only", action="store_true", help=argparse.SUPPRESS)  # a --jobs worker
    ap.add_argument("--strategies", default="linear-probe,full,scratch")
    ap.add_argument("--sizes", help="n per class, comma-separated (default: per data set, see SIZES)")
    args = ap.parse_args()
    import pandas as pd

    model = Path(args.model)  # a folder, or an alias such as antiberty
    lrs = args.lrs.split(",") if args.lrs else [args.lr]
    if args.panel_only:
        for data in args.data.split(","):
            run_panel(data, model, args.lr, args, panel_dir(data, model, args.lr))
        return
    summary = {"model": str(model), "machine": machine(), "data": {}, "learning_rates": lrs}
    for data in args.data.split(","):
        if len(lrs) > 1 and args.jobs > 1:  # the panels in parallel processes, then read back
            base = [sys.executable, __file__, "--model", str(model), "--data", data, "--seeds", str(args.seeds),
                    "--strategies", args.strategies, "--panel-only"] + (["--sizes", args.sizes] if args.sizes else [])
            pending = list(lrs)
            running = []
            while pending or running:
                while pending and len(running) < args.jobs:
                    lr = pending.pop(0)
                    running.append(subprocess.Popen(base + ["--lr", lr]))
                running[0].wait()
                if running[0].returncode:
                    sys.exit(f"the panel {running[0].args[-1]} failed")
                running.pop(0)
        frames, cmp = [], None
        for lr in lrs:
            out = panel_dir(data, model, lr if len(lrs) > 1 else None)
            cmp, df = run_panel(data, model, lr, args, out)  # after --jobs: cells done, read back
            frames.append(df)
        df = choose_on_validation(frames) if len(lrs) > 1 else frames[0]
        rows = {}
        for (strategy, n), g in df.groupby(["strategy", "n"]):
            g = g.sort_values("seed")
            rows.setdefault(str(n), {})[strategy] = {"mean": g["test_accuracy"].mean(),
                                                     "sd": statistics.pstdev(g["test_accuracy"]),
                                                     "seeds": g["test_accuracy"].tolist(),
                                                     "lr": g["lr"].tolist()}
        for n, by in rows.items():
            line = f"{data} n={n}: " + ", ".join(f"{s} {v['mean']:.3f} (lr {'/'.join(v['lr'])})" for s, v in by.items())
            if "scratch" in by and len(by) > 1:
                best = max((s for s in by if s != "scratch"), key=lambda s: by[s]["mean"])
                by["gain_over_scratch"] = {"strategy": best,
                                           "points": 100 * (by[best]["mean"] - by["scratch"]["mean"])}
                line += f" -> {best} - scratch = {by['gain_over_scratch']['points']:+.1f} points"
            print(line, flush=True)
        summary["data"][data] = {"by_n": rows, "report": str(out / "report.html"),
                                 "recommendation": json.loads(json.dumps(cmp.recommendation, default=str))}
        if len(lrs) > 1:
            df.to_csv(RESULTS / "runs" / f"flagship-{data}-{model.name}-chosen.csv", index=False)
    write_json(RESULTS / f"pretrain_flagship_{model.name}.json", summary)
    lines = []
    for data, d in summary["data"].items():
        strategies = [s for s in next(iter(d["by_n"].values())) if s != "gain_over_scratch"]
        lines += [f"**{data}**, model `{model.name}` (test accuracy, mean +- sd over {args.seeds} seeds"
                  + (f"; learning rate chosen on validation from {', '.join(lrs)}" if len(lrs) > 1 else "") + ")", "",
                  "| n per class | " + " | ".join(strategies) + " | best - scratch |",
                  "|---" * (len(strategies) + 2) + "|"]
        for n, by in sorted(d["by_n"].items(), key=lambda kv: int(kv[0])):
            gain = by.get("gain_over_scratch")
            lines.append(f"| {n} | " + " | ".join(f"{by[s]['mean']:.3f} +- {by[s]['sd']:.3f}" for s in strategies)
                         + (f" | {gain['points']:+.1f} ({gain['strategy']}) |" if gain else " | - |"))
        lines.append("")
    (RESULTS / f"pretrain_flagship_{model.name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
