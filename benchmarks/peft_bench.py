"""Parameter-efficient strategies against full fine-tuning and against PEFT + Trainer.

    python benchmarks/peft_bench.py            # run alone: 2 cores

1. Accuracy on the fixed tweet splits, n = 64 per class, seeds 0-2: exapt lora, adapter,
   ia3 next to exapt full (full's rows are taken from results/accuracy_tweets.csv when
   that run has them: same files, same machine, same code), trainable fraction.
2. Peak memory (RSS) of a training epoch, batch 32, <= 64 tokens, each in a fresh
   process: exapt full vs exapt lora (whole-process peak, and the peak above the
   process's size just before training).
3. Training throughput (examples/s), same batch: exapt lora vs PEFT LoRA + HF Trainer
   (r=8, alpha 16, dropout 0.1, query+value: the same adapter), 2 epochs of 960 tweets.
Writes results/peft.json and results/peft.md.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TWEETS, machine, minilm_dir, read_csv, write_json  # noqa: E402

N, SEEDS, BATCH, MAX_LEN = 64, (0, 1, 2), 32, 64
METHODS = ("lora", "adapter", "ia3")


def accuracy(tmp: Path) -> list[dict]:
    import exapt

    rows = []
    prior = RESULTS / "accuracy_tweets.csv"
    if prior.exists():
        with open(prior) as fh:
            rows += [{"method": "full", "seed": int(r["seed"]), "accuracy": float(r["accuracy"]),
                      "macro_f1": float(r["macro_f1"]), "trainable_fraction": 1.0, "source": "accuracy_tweets.csv"}
                     for r in csv.DictReader(fh) if r["tool"] == "exapt" and r["method"] == "full" and int(r["n"]) == N]
    todo = list(METHODS) + ([] if len(rows) == len(SEEDS) else ["full"])
    for method in todo:
        for seed in SEEDS:
            run = exapt.fit(str(TWEETS / f"train_n{N}_s{seed}.csv"), method, "minilm-l6", test=str(TWEETS / "test.csv"),
                            val_fraction=0, seed=seed, max_length=MAX_LEN, out=tmp / f"{method}-{seed}", overwrite=True,
                            progress=False, log=lambda *a: None)
            m = run.metrics
            row = {"method": method, "seed": seed, "accuracy": m["test"]["accuracy"], "macro_f1": m["test"]["macro_f1"],
                   "trainable_fraction": m["trainable_fraction"], "seconds": m["train_seconds"], "source": "this run"}
            print(row, flush=True)
            rows.append(row)
    return rows


MEMORY_CHILD = r"""
import json, sys, os
import exapt
from exapt.train import loop
strategy, data, out = sys.argv[1:4]
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent, so a
# child of a big benchmark process would report the parent's size as its own peak.
def hwm_kb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = {}
real_train = loop.train
def train(*a, **k):
    before["rss_kb"] = hwm_kb()
    return real_train(*a, **k)
sys.modules["exapt.fit"].train = train  # the module (exapt.fit is also the function's name)
exapt.fit(data, strategy, "minilm-l6", test=data, val_fraction=0, epochs=1, batch_size=%d, max_length=%d,
          out=out, overwrite=True, progress=False, log=lambda *a: None)
