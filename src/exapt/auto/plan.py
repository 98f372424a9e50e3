"""What `--strategy auto` tries, in which order, and how it chooses: pure decisions, no
training (search.py runs them). Every rule here reads only what any data set offers (the
validation scores of the cheap candidates, the input kind, the training-set size), never
a figure tuned on one set.

The stages:
1. cheap: the classical `baseline` and the `linear-probe` on frozen features (seconds);
2. fine-tune: the fine-tunes the cheap scores point to, each at its own default learning
   rate on the ordinary schedule, most promising first: a budget is spent first where the
   prior says the answer most likely is, and no fit is thrown away (a fit shortened to
   screen rates must be redone to be used, which a quarter-panel budget cannot afford);
3. lr: the best fine-tune again at the other rates of a small grid around its default
   (default / 3, default x 3), while the budget holds.
Under a budget every fit after the cheap ones gets what is left as its time limit
(train.time_limit: it stops after the step that passes it and keeps its best epoch).
The winner (`choose`): of the candidates within one standard error of the best validation
score, the first in PRIOR; a tie then goes to the higher AUROC, then to the earlier one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

LR_STEP = 3.0            # the grid: default / 3, default, default * 3
# another rate of a strategy already run is launched only when at least this share of its
# measured time is left: a fit its time limit stops early says little about the rate
MIN_SHARE_LEFT = 0.5
BACKWARD_COST = 3.0      # a training step costs ~3 forward passes (forward + backward)
SEQUENCE_KINDS = ("dna", "protein")


@dataclass
class Candidate:
    """One fit auto may launch: a strategy spec and its learning rate (None: the
    strategy's default)."""
    strategy: str
    stage: str                         # cheap | fine-tune | lr
    lr: float | None = None
    why: str = ""
    # filled in by search.py
    status: str = "planned"            # ran | skipped | over budget | failed
    val: dict = field(default_factory=dict)
    score: float | None = None
    seconds: float | None = None
    estimate: float | None = None
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.strategy}@lr={self.lr:.3g}" if self.lr is not None else self.strategy

    def record(self) -> dict:
        out = {"candidate": self.label, "strategy": self.strategy, "stage": self.stage, "lr": self.lr,
               "status": self.status, "why": self.why, "val_score": self.score, "val": self.val,
               "seconds": self.seconds, "estimated_seconds": self.estimate}
        if self.note:
            out["note"] = self.note
        return out


def cheap_candidates() -> list[Candidate]:
    return [Candidate("baseline", "cheap", why="classical features + logistic regression, C by cross-validation"),
            Candidate("linear-probe", "cheap", why="logistic regression on the frozen model's features")]


def lr_grid(default: float, user_lr: float | None) -> list[float]:
    """The learning rates to try, the default first (a budget cut keeps the likeliest);
    the user's --lr alone when given."""
    if user_lr is not None:
        return [user_lr]
    return [default, default / LR_STEP, default * LR_STEP]


def worth_launching(estimate: float | None, left: float | None) -> bool:
    """Whether a fit predicted to take `estimate` s is worth starting with `left` s of a
    budget (None: no budget; an estimate of None: launched while any budget is left): its
    time limit stops it at the budget, so half its predicted time is enough to start it."""
    if left is None:
        return True
    return left > 0 and (estimate is None or estimate * MIN_SHARE_LEFT <= left)


def fine_tunes(cheap: dict[str, float | None], kind: str, higher: bool, band: float = 0.0) -> list[tuple]:
    """[(strategy, why)] to fine-tune, most promising first, from the cheap candidates'
    validation scores ({"baseline": s, "linear-probe": s}, None when it could not run).

    - a pretrained model that takes the data (the probe ran): `lp-ft` (Kumar et al. 2022:
      fine-tuning from the fitted probe head distorts good features least);
    - when the classical baseline beats the probe, the frozen features are far from the
      task and lp-ft's premise fails: `full` too (its own head, larger default rate), put
      first (a lead within `band`, one standard error of the validation score, is no
      evidence against lp-ft);
    - DNA and protein sequences: `baseline-cnn`, a small CNN from scratch (motif detectors
      fit such data where a pretrained encoder may not), cheap enough to always try."""
    out = []
    probe, base = cheap.get("linear-probe"), cheap.get("baseline")
    if probe is not None:
        weak = base is not None and better(base, probe, higher) and abs(base - probe) > band
        lp = ("lp-ft", "the probe's head as the start of a full fine-tune (keeps good features)")
        full = ("full", "the classical baseline beat the frozen features on validation, "
                        "so the encoder must move: all weights, the fine-tune's own head")
        out += [full, lp] if weak else [lp]
    if kind in SEQUENCE_KINDS:
        out.append(("baseline-cnn", "a small 1-D CNN from scratch: motif detectors for sequences"))
    return out


def better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


