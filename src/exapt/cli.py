"""The `exapt` command: parses arguments, calls the library, prints. Nothing else.

Every user-fixable problem surfaces as an `ExaptError`: one line on stderr, exit 2,
no traceback. Ctrl-C exits 130 and says how to resume.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

from . import interpolate as interpolate_cli
from .adapt import cli as adapt_cli
from .augment import cli as augment_cli
from .auto import cli as auto_cli
from .backbones import list_models
from .checks import harden_parser
from .compare import compare_config
from .compare.defaults import DEFAULT_SIZES, DEFAULT_STRATEGIES
from .config import FitConfig, apply_override
from .demo import demo
from .deploy import distil_cli, serve_cli
from .deploy import cli as deploy_cli
from .errors import ExaptError
from .files import atomic_write_text
from .fit import fit_config, resume
from .merge import merge_run
from .options import add_options, option_values
from .penalties import cli as penalty_cli
from .pretrain import cli as pretrain_cli
from .select import cli as select_cli
from .shift import cli as shift_cli
from .strategies import STRATEGIES
from .transfer_map import cli as transfer_map_cli
from .trust import attack_cli
from .trust import audit_cli

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2, like ours
        raise ExaptError(message)


FIT_DATA = ("text", "label", "features", "task", "test")
FIT_SPLITS = ("n-per-class", "seed", "val-fraction", "test-fraction", "max-test")
FIT_TRAINING = ("epochs", "lr", "batch-size", "max-length", "long", "pooling", "patience", "privacy")
FIT_CLASSES = ("class-weight", "loss", "decision", "target-recall")
FIT_SYNTHETIC = ("synthetic", "synthetic-weight")  # docs/augment.md
COMPARE_OPTIONS = ("text", "label", "features", "task", "test", "val-fraction", "test-fraction", "max-test",
                   "max-length", "long", "epochs", "batch-size", "patience")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="exapt", description="Transfer learning for small labelled data sets.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _fit_parser(sub)
    _run_parsers(sub)
    _compare_parser(sub)
    for module in (select_cli, shift_cli, transfer_map_cli, pretrain_cli, interpolate_cli, penalty_cli,
                   distil_cli,
                   augment_cli,
                   serve_cli,
                   audit_cli,
                   deploy_cli,
                   ):
        module.add_parser(sub)
    attack_cli.add_parser(sub)
    sub.add_parser("models", help="models that can be named with --model")
    sub.add_parser("strategies", help="registered strategies")
    d = sub.add_parser("demo", help="exapt compare on the bundled tweets and MiniLM (~10 min on 2 cores)")
    d.add_argument("--out", default="runs/demo")
    harden_parser(p)
    return p


def _fit_parser(sub) -> None:
    f = sub.add_parser("fit", help="fit one strategy -> runs/<name>/")
    f.add_argument("data", nargs="?", help="CSV/TSV/JSONL/Parquet file, images (DATA.npz with arrays x and y, or a folder "
                   "with one sub-folder of images per class; --set data.image_size=N resizes) or built-in name (tweets, "
                   "tweets-airline, tweets-self-driving, tweets-deflategate, tweets-apple, digits, promoters, splice, "
                   "amp-tm, amp-uniprot, rrna16s, rrna16s-taxonomy; images: mnist, fashion-mnist, optdigits, mnist-8x8)")
    f.add_argument("--strategy", default=FitConfig().strategy, help="see `exapt strategies` (default: linear-probe); auto: try cheap "
                   "candidates, fine-tune the promising few, keep the best on validation (docs/auto.md)")
    f.add_argument("--model", help="alias, HF model folder, scratch:NAME, mlp, or for images cnn / efficientnet-lite0[:SIZE] "
                   "(see `exapt models`; default: minilm-l6, or the --init run's)")
    add_options(f, *FIT_DATA, *FIT_SPLITS, *FIT_TRAINING, *FIT_CLASSES, *FIT_SYNTHETIC)
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config field, e.g. train.head_lr=1e-3")
    f.add_argument("--out", help="run folder (default: runs/<data>-<strategy>-s<seed>)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    f.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint; "
                   "--set may change train.lr, head_lr, weight_decay, clip or patience (e.g. after a diverged fit)")
    f.add_argument("--quiet", action="store_true")
    penalty_cli.add_source_options(f)
    adapt_cli.add_options(f)
    auto_cli.add_options(f)


def _run_parsers(sub) -> None:
    """The commands that use a finished run: evaluate, predict, merge."""
    e = sub.add_parser("evaluate", help="metrics of a run on labelled data")
    e.add_argument("run")
    e.add_argument("data")
    e.add_argument("--json", action="store_true", help="print JSON")

    pr = sub.add_parser("predict", help="predictions (+ class probabilities) of a run")
    pr.add_argument("run")
    pr.add_argument("data")
    pr.add_argument("-o", "--output", required=True, help="CSV file to write")
    pr.add_argument("--overwrite", action="store_true")

    mg = sub.add_parser("merge", help="fold a lora/ia3 run's updates into plain weights")
    mg.add_argument("run")
    mg.add_argument("--out", help="default: RUN-merged")
    mg.add_argument("--overwrite", action="store_true")


def _compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="strategies x labelled-set sizes x seeds vs. training from scratch -> report")
    c.add_argument("data", help="file or built-in name; a pattern with {n} and {seed} names pre-made training files")
    c.add_argument("--model", help="default: minilm-l6, or the --init run's")
    c.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help=f"comma-separated (default: {','.join(DEFAULT_STRATEGIES)})")
    c.add_argument("--n-per-class", default=",".join(map(str, DEFAULT_SIZES)),
                   help="labelled examples per class, comma-separated; 'all' for the whole pool (default: 8,16,32,64)")
    c.add_argument("--seeds", type=int, default=3, help="seeds per size (default: 3)")
    c.add_argument("--out", default="compare", help="folder for results, report and cell runs (default: compare)")
    add_options(c, *COMPARE_OPTIONS, *FIT_CLASSES, *FIT_SYNTHETIC)
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any fit config field, all cells")
    c.add_argument("--privacy", metavar="none,8,1", help="each strategy once per privacy budget epsilon (none: not "
                   "private), DP-SGD as in fit --privacy: privacy as a panel dimension (docs/trust.md)")
    c.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store inside --out)")
    c.add_argument("--no-tracking", action="store_true", help="do not log cells to MLflow")
    c.add_argument("--keep-weights", action="store_true", help="keep each cell's weights (default: metrics only)")
    c.add_argument("--overwrite", action="store_true", help="start again when --out holds a compare with other settings")
    c.add_argument("--quiet", action="store_true")
    add_options(c, "executor")
    penalty_cli.add_source_options(c, penalty=False)


def _cmd_fit(a) -> None:
    log = (lambda *_: None) if a.quiet else print
    if a.resume:
        if a.data:
            raise ExaptError("--resume RUN takes its data from the run's config; drop the DATA argument")
        if Path(a.resume).is_file():
            raise ExaptError(f"--resume {a.resume} is a file, not a run folder; give the folder the fit wrote")
        resume(a.resume, progress=not a.quiet, log=log, overrides=a.set)
        return
    if not a.data:
        raise ExaptError("fit needs DATA (a file or a built-in name), or --resume RUN")
    cfg = FitConfig.from_options(a.data, strategy=a.strategy, model=a.model,
                                 **option_values(a, *FIT_DATA, *FIT_SPLITS, *FIT_TRAINING, *FIT_CLASSES, *FIT_SYNTHETIC))
    penalty_cli.apply_to_config(cfg, a)
    adapt_cli.apply_to_config(cfg, a)
    cfg.validate()  # the options just copied in, against their fields' declared ranges
    for assignment in a.set:
        apply_override(cfg, assignment)
    if auto_cli.wanted(a):
        auto_cli.fit(cfg, a, log)
        return
    fit_config(cfg, out=a.out, overwrite=a.overwrite, progress=not a.quiet, log=log)


def _cmd_evaluate(a) -> None:
    metrics = deploy_cli.load_for_use(a.run).evaluate(a.data)  # a run, or an export folder
    if a.json:
        print(json.dumps(metrics, indent=2))
    else:
        for k, v in metrics.items():
            print(f"{k:>10}  {v:.4f}" if isinstance(v, float) else f"{k:>10}  {v}")


def _cmd_predict(a) -> None:
    out = Path(a.output)
    if out.is_dir():  # --overwrite replaces a file, never a folder
        raise ExaptError(f"-o {out} is a folder; give a CSV file name, e.g. -o {out / 'predictions.csv'}")
    if out.exists() and not a.overwrite:
        raise ExaptError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        what = "is a file, not a folder" if out.parent.exists() else "does not exist"
        raise ExaptError(f"-o {out}: folder {out.parent} {what}")
    frame = deploy_cli.load_for_use(a.run).predict(a.data)  # a run, or an export folder
    atomic_write_text(out, frame.to_csv(index=False))
    print(f"{len(frame)} predictions -> {out}")


def _cmd_merge(a) -> None:
    run = merge_run(a.run, a.out, a.overwrite)
    print(f"merged {run.metrics['merged_strategy']} into {run.metrics['merged_tensors']} base tensors -> {run.path}")


def _cmd_compare(a) -> None:
    base = FitConfig.from_options(a.data, model=a.model, init=a.init, source=penalty_cli.source_config(a),
                                  overrides=tuple(a.set), **option_values(a, *COMPARE_OPTIONS, *FIT_CLASSES, *FIT_SYNTHETIC))
    compare_config(base, a.strategies, a.n_per_class, a.seeds, a.out, tracking=not a.no_tracking,
                   tracking_uri=a.tracking_uri, keep_weights=a.keep_weights, overwrite=a.overwrite,
                   progress=not a.quiet, log=(lambda *_: None) if a.quiet else print, privacy=a.privacy,
                   command="exapt " + " ".join(shlex.quote(x) for x in sys.argv[1:]), executor=a.executor)


def _cmd_models(a) -> None:
    for m in list_models():
        mark = "" if m["installed"] else "  (not installed)"
        print(f"{m['name']:<18} {m['description']}{mark}")


def _cmd_strategies(a) -> None:
    for name, cls in STRATEGIES.items():
        print(f"{name:<18} {cls.summary}")


def _cmd_demo(a) -> None:
    demo(out=a.out)


COMMANDS = {"fit": _cmd_fit, "evaluate": _cmd_evaluate, "predict": _cmd_predict, "merge": _cmd_merge,
            "compare": _cmd_compare, "rank": select_cli.run, "shift": shift_cli.run, "transfer-map": transfer_map_cli.run, "pretrain": pretrain_cli.run, "models": _cmd_models,
            "interpolate": interpolate_cli.run, "penalties": penalty_cli.run, "audit": audit_cli.run,
            "strategies": _cmd_strategies, "demo": _cmd_demo}
COMMANDS.update({"distil": distil_cli.run_distil, "prune": distil_cli.run_prune})
COMMANDS.update({"augment": augment_cli.run})
COMMANDS["attack"] = attack_cli.run
COMMANDS.update({"serve": serve_cli.run_serve, "keys": serve_cli.run_keys, "drift": serve_cli.run_drift})
COMMANDS["export"] = deploy_cli.run


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one line, like exapt's errors: no file path, no source line."""
    text = (str(message).strip().splitlines() or [category.__name__])[0]
    try:
        print(f"exapt: warning: {text}", file=file or sys.stderr)
    except OSError:  # stderr gone (a closed pipe): a warning is not worth a crash
        pass


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    shown, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        return _run(argv)
    finally:
        warnings.showwarning = shown


