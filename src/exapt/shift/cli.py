"""`exapt shift`: the subcommand's arguments and what it prints.

Wired into `exapt.cli` like `rank`: ``add_parser(sub)`` in `build_parser` and
``"shift": run`` in its COMMANDS table. Kept light: the heavy imports happen in `run`.
"""
from __future__ import annotations

import argparse

from ..commandline import typed_command
from ..errors import ExaptError
from ..options import add_options
from .diagnose import diagnose


def add_parser(sub):
    """Add `shift` to an argparse subparsers object; returns the new parser."""
    s = sub.add_parser(
        "shift", help="diagnose the gap between a source and a target domain -> report folder",
        description="Covariate shift (domain-classifier AUC with a DeLong CI, MMD permutation test), label shift "
                    "(target class priors by BBSE and EM, without target labels) and, when TARGET has labels, "
                    "concept shift (per-class recall of the source model against a probe on a few target labels). "
                    "Writes shift.json, report.md and figures to --out, and prints the verdict.")
    s.add_argument("source", help="labelled source data: a file or built-in name (e.g. tweets-airline, mnist-8x8)")
    s.add_argument("target", nargs="?",
                   help="target data, labels optional (e.g. tweets-self-driving, optdigits); the same name as "
                        "SOURCE, or leaving it out with --control, compares two random halves of SOURCE")
    s.add_argument("--model", help="features: a text encoder alias or folder (default: minilm-l6 for text, or the "
                                   "--run's model), an image backbone (efficientnet-lite0[:SIZE]), or raw (default "
                                   "for numeric data and images: the inputs themselves, standardised)")
    s.add_argument("--control", action="store_true",
                   help="split SOURCE in two at random: the diagnosis of no shift, to compare with")
    add_options(s, "text", "label", "features", helps={"label": "label column (default: {default}; optional on TARGET)",
                                                        "features": "numeric feature columns, comma-separated"})
    s.add_argument("--run", help="judge label and concept shift with this `exapt fit` run instead of a "
                                 "cross-fitted probe on the source features")
    s.add_argument("--target-labels", type=int, metavar="N",
                   help="labelled target rows per class for the concept-shift probe (default: 20 when TARGET "
                        "has labels; 0: skip concept shift)")
    s.add_argument("--max-per-domain", type=int, default=2000,
                   help="rows drawn at random from each domain (default: 2000)")
    s.add_argument("--permutations", type=int, default=1000, help="MMD permutation test (default: 1000)")
    s.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdict (default: 0.05)")
    add_options(s, "seed", "max-length", defaults={"max-length": 128},
                helps={"max-length": "tokens per text (default: {default})"})
    s.add_argument("--out", help="report folder (default: runs/shift-SOURCE-TARGET)")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier shift report in --out")
    s.add_argument("--json", action="store_true", help="print shift.json instead of the summary")
    s.add_argument("--quiet", action="store_true", help="print the verdict only")
    return s


def summary(rep) -> str:
    """A few lines for the terminal: the verdict and where the report went."""
    d, m = rep.domain, rep.mmd
    lines = [rep.verdict, "",
             f"  domain classifier AUC  {d.auc:.3f} [{d.ci[0]:.3f}, {d.ci[1]:.3f}]",
             f"  MMD^2                  {m.mmd2:.4g}   p = {m.p_value:.4g} ({m.permutations} permutations)"]
    if rep.priors is not None:
        p = rep.priors
        width = max(5, *(len(c) for c in p.classes))
        truth = "   true" if p.true_target is not None else ""
        lines.append(f"  {'class':<{width}}   source   BBSE     EM{truth}")
        for i, c in enumerate(p.classes):
            t = f"  {p.true_target[i]:.3f}" if p.true_target is not None else ""
            lines.append(f"  {c:<{width}}   {p.source[i]:.3f}    {p.bbse[i]:.3f}   {p.em[i]:.3f}{t}")
    if rep.residual is not None:
        r = rep.residual
        lines.append(f"  AUC, source re-weighted to the BBSE priors  {r.auc:.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}]")
    if rep.concept is not None:
        acc = rep.concept.accuracy
        lines.append("  target accuracy        " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    if rep.path is not None:
        lines += ["", f"-> {rep.path}/ (report.md, shift.json, figures)"]
    return "\n".join(lines)


def _command(args) -> str:
    """The command as typed, less options left at their defaults, for the report."""

    defaults = vars(add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["x"]))
    words = ["exapt", "shift", args.source] + ([args.target] if args.target else [])
    return typed_command(words, args, defaults, skip=("source", "target", "json"))


MAX_PERMUTATIONS = 100_000  # p-values to 1e-5; more only burns hours


def run(args) -> None:
    """Run `exapt shift` from parsed arguments."""
    if args.permutations is not None and args.permutations > MAX_PERMUTATIONS:  # each recomputes the statistic
        raise ExaptError(f"--permutations {args.permutations}: at most {MAX_PERMUTATIONS}")
    if args.max_per_domain is not None and args.max_per_domain < 10:
        raise ExaptError(f"--max-per-domain {args.max_per_domain}: use at least 10 rows per domain")
    log = (lambda *_a, **_k: None) if (args.quiet or args.json) else print
    rep = diagnose(args.source, args.target, args.model, control=args.control, text=args.text, label=args.label,
                   features=args.features, run=args.run, target_labels=args.target_labels,
                   max_per_domain=args.max_per_domain, permutations=args.permutations, seed=args.seed,
                   max_length=args.max_length, alpha=args.alpha, out=args.out, overwrite=args.overwrite,
                   progress=not (args.quiet or args.json), log=log,
                   command=_command(args))
    if args.json:
        print((rep.path / "shift.json").read_text().rstrip())
    elif args.quiet:
        print(rep.verdict)
    else:
        print()
        print(summary(rep))
