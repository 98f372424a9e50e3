"""Issue-6 targets for `exapt shift`, over 3 seeds (each seed draws other rows and folds).

1. A real shift is flagged: MNIST pooled to 8x8 (`mnist-8x8`) -> UCI optdigits (`optdigits`),
   raw standardised pixels. Target: domain-classifier AUC > 0.9 and MMD p < 0.01, every seed.
2. Random splits of one domain are not: `optdigits` vs `optdigits` and `tweets-airline` vs
   `tweets-airline` (MiniLM features). Target: AUC within 0.5 +- 0.05 and MMD p > 0.05, every seed.
3. Label shift on airline -> self-driving tweets (MiniLM features): the BBSE and EM prior
   estimates against the true target priors, and the source model's target accuracy before
   and after the label-shift correction, next to a probe on 20 target labels per class.
4. The same estimators where the label-shift assumption holds by construction: one half of
   tweets-airline against the other half resampled to the self-driving class shares (so only
   p(y) differs). This separates the estimators' error from the assumption's failure in 3.
5. Calibration: 100 further random splits of optdigits (seeds 100-199): how often the MMD
   test says p < 0.05 (a valid test: 5%) and how often the verdict flags a shift.

    python benchmarks/shift_bench.py            # ~15 min on 2 cores (most of it MiniLM encoding, cached after)
    python benchmarks/shift_bench.py --quick    # smoke test: 1 seed, 300 rows per domain
Writes benchmarks/results/shift.json and shift.md; report folders go to benchmarks/out/shift/.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, machine, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

OUT = Path(__file__).resolve().parent / "out" / "shift"
CASES = [  # name, source, target, what is expected
    ("mnist-8x8 -> optdigits", "mnist-8x8", "optdigits", "shift"),
    ("optdigits, random split", "optdigits", "optdigits", "control"),
    ("tweets-airline, random split", "tweets-airline", "tweets-airline", "control"),
    ("tweets-airline -> tweets-self-driving", "tweets-airline", "tweets-self-driving", "label"),
    ("tweets-airline -> airline resampled to self-driving priors", "airline-A", "airline-B-resampled", "label"),
]


def resampled_airline(seed: int, folder: Path) -> tuple[Path, Path]:
    """Half A of tweets-airline as it is, half B resampled (without replacement) to the class
    shares of tweets-self-driving: a target that differs from the source by p(y) alone."""
    import pandas as pd

    from exapt.data import load_data

    air, sd = load_data("tweets-airline"), load_data("tweets-self-driving")
    classes = sorted(set(air.labels))
    q = np.array([sd.labels.count(c) for c in classes], float) / len(sd.labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(air))
    a, b = order[: len(air) // 2], order[len(air) // 2:]
    labels_b = np.array(air.labels)[b]
    # the largest target with shares q that half B can supply
    n = int(min(np.sum(labels_b == c) / q[i] for i, c in enumerate(classes) if q[i] > 0))
    picked = np.concatenate([rng.choice(b[labels_b == c], int(round(q[i] * n)), replace=False)
                             for i, c in enumerate(classes)])
    paths = []
    for name, idx in (("airline-A", a), ("airline-B-resampled", picked)):
        path = folder / f"{name}.csv"
        pd.DataFrame({"text": [air.inputs[i] for i in idx], "label": [air.labels[i] for i in idx]}).to_csv(
            path, index=False)
        paths.append(path)
    return paths[0], paths[1]


def one(name: str, source, target, seed: int, max_per_domain: int, permutations: int) -> dict:
    from exapt.shift import diagnose

    slug = name.split(",")[0].replace(" -> ", "-to-").replace(" ", "-")
    rep = diagnose(str(source), str(target), seed=seed, max_per_domain=max_per_domain, permutations=permutations,
                   out=OUT / f"{slug}-s{seed}", overwrite=True, progress=False, log=None)
    row = {"case": name, "seed": seed, "model": rep.model, "n_source": rep.n_source, "n_target": rep.n_target,
           "auc": rep.domain.auc, "auc_ci": list(rep.domain.ci), "mmd2": rep.mmd.mmd2, "mmd_p": rep.mmd.p_value,
           "flags": rep.flags, "verdict": rep.verdict, "seconds": round(rep.seconds, 1), "report": str(rep.path)}
    if rep.priors is not None:
        p = rep.priors
        row["priors"] = {"classes": p.classes, "source": p.source.tolist(), "bbse": p.bbse.tolist(),
                         "em": p.em.tolist(),
                         "true": None if p.true_target is None else p.true_target.tolist()}
        if p.true_target is not None:
            row["max_abs_error"] = {"bbse": float(np.abs(p.bbse - p.true_target).max()),
                                    "em": float(np.abs(p.em - p.true_target).max())}
        row["reweighted_auc"] = rep.residual.auc if rep.residual is not None else None
    if rep.concept is not None:
        row["target_accuracy"] = rep.concept.accuracy
    print(f"  {name} seed {seed}: AUC {rep.domain.auc:.3f} [{rep.domain.ci[0]:.3f}, {rep.domain.ci[1]:.3f}], "
          f"MMD p {rep.mmd.p_value:.4f}, flags {rep.flags} ({rep.seconds:.0f} s)", flush=True)
    return row


def calibration(data: str, seeds: int, max_per_domain: int, permutations: int) -> dict:
    """Many random splits of one domain: how often each test, and the verdict, cries shift."""
    from exapt.shift import diagnose

    rows = []
    for seed in range(100, 100 + seeds):
        rep = diagnose(data, control=True, seed=seed, max_per_domain=max_per_domain, permutations=permutations,
                       target_labels=0, write=False, progress=False, log=None)
        rows.append({"seed": seed, "n_per_half": rep.n_source, "auc": rep.domain.auc, "auc_ci": list(rep.domain.ci), "mmd_p": rep.mmd.p_value,
                     "covariate": rep.flags["covariate"], "label": rep.flags["label"]})
    out = {"data": data, "splits": seeds, "max_per_domain": max_per_domain, "permutations": permutations,
           "share_mmd_p_below_0.05": float(np.mean([r["mmd_p"] < 0.05 for r in rows])),
           "share_auc_ci_above_0.5": float(np.mean([r["auc_ci"][0] > 0.5 for r in rows])),
           "share_auc_outside_band": float(np.mean([abs(r["auc"] - 0.5) > 0.05 for r in rows])),
           "share_covariate_flagged": float(np.mean([r["covariate"] for r in rows])),
           "share_label_flagged": float(np.mean([r["label"] for r in rows])), "rows": rows}
    print(f"  calibration on {seeds} random splits of {data}: MMD p < 0.05 in {out['share_mmd_p_below_0.05']:.0%}, "
          f"covariate flagged in {out['share_covariate_flagged']:.0%}", flush=True)
    return out


def targets(rows: list[dict]) -> dict:
    def cases(kind):
        names = [c[0] for c in CASES if c[3] == kind]
        return [r for r in rows if r["case"] in names]

    shift, control = cases("shift"), cases("control")
    return {
        "mnist_flagged": bool(shift) and all(r["auc"] > 0.9 and r["mmd_p"] < 0.01 and r["flags"]["covariate"]
                                             for r in shift),
        "control_within_band": bool(control) and all(abs(r["auc"] - 0.5) <= 0.05 and r["mmd_p"] > 0.05
                                                     for r in control),
        "control_not_flagged": bool(control) and not any(r["flags"]["covariate"] for r in control),
    }


def _mean_sd(values) -> str:
    v = np.array(values, float)
    return f"{v.mean():.3f} +- {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = ["# `exapt shift` (issue 6)", "",
             f"Seeds {result['seeds']}, up to {result['max_per_domain']} rows per domain, {result['permutations']} "
             "MMD permutations; features: raw standardised pixels for the digits, minilm-l6 for the tweets.", "",
             "| case | seed | AUC [95% CI] | MMD^2 | MMD p | covariate | label | concept | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["flags"]
        lines.append(f"| {r['case']} | {r['seed']} | {r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}] | "
                     f"{r['mmd2']:.4f} | {r['mmd_p']:.4f} | {f['covariate']} | {f['label']} | {f['concept']} | "
                     f"{r['seconds']} |")
    t = result["targets"]
    lines += ["", f"- MNIST -> optdigits flagged (AUC > 0.9 and p < 0.01, every seed): **{t['mnist_flagged']}**",
              f"- random splits within the issue's band (|AUC - 0.5| <= 0.05 and p > 0.05, every seed): "
              f"**{t['control_within_band']}**",
              f"- random splits not flagged by the verdict (every seed): **{t['control_not_flagged']}**", ""]
    cal = result.get("calibration")
    if cal:
        lines += [f"Calibration: {cal['splits']} more random splits of {cal['data']} (halves of "
                  f"{cal['rows'][0]['n_per_half']} rows, {cal['permutations']} permutations): MMD p < 0.05 in "
                  f"{cal['share_mmd_p_below_0.05']:.0%} (a valid test: 5%), AUC CI above 0.5 in "
                  f"{cal['share_auc_ci_above_0.5']:.0%}, AUC outside 0.5 +- 0.05 in "
                  f"{cal['share_auc_outside_band']:.0%}; flagged as covariate shift in "
                  f"{cal['share_covariate_flagged']:.0%}, as label shift in {cal['share_label_flagged']:.0%}.", ""]
    for name in [c[0] for c in CASES if c[3] == "label"]:
        sel = [r for r in rows if r["case"] == name and r.get("priors")]
        if not sel:
            continue
        classes = sel[0]["priors"]["classes"]
        lines += [f"## Label shift: {name}", "", "Target priors (mean +- sd over seeds), estimated without target "
                  "labels, against the truth:", "", "| class | source | BBSE | EM | true |", "|---|---|---|---|---|"]
        for i, c in enumerate(classes):
            lines.append(f"| {c} | {_mean_sd([r['priors']['source'][i] for r in sel])} | "
                         f"{_mean_sd([r['priors']['bbse'][i] for r in sel])} | "
                         f"{_mean_sd([r['priors']['em'][i] for r in sel])} | "
                         f"{_mean_sd([r['priors']['true'][i] for r in sel])} |")
        acc = {k: _mean_sd([r["target_accuracy"][k] for r in sel]) for k in sel[0]["target_accuracy"]}
        lines += ["", f"Largest absolute error: BBSE {_mean_sd([r['max_abs_error']['bbse'] for r in sel])}, "
                  f"EM {_mean_sd([r['max_abs_error']['em'] for r in sel])}. Domain classifier with the source "
                  f"re-weighted to the BBSE priors: AUC {_mean_sd([r['reweighted_auc'] for r in sel])}.", "",
                  "Target accuracy of the source model (20 labelled target rows per class held out for the probe): "
                  + ", ".join(f"{k} {v}" for k, v in acc.items()) + ".", "",
                  f"Verdict (seed {sel[0]['seed']}): {sel[0]['verdict']}", ""]
    lines += [f"Machine: {result['machine']}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 300 rows per domain, 200 permutations")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--calibration", type=int, default=100, help="random splits of optdigits for the null rates")
    args = ap.parse_args()
    seeds = [0] if args.quick else list(range(args.seeds))
    max_rows, perms = (300, 200) if args.quick else (2000, 1000)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            files = dict(zip(("airline-A", "airline-B-resampled"), resampled_airline(seed, Path(tmp))))
            for name, source, target, _ in CASES:
                rows.append(one(name, files.get(source, source), files.get(target, target), seed, max_rows, perms))
    cal = calibration("optdigits", 10 if args.quick else args.calibration, max_rows, 200)
    result = {"seeds": seeds, "max_per_domain": max_rows, "permutations": perms, "rows": rows,
              "targets": targets(rows), "calibration": cal, "seconds": round(time.perf_counter() - started, 1), "machine": machine()}
    stem = "shift_quick" if args.quick else "shift"
    write_json(RESULTS / f"{stem}.json", result)
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
