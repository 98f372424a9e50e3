"""`exapt distil RUN --student SPEC`: knowledge distillation of a fine-tuned run (the
teacher) into a smaller model (the student), written as an ordinary run folder.

Students (`--student`):
    minilm-l6@3          the bottom 3 layers of the teacher's own backbone, started from the
                         teacher's *fine-tuned* layers and head (so it starts as a shallow copy)
    ALIAS or FOLDER      another backbone (its pretrained weights, a new head)
    scratch:NAME[@K]     random weights

The loss is `distil_loss.distil_loss`; the training loop is exapt's own (train/loop.py),
given a `DistilTask` in place of the task, so epochs, early stopping on validation,
checkpoints and the schedule are the ones `exapt fit` has. The teacher's logits on every
row are computed once, before the first epoch. The student's run has a config whose
model names its shape (`minilm-l6@3`), so `exapt evaluate / predict / export` load it as
they load any run; `distil.json` beside it says what it was distilled from and what it kept.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backbones import family_of, split_scratch
from ..backbones.shape import keep_layers, split_shape
from ..config import AdaptConfig, ClassesConfig, FitConfig, SourceConfig
from ..data import fit_splits, load_data, load_table
from ..errors import ExaptError
from ..model import TransferModel
from ..run import Run, build_model, write_outputs
from ..run_folder import RunFolder, publish_run
from ..strategies import parse_strategy
from ..threads import configure_threads
from ..train.loop import Split, predict_logits, train
from .distil_loss import DistilTask, agreement, examples_per_second, parameter_count

STUDENT_STRATEGY = "full"  # every weight of the student trains


@dataclass
class DistilSettings:
    temperature: float = 2.0
    alpha: float = 0.5
    unlabelled: str | None = None   # a file of inputs without labels: KL to the teacher alone
    epochs: int | None = None       # None: as `exapt fit` resolves them
    lr: float | None = None         # None: the `full` strategy's
    batch_size: int | None = None   # None: the teacher's
    record: dict = field(default_factory=dict)  # more for distil.json (prune says what it removed)

    def check(self) -> None:
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ExaptError(f"--temperature {self.temperature}: must be a positive number (2 to 5 is usual)")
        if not 0 <= self.alpha <= 1:
            raise ExaptError(f"--alpha {self.alpha}: must be in [0, 1] (1: the teacher's outputs alone, "
                             "0: the labels alone)")
        for name, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if value is not None and value < 1:
                raise ExaptError(f"{name} {value}: must be at least 1")
        if self.lr is not None and not (self.lr > 0 and np.isfinite(self.lr)):
            raise ExaptError(f"--lr {self.lr}: must be a positive number")


def load_teacher(run_dir) -> Run:
    """The teacher run, refused when its weights are not plain (LoRA/IA3 modules and the
    like cannot be copied into a student; `exapt merge` folds them first)."""
    teacher = Run.load(run_dir)
    added = getattr(teacher.model, "new_parameter_names", [])
    if added:
        raise ExaptError(f"{teacher.path}: a {teacher.config.strategy} run carries modules of its own ({added[0]}); "
                         f"fold them into plain weights first with `exapt merge {teacher.path}`")
    return teacher


def check_student(teacher: Run, spec: str) -> None:
    """The student must read what the teacher reads (no image student for a text teacher)."""
    bb = teacher.model.backbone
    family = family_of(spec)
    if family.input_kind != bb.input_kind and bb.input_kind not in getattr(family, "also_accepts", ()):
        raise ExaptError(f"--student {spec!r} takes {family.input_kind} inputs but the teacher {teacher.path} takes "
                         f"{bb.input_kind}; choose a {bb.input_kind} model (e.g. "
                         f"{split_shape(teacher.config.model)[0]}@K for its own bottom K layers)")


def student_config(teacher: Run, spec: str, settings: DistilSettings, same_base: bool) -> FitConfig:
    """The teacher's config (its data and splits) with the student's model and the `full`
    strategy; pooling, length and --long carry over only to the teacher's own backbone."""
    cfg = FitConfig.from_dict(dataclasses.asdict(teacher.config))
    cfg.model, cfg.strategy, cfg.init, cfg.penalties = spec, STUDENT_STRATEGY, None, []
    cfg.source, cfg.adapt, cfg.classes = SourceConfig(), AdaptConfig(), ClassesConfig()
    if not same_base:
        cfg.pooling, cfg.max_length, cfg.long = None, None, None
    cfg.train.epochs = settings.epochs
    cfg.train.lr = settings.lr
    cfg.train.batch_size = settings.batch_size or cfg.train.batch_size
    if same_base:  # the head is the teacher's, already fitted: no large head steps
        cfg.train.head_lr = settings.lr or parse_strategy(STUDENT_STRATEGY).default_lr
    cfg.validate()
    return cfg


