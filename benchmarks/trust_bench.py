"""Trust a transfer (issue 21): privacy budget x accuracy x membership leakage, side by side.

    python benchmarks/trust_bench.py [--quick] [--data tweets,mnist] [--strategies linear-probe,lora,full]
                                     [--epsilons inf,8,3,1] [--seeds 0,1,2] [--shadows 64] [--encoder-shadows 0]

For each data set x strategy x epsilon x seed: `exapt fit` (with `--privacy epsilon=E` unless
E is inf), then `exapt audit` of the run: LiRA (online) with `--shadows` shadow heads for a
head-only run, `--encoder-shadows` shadow fits for lora / full (each as costly as the run; 0:
the loss-threshold attack only, which needs no shadows, said in the row). A row: accuracy,
the accountant's epsilon, the attack's AUC and TPR at 1% FPR (Clopper-Pearson interval) and
the empirical epsilon lower bound, against the accountant's.

Row groups are one function each (`privacy_audit_rows`); the adversarial-robustness rows
join as their own function. Rows are appended to results/trust.json as they finish (a
killed run resumes); results/trust.md is the table, results/trust.png the figure (accuracy
against LiRA TPR at 1% FPR, one point per strategy x epsilon). `--quick` (tweets, 32 per
class, linear-probe, 8 shadows) checks that it all runs, into results/trust_quick.*.

`--reaudit`: redo the selected rows although trust.json has them, auditing each finished run
in benchmarks/out/trust again (a run missing there is fitted): after a change to the audit.

`--dp-audit [--epsilons 8,3,1] [--shadows 64] [--before-shadows 2]`: private linear probes on
the fixed tweet split (train_n256_s0.csv, test.csv, MiniLM at 64 tokens), each audited by
LiRA; the row adds TPR at 0.1% FPR, whether the audit's lower bound stays at or below the
accountant's epsilon, and the CPU seconds of one private shadow head, closed form
(train/private_head.py) against the Opacus path. Into results/trust_dp_audit.{json,md}
(`--quick`: 16 per class, 8 shadows, results/trust_dp_audit_quick.*).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, TWEETS, machine, write_json  # noqa: E402

DATA = {  # the sets: tweets at 256 per class, mnist (built-in, 500 per class)
    "tweets": {"data": "tweets", "model": "minilm-l6", "n_per_class": 256},
    "mnist": {"data": "mnist", "model": "efficientnet-lite0:64", "n_per_class": 256},
}
KEY = ("data", "strategy", "epsilon", "seed")


def privacy_audit_rows(data: str, strategy: str, epsilon: float, seed: int, shadows: int, encoder_shadows: int,
                       out: Path, n_per_class: int | None = None, reuse: bool = False) -> dict:
    """One fit and its audit; the numbers the table and the figure read. `reuse`: a
    finished run already in its folder is audited again instead of fitted again."""
    import exapt
    from exapt.run import Run
    from exapt.trust.audit import audit_run

    d = DATA[data]
    name = f"{data}-{strategy}-eps{epsilon:g}-s{seed}"
    privacy = None if math.isinf(epsilon) else f"epsilon={epsilon:g}"
    if reuse and (out / name / "metrics.json").exists():
        run = Run.load(out / name)
    else:
        run = exapt.fit(d["data"], strategy, d["model"], out=out / name, overwrite=True, progress=False,
                        log=lambda *a: None, n_per_class=n_per_class or d["n_per_class"], seed=seed,
                        privacy=privacy)
    m = run.metrics
    head_only = strategy == "linear-probe"
    k = shadows if head_only else encoder_shadows
    rep = audit_run(run.path, attack="lira" if k >= 2 else "loss", shadows=max(k, 2), progress=False,
                    log=lambda *a: None)
    r = rep["results"][rep["attack"]]
    t = r["tpr_at_0.01_fpr"]
    return {"data": data, "strategy": strategy, "epsilon": epsilon, "seed": seed, "n_train": m["n_train"],
            "accuracy": m["test"]["accuracy"], "macro_f1": m["test"]["macro_f1"],
            "accountant_epsilon": m.get("privacy", {}).get("epsilon"),
            "noise_multiplier": m.get("privacy", {}).get("noise_multiplier"),
            "attack": rep["attack"], "shadows": rep["shadows"], "auc": r["auc"], "tpr_at_1pct_fpr": t["tpr"],
            "tpr_interval": t["tpr_interval"], "tpr_at_0.1pct_fpr": r["tpr_at_0.001_fpr"]["tpr"],
            "epsilon_lower_bound": rep["epsilon_lower_bound"], "train_seconds": m["train_seconds"],
            "audit_seconds": rep["seconds"], "audit_cpu_seconds": rep["cpu_seconds"],
            "n_members": rep["n_members"], "n_non_members": rep["n_non_members"]}


DP_AUDIT = {"train": "train_n256_s0.csv", "quick_train": "train_n16_s0.csv", "test": "test.csv",
            "model": "minilm-l6", "max_length": 64}


def dp_audit_rows(epsilon: float, shadows: int, before_shadows: int, out: Path, quick: bool) -> dict:
    """A private linear probe on the fixed tweet split (256 per class) and its LiRA audit,
    with the CPU seconds of one private shadow head both ways: the closed form (all shadows
    stepped together, per head) and Opacus' per-step hooks (`before_shadows` of them)."""
    import exapt
    from exapt.trust.audit import audit_run

    train = TWEETS / DP_AUDIT["quick_train" if quick else "train"]
    run = exapt.fit(str(train), "linear-probe", DP_AUDIT["model"], out=out / f"tweets-dp-eps{epsilon:g}",
                    overwrite=True, progress=False, log=lambda *a: None, test=str(TWEETS / DP_AUDIT["test"]),
                    max_length=DP_AUDIT["max_length"], privacy=f"epsilon={epsilon:g}", seed=0)
    rep = audit_run(run.path, attack="lira", shadows=shadows, progress=False, log=lambda *a: None)
    r, m = rep["results"][rep["attack"]], run.metrics
    tpr = {f: r[f"tpr_at_{f}_fpr"] for f in ("0.001", "0.01")}
    return {"epsilon": epsilon, "train": train.name, "n_train": m["n_train"], "accuracy": m["test"]["accuracy"],
            "accountant_epsilon": m["privacy"]["epsilon"], "noise_multiplier": m["privacy"]["noise_multiplier"],
            "steps": m["privacy"]["steps"], "attack": rep["attack"], "shadows": rep["shadows"],
            "n_members": rep["n_members"], "n_non_members": rep["n_non_members"], "auc": r["auc"],
            **{f"tpr_at_{f}_fpr": {k: t[k] for k in ("tpr", "tpr_interval", "resolvable")} for f, t in tpr.items()},
            "epsilon_lower_bound": rep["epsilon_lower_bound"],
            "bound_below_accountant": rep["epsilon_lower_bound"] <= m["privacy"]["epsilon"],
            "audit_seconds": rep["seconds"], "audit_cpu_seconds": rep["cpu_seconds"],
            **shadow_cpu_seconds(run, shadows, before_shadows)}


