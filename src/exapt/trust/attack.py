"""`exapt attack RUN DATA`: how easily a run is fooled (docs/trust.md, "## Attacks").

Text runs: `charswap` (DeepWordBug-style character edits) and `wordswap` (TextFooler-
style word substitution), attack_text.py. Image runs: `fgsm` and `pgd` (l-inf) over a
grid of eps with the gradient-masking checks, attack_images.py.

The report folder holds attack.json (every figure), report.md, and the adversarial
examples (adversarial.csv for text, adversarial.npz for images); it is written into a
hidden sibling and renamed into place at the end, so an interrupted attack leaves nothing
half-written.
"""
from __future__ import annotations

import json
import math
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import load_data
from ..errors import ExaptError
from ..run import Run
from ..run_folder import check_can_be_folder
from .attack_images import attack_images, image_forward, masking_checks, predict
from .attack_text import Neighbours, Similarity, Victim, charswap, wordswap

TEXT_ATTACKS, IMAGE_ATTACKS = ("charswap", "wordswap"), ("fgsm", "pgd")
DEFAULT_BUDGET = {"charswap": "3", "wordswap": "0.15", "fgsm": "0,0.05,0.1,0.2,0.3", "pgd": "0,0.05,0.1,0.2,0.3"}
DEFAULT_EXAMPLES = {"text": 100, "image": 500}


@dataclass
class AttackSettings:
    attack: str
    budget: str | None = None
    max_examples: int | None = None
    steps: int = 10
    min_similarity: float = 0.85
    seed: int = 0


def check_attack(run: Run, attack: str) -> str:
    """The run's input kind, once it is clear the attack fits the run; one line otherwise."""
    if run.task.kind != "classification":
        raise ExaptError(f"{run.path} is a {run.task.kind} run; attacks flip a single-label classifier's "
                         "prediction, so there is nothing to attack")
    kind = run.model.backbone.input_kind
    wants = "text" if attack in TEXT_ATTACKS else "image"
    if kind != wants:
        others = TEXT_ATTACKS if kind == "text" else IMAGE_ATTACKS if kind == "image" else ()
        hint = f"; use --attack {' or '.join(others)}" if others else ""
        raise ExaptError(f"--attack {attack} attacks {wants} runs; {run.path} takes {kind} inputs{hint}")
    if kind == "text" and run.model.backbone.long is not None:
        raise ExaptError(f"{run.path} reads long inputs in windows (--long); attacks take one window per input")
    return kind


def parse_budget(attack: str, budget: str | None) -> list[float]:
    if attack not in TEXT_ATTACKS + IMAGE_ATTACKS:
        raise ExaptError(f"--attack {attack}: choose one of {', '.join(TEXT_ATTACKS + IMAGE_ATTACKS)}")
    text = DEFAULT_BUDGET[attack] if budget is None else str(budget)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ExaptError(f"--budget {text}: give non-negative numbers (e.g. {DEFAULT_BUDGET[attack]})")
    if attack == "charswap" and (len(values) != 1 or values[0] != int(values[0]) or values[0] < 1):
        raise ExaptError(f"--budget {text}: charswap takes one whole number of words to edit (e.g. 3)")
    if attack == "wordswap" and (len(values) != 1 or not 0 < values[0] <= 1):
        raise ExaptError(f"--budget {text}: wordswap takes the share of words it may change, in (0, 1] (e.g. 0.15)")
    if attack in IMAGE_ATTACKS and max(values) > 1:
        raise ExaptError(f"--budget {text}: eps is an l-inf budget on pixels in [0, 1]; values above 1 change nothing more")
    return sorted(set(values)) if attack in IMAGE_ATTACKS else values