def make_student(teacher: Run, spec: str, settings: DistilSettings) -> tuple[FitConfig, TransferModel]:
    """(config, model) of the student `spec` names; see the module's docstring."""
    check_student(teacher, spec)
    stem, shape = split_shape(split_scratch(spec)[0])
    scratch = split_scratch(spec)[1]
    teacher_stem, teacher_shape = split_shape(teacher.config.model)
    same_base = (not scratch and shape is not None and shape.heads is None and stem == teacher_stem
                 and (teacher_shape is None or teacher_shape.heads is None))
    cfg = student_config(teacher, spec, settings, same_base)
    if same_base:
        model = copy_of_teacher(teacher)
        if shape.layers >= len(model.backbone.layers):
            raise ExaptError(f"--student {spec}: the teacher has {len(model.backbone.layers)} layers; a student of "
                             f"its own backbone keeps fewer (e.g. {stem}@{max(1, len(model.backbone.layers) // 2)})")
        keep_bottom_layers(model, shape.layers, spec)
    else:
        n_inputs = getattr(teacher.model.backbone, "n_inputs", None)
        model = build_model(cfg, teacher.task, n_inputs, parse_strategy(STUDENT_STRATEGY))
        cfg.pooling = getattr(model.backbone, "pooling", cfg.pooling)
        cfg.max_length = getattr(model.backbone, "max_length", cfg.max_length)
    return cfg, model


def copy_of_teacher(teacher: Run) -> TransferModel:
    """The teacher's backbone and head, copied (its source head, if any, stays behind)."""
    return TransferModel(copy.deepcopy(teacher.model.backbone), copy.deepcopy(teacher.model.head))


def keep_bottom_layers(model: TransferModel, k: int, spec: str) -> None:
    keep_layers(model.backbone, k)
    model.backbone.name = split_scratch(spec)[0]


# ============================================================================ data
@dataclass
class Rows:
    """Every row the student sees, in one table: train (+ unlabelled), val, test; a row's
    index is its target in the `DistilTask`."""
    inputs: object
    labels: torch.Tensor
    labelled: torch.Tensor
    parts: dict  # name -> (start, stop)


def _join(parts: list):
    return [x for p in parts for x in p] if isinstance(parts[0], list) else np.concatenate(parts)


def gather_rows(teacher: Run, unlabelled: str | None) -> Rows:
    """The teacher's own splits, rebuilt from its config, + the unlabelled file's rows."""
    cfg, task = teacher.config, teacher.task
    tables = dict(zip(("train", "val", "test"), fit_splits(cfg.data, load_table(cfg.data), task.kind)))
    extra = None
    if unlabelled:
        d = cfg.data
        extra = load_data(unlabelled, text=d.text, label=None, features=d.features, require_label=False,
                          image_size=d.image_size)
        if extra.kind != tables["train"].kind:
            raise ExaptError(f"--unlabelled {unlabelled}: {extra.kind} rows, the teacher takes {tables['train'].kind}")
    order = [("train", tables["train"]), *([("unlabelled", extra)] if extra is not None else []),
             ("val", tables["val"]), ("test", tables["test"])]
    inputs, labels, labelled, parts, start = [], [], [], {}, 0
    for name, table in order:
        n = len(table)
        parts[name] = (start, start + n)
        start += n
        inputs.append(list(table.inputs) if table.kind == "text" else np.asarray(table.inputs))
        if name == "unlabelled":
            labels.append(torch.zeros((n, *labels[0].shape[1:]), dtype=labels[0].dtype))
        else:
            labels.append(task.encode(table.labels, table.rows, table.source))
        labelled.append(torch.full((n,), name != "unlabelled"))
    return Rows(_join(inputs), torch.cat(labels), torch.cat(labelled), parts)


def split_of(backbone, rows: Rows, names: tuple[str, ...], prepared: list) -> Split:
    idx = [i for name in names if name in rows.parts for i in range(*rows.parts[name])]
    items = [prepared[i] for i in idx]
    return Split(items, torch.tensor(idx, dtype=torch.long), [backbone.item_length(x) for x in items])


