"""Speed targets of the core, measured side by side in one run (run it alone: 2 cores).

    python benchmarks/speed.py

1. Full fine-tuning throughput (examples/s), batch 32, <= 64 tokens, 960 fixed tweets,
   2 epochs: exapt `full` vs Hugging Face Trainer, same model and data.
2. `freeze:4` epoch time vs `full` epoch time (second epoch; the prefix cache is built
   before training and reported separately).
3. A linear probe over 5 sample sizes x 3 seeds (cold feature cache) vs one encoding
   pass of the same data.
4. Model FLOPs utilisation of `full`: 6 x non-embedding parameters x real tokens / time,
   as a fraction of the fp32 matmul peak measured here, now.
Writes results/speed.json and results/speed.md.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TWEETS, machine, minilm_dir, read_csv, write_json  # noqa: E402

BATCH, MAX_LEN, EPOCHS = 32, 64, 2


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 * repeats / best


def exapt_fit(strategy: str, data: Path, out: Path, **kw):
    import exapt

    return exapt.fit(str(data), strategy, "minilm-l6", test=str(TWEETS / "train_n8_s0.csv"), val_fraction=0,
                     epochs=EPOCHS, batch_size=BATCH, max_length=MAX_LEN, out=out, overwrite=True, progress=False,
                     log=lambda *a: None, **kw)


def throughput(tmp: Path) -> dict:
    import peers

    data = TWEETS / "throughput_960.csv"
    df = read_csv(data)
    n = len(df) * EPOCHS
    run = exapt_fit("full", data, tmp / "full")
    hist = run.history
    ours = n / hist[-1]["seconds"]
    theirs = peers.trainer_finetune(minilm_dir(), df.text, df.label, [], ["negative", "neutral", "positive"],
                                    epochs=EPOCHS, batch_size=BATCH, max_length=MAX_LEN, train_only=True)
    return {"exapt_examples_per_s": ours, "trainer_examples_per_s": n / theirs["train_runtime"],
            "ratio": ours / (n / theirs["train_runtime"]),
            "full_epoch2_s": hist[1]["seconds"] - hist[0]["seconds"], "run": run}


def freeze_epoch(tmp: Path, full_epoch2: float) -> dict:
    start = time.perf_counter()
    run = exapt_fit("freeze:4", TWEETS / "throughput_960.csv", tmp / "freeze4")
    total = time.perf_counter() - start
    hist = run.history
    epoch2 = hist[1]["seconds"] - hist[0]["seconds"]
    return {"freeze4_epoch2_s": epoch2, "full_epoch2_s": full_epoch2, "ratio": epoch2 / full_epoch2,
            "freeze4_total_fit_s": total}


def probe_sweep(tmp: Path) -> dict:
    """Cold cache; sizes 16..256 per class inside the fixed n=256 files; seeds 0-2."""
    import exapt
    from exapt.backbones import load_backbone
    from exapt.train.features import encode

    os.environ["EXAPT_CACHE"] = str(tmp / "cache-sweep")
    sizes, seeds = (16, 32, 64, 128, 256), (0, 1, 2)
    texts = list(read_csv(TWEETS / "test.csv").text)
    for s in seeds:
        texts += list(read_csv(TWEETS / f"train_n256_s{s}.csv").text)
    texts = list(dict.fromkeys(texts))
    bb = load_backbone("minilm-l6", max_length=MAX_LEN)
    prepared = bb.prepare_inputs(texts)
    start = time.perf_counter()
    encode(bb, prepared, progress=False)
    one_pass = time.perf_counter() - start
    start = time.perf_counter()
    accs = []
    for s in seeds:
        for n in sizes:
            r = exapt.fit(str(TWEETS / f"train_n256_s{s}.csv"), "linear-probe", "minilm-l6",
                          test=str(TWEETS / "test.csv"), n_per_class=n, val_fraction=0, seed=s, max_length=MAX_LEN,
                          out=tmp / f"probe-{n}-{s}", overwrite=True, progress=False, log=lambda *a: None)
            accs.append(r.metrics["test"]["accuracy"])
    sweep = time.perf_counter() - start
    return {"texts": len(texts), "one_encoding_pass_s": one_pass, "sweep_15_probes_s": sweep,
            "ratio": sweep / one_pass, "probe_accuracies": accs}


def mfu(run, seconds: float, peak: float) -> dict:
    from exapt.backbones import load_backbone

    bb = load_backbone("minilm-l6", max_length=MAX_LEN)
    emb = sum(p.numel() for p in bb.model.embeddings.parameters())
    non_emb = sum(p.numel() for p in bb.parameters()) - emb
    df = read_csv(TWEETS / "throughput_960.csv")
    tokens = sum(len(x) for x in bb.prepare_inputs(list(df.text))) * EPOCHS
    flops = 6 * non_emb * tokens / seconds
    return {"non_embedding_params": non_emb, "tokens": tokens, "achieved_flops": flops, "peak_flops": peak,
            "mfu": flops / peak}


def main() -> None:
    from exapt.threads import configure_threads

    configure_threads()
    peak = matmul_peak()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EXAPT_CACHE"] = str(tmp / "cache")
        tp = throughput(tmp)
        run = tp.pop("run")
        fr = freeze_epoch(tmp, tp["full_epoch2_s"])
        sw = probe_sweep(tmp)
        util = mfu(run, run.history[-1]["seconds"], peak)
    result = {"machine": machine(), "throughput_full": tp, "freeze4_vs_full_epoch": fr, "probe_sweep": sw,
              "mfu_full": util}
    write_json(RESULTS / "speed.json", result)
    md = f"""| target | exapt | peer / reference | ratio | goal |
|---|---|---|---|---|
| full fine-tuning throughput (batch {BATCH}, <= {MAX_LEN} tokens) | {tp['exapt_examples_per_s']:.1f} ex/s | HF Trainer {tp['trainer_examples_per_s']:.1f} ex/s | {tp['ratio']:.2f}x | >= 1.0x |
| freeze:4 epoch time (cache built) | {fr['freeze4_epoch2_s']:.1f} s | full {fr['full_epoch2_s']:.1f} s | {fr['ratio']:.2f}x | <= 0.4x |
| linear probe, 5 sizes x 3 seeds, cold cache | {sw['sweep_15_probes_s']:.1f} s | one encoding pass of the {sw['texts']} texts: {sw['one_encoding_pass_s']:.1f} s | {sw['ratio']:.2f}x | <= 1.3x |
| model FLOPs utilisation of full | {util['achieved_flops'] / 1e9:.1f} GFLOP/s | fp32 matmul peak {util['peak_flops'] / 1e9:.1f} GFLOP/s | {util['mfu']:.1%} | reported |
"""
    (RESULTS / "speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