def load_examples(run: Run, data, max_examples: int | None, kind: str, seed: int):
    d = run.config.data
    table = load_data(str(data), text=d.text, label=d.label, features=d.features, require_label=True,
                      image_size=d.image_size)
    if table.kind != kind:
        raise ExaptError(f"{table.source}: this run takes {kind} inputs, the data has {table.kind}")
    n = DEFAULT_EXAMPLES[kind] if max_examples is None else max_examples
    if len(table) > n:
        table = table.subset(np.sort(np.random.default_rng(seed).choice(len(table), n, replace=False)))
    return table, run.task.encode(table.labels, table.rows, table.source)


def attack_run(run_path, data, settings: AttackSettings, out=None, overwrite: bool = False, log=print) -> Path:
    """Attack a run on labelled DATA; returns the report folder."""
    budget = parse_budget(settings.attack, settings.budget)
    if settings.max_examples is not None and settings.max_examples < 1:
        raise ExaptError(f"--max-examples {settings.max_examples}: attack at least one example")
    run = Run.load(run_path)
    kind = check_attack(run, settings.attack)
    out = Path(out) if out else run.path.parent / f"{run.path.name}-attack-{settings.attack}"
    check_can_be_folder(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExaptError(f"--out {out} already exists; add --overwrite to replace it")
    table, targets = load_examples(run, data, settings.max_examples, kind, settings.seed)
    log(f"{settings.attack} on {run.path.name}: {len(table)} examples of {table.source}")
    if kind == "text":
        report, examples = _text(run, table, targets, settings, budget, log)
    else:
        report, examples = _images(run, table, targets, settings, budget, log)
    report.update(run=str(run.path), data=str(data), attack=settings.attack, n=len(table),
                  strategy=run.config.strategy, model=run.config.model, seed=settings.seed)
    _publish(out, overwrite, report, examples)
    return out


def _text(run: Run, table, targets, s: AttackSettings, budget: list[float], log):
    victim = Victim(run.model)
    similarity = Similarity()
    neighbours = Neighbours(run.model.backbone) if s.attack == "wordswap" else None
    results = []
    for i, (text, y) in enumerate(zip(table.inputs, targets.tolist())):
        if s.attack == "charswap":
            r = charswap(victim, str(text), y, int(budget[0]), seed=s.seed + i, similarity=similarity)
        else:
            r = wordswap(victim, str(text), y, neighbours, similarity, budget[0], s.min_similarity)
        results.append(r)
        if (i + 1) % 25 == 0:
            log(f"  {i + 1}/{len(table)} attacked")
    report = text_summary(results, run.task.classes)
    report["constraints"] = ({"max_words_edited": int(budget[0])} if s.attack == "charswap" else
                             {"max_fraction_changed": budget[0], "min_similarity": s.min_similarity,
                              "neighbours": neighbours.n, "similarity_model": "minilm-l6"})
    rows = pd.DataFrame([{**asdict(r), "row": row, "label": run.task.classes[r.label],
                          "original_prediction": run.task.classes[r.original_prediction],
                          "adversarial_prediction": run.task.classes[r.adversarial_prediction],
                          "notes": "; ".join(r.notes)} for r, row in zip(results, table.rows)])
    return report, rows


def text_summary(results: list, classes) -> dict:
    n = len(results)
    right = [r for r in results if not r.skipped]
    won = [r for r in right if r.success]
    edits = sum(r.edits for r in results)
    return {
        "clean_accuracy": len(right) / n if n else None,
        "robust_accuracy": (len(right) - len(won)) / n if n else None,
        "success_rate": len(won) / len(right) if right else None,
        "queries_mean": float(np.mean([r.queries for r in right])) if right else 0.0,
        "queries_mean_success": float(np.mean([r.queries for r in won])) if won else 0.0,
        "words_changed_fraction_mean_success": float(np.mean([r.words_changed / r.words for r in won])) if won else 0.0,
        "similarity_mean_success": float(np.mean([r.similarity for r in won])) if won else None,
        "edits": edits, "unk_edits": sum(r.unk_edits for r in results),
        "unk_rate": sum(r.unk_edits for r in results) / edits if edits else 0.0,
    }


def _images(run: Run, table, targets, s: AttackSettings, budget: list[float], log):
    x = torch.as_tensor(np.asarray(table.inputs, dtype=np.float32))
    if len(x) and (x.min() < 0 or x.max() > 1):
        raise ExaptError(f"{table.source}: pixels must be in [0, 1] for an eps on pixels to mean anything")
    forward = image_forward(run, x)
    clean = float((predict(forward, x) == targets.numpy()).mean())
    attacks = ["fgsm", "pgd"] if s.attack == "pgd" else ["fgsm"]  # FGSM too: PGD must never be weaker
    results = []
    for attack in attacks:
        for eps in budget:
            r = attack_images(forward, x, targets, attack, eps, s.steps, seed=s.seed)
            log(f"  {attack} eps={eps:g}: robust accuracy {r.robust_accuracy:.3f}")
            results.append(r)
    checks = masking_checks(clean, results)
    if not checks["passed"]:
        log("  warning: a gradient-masking check failed; the robust accuracies may overstate robustness")
    chosen = [r for r in results if r.attack == s.attack]
    report = {"clean_accuracy": clean, "steps": s.steps if s.attack == "pgd" else 1,
              "results": [{k: v for k, v in asdict(r).items() if k not in ("adversarial", "predictions")}
                          for r in results], "checks": checks}
    arrays = {"x": x.numpy(), "y": targets.numpy(), "rows": np.asarray(table.rows)}
    arrays.update({f"adversarial_eps{r.eps:g}": r.adversarial for r in chosen if r.eps > 0})
    return report, arrays


def _publish(out: Path, overwrite: bool, report: dict, examples) -> None:
    """Everything into a hidden sibling, then one rename; an older report goes only then."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if isinstance(examples, pd.DataFrame):
            examples.to_csv(tmp / "adversarial.csv", index=False)
        else:
            np.savez_compressed(tmp / "adversarial.npz", **examples)
        (tmp / "attack.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(markdown(report))
        if out.exists():  # empty, or --overwrite was given (attack_run checked)
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _f(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(r: dict) -> str:
    lines = [f"# {r['attack']} on {r['run']}", "",
             f"{r['n']} examples of {r['data']}; model {r['model']}, strategy {r['strategy']}.", "",
             f"- clean accuracy: {_f(r['clean_accuracy'])}"]
    if "results" not in r:
        lines += [f"- robust accuracy: {_f(r['robust_accuracy'])}",
                  f"- attack success rate (of examples classified right): {_f(r['success_rate'])}",
                  f"- queries per example: {r['queries_mean']:.1f} (successful attacks: {r['queries_mean_success']:.1f})",
                  f"- words changed in successful attacks: {r['words_changed_fraction_mean_success']:.1%}",
                  f"- sentence similarity of successful attacks: {_f(r['similarity_mean_success'])}",
                  f"- edits that turned a word into [UNK]: {r['unk_edits']} of {r['edits']} ({r['unk_rate']:.1%})",
                  f"- constraints: {json.dumps(r['constraints'])}", "", "Examples: adversarial.csv"]
        return "\n".join(lines) + "\n"
    lines += ["", "| attack | eps | robust accuracy | success rate | max l-inf | queries |", "|---|---|---|---|---|---|"]
    lines += [f"| {x['attack']} | {x['eps']:g} | {_f(x['robust_accuracy'])} | {_f(x['success_rate'])} | "
              f"{x['linf']:.3f} | {x['queries']} |" for x in r["results"]]
    c = r["checks"]
    lines += ["", "Gradient-masking checks: " + ("all passed" if c["passed"] else "**FAILED**") + " "
              f"(eps 0 = clean: {c['eps0_equals_clean']}; falls with eps: {c['falls_with_eps']}; "
              f"PGD not weaker than FGSM: {c['pgd_not_weaker_than_fgsm']}).", "", "Examples: adversarial.npz"]
    return "\n".join(lines) + "\n"
