"""`exapt fit DATA --strategy auto`: run the plan of plan.py, each candidate an ordinary fit
in a hidden folder beside --out, score it on the validation split (never the test split),
and publish the winner's run at --out with the search written into its metrics.json
("auto": what was tried, each candidate's validation score and seconds, and why it won).
The hidden folder goes when the search ends, finished or not.
"""
from __future__ import annotations

import copy
import shutil
import time
import uuid

from ..backbones.classical import detect_mode
from ..config import FitConfig
from ..data import MemoLoader, fit_splits, load_table
from ..errors import ExaptError
from ..fit import fit_config
from ..run import Run
from ..run_folder import RunFolder, publish_run
from ..strategies import parse_strategy
from ..tasks import Task, higher_is_better, ranking_metric
from .plan import (Candidate, Clock, cheap_candidates, choose, fine_tunes, lr_grid, noise_band, reason,
                   worth_launching)


def check_budget(minutes) -> float | None:
    """--budget-minutes as seconds (None: no limit)."""
    if minutes is None:
        return None
    if not isinstance(minutes, (int, float)) or not minutes > 0 or minutes != minutes:
        raise ExaptError(f"--budget-minutes must be a number of minutes > 0 (got {minutes!r}); "
                         "leave it out for no limit")
    return float(minutes) * 60


def fit_auto(cfg: FitConfig, out=None, *, overwrite: bool = False, budget_minutes: float | None = None,
             progress: bool = True, log=print) -> Run:
    """Search the candidates for `cfg`'s data (cfg.strategy is ignored) and return the
    published winner's `Run`."""
    budget = check_budget(budget_minutes)
    cfg = copy.deepcopy(cfg)
    cfg.strategy = "auto"
    cfg.validate()
    target = RunFolder(out) if out else RunFolder.default_for(cfg)
    target.check_fresh_fit(overwrite)
    search = _Search(cfg, budget, MemoLoader(), progress, log)
    for stale in target.path.parent.glob(f".{target.path.name}.auto-*"):  # a search killed before its cleanup
        shutil.rmtree(stale, ignore_errors=True)
    staging = target.path.parent / f".{target.path.name}.auto-{uuid.uuid4().hex[:8]}"
    try:
        search.run(staging)
        winner = choose(search.candidates, search.higher, search.band)
        if winner is None:
            raise ExaptError("--strategy auto: no candidate could be fitted on this data: "
                             + "; ".join(f"{c.label}: {c.note}" for c in search.candidates if c.note)[:600])
        record = search.record(winner)
        publish_run(target.path, overwrite, lambda folder: _copy_run(search.paths[id(winner)], folder, record))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    run = Run.load(target.path)
    test = run.metrics.get("test", {})
    log(f"auto chose {winner.label}: {record['reason']}")
    log(f"test: {', '.join(f'{k} {v:.4f}' for k, v in test.items())}  ->  {target.path}")
    return run


def _copy_run(source, folder: RunFolder, record: dict) -> None:
    """The winner's files, with the search added to its metrics.json (written last)."""
    shutil.copytree(source, folder.path, dirs_exist_ok=True)
    metrics = RunFolder(source).read_metrics()
    metrics["auto"] = record
    folder.mark_complete(metrics)