peak = hwm_kb()
print(json.dumps({"peak_rss_mb": peak / 1024, "rss_before_training_mb": before["rss_kb"] / 1024}))
""" % (BATCH, MAX_LEN)


def memory(tmp: Path) -> dict:
    out = {}
    for strategy in ("full", "lora"):
        res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, strategy, str(TWEETS / "throughput_960.csv"),
                              str(tmp / f"mem-{strategy}")], capture_output=True, text=True, check=True)
        out[strategy] = json.loads(res.stdout.strip().splitlines()[-1])
    f, lo = out["full"], out["lora"]
    out["ratio_peak"] = lo["peak_rss_mb"] / f["peak_rss_mb"]
    out["ratio_training_delta"] = ((lo["peak_rss_mb"] - lo["rss_before_training_mb"])
                                   / (f["peak_rss_mb"] - f["rss_before_training_mb"]))
    return out


def peft_trainer_throughput(texts, labels, epochs: int) -> float:
    import numpy as np
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from peers import _Encoded

    classes = ["negative", "neutral", "positive"]
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=3)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"],
                                             modules_to_save=["classifier"], task_type=TaskType.SEQ_CLS))
    y = np.array([classes.index(v) for v in labels])
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, learning_rate=5e-4, lr_scheduler_type="linear", warmup_steps=0.1,
                                 weight_decay=0.01, per_device_train_batch_size=BATCH, num_train_epochs=epochs,
                                 max_grad_norm=1.0, seed=0, report_to=[], save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True, use_cpu=True)
        ds = _Encoded(tok(list(texts), truncation=True, max_length=MAX_LEN), y)
        m = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok)).train().metrics
    return len(texts) * epochs / m["train_runtime"]


def throughput(tmp: Path) -> dict:
    import exapt

    data = TWEETS / "throughput_960.csv"
    df = read_csv(data)
    run = exapt.fit(str(data), "lora", "minilm-l6", test=str(TWEETS / "train_n8_s0.csv"), val_fraction=0, epochs=2,
                    batch_size=BATCH, max_length=MAX_LEN, out=tmp / "tp-lora", overwrite=True, progress=False,
                    log=lambda *a: None)
    ours = len(df) * 2 / run.history[-1]["seconds"]
    theirs = peft_trainer_throughput(df.text, df.label, 2)
    return {"exapt_lora_examples_per_s": ours, "peft_trainer_examples_per_s": theirs, "ratio": ours / theirs}


def summary(acc: list[dict], mem: dict, tp: dict) -> str:
    import pandas as pd

    df = pd.DataFrame(acc)
    g = df.groupby("method").agg(acc=("accuracy", "mean"), sd=("accuracy", "std"), f1=("macro_f1", "mean"),
                                 frac=("trainable_fraction", "mean"), n=("seed", "count"))
    full = g.loc["full", "acc"]
    lines = [f"Tweets, fixed test set, n = {N} per class, seeds {list(SEEDS)}:", "",
             "| strategy | accuracy (mean ± sd) | macro-F1 | vs full | trainable |", "|---|---|---|---|---|"]
    for method in ["full", *METHODS]:
        r = g.loc[method]
        lines.append(f"| {method} | {r.acc:.3f} ± {r.sd:.3f} | {r.f1:.3f} | {(r.acc - full) * 100:+.1f} pts | {r.frac:.2%} |")
    f, lo = mem["full"], mem["lora"]
    lines += ["", "| target | exapt lora | reference | ratio | goal |", "|---|---|---|---|---|",
              f"| peak RSS, one epoch, batch {BATCH} | {lo['peak_rss_mb']:.0f} MB | exapt full {f['peak_rss_mb']:.0f} MB | "
              f"{mem['ratio_peak']:.2f}x | <= 0.7x |",
              f"| RSS growth during training | {lo['peak_rss_mb'] - lo['rss_before_training_mb']:.0f} MB | exapt full "
              f"{f['peak_rss_mb'] - f['rss_before_training_mb']:.0f} MB | {mem['ratio_training_delta']:.2f}x | |",
              f"| training throughput | {tp['exapt_lora_examples_per_s']:.1f} ex/s | PEFT + Trainer "
              f"{tp['peft_trainer_examples_per_s']:.1f} ex/s | {tp['ratio']:.2f}x | >= 1.0x |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    from exapt.threads import configure_threads

    configure_threads()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        mem = memory(tmp)
        tp = throughput(tmp)
        acc = accuracy(tmp)
    write_json(RESULTS / "peft.json", {"machine": machine(), "accuracy": acc, "memory": mem, "throughput": tp})
    md = summary(acc, mem, tp)
    (RESULTS / "peft.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
