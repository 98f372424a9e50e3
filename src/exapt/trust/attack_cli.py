"""`exapt attack`: the subcommand's arguments and what it prints (wired into exapt.cli
like `shift`: ``add_parser(sub)`` in build_parser, ``"attack": run`` in COMMANDS)."""
from __future__ import annotations

from ..errors import ExaptError
from .attack import (
    DEFAULT_BUDGET,
    DEFAULT_EXAMPLES,
    IMAGE_ATTACKS,
    TEXT_ATTACKS,
    AttackSettings,
    attack_run,
)


def add_parser(sub):
    """Add `attack` to an argparse subparsers object; returns the new parser."""
    s = sub.add_parser(
        "attack", help="adversarial robustness of a run: text (charswap, wordswap) or image (fgsm, pgd) attacks",
        description="Attack a classifier run on labelled DATA and report clean and robust accuracy, attack success "
                    "rate, perturbation size and queries; writes attack.json, report.md and the adversarial "
                    "examples (adversarial.csv or adversarial.npz) to --out.")
    s.add_argument("run", help="an `exapt fit` run folder (a classification run)")
    s.add_argument("data", help="labelled data to attack: a file or built-in name (e.g. tweets, mnist)")
    s.add_argument("--attack", required=True, choices=TEXT_ATTACKS + IMAGE_ATTACKS,
                   help="charswap (character edits in at most k words), wordswap (embedding-neighbour word "
                        "substitution), fgsm or pgd (l-inf, images)")
    b = DEFAULT_BUDGET
    s.add_argument("--budget", help=f"charswap: words to edit (default {b['charswap']}); wordswap: share of words it "
                                    f"may change (default {b['wordswap']}); fgsm/pgd: eps values on [0, 1] pixels, "
                                    f"comma-separated (default {b['pgd']})")
    s.add_argument("--max-examples", type=int, metavar="N",
                   help=f"attack a random sample of N examples (default: {DEFAULT_EXAMPLES['text']} text, "
                        f"{DEFAULT_EXAMPLES['image']} images)")
    s.add_argument("--steps", type=int, default=10, help="PGD steps (default: 10)")
    s.add_argument("--min-similarity", type=float, default=0.85,
                   help="wordswap: least MiniLM sentence similarity to the original (default: 0.85)")
    s.add_argument("--seed", type=int, default=0, help="sample, character edits and PGD's random start")
    s.add_argument("--out", help="report folder (default: RUN-attack-ATTACK beside the run)")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    s.add_argument("--json", action="store_true", help="print attack.json instead of the summary")
    return s


def run(args) -> None:
    """Run `exapt attack` from parsed arguments."""
    if args.steps < 1:
        raise ExaptError(f"--steps {args.steps}: PGD takes at least one step")
    if not 0 < args.min_similarity <= 1:
        raise ExaptError(f"--min-similarity {args.min_similarity}: give a cosine similarity in (0, 1]")
    settings = AttackSettings(args.attack, args.budget, args.max_examples, args.steps, args.min_similarity, args.seed)
    log = (lambda *_a, **_k: None) if args.json else print
    out = attack_run(args.run, args.data, settings, out=args.out, overwrite=args.overwrite, log=log)
    if args.json:
        print((out / "attack.json").read_text().rstrip())
    else:
        print((out / "report.md").read_text().rstrip())
        print(f"\n-> {out}/")