def shadow_cpu_seconds(run, shadows: int, before_shadows: int) -> dict:
    """CPU seconds per private shadow head on the audit's own pool and masks: the closed form
    (train/private_head.py, K heads together) and the Opacus path it replaced (opacus_probe)."""
    import time

    import numpy as np
    import torch

    from exapt.config import PrivacySpec
    from exapt.strategies import parse_strategy
    from exapt.train.privacy import PROBE_LR, PrivatePlan, opacus_probe, private_heads, probe_batch
    from exapt.trust.audit import load_pool, pool_features, shadow_masks

    cfg, spec = run.config, PrivacySpec.parse(run.config.privacy)
    pool = load_pool(run)
    feats = pool_features(run, pool, False).float()
    labels = torch.as_tensor(pool.labels, dtype=torch.long)
    rows = [np.flatnonzero(m) for m in shadow_masks(len(pool), len(pool) // 2, shadows, 0)]
    seeds = [cfg.train.seed + 1 + s for s in range(shadows)]
    C = parse_strategy(cfg.strategy).probe_C
    cpu = time.process_time()
    private_heads(feats, rows, labels, run.task, spec, cfg.train, C, seeds)
    after = (time.process_time() - cpu) / shadows
    cpu = time.process_time()
    for k in range(before_shadows):
        plan = PrivatePlan(spec, len(rows[k]), probe_batch(cfg.train.batch_size, len(rows[k])), cfg.train.epochs or 30)
        head = torch.nn.Linear(feats.shape[1], run.task.n_outputs)
        opacus_probe(head, feats[rows[k]], labels[rows[k]], run.task, plan, cfg.train.head_lr or PROBE_LR,
                     1.0 / (C * len(rows[k])), seeds[k])
    before = (time.process_time() - cpu) / max(1, before_shadows)
    return {"shadow_cpu_seconds_closed_form": round(after, 4), "shadow_cpu_seconds_opacus": round(before, 3),
            "opacus_shadows_timed": before_shadows, "speedup": round(before / after, 1)}


def dp_table(rows: list[dict]) -> str:
    head = ("| epsilon | accuracy | accountant eps | AUC | TPR @ 0.1% FPR [95% CI] | TPR @ 1% FPR [95% CI] | "
            "audit eps lower bound | bound <= accountant | CPU s / shadow: Opacus -> closed form |")
    lines = [head, "|" + "---|" * 9]
    for r in sorted(rows, key=lambda r: -r["epsilon"]):
        cells = [f"{r[k]['tpr']:.4f} [{r[k]['tpr_interval'][0]:.4f}, {r[k]['tpr_interval'][1]:.4f}]"
                 for k in ("tpr_at_0.001_fpr", "tpr_at_0.01_fpr")]
        lines.append(f"| {r['epsilon']:g} | {r['accuracy']:.4f} | {r['accountant_epsilon']:.3f} | {r['auc']:.4f} | "
                     f"{cells[0]} | {cells[1]} | {r['epsilon_lower_bound']:.3f} | {r['bound_below_accountant']} | "
                     f"{r['shadow_cpu_seconds_opacus']:.2f} -> {r['shadow_cpu_seconds_closed_form']:.3f} "
                     f"({r['speedup']:g}x) |")
    return "\n".join(lines) + "\n"


def dp_audit_main(a) -> None:
    """`--dp-audit`: the private probe's audit rows (docs/trust.md, Audit), one per epsilon."""
    stem = "trust_dp_audit_quick" if a.quick else "trust_dp_audit"
    rows = []
    for eps in (float(e) for e in a.epsilons.split(",") if e != "inf"):
        rows.append(dp_audit_rows(eps, 8 if a.quick else a.shadows, a.before_shadows, ROOT / "out" / "trust_dp",
                                  a.quick))
        print(json.dumps(rows[-1]), flush=True)
        write_json(RESULTS / f"{stem}.json", {"machine": machine(), "rows": rows})
        (RESULTS / f"{stem}.md").write_text(dp_table(rows))


def groups(rows: list[dict]) -> dict:
    """(data, strategy, epsilon) -> its rows (one per seed)."""
    out: dict = {}
    for r in rows:
        out.setdefault((r["data"], r["strategy"], r["epsilon"]), []).append(r)
    return {k: sorted(rs, key=lambda r: r["seed"])
            for k, rs in sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2]))}


