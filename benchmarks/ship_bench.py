"""Ship a run: PyTorch fp32 eager against exapt's ONNX exports and the by-hand peer.

    python benchmarks/ship_bench.py            # run alone on the machine (timings!)
    python benchmarks/ship_bench.py --quick    # a few minutes: checks that it runs, figures not final

Teacher: the `lp-ft` run on the fixed tweet split n = 64 per class, seed 0 (the same
cell as benchmarks/accuracy_tweets.py: test.csv as its test set, val_fraction 0,
--max-length 64); all 1,500 test tweets. Row groups, one function each, side by side
in one process:

- export (`export_rows`): PyTorch fp32 eager; `exapt export` fp32 and `exapt export
  --quantize int8`, each with and without `--optimize`; the peer a user writes by hand today,
  `torch.onnx.export` (torch's default exporter) + `onnxruntime.quantization.
  quantize_dynamic` with default settings. Each gets: latency at batch 1 (p50 over
  single tweets), throughput at batch 32 (tweets/s over the whole test set), model file
  size, agreement of labels with PyTorch, accuracy; and ratios against PyTorch.

Every model runs on the same token ids (the run's tokenizer, 64 tokens), with the same
thread count (torch's, given to onnxruntime too), so the figures compare the models.
Writes results/ship.json and results/ship.md (--quick: ship_quick.*); a group's rows
replace that group's earlier rows only, so groups can be run one at a time (--groups).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TWEETS, machine, read_csv, write_json

N, SEED, MAX_LEN, BATCH = 64, 0, 64, 32


class Setup:
    """The teacher run, the test tweets as token ids, and the settings of this pass."""

    def __init__(self, quick: bool, work: Path):
        import torch

        import exapt

        self.quick, self.work = quick, work
        test = read_csv(TWEETS / "test.csv")
        if quick:  # a small, fast teacher and 200 tweets: checks the code, not the figures
            test = test.groupby("label").head(67).reset_index(drop=True)
            (work / "test.csv").write_text(test.to_csv(index=False))
        test_file = work / "test.csv" if quick else TWEETS / "test.csv"
        strategy, n = ("linear-probe", 8) if quick else ("lp-ft", N)
        self.teacher = exapt.fit(str(TWEETS / f"train_n{n}_s{SEED}.csv"), strategy, "minilm-l6", test=str(test_file),
                                 val_fraction=0, seed=SEED, max_length=MAX_LEN, out=work / "teacher", overwrite=True,
                                 progress=False, log=lambda *a: None)
        self.teacher_spec = f"{strategy} n={n}/class seed {SEED}"
        self.texts, self.truth = test.text.tolist(), test.label.tolist()
        self.classes = self.teacher.task.classes
        bb = self.teacher.model.backbone
        self.ids = bb.prepare_inputs(self.texts)
        self.threads = torch.get_num_threads()
        self.latency_rows = 30 if quick else 300

    def batches(self, size: int):
        bb = self.teacher.model.backbone
        for i in range(0, len(self.ids), size):
            b = bb.collate(self.ids[i:i + size])
            yield b["input_ids"].numpy(), b["attention_mask"].numpy()


def measure(setup: Setup, name: str, logits_of, size_mb: float | None) -> dict:
    """Latency (batch 1, p50), throughput (batch 32), labels and accuracy of one model."""
    singles = list(setup.batches(1))[:setup.latency_rows]
    for ids, mask in singles[:5]:  # warm-up
        logits_of(ids, mask)
    times = []
    for ids, mask in singles:
        t = time.perf_counter()
        logits_of(ids, mask)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    logits = np.concatenate([logits_of(ids, mask) for ids, mask in setup.batches(BATCH)])
    seconds = time.perf_counter() - t
    pred = [setup.classes[k] for k in logits.argmax(1)]
    return {"row": name, "latency_ms_p50": 1000 * statistics.median(times), "throughput_per_s": len(pred) / seconds,
            "size_mb": size_mb, "labels": pred, "logits": logits,
            "accuracy": float(np.mean([p == t for p, t in zip(pred, setup.truth)]))}


def torch_model(setup: Setup):
    import torch

    model = setup.teacher.model.eval()

    def logits_of(ids, mask):
        with torch.no_grad():
            return model({"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}).numpy()
    return logits_of


def session_model(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    return lambda ids, mask: session.run([output], {"input_ids": ids, "attention_mask": mask})[0]


def peer_by_hand(setup: Setup, folder: Path) -> Path:
    """What a user writes today: torch.onnx.export with its defaults, then
    quantize_dynamic with its defaults."""
    import torch
    from onnxruntime.quantization import quantize_dynamic

    class Wrapped(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})

    folder.mkdir(parents=True, exist_ok=True)
    ids, mask = next(setup.batches(4))
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    torch.onnx.export(Wrapped(setup.teacher.model.eval()), (torch.from_numpy(ids), torch.from_numpy(mask)),
                      str(folder / "model.onnx"), input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes=axes)
    quantize_dynamic(str(folder / "model.onnx"), str(folder / "model.int8.onnx"))
    return folder / "model.int8.onnx"


def export_rows(setup: Setup) -> list[dict]:
    """PyTorch fp32 eager, exapt's exports, the by-hand peer (module docstring)."""
    from exapt.deploy.export import export_run

    run = setup.teacher.path
    base = Path(setup.teacher.model.backbone.identity()["path"]) / "model.safetensors"
    # PyTorch needs the base model's weights and the run's own (what differs from them)
    rows = [measure(setup, "PyTorch fp32 eager", torch_model(setup), file_mb(base) + file_mb(run / "weights.safetensors"))]
    for name, kwargs in (("exapt ONNX fp32", {}), ("exapt ONNX fp32 + optimiser", {"optimize": True}),
                         ("exapt ONNX int8", {"quantize": "int8"}),
                         ("exapt ONNX int8 + optimiser", {"quantize": "int8", "optimize": True})):
        # forced: a refused export is measured too, and its row says it missed the parity gate
        folder = export_run(run, setup.work / name.replace(" ", "-"), log=lambda *a: None, force=True, **kwargs)
        rows.append(measure(setup, name, session_model(folder / "model.onnx", setup.threads),
                            file_mb(folder / "model.onnx")))
        rows[-1]["parity_gate"] = json.loads((folder / "export.json").read_text())["parity"]["failures"] or "passed"
    peer = peer_by_hand(setup, setup.work / "peer")
    rows.append(measure(setup, "by hand: torch.onnx.export + quantize_dynamic defaults",
                        session_model(peer, setup.threads), file_mb(peer)))
    return finish(rows)


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def finish(rows: list[dict]) -> list[dict]:
    """Ratios against the first row (PyTorch), agreement with its labels; drop the raw arrays."""
    base = rows[0]
    fp32_size = next((r["size_mb"] for r in rows if r["row"] == "exapt ONNX fp32"), None)
    labels, logits = base["labels"], base["logits"]
    for r in rows:
        r["agreement"] = float(np.mean([a == b for a, b in zip(r["labels"], labels)]))
        r["max_abs_logit_diff"] = float(np.abs(r["logits"] - logits).max())
        r["latency_speedup"] = base["latency_ms_p50"] / r["latency_ms_p50"]
        r["throughput_speedup"] = r["throughput_per_s"] / base["throughput_per_s"]
        r["accuracy_lost_points"] = 100 * (base["accuracy"] - r["accuracy"])
        r["size_of_fp32"] = r["size_mb"] / fp32_size if r["size_mb"] and fp32_size else None
        del r["labels"], r["logits"]
    return rows