# the teacher's outputs of the last few (teacher weights, rows) asked for in this process:
# a prune sweep (benchmarks/ship_distil.py) distils from one teacher several times
_TEACHER_OUTPUTS: dict = {}
_KEEP_OUTPUTS = 2


def teacher_logits(teacher: Run, rows: Rows) -> tuple[torch.Tensor, list]:
    """The teacher's outputs on every row, once (the cache every epoch reads), and the
    rows as the teacher's backbone prepared them."""
    inputs = rows.inputs
    digest = hash(tuple(inputs)) if isinstance(inputs, list) else hashlib.sha256(np.ascontiguousarray(inputs)).hexdigest()
    key = (str(teacher.path), teacher.folder.weights_sha256(), digest)
    if key not in _TEACHER_OUTPUTS:
        _TEACHER_OUTPUTS[key] = _compute_teacher_logits(teacher, rows)
        while len(_TEACHER_OUTPUTS) > _KEEP_OUTPUTS:
            _TEACHER_OUTPUTS.pop(next(iter(_TEACHER_OUTPUTS)))
    return _TEACHER_OUTPUTS[key]


def _compute_teacher_logits(teacher: Run, rows: Rows) -> tuple[torch.Tensor, list]:
    bb = teacher.model.backbone
    prepared = bb.prepare_inputs(rows.inputs)
    split = Split(prepared, torch.zeros(len(prepared)), [bb.item_length(x) for x in prepared])
    return predict_logits(teacher.model, split), prepared


# ============================================================================ the run
def distil(run_dir, student: str, settings: DistilSettings | None = None, out=None, overwrite: bool = False,
           progress: bool = True, log=print) -> Run:
    """Distil the run in `run_dir` into `student`; returns the student's Run (saved in
    `out`, default: RUN-distil-STUDENT beside the teacher)."""
    settings = settings or DistilSettings()
    settings.check()
    teacher = load_teacher(run_dir)
    out = Path(out) if out else default_out(teacher.path, "distil-" + student)
    RunFolder(out).check_new(overwrite)
    cfg, model = make_student(teacher, student, settings)
    return distil_into(teacher, cfg, model, settings, out, overwrite, progress, log)


def default_out(teacher: Path, suffix: str) -> Path:
    return teacher.parent / f"{teacher.name}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', suffix).strip('-')}"


def distil_into(teacher: Run, cfg: FitConfig, student: TransferModel, settings: DistilSettings, out: Path,
                overwrite: bool, progress: bool = True, log=print) -> Run:
    """Train `student` on the teacher's cached outputs (+ labels) and publish it as a run
    (written into a hidden folder, renamed into place whole when complete)."""
    configure_threads()
    rows = gather_rows(teacher, settings.unlabelled)
    t_logits, t_prepared = teacher_logits(teacher, rows)
    bb = student.backbone
    s_prepared = bb.prepare_inputs(rows.inputs)
    task = DistilTask(teacher.task, t_logits, rows.labels, rows.labelled, settings.temperature, settings.alpha)
    splits = {name: split_of(bb, rows, names, s_prepared)
              for name, names in (("train", ("train", "unlabelled")), ("val", ("val",)), ("test", ("test",)))}
    n = {name: stop - start for name, (start, stop) in rows.parts.items()}
    log(f"distil {teacher.path} -> {bb.describe()}: {n['train']} labelled + {n.get('unlabelled', 0)} unlabelled "
        f"rows, val {n['val']}, test {n['test']}; T={settings.temperature:g}, alpha={settings.alpha:g}")

    def write(folder: RunFolder) -> None:
        folder.write_config(cfg)
        folder.write_labels(teacher.task.to_json())
        started = time.perf_counter()
        val = splits["val"] if len(splits["val"].items) else None
        report = train(student, parse_strategy(STUDENT_STRATEGY), task, splits["train"], val, cfg.train,
                       folder.path, progress=progress, log=log)
        seconds = time.perf_counter() - started
        test = slice(*rows.parts["test"])
        s_logits = predict_logits(student, splits["test"])
        record = distil_record(teacher, student, settings, rows, t_logits[test], s_logits,
                               t_prepared[test], splits["test"])
        metrics = student_metrics(teacher, student, rows, report, s_logits, seconds, n)
        folder.write_distil(record)
        trained = set(report["ever_trainable"]) | set(student.head_parameter_names())
        write_outputs(folder, student, trained, metrics, report["history"])
        log(summary_line(record))

    publish_run(out, overwrite, write)
    student.eval()
    return Run(out, cfg, teacher.task, student)