class _Search:
    def __init__(self, cfg: FitConfig, budget: float | None, loader, progress: bool, log):
        self.cfg, self.budget, self.loader, self.progress, self.log = cfg, budget, loader, progress, log
        table = load_table(cfg.data, loader)
        kind = Task.from_labels(cfg.task, table.labels, table.source).kind
        tables = dict(zip(("train", "val", "test"), fit_splits(cfg.data, table, kind, loader)))
        if not len(tables["val"]):
            raise ExaptError("--strategy auto chooses on the validation split; give --val-fraction > 0")
        # DNA and proteins arrive as text; the classical backbone's rule tells them apart
        self.input_kind = detect_mode(list(tables["train"].inputs)) if table.kind == "text" else table.kind
        self.kind, self.val = kind, tables["val"]
        self.sizes = {name: len(t) for name, t in tables.items()}
        # compare's rule (tasks.ranking_metric): macro-F1 when the labelled data's classes are imbalanced
        self.metric = ranking_metric(kind, list(_counts(table.labels).values()) if kind == "classification" else None)
        self.higher = higher_is_better(kind)
        self.band = noise_band(self.sizes["val"], bounded=kind != "regression")
        self.candidates: list[Candidate] = []
        self.paths: dict[int, object] = {}
        self.clock = Clock()
        self.started = time.perf_counter()
        self.plan: list[str] = []

    # -- the stages -------------------------------------------------------------------
    def run(self, staging) -> None:
        self.staging = staging
        errors = []
        for c in cheap_candidates():
            self._launch(c, check_budget=False)
            if c.status == "skipped":
                errors.append(c.note)
        if all(c.status != "ran" for c in self.candidates):
            raise ExaptError(errors[0])
        cheap = {c.strategy: c.score for c in self.candidates}
        for strategy, why in fine_tunes(cheap, self.input_kind, self.higher, self.band):
            self.plan.append(f"{strategy}: {why}")
            self._launch(Candidate(strategy, "fine-tune", lr=self._rates(strategy)[0], why=why))
        self._other_rates()

    def _rates(self, strategy: str) -> list[float]:
        return lr_grid(parse_strategy(strategy).default_lr, self.cfg.train.lr)

    def _other_rates(self) -> None:
        """The best fine-tune at the other rates of its grid (the default ran already)."""
        tuned = choose([c for c in self.candidates if c.stage == "fine-tune"], self.higher, self.band)
        if tuned is None:
            return
        for lr in self._rates(tuned.strategy)[1:]:
            self._launch(Candidate(tuned.strategy, "lr", lr=lr,
                                   why=f"the best fine-tune ({tuned.label}) at another rate of its grid"))

    # -- one candidate ----------------------------------------------------------------
    def _config(self, c: Candidate) -> FitConfig:
        cfg = copy.deepcopy(self.cfg)
        cfg.strategy = c.strategy
        if c.lr is not None:
            cfg.train.lr = c.lr
        return cfg

    def _launch(self, c: Candidate, check_budget: bool = True) -> None:
        self.candidates.append(c)
        cfg = self._config(c)
        own = parse_strategy(c.strategy).own_model() is not None
        epochs = cfg.train.resolved_epochs(self.sizes["train"])
        c.estimate = self.clock.estimate(c.strategy, epochs, self.sizes, own)
        left = None if self.budget is None else self.budget - (time.perf_counter() - self.started)
        # a strategy's first fit is launched while any budget is left: its time limit bounds
        # it, and a prediction that cannot foresee early stopping would hold back the fit the
        # plan ranks first; another rate of a strategy already run needs half its measured time
        basis = c.estimate if c.strategy in self.clock.measured else None
        # the time limit counts training only: keep back what loading the model and scoring
        # the splits cost, about what the probe's whole fit cost
        left = None if left is None else left - self.clock.overhead
        if check_budget and not worth_launching(basis, left):
            c.status = "over budget"
            c.note = f"estimated {c.estimate or 0:.0f} s, {max(left, 0):.0f} s of the budget left"
            self.log(f"auto: {c.label:<34} not launched ({c.note})")
            return
        if check_budget and left is not None:
            cfg.train.time_limit = left   # the fit stops at the budget, keeping its best epoch
        path = self.staging / f"{len(self.candidates):02d}-{c.strategy}"
        t0 = time.perf_counter()
        try:
            run = fit_config(cfg, out=path, progress=False, log=_quiet, loader=self.loader)
        except ExaptError as e:
            c.status, c.note = "skipped", str(e)
            self.log(f"auto: {c.label:<34} skipped: {e}")
            return
        fitted = time.perf_counter() - t0
        t1 = time.perf_counter()
        c.val = {k: v for k, v in run.evaluate(self.val).items() if k != "n"}
        evaluated = time.perf_counter() - t1
        c.seconds = round(fitted + evaluated, 2)
        c.score, c.status = c.val.get(self.metric), "ran"
        if run.metrics.get("stopped_by_time_limit_after_epoch"):
            c.note = (f"stopped by the budget after epoch {run.metrics['stopped_by_time_limit_after_epoch']} "
                      f"of {epochs}")
        self.paths[id(c)] = path
        if c.strategy == "linear-probe":  # the pretrained model's forward cost, for the estimates
            self.clock.per_item, self.clock.overhead = evaluated / max(self.sizes["val"], 1), fitted
        elif c.stage != "cheap":
            # per epoch that ran: early stopping and the time limit end fits before their schedule
            self.clock.learn(c.strategy, run.metrics.get("epochs_run") or epochs, self.sizes, c.seconds, own)
        self.log(f"auto: {c.label:<34} val {self.metric} {c.score:.4f}  {c.seconds:.1f} s"
                 + (f" ({c.note})" if c.note else ""))

    def record(self, winner: Candidate) -> dict:
        return {"metric": self.metric, "higher_is_better": self.higher, "n_val": self.sizes["val"],
                "budget_seconds": self.budget, "seconds": round(time.perf_counter() - self.started, 2),
                "plan": self.plan, "candidates": [c.record() for c in self.candidates],
                "winner": winner.label, "strategy": winner.strategy, "lr": winner.lr,
                "reason": reason(winner, self.candidates, self.metric, self.higher, self.band),
                "noise_band": self.band,
                "chosen_on": "validation split only (the test split is never read by the choice)"}


def _counts(labels) -> dict:
    out: dict = {}
    for v in labels:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def _quiet(*_args, **_kwargs) -> None:
    pass