def leakage_rows(rs: list[dict]) -> list[dict]:
    """The rows a group's leakage figures come from: its LiRA audits where it has any (an
    encoder strategy's LiRA costs K fine-tunes, so it runs on seed 0 only), else the loss
    attack's. Mixing the two in one mean would blur the weaker attack into the stronger."""
    lira = [r for r in rs if r["attack"].startswith("lira")]
    return lira or rs


def summary(rows: list[dict]) -> str:
    """Means over the seeds of each (data, strategy, epsilon): the table docs/trust.md shows."""
    import numpy as np

    lines = ["| data | strategy | epsilon | seeds | accuracy (mean +- sd) | attack (shadows), seeds audited | AUC | TPR @ 1% FPR | "
             "audit eps lower bound (max) | accountant eps |", "|" + "---|" * 10]
    for (data, strategy, eps), rs in groups(rows).items():
        acc = np.array([r["accuracy"] for r in rs])
        leak = leakage_rows(rs)
        attack = sorted({f"{r['attack']} ({r['shadows']})" if r["attack"] != "loss" else "loss" for r in leak})
        attack_seeds = ",".join(str(r["seed"]) for r in leak)
        acc_eps = [r["accountant_epsilon"] for r in rs if r["accountant_epsilon"] is not None]
        lines.append(f"| {data} | {strategy} | {eps:g} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{acc.mean():.3f} +- {acc.std(ddof=1) if len(acc) > 1 else 0:.3f} | "
                     f"{', '.join(attack)}, seed {attack_seeds} | "
                     f"{np.mean([r['auc'] for r in leak]):.3f} | {np.mean([r['tpr_at_1pct_fpr'] for r in leak]):.3f} | "
                     f"{max(r['epsilon_lower_bound'] for r in rs):.2f} | "
                     f"{'-' if not acc_eps else f'{max(acc_eps):.2f}'} |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict]) -> str:
    head = ("| data | strategy | epsilon | seed | accuracy | accountant eps | attack (shadows) | AUC | "
            "TPR @ 1% FPR [95% CI] | audit eps lower bound | train s | audit s (cpu) |")
    lines = ["## Means over the seeds", "", summary(rows), "## Every row", "", head, "|" + "---|" * 12]
    for r in sorted(rows, key=lambda r: (r["data"], r["strategy"], -r["epsilon"], r["seed"])):
        acc_eps = "-" if r["accountant_epsilon"] is None else f"{r['accountant_epsilon']:.2f}"
        lo, hi = r["tpr_interval"]
        lines.append(f"| {r['data']} | {r['strategy']} | {r['epsilon']:g} | {r['seed']} | {r['accuracy']:.3f} | "
                     f"{acc_eps} | {r['attack']} ({r['shadows']}) | {r['auc']:.3f} | {r['tpr_at_1pct_fpr']:.3f} "
                     f"[{lo:.3f}, {hi:.3f}] | {r['epsilon_lower_bound']:.2f} | {r['train_seconds']:.0f} | "
                     f"{r['audit_seconds']:.0f} ({r['audit_cpu_seconds']:.0f}) |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    """One panel per data set: accuracy (mean over seeds) against the attack's TPR at 1%
    FPR (leakage_rows), per strategy x epsilon (labels: epsilon)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets, by_group = sorted({r["data"] for r in rows}), groups(rows)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.2), squeeze=False)
    for ax, data in zip(axes[0], datasets):
        for strategy in sorted({r["strategy"] for r in rows if r["data"] == data}):
            pts = sorted(((eps, rs) for (d, s, eps), rs in by_group.items() if (d, s) == (data, strategy)),
                         key=lambda kv: kv[0])
            x = [np.mean([r["tpr_at_1pct_fpr"] for r in leakage_rows(rs)]) for _, rs in pts]
            y = [np.mean([r["accuracy"] for r in rs]) for _, rs in pts]
            ax.plot(x, y, "o-", label=strategy)
            for (eps, _), xi, yi in zip(pts, x, y):
                ax.annotate(f"{eps:g}", (xi, yi), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.axvline(0.01, color="k", ls="--", lw=0.8, label="chance (TPR = FPR)")
        ax.set_xlabel("membership attack TPR at 1% FPR\n(LiRA where run, else the loss attack)")
        ax.set_ylabel("test accuracy (mean over seeds)")
        ax.set_title(f"{data}: epsilon (labels) vs accuracy vs leakage", fontsize=9)
        ax.legend(fontsize=7)
    from exapt.figures import png_bytes

    path.write_bytes(png_bytes(fig, tight=True))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data", default="tweets,mnist")
    p.add_argument("--strategies", default="linear-probe,lora,full")
    p.add_argument("--epsilons", default="inf,8,3,1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--shadows", type=int, default=64)
    p.add_argument("--encoder-shadows", type=int, default=0)
    p.add_argument("--n-per-class", type=int, default=None,
                   help="labelled rows per class instead of the table's 256, into results/trust_n{N}.*")
    p.add_argument("--dp-audit", action="store_true", help="private probes on the fixed tweet split, audited")
    p.add_argument("--reaudit", action="store_true",
                   help="redo the selected rows even if present, auditing finished runs again instead of refitting")
    p.add_argument("--before-shadows", type=int, default=2, help="--dp-audit: Opacus-path shadows timed")
    a = p.parse_args(argv)
    if a.dp_audit:
        return dp_audit_main(a)
    if a.quick:
        a.data, a.strategies, a.seeds, a.shadows, n = "tweets", "linear-probe", "0", 8, 32
    else:
        n = a.n_per_class
    stem = "trust_quick" if a.quick else f"trust_n{n}" if n else "trust"
    out_json = RESULTS / f"{stem}.json"
    rows = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    done = {tuple(r[k] for k in KEY) for r in rows}
    for data in a.data.split(","):
        for strategy in a.strategies.split(","):
            for eps in (float(e) for e in a.epsilons.split(",")):
                for seed in (int(s) for s in a.seeds.split(",")):
                    if (data, strategy, eps, seed) in done and not a.reaudit:
                        continue
                    row = privacy_audit_rows(data, strategy, eps, seed, a.shadows, a.encoder_shadows,
                                             ROOT / "out" / stem, n, reuse=a.reaudit)
                    # read again: another trust_bench (other seeds, strategies) may have added rows meanwhile
                    rows = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
                    rows = [r for r in rows if tuple(r[k] for k in KEY) != tuple(row[k] for k in KEY)] + [row]
                    print(json.dumps(row), flush=True)
                    write_json(out_json, {"machine": machine(), "rows": rows})
                    (RESULTS / f"{stem}.md").write_text(table(rows))  # after each row: a stopped run still reports
                    figure(rows, RESULTS / f"{stem}.png")


if __name__ == "__main__":
    main()