# A row group is a function of the Setup returning its rows (dicts with "row" and any of
# COLUMNS' keys); the distil / prune groups join here.
ROW_GROUPS = {"export": export_rows}


# (title, key, format): the table's columns; a row without a key shows "-"
COLUMNS = (("latency b=1 p50 (ms)", "latency_ms_p50", "{:.2f}"), ("x PyTorch", "latency_speedup", "{:.2f}"),
           ("throughput b=32 (/s)", "throughput_per_s", "{:.0f}"), ("x PyTorch", "throughput_speedup", "{:.2f}"),
           ("size (MB)", "size_mb", "{:.1f}"), ("of fp32", "size_of_fp32", "{:.0%}"), ("agreement", "agreement", "{:.1%}"),
           ("accuracy", "accuracy", "{:.2%}"), ("points lost", "accuracy_lost_points", "{:.2f}"))


def markdown(groups: dict) -> str:
    """One table per row group, its columns the COLUMNS a row has."""
    lines = ["# Ship benchmark", ""]
    for name, g in groups.items():
        setting = (f"Teacher: {g['teacher']}; {g['rows_tested']} test tweets, {MAX_LEN} tokens; {g['threads']} threads; "
                   f"{'--quick (not final)' if g['quick'] else 'full run'}; {g['date']}.")
        lines += [f"## {name}", "", setting, "", "| row | " + " | ".join(t for t, _, _ in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for r in g["rows"]:
            cells = [f.format(r[k]) if r.get(k) is not None else "-" for _, k, f in COLUMNS]
            lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
        gates = [f"- {r['row']}: refused by exapt's parity gate ({'; '.join(r['parity_gate'])}); measured with --force"
                 for r in g["rows"] if isinstance(r.get("parity_gate"), list)]
        lines += ["", *gates, ""] if gates else [""]
    return "\n".join(lines)


def write_results(groups: dict, quick: bool) -> Path:
    """results/ship.{json,md} (ship_quick.* for --quick): these groups replace their old rows."""
    stem = RESULTS / ("ship_quick" if quick else "ship")
    old = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").exists() else {}
    merged = {**old.get("groups", {}), **groups}
    write_json(stem.with_suffix(".json"), {"machine": machine(), "groups": merged})
    stem.with_suffix(".md").write_text(markdown(merged))
    return stem


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small teacher, 200 tweets: checks that it runs")
    p.add_argument("--groups", default=",".join(ROW_GROUPS), help=f"comma-separated of {', '.join(ROW_GROUPS)}")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(a.quick, Path(tmp))
        groups = {}
        for name in a.groups.split(","):
            rows = ROW_GROUPS[name](setup)
            groups[name] = {"rows": rows, "teacher": setup.teacher_spec, "rows_tested": len(setup.texts),
                            "threads": setup.threads, "quick": a.quick, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                              time.gmtime())}
            print(markdown({name: groups[name]}), flush=True)
    print(f"-> {write_results(groups, a.quick)}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
