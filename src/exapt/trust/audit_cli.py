"""`exapt audit RUN`: the subcommand's arguments and what it prints (trust/audit.py does
the work). Wired into `exapt.cli` with `add_parser(sub)` and `"audit": run`."""
from __future__ import annotations

import json

from ..errors import ExaptError
from .audit import ATTACKS, audit_run

MAX_SHADOWS = 1024


def add_parser(sub):
    a = sub.add_parser("audit", help="membership-inference audit of a run (loss attack, LiRA) -> RUN/audit.json",
                       description="Trains shadow models with the run's own config on random subsets of its data "
                                   "pool, calibrates the attack on them, and scores the run: AUC, TPR at 0.1%% and "
                                   "1%% FPR with Clopper-Pearson intervals, the empirical epsilon lower bound, and a "
                                   "log-log ROC figure (RUN/audit-roc.png). docs/trust.md")
    a.add_argument("run", help="a finished `exapt fit` run folder (classification)")
    a.add_argument("--attack", default="lira", choices=ATTACKS, help="lira (default) or loss (Yeom et al., no shadows)")
    a.add_argument("--shadows", type=int, default=16, help="shadow models for LiRA (default: 16)")
    a.add_argument("--offline", action="store_true", help="LiRA from out-shadows only (Carlini et al., Section VI-C)")
    a.add_argument("--seed", type=int, default=0, help="draws of the shadows' training rows (default: 0)")
    a.add_argument("--json", action="store_true", help="print audit.json")
    a.add_argument("--quiet", action="store_true")
    return a


def summary(rep: dict) -> str:
    r = rep["results"][rep["attack"]]
    shadows = f", {rep['shadows']} shadows" if rep["shadows"] else ""
    lines = [f"{rep['attack']} on {rep['n_members']} members / {rep['n_non_members']} non-members{shadows}: "
             f"AUC {r['auc']:.3f}"]
    for key in ("tpr_at_0.001_fpr", "tpr_at_0.01_fpr"):
        t = r[key]
        note = "" if t["resolvable"] else f" (too few non-members to resolve {t['fpr']:g})"
        lines.append(f"  TPR at {t['fpr']:.1%} FPR  {t['tpr']:.4f} [{t['tpr_interval'][0]:.4f}, "
                     f"{t['tpr_interval'][1]:.4f}]{note}")
    bound = f"  empirical epsilon lower bound  {rep['epsilon_lower_bound']:.3f} (delta {rep['delta']:.2g}, 95%)"
    if rep["accountant_epsilon"] is not None:
        bound += f"; accountant epsilon {rep['accountant_epsilon']:.3f}"
    lines += [bound, f"-> {rep['run']}/audit.json, audit-roc.png"]
    return "\n".join(lines)


def run(args) -> None:
    if args.shadows is not None and not 0 <= args.shadows <= MAX_SHADOWS:
        raise ExaptError(f"--shadows {args.shadows}: give 2 to {MAX_SHADOWS}")
    quiet = args.quiet or args.json
    rep = audit_run(args.run, attack=args.attack, shadows=args.shadows, offline=args.offline, seed=args.seed,
                    progress=not quiet, log=(lambda *_: None) if quiet else print)
    print(json.dumps(rep, indent=2) if args.json else summary(rep))
