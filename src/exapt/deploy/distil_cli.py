"""`exapt distil` and `exapt prune`: their arguments and what they print (docs/ship.md).

Wired into `exapt.cli` like `shift`: ``add_parser(sub)`` in `build_parser` adds both,
and COMMANDS maps "distil" to `run_distil` and "prune" to `run_prune`.
"""
from __future__ import annotations

from .distil import DistilSettings, distil
from .prune import prune


def _common(p, epochs_flag: str, epochs_help: str) -> None:
    p.add_argument("run", help="a complete run folder made by exapt fit (the teacher)")
    p.add_argument("--unlabelled", metavar="FILE",
                   help="more inputs without labels (same text/feature columns): the student matches the teacher there")
    p.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T of the soft targets (default: 2)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="weight A of the teacher's soft targets on labelled rows; 1 - A goes to the labels (default: 0.5)")
    p.add_argument(epochs_flag, dest="epochs", type=int, help=epochs_help)
    p.add_argument("--lr", type=float, help="learning rate (default: the full strategy's)")
    p.add_argument("--batch-size", type=int, help="default: the teacher's")
    p.add_argument("--out", help="the student's run folder (default: beside RUN)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true")


def add_parser(sub) -> None:
    d = sub.add_parser("distil", help="distil a run into a smaller student run (Hinton et al. 2015)",
                       description="Train a student on the teacher run's outputs (softened by --temperature) and "
                                   "labels: A*T^2*KL(teacher_T||student_T) + (1-A)*CE on labelled rows, KL alone on "
                                   "--unlabelled rows (MSE to the teacher's outputs for regression). The student is an "
                                   "ordinary run (evaluate, predict, export) with distil.json: agreement with the "
                                   "teacher, both accuracies, sizes and speeds.")
    d.add_argument("--student", required=True, metavar="SPEC",
                   help="MODEL@K: the bottom K layers of the teacher's own backbone, started from its fine-tuned "
                        "layers and head (e.g. minilm-l6@3); another alias or Hugging Face folder; or scratch:NAME")
    _common(d, "--epochs", "training epochs (default: as exapt fit resolves them)")
    p = sub.add_parser("prune", help="remove attention heads or top layers of a run, recover by distillation",
                       description="Structured pruning that makes the model smaller and faster on a CPU: --heads "
                                   "removes that fraction of attention heads, least important first (gradient-based "
                                   "importance of Michel et al. 2019, on the run's training rows); --layers K keeps "
                                   "the bottom K layers. Then a short distillation from the unpruned run recovers "
                                   "accuracy. The result is an ordinary run with distil.json.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--heads", type=float, metavar="FRACTION", help="fraction of all heads to remove, e.g. 0.25")
    what.add_argument("--layers", type=int, metavar="K", help="keep the bottom K layers")
    _common(p, "--recover-epochs", "epochs of the recovering distillation (default: 3)")


def _settings(a, default_epochs=None) -> DistilSettings:
    return DistilSettings(temperature=a.temperature, alpha=a.alpha, unlabelled=a.unlabelled,
                          epochs=a.epochs if a.epochs is not None else default_epochs, lr=a.lr,
                          batch_size=a.batch_size)


def _log(a):
    return (lambda *_: None) if a.quiet else print


def run_distil(a) -> None:
    student = distil(a.run, a.student, _settings(a), out=a.out, overwrite=a.overwrite, progress=not a.quiet,
                     log=_log(a))
    print(f"-> {student.path}")


def run_prune(a) -> None:
    student = prune(a.run, heads=a.heads, layers=a.layers, settings=_settings(a, default_epochs=3), out=a.out,
                    overwrite=a.overwrite, progress=not a.quiet, log=_log(a))
    print(f"-> {student.path}")
