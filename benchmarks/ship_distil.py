"""The distil and prune rows of the ship benchmark (issue 19): how much of the teacher a
smaller model keeps, and how much faster it is, measured side by side in one process.

    python benchmarks/ship_distil.py [--quick]     (results/ship_distil.{json,md})

Teacher: the `lp-ft` run on the fixed tweet split n = 64 per class, seed 0 (the cell of
benchmarks/accuracy_tweets.py: train_n64_s0.csv, test.csv, val_fraction 0, 64 tokens).
- distil: `exapt distil TEACHER --student minilm-l6@3 --unlabelled train_n256_s0.csv`
  (labels dropped: the teacher's outputs on the 576 tweets of that file the teacher did not train on) -> accuracy, agreement with
  the teacher, speed ratio;
- prune: `exapt prune TEACHER --heads 0.25 / 0.5` and `--layers 5 / 4`, each recovered by
  distillation from the teacher on its training rows -> the accuracy-versus-speed curve.

Speed is measured here for every model on the same test tweets: latency at batch 1 (the
median of single-tweet forward passes) and throughput at batch 32, PyTorch fp32 eager,
in the order teacher, students. Timings on a shared machine are contended: each row
records the load average, and the lead reruns timing alone. `--quick` checks that it all
runs (a linear-probe teacher, 300 test tweets, 96 unlabelled, 1 epoch, fewer timed
tweets); its figures are not results.

`benchmarks/ship_bench.py` imports `teacher_run`, `distil_student`, `prune_students` and
`speed` to put these rows beside the export rows.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TWEETS, machine, read_csv, write_json

PRUNE_POINTS = [("heads", 0.25), ("heads", 0.5), ("layers", 5), ("layers", 4)]


def _done(path: Path):
    """The complete run already at `path` (a rerun with --work reuses it), else None."""
    from exapt.run import Run
    from exapt.run_folder import RunFolder

    return Run.load(path) if RunFolder(path).is_complete() else None


def teacher_run(work: Path, quick: bool = False):
    """The lp-ft teacher (the fixed split n=64, seed 0); quick: tested on 300 tweets."""
    import exapt

    if _done(work / "teacher"):
        return _done(work / "teacher")

    test = TWEETS / "test.csv"
    if quick:
        test = work / "test300.csv"
        read_csv(TWEETS / "test.csv").groupby("label").head(100).to_csv(test, index=False)
    # quick: a linear-probe teacher (cached features, a minute) stands in for lp-ft (ten epochs)
    return exapt.fit(str(TWEETS / "train_n64_s0.csv"), "linear-probe" if quick else "lp-ft", "minilm-l6", test=str(test), val_fraction=0, seed=0,
                     max_length=64, out=work / "teacher", overwrite=True, progress=False, log=lambda *a: None)


def unlabelled_file(work: Path, quick: bool = False) -> Path:
    """train_n256_s0.csv less its labels and less the teacher's own training rows (quick: 96 of them)."""
    pool, own = read_csv(TWEETS / "train_n256_s0.csv"), set(read_csv(TWEETS / "train_n64_s0.csv").text)
    out = work / "unlabelled.csv"
    rows = pool[~pool.text.isin(own)][["text"]]
    (rows.head(96) if quick else rows).to_csv(out, index=False)
    return out


def distil_student(teacher, work: Path, quick: bool = False):
    from exapt.deploy.distil import DistilSettings, distil

    settings = DistilSettings(unlabelled=str(unlabelled_file(work, quick)), epochs=1 if quick else None)
    if _done(work / "distil-l3"):
        return _done(work / "distil-l3")
    return distil(teacher.path, "minilm-l6@3", settings, out=work / "distil-l3", overwrite=True, progress=False,
                  log=print)


def prune_students(teacher, work: Path, quick: bool = False) -> list:
    from exapt.deploy.distil import DistilSettings
    from exapt.deploy.prune import prune

    runs = []
    for how, amount in PRUNE_POINTS:
        settings = DistilSettings(epochs=1 if quick else 3)
        kwargs = {"heads": amount} if how == "heads" else {"layers": amount}
        if _done(work / f"prune-{how}{amount:g}"):
            runs.append(_done(work / f"prune-{how}{amount:g}"))
            continue
        runs.append(prune(teacher.path, **kwargs, settings=settings, out=work / f"prune-{how}{amount:g}",
                          overwrite=True, progress=False, log=print))
    return runs


def timed(run_batch, inputs: list, batch1_rows: int, batch32_rows: int) -> dict:
    """Batch-1 latency (median ms) and batch-32 throughput (inputs/s) of `run_batch(chunk)`."""
    import torch

    run_batch(inputs[:8])  # warm-up
    times = []
    for one in inputs[:batch1_rows]:
        start = time.perf_counter()
        run_batch([one])
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, min(batch32_rows, len(inputs)), 32):
        run_batch(inputs[i:i + 32])
    throughput = min(batch32_rows, len(inputs)) / (time.perf_counter() - start)
    return {"latency_ms_b1": round(1000 * statistics.median(times), 3), "tweets_per_s_b32": round(throughput, 1),
            "load_average_1min": round(os.getloadavg()[0], 2), "torch_threads": torch.get_num_threads()}


def speed(run, texts: list[str], batch1_rows: int = 64, batch32_rows: int = 512) -> dict:
    """`timed` for PyTorch fp32 eager on tokenised tweets."""
    import torch

    bb, model = run.model.backbone, run.model.eval()
    items = bb.prepare_inputs(texts[:max(batch1_rows, batch32_rows)])
    with torch.inference_mode():
        return timed(lambda chunk: model(bb.collate(chunk)), items, batch1_rows, batch32_rows)