# a tie on the validation metric goes to the higher validation AUROC, a finer measure on
# the same rows, then to the earlier candidate (cheaper, launched first)
TIE_BREAK = "auroc"
# Scores within one standard error of the best are not told apart by the validation split
# (on 10 rows a proportion's standard error is 0.16; at 16 labelled examples per class a
# validation split has 6-32 rows). Among those, auto keeps the one ranked first by what
# transfer studies find on average for a pretrained model that takes the data: fine-tuning
# from the probe's head (Kumar et al. 2022), then full fine-tuning, the sequence CNN (only
# planned for DNA and proteins), the frozen probe, the classical baseline. A clear lead on
# validation still wins whatever its rank.
PRIOR = ("lp-ft", "full", "baseline-cnn", "linear-probe", "baseline")


def noise_band(n_val: int, bounded: bool) -> float:
    """One standard error of a proportion near 1/2 on `n_val` rows, for a score in [0, 1]
    (accuracy, F1); 0 for an unbounded one (RMSE): no band, the best score wins."""
    return 0.5 / math.sqrt(n_val) if bounded and n_val > 0 else 0.0


def _rank(c: Candidate) -> int:
    return PRIOR.index(c.strategy) if c.strategy in PRIOR else len(PRIOR)


def _key(c: Candidate, higher: bool) -> tuple:
    sign = 1.0 if higher else -1.0
    finer = c.val.get(TIE_BREAK)
    return sign * c.score, finer if finer is not None and math.isfinite(finer) else -math.inf


def _ran(candidates: list[Candidate]) -> list[Candidate]:
    return [c for c in candidates if c.score is not None and math.isfinite(c.score)]


def best_score(candidates: list[Candidate], higher: bool) -> Candidate | None:
    """The best validation score; a tie goes to the higher AUROC, then to the earlier one."""
    best = None
    for c in _ran(candidates):
        if best is None or _key(c, higher) > _key(best, higher):
            best = c
    return best


def choose(candidates: list[Candidate], higher: bool, band: float = 0.0) -> Candidate | None:
    """Of the candidates within `band` of the best validation score, the one first in
    PRIOR (then the best score, then the AUROC, then the earlier); band 0: the best score."""
    best = best_score(candidates, higher)
    if best is None or band <= 0:
        return best
    close = [c for c in _ran(candidates) if abs(best.score - c.score) <= band]
    first = min(_rank(c) for c in close)
    return best_score([c for c in close if _rank(c) == first], higher)


def reason(winner: Candidate, candidates: list[Candidate], metric: str, higher: bool, band: float = 0.0) -> str:
    """Why the winner won, in one sentence, with the runner-up's score."""
    others = sorted((c for c in _ran(candidates) if c is not winner), key=lambda c: _key(c, higher), reverse=True)
    tried = len(_ran(candidates))
    best = best_score(candidates, higher)
    if best is not None and best is not winner:
        return (f"{winner.label} (validation {metric} {winner.score:.4f}) is within one standard error "
                f"({band:.3f} on these validation rows) of the best, {best.label} ({best.score:.4f}), and ranks "
                f"first of those in the prior order ({', '.join(PRIOR)}); {tried} candidates ran.")
    text = f"{winner.label} had the best validation {metric} ({winner.score:.4f}) of the {tried} candidates that ran"
    if others:
        runner = others[0]
        tie = ""
        if runner.score == winner.score:
            finer = [c.val.get(TIE_BREAK) for c in (winner, runner)]
            tie = (f" (a tie, broken by validation {TIE_BREAK}: {finer[0]:.4f} against {finer[1]:.4f})"
                   if None not in finer and finer[0] != finer[1] else " (a tie: the cheaper one is kept)")
        text += f"; next was {runner.label} ({runner.score:.4f}){tie}"
    return text + "."


@dataclass
class Clock:
    """Predicts a fit's seconds before it is launched. A strategy already run: its measured
    time, scaled by epochs. Otherwise, for the pretrained model: seconds per forward pass
    of one example (measured on the probe's validation pass) times the passes a fine-tune
    makes, plus the fixed costs the probe's fit measured, times the latest measured /
    predicted ratio of a fine-tune of that model. None: no basis yet (a model of its own)."""
    per_item: float | None = None
    overhead: float = 0.0
    ratio: float = 1.0
    measured: dict = field(default_factory=dict)   # strategy -> (seconds, epochs)

    def estimate(self, strategy: str, epochs: int, sizes: dict, own_model: bool) -> float | None:
        if strategy in self.measured:
            seconds, ran = self.measured[strategy]
            return seconds * epochs / max(ran, 1)
        if own_model or self.per_item is None:
            return None
        return self._passes(epochs, sizes) * self.ratio

    def learn(self, strategy: str, epochs: int, sizes: dict, measured: float, own_model: bool) -> None:
        self.measured[strategy] = (measured, epochs)
        if not own_model and self.per_item is not None:
            self.ratio = measured / self._passes(epochs, sizes)

    def _passes(self, epochs: int, sizes: dict) -> float:
        items = epochs * (BACKWARD_COST * sizes["train"] + sizes["val"]) + sizes["test"] + sizes["val"]
        return self.overhead + items * self.per_item