def distil_record(teacher: Run, student: TransferModel, settings: DistilSettings, rows: Rows,
                  t_logits: torch.Tensor, s_logits: torch.Tensor, t_prepared: list, s_test: Split) -> dict:
    """distil.json: the teacher's identity, agreement and both models' metrics on the test
    split, their parameter counts and speeds (measured here, one after the other)."""
    task = teacher.task
    targets = rows.labels[slice(*rows.parts["test"])]
    t_bb = teacher.model.backbone
    t_split = Split(t_prepared, targets, [t_bb.item_length(x) for x in t_prepared])
    speed = {"teacher": examples_per_second(teacher.model, t_split), "student": examples_per_second(student, s_test)}
    speed["ratio"] = round(speed["student"]["examples_per_second"] / speed["teacher"]["examples_per_second"], 3)
    params = {"teacher": parameter_count(teacher.model), "student": parameter_count(student)}
    params["ratio"] = round(params["student"] / params["teacher"], 4)
    metrics = {"teacher": task.metrics(t_logits, targets), "student": task.metrics(s_logits, targets)}
    kept = kept_fraction(metrics["student"][task.primary_metric], metrics["teacher"][task.primary_metric],
                         task.higher_is_better)
    return {
        "teacher": {"run": str(teacher.path), "weights_sha256": teacher.folder.weights_sha256(),
                    "model": teacher.model.backbone.identity()["model"], "strategy": teacher.config.strategy},
        "student": {"model": student.backbone.identity()["model"], "strategy": STUDENT_STRATEGY},
        "loss": {"temperature": settings.temperature, "alpha": settings.alpha,
                 "unlabelled": settings.unlabelled},
        "test": {"n": len(targets), "agreement": agreement(task, s_logits, t_logits), **metrics,
                 "primary_metric": task.primary_metric,
                 "kept": round(kept, 4) if kept is not None else None},
        "parameters": params, "speed": speed, **settings.record,
    }


def kept_fraction(student: float, teacher: float, higher_is_better: bool) -> float | None:
    """How much of the teacher's score the student keeps (for an error metric, the
    inverse ratio: 1 = as good, below 1 = worse)."""
    num, den = (student, teacher) if higher_is_better else (teacher, student)
    return num / den if den else None


def student_metrics(teacher: Run, student: TransferModel, rows: Rows, report: dict, s_logits: torch.Tensor,
                    seconds: float, n: dict) -> dict:
    """metrics.json of the student's run, in the shape `exapt fit` writes."""
    total = sum(p.numel() for p in student.parameters())
    trainable = sum(p.numel() for name, p in student.named_parameters() if name in set(report["ever_trainable"]))
    metrics = {"test": teacher.task.metrics(s_logits, rows.labels[slice(*rows.parts["test"])]),
               "n_train": n["train"], "n_unlabelled": n.get("unlabelled", 0), "n_val": n["val"], "n_test": n["test"],
               "strategy": STUDENT_STRATEGY, "model": student.backbone.identity()["model"],
               "distilled_from": str(teacher.path), "trainable_parameters": trainable, "total_parameters": total,
               "trainable_fraction": trainable / total, "train_seconds": round(seconds, 2),
               "epochs_run": len(report["history"]), "best_epoch": report["best_epoch"]}
    history = report["history"]
    if history and "val_loss" in history[-1]:
        best = history[report["best_epoch"] - 1]
        metrics["val"] = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
    return metrics


def summary_line(record: dict) -> str:
    t = record["test"]
    metric = t["primary_metric"]
    return (f"test {metric}: student {t['student'][metric]:.4f}, teacher {t['teacher'][metric]:.4f} "
            f"(kept {t['kept'] if t['kept'] is None else format(t['kept'], '.1%')}); agreement {t['agreement']:.4f}; "
            f"{record['parameters']['student']:,} of {record['parameters']['teacher']:,} parameters; "
            f"speed x{record['speed']['ratio']:.2f} (batch {record['speed']['student']['batch_size']}, "
            f"load average {record['speed']['student']['load_average_1min']})")