def int8_row(student, teacher_row: dict, texts: list[str], truth: list[str], work: Path, quick: bool = False) -> dict:
    """The distilled student exported with `--quantize int8` (forced: its parity figures are
    recorded, not gated) and run by exapt's onnxruntime predictor: the issue's
    distil-and-int8 target, against the teacher's PyTorch speed and accuracy."""
    import json

    import torch

    from exapt.deploy.export import export_run
    from exapt.deploy.predictor import ExportPredictor

    folder = export_run(student.path, work / "distil-l3-int8", quantize="int8", force=True, overwrite=True,
                        log=lambda *a: None)  # overwrite: a rerun with --work exports afresh
    predictor = ExportPredictor.load(folder, threads=torch.get_num_threads())
    speeds = timed(predictor.outputs, texts, *((16, 64) if quick else (64, 512)))  # tokenising included
    test = texts[:len(truth)]
    labels = [predictor.labels[k] for k in predictor.decide(predictor.outputs(test)["logits"])]
    accuracy = sum(a == b for a, b in zip(labels, truth)) / len(truth)
    parity = json.loads((folder / "export.json").read_text())["parity"]
    return {"model": "distilled, 3 layers, int8 ONNX", "spec": "exapt export --quantize int8", "accuracy": accuracy,
            "macro_f1": None, "parameters": sum(p.numel() for p in student.model.parameters()),
            "agreement": None, **speeds, "accuracy_kept": round(accuracy / teacher_row["accuracy"], 4),
            "speedup_b1": round(teacher_row["latency_ms_b1"] / speeds["latency_ms_b1"], 3),
            "speedup_b32": round(speeds["tweets_per_s_b32"] / teacher_row["tweets_per_s_b32"], 3),
            "parity_gate": parity.get("failures") or "passed"}


def row(name: str, run, teacher_row: dict | None, texts: list[str], quick: bool = False) -> dict:
    """One model's accuracy (its run's test split) and speed, with ratios to the teacher."""
    record = run.folder.read_distil() or {}
    n_params = sum(p.numel() for n, p in run.model.named_parameters() if not n.startswith("source_head."))
    out = {"model": name, "spec": run.config.model, "accuracy": run.metrics["test"]["accuracy"],
           "macro_f1": run.metrics["test"]["macro_f1"], "parameters": n_params,
           "agreement": record.get("test", {}).get("agreement", 1.0),
           **(speed(run, texts, 16, 64) if quick else speed(run, texts))}
    if teacher_row is not None:
        out["accuracy_kept"] = round(out["accuracy"] / teacher_row["accuracy"], 4)
        out["speedup_b1"] = round(teacher_row["latency_ms_b1"] / out["latency_ms_b1"], 3)
        out["speedup_b32"] = round(out["tweets_per_s_b32"] / teacher_row["tweets_per_s_b32"], 3)
        out["parameter_ratio"] = round(n_params / teacher_row["parameters"], 4)
    return out


def markdown(result: dict) -> str:
    lines = [f"# Distil and prune (issue 19){' -- QUICK CHECK, not results' if result['quick'] else ''}", "",
             (f"Teacher: {result['rows'][0]['model']}, tweets n=64/class seed 0, 64 tokens; accuracy on the "
             "teacher's test split (quick: 300 tweets; else the 1,500 of test.csv). Speed: "
             "PyTorch fp32 eager (the int8 row: exapt's onnxruntime predictor), same tweets for every model. "
             f"Load average {result['load_average_start']} at the start, {result['load_average_end']} at the end "
             "(the benchmark counts itself: 1-2 on these 2 cores is the run alone)."), "",
             ("| model | spec | accuracy | kept | agreement | parameters | b1 latency ms | x teacher b1 | b32 tweets/s "
             "| x teacher b32 |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | `{r['spec']}` | {r['accuracy']:.4f} | {r.get('accuracy_kept', 1):.1%} | "
                     f"{'-' if r['agreement'] is None else format(r['agreement'], '.4f')} | {r['parameters'] / 1e6:.1f}M | {r['latency_ms_b1']:.1f} | "
                     f"{r.get('speedup_b1', 1):.2f} | {r['tweets_per_s_b32']:.0f} | {r.get('speedup_b32', 1):.2f} |")
    lines += ["", f"Reproduce: `{result['command']}`", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true",
                   help="linear-probe teacher, 300 test tweets, 1 epoch: checks that it runs")
    p.add_argument("--work", help="folder for the runs, kept; complete runs already there are reused "
                                  "(default: a temporary one)")
    a = p.parse_args()
    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        teacher = teacher_run(work, a.quick)
        student = distil_student(teacher, work, a.quick)
        pruned = prune_students(teacher, work, a.quick)
        texts = list(read_csv(TWEETS / "test.csv").text)
        rows = [row(f"teacher ({teacher.config.strategy}, 6 layers)", teacher, None, texts, a.quick)]
        rows.append(row("distilled, 3 layers", student, rows[0], texts, a.quick))
        test = read_csv(Path(teacher.config.data.test))
        rows.append(int8_row(student, rows[0], list(test.text), list(test.label), work, a.quick))
        for (how, amount), run in zip(PRUNE_POINTS, pruned):
            label = f"pruned: {amount:.0%} of heads removed" if how == "heads" else f"pruned: bottom {amount} layers"
            rows.append(row(label, run, rows[0], texts, a.quick))
    result = {"quick": a.quick, "rows": rows, "machine": machine(), "load_average_start": load_start,
              "load_average_end": round(os.getloadavg()[0], 2),
              "command": "python benchmarks/ship_distil.py" + (" --quick" if a.quick else "")}
    name = "ship_distil_quick" if a.quick else "ship_distil"
    write_json(RESULTS / f"{name}.json", result)
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