# output-folder options of the commands that write one (fit's --out is its run folder's own check)
_FOLDER_OPTIONS = {"compare": ("out",), "rank": ("out",), "shift": ("out",), "transfer-map": ("out",),
                   "pretrain": ("out",), "merge": ("out",), "interpolate": ("out", "save"), "demo": ("out",)}
_FOLDER_OPTIONS.update({"distil": ("out",), "prune": ("out",)})
_FOLDER_OPTIONS.update({"drift": ("out",)})
_FOLDER_OPTIONS.update({"export": ("out",)})


def _check_folder_options(args) -> None:
    """An output folder that cannot be one (a file, or under a file) is said before any work."""
    for name in _FOLDER_OPTIONS.get(args.command, ()):
        value = getattr(args, name, None)
        if not value:
            continue
        path = Path(value)
        own = args.command in ("compare", "rank", "shift")  # these say "--out X is a file" themselves
        for p in (path.parents if own else (path, *path.parents)):
            if p.exists() and not p.is_dir():
                where = "" if p == path else f": {p} is a file"
                raise ExaptError(f"--{name} {value} {'is a file, not a folder' if p == path else 'cannot be a folder'}"
                                 f"{where}")


def _os_error_line(e: OSError) -> str:
    """An operating-system error (a path that cannot be made, a full disk) as one line."""
    reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return f"{reason}: {e.filename}" if e.filename else reason


def _run(argv) -> int:
    try:
        args = build_parser().parse_args(argv)
        _check_folder_options(args)
        COMMANDS[args.command](args)
    except ExaptError as e:
        print(f"exapt: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # the machine said no (read-only place, full disk...): one line, not a traceback
        print(f"exapt: error: {ExaptError(_os_error_line(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("exapt: interrupted; a fit continues with `exapt fit --resume RUN`, a compare by running "
              "the same command again", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
