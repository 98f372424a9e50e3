"""Where a training step's time goes (issue 25): exapt's own loop under torch.profiler.

Cases (MiniLM-L6 unless said; batch 32):
- full-64, lora-64: the 960 throughput tweets, <= 64 tokens (length-grouped batches);
- full-256, lora-256: documents of consecutive tweets joined to >= 256 tokens, cut at 256;
- pretrain-tiny: `exapt pretrain`'s loop, DNA tiny, 128-token windows, batch 64.
Each case runs WARM steps unprofiled, then ACTIVE steps profiled. Every op's own (self)
time inside a step is put in one bucket, by the nearest enclosing step part first
(collation, clipping, optimiser, heap trim) and otherwise by the op's name (matmul,
attention, softmax/GELU/LayerNorm, dropout masks, other ops). What the ops do not
account for of the step's wall time is Python and framework overhead.

    python benchmarks/profile_train.py [--cases full-64,lora-64] [--active 6]
Run it alone (2 cores). Writes results/profile.json and results/profile.md.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common import RESULTS, TWEETS, machine, read_csv, write_json
from speed import long_documents

WARM, BATCH = 3, 32
CASES = ("full-64", "lora-64", "full-256", "lora-256", "pretrain-tiny")
# "Optimizer." covers torch's own ranges for step and zero_grad
PARTS = {"exapt::collate": "data collation", "exapt::clip": "gradient clipping", "Optimizer.": "optimizer step",
         "exapt::heap_trim": "heap trim (malloc_trim)"}
# In training, attention with dropout on its probabilities takes PyTorch's math path: its
# score and value products are the batched matmuls (bmm), its softmax and dropout are in
# their own rows; a fused kernel (no dropout, or eval) shows as "attention (fused SDPA kernel)".
OPS = [("matmul: linear layers", ("aten::mm", "aten::addmm", "aten::_addmm_activation", "aten::linear")),
       ("matmul: attention (bmm)", ("aten::bmm", "aten::baddbmm", "aten::matmul")),
       ("attention (fused SDPA kernel)", ("scaled_dot_product", "aten::_efficient_attention", "flash_attention")),
       ("softmax / GELU / LayerNorm", ("softmax", "gelu", "layer_norm", "aten::tanh")),
       ("dropout masks", ("dropout", "bernoulli", "random_"))]
# exapt's cheaper masks (train/dropout.py): the random bits are `random_`; the masked scale,
# forward and backward, runs inside its autograd function, whose profiler ranges carry this name
CHEAP_DROPOUT = "KeepAndScale"


def bucket(event) -> str:
    e = event
    while e is not None:  # the nearest enclosing step part wins
        for prefix, name in PARTS.items():
            if e.name.startswith(prefix):
                return name
        if CHEAP_DROPOUT in e.name:
            return "dropout masks"
        e = e.cpu_parent
    for name, needles in OPS:
        if any(n in event.name for n in needles):
            return name
    return "other ops (add, copy, embedding, loss, ...)"


def profiler(active: int):
    """CPU ops only; steps 0..WARM-1 unrecorded, then `active` steps recorded."""
    import torch

    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                  schedule=torch.profiler.schedule(wait=0, warmup=WARM, active=active, repeat=1))


@contextmanager
def step_marks(active: int, stamps: list):
    """Wrap the loop's step parts in named profiler ranges; the profiler records only
    steps WARM..WARM+active (a schedule driven by the step count)."""
    import accelerate
    import torch
    from exapt.train import loop

    prof = profiler(active)
    real_step, real_batch, real_trim = loop._step, loop.device_batch, loop.release_freed_memory
    real_clip = accelerate.Accelerator.clip_grad_norm_

    def step(*a, **k):
        with torch.profiler.record_function("exapt::step"):
            t = time.perf_counter()
            out = real_step(*a, **k)
            stamps.append(time.perf_counter() - t)
        prof.step()
        return out

    def named(label, fn):
        def wrapped(*a, **k):
            with torch.profiler.record_function(label):
                return fn(*a, **k)
        return wrapped

    loop._step, loop.device_batch = step, named("exapt::collate", real_batch)
    loop.release_freed_memory = named("exapt::heap_trim", real_trim)
    accelerate.Accelerator.clip_grad_norm_ = named("exapt::clip", real_clip)
    try:
        with prof:
            yield prof
    finally:
        loop._step, loop.device_batch, loop.release_freed_memory = real_step, real_batch, real_trim
        accelerate.Accelerator.clip_grad_norm_ = real_clip


def pretrain_marks(active: int, stamps: list):
    """The pre-training loop's steps, marked where each calls `trainer.mlm_loss` (once per
    training step, before backward; evaluation runs in eval mode and is not counted)."""
    import torch
    from exapt.pretrain import trainer

    prof = profiler(active)
    real = trainer.mlm_loss

    def stamped(model, *a, **k):  # once per training step, before backward
        if model.training:
            if stamps:
                prof.step()
            stamps.append(time.perf_counter())
        with torch.profiler.record_function("exapt::step"):
            return real(model, *a, **k)

    @contextmanager
    def ctx():
        trainer.mlm_loss = stamped
        try:
            with prof:
                yield prof
        finally:
            trainer.mlm_loss = real
    return ctx()


def breakdown(prof, step_wall: float, steps: int) -> dict:
    """Seconds per step by bucket; `Python / framework overhead` is the step wall time the
    ops do not cover."""
    sums: dict[str, float] = {}
    other: dict[str, float] = {}
    for e in prof.events():
        if e.name == "exapt::step" or e.name.startswith("ProfilerStep"):
            continue
        key = bucket(e)
        sums[key] = sums.get(key, 0.0) + e.self_cpu_time_total / 1e6
        if key.startswith("other"):
            other[e.name] = other.get(e.name, 0.0) + e.self_cpu_time_total / 1e6 / steps
    per_step = {k: v / steps for k, v in sums.items()}
    covered = sum(per_step.values())
    per_step["Python / framework overhead"] = max(0.0, step_wall - covered)
    top_other = dict(sorted(other.items(), key=lambda kv: -kv[1])[:8])
    return ({k: round(v, 4) for k, v in sorted(per_step.items(), key=lambda kv: -kv[1])},
            {k: round(v, 4) for k, v in top_other.items()})


def run_case(case: str, active: int, work: Path) -> dict:
    import exapt

    stamps: list = []
    if case.startswith("pretrain"):
        from exapt.pretrain import trainer

        with pretrain_marks(active, stamps) as prof:
            trainer.pretrain("ecoli", out=work / case, arch=case.split("-")[1], steps=WARM + active + 1, batch_size=64,
                             max_length=128, max_tokens=200_000, eval_every=10**9, eval_windows=64, progress=False,
                             log=lambda *_: None)
        gaps = [b - a for a, b in zip(stamps, stamps[1:])][WARM:WARM + active]
        tokens = 64 * 128
    else:
        strategy, length = case.split("-")
        rows = BATCH * (WARM + active)
        data = TWEETS / "throughput_960.csv" if length == "64" else long_documents(work, int(length), rows)
        import pandas as pd

        df = read_csv(data).head(rows)
        path = work / f"{case}.csv"
        pd.DataFrame(df).to_csv(path, index=False)
        with step_marks(active, stamps) as prof:
            exapt.fit(str(path), strategy, "minilm-l6", test=str(TWEETS / "train_n8_s0.csv"), val_fraction=0,
                      epochs=1, batch_size=BATCH, max_length=int(length), out=work / case, overwrite=True,
                      progress=False, log=lambda *a: None)
        gaps = stamps[WARM:WARM + active]
        tokens = None
    step = sum(gaps) / len(gaps)
    parts, other = breakdown(prof, step, len(gaps))
    out = {"case": case, "steps": len(gaps), "step_s": round(step, 4), "breakdown_s": parts, "top_other_ops_s": other}
    if tokens:
        out["tokens_per_step"] = tokens
    return out


def markdown(results: list[dict]) -> str:
    buckets = []
    for r in results:
        buckets += [b for b in r["breakdown_s"] if b not in buckets]
    head = "| share of a step | " + " | ".join(r["case"] for r in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results),
             "| **step (s)** | " + " | ".join(f"**{r['step_s']:.3f}**" for r in results) + " |"]
    for b in buckets:
        cells = [f"{100 * r['breakdown_s'].get(b, 0) / r['step_s']:.1f}%" for r in results]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    if any(r["case"].endswith("-256") for r in results):
        lines += ["", "The 256-token columns are distorted: the profiler's own records fragment the heap that "
                  "training keeps between steps, so big element-wise ops (the dropout masks' `where`, softmax) "
                  "page-fault under it; a `full` step timed without the profiler takes 3.33 s "
                  "(benchmarks/lever_micro.py 256 keepheap+cheapdrop). Read them for what is there, not for shares."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from exapt.threads import configure_threads

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--active", type=int, default=6, help="profiled steps per case")
    ap.add_argument("--name", default="profile")
    args = ap.parse_args()
    configure_threads()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            results.append(run_case(case, args.active, Path(tmp)))
            print(case, results[-1]["step_s"], results[-1]["breakdown_s"], flush=True)
    write_json(RESULTS / f"{args.name}.json", {"machine": machine(), "warm_steps": WARM, "cases": results})
    md = markdown(results)
    (RESULTS / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
