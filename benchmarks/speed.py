"""Training speed of the core against its peers, side by side in one run (issue 25).

    python benchmarks/speed.py [--name speed-1] [--rows full-64,full-256,full-256-fused,lora-64,pretrain,freeze,probe]
Run it alone (2 cores); run it twice to see how far the figures move.

Rows (MiniLM-L6 unless said; batch 32; same data, same truncation on both sides):
1. full-64: `full` fine-tuning, the 960 throughput tweets (<= 64 tokens), 2 epochs,
   against the Hugging Face Trainer (DataCollatorWithPadding).
2. full-256: `full` on documents of consecutive tweets joined to >= 256 tokens and cut at
   256 (long inputs: no padding on either side), 2 epochs, against the Trainer.
   full-256-fused: the same with train.attention_dropout=0 (PyTorch's fused attention).
3. lora-64: `lora` (r=8 on query/value) against PEFT LoRA + Trainer, and its peak memory
   against `full` (each fit in a fresh process).
4. pretrain: `exapt pretrain` (tiny and small, E. coli windows of 128 tokens, batch 64)
   against the Trainer with DataCollatorForLanguageModeling.
5. freeze: `freeze:4` epoch time against `full`; probe: 15 linear probes against one
   encoding pass (the targets of an earlier round).
Model FLOPs utilisation (MFU) of every training row, both sides: useful FLOPs per second
over the fp32 matmul peak measured in this run (the best of a measurement before and one
after the rows). Useful FLOPs count real tokens only (padding is waste), per token:
  full / pretrain: 6 N + 12 L d s   (N non-embedding weights, L layers, d width, s the
                                     example's length: the attention-score term of PaLM's MFU)
  lora:            4 N + 12 L d s   (frozen weights need no weight gradient: 2 N forward,
                                     2 N for the activations' gradients)
Writes results/NAME.json and results/NAME.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TWEETS, machine, minilm_dir, read_csv, write_json  # noqa: E402

BATCH, EPOCHS = 32, 2
ROWS = ("full-64", "full-256", "full-256-fused", "lora-64", "pretrain", "freeze", "probe")


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


def flops_per_example(n_weights: int, layers: int, width: int, length: int, lora: bool = False) -> float:
    return ((4 if lora else 6) * n_weights + 12 * layers * width * length) * length


def text_flops(texts, max_length: int, lora: bool = False) -> tuple[float, int]:
    """Useful training FLOPs of one pass over `texts` at `max_length`, and its real tokens."""
    from exapt.backbones import load_backbone

    bb = load_backbone("minilm-l6", max_length=max_length)
    cfg = bb.model.config
    emb = sum(p.numel() for p in bb.model.embeddings.parameters())
    n = sum(p.numel() for p in bb.model.parameters()) - emb
    lengths = [len(x) for x in bb.prepare_inputs(list(texts))]
    return (sum(flops_per_example(n, cfg.num_hidden_layers, cfg.hidden_size, s, lora) for s in lengths),
            sum(lengths))


def exapt_fit(strategy: str, data: Path, out: Path, max_length: int, **kw):
    import exapt

    return exapt.fit(str(data), strategy, "minilm-l6", test=str(TWEETS / "train_n8_s0.csv"), val_fraction=0,
                     epochs=EPOCHS, batch_size=BATCH, max_length=max_length, out=out, overwrite=True,
                     progress=False, log=lambda *a: None, **kw)


def long_documents(tmp: Path, length: int = 256, count: int = 192) -> Path:
    """Consecutive tweets (test split, the throughput set, a training split) joined until a document
    reaches `length` tokens; the label is its first tweet's (the task is a vehicle for
    long inputs here, not a benchmark of accuracy)."""
    import pandas as pd
    from exapt.backbones import load_backbone

    tok = load_backbone("minilm-l6", max_length=512).tokenizer
    df = pd.concat([read_csv(TWEETS / f) for f in ("test.csv", "throughput_960.csv", "train_n256_s0.csv")])
    docs, labels, cur = [], [], []
    for text, label in zip(df.text, df.label):
        cur.append((text, label))
        joined = " ".join(t for t, _ in cur)
        if len(tok(joined)["input_ids"]) >= length:
            docs.append(joined)
            labels.append(cur[0][1])
            cur = []
        if len(docs) == count:
            break
    path = tmp / f"long-{length}.csv"
    pd.DataFrame({"text": docs, "label": labels}).to_csv(path, index=False)
    return path


def full_row(tmp: Path, data: Path, max_length: int, peak: float) -> dict:
    import peers

    df = read_csv(data)
    flops, tokens = text_flops(df.text, max_length)
    run = exapt_fit("full", data, tmp / f"full-{max_length}", max_length)
    ours = run.history[-1]["seconds"]
    theirs = peers.trainer_finetune(minilm_dir(), df.text, df.label, [], ["negative", "neutral", "positive"],
                                    epochs=EPOCHS, batch_size=BATCH, max_length=max_length, train_only=True)
    theirs = theirs["train_runtime"]
    n = len(df) * EPOCHS
    return {"examples": len(df), "epochs": EPOCHS, "real_tokens_per_epoch": tokens,
            "exapt_examples_per_s": n / ours, "peer_examples_per_s": n / theirs, "ratio": theirs / ours,
            "exapt_mfu": EPOCHS * flops / ours / peak, "peer_mfu": EPOCHS * flops / theirs / peak,
            "full_epoch2_s": run.history[1]["seconds"] - run.history[0]["seconds"]}


def fused_row(tmp: Path, data: Path, peak: float) -> dict:
    """`full` at 256 tokens with train.attention_dropout=0: the fused attention kernel
    (exapt only: the lever changes the regulariser, so it has no like-for-like peer row)."""
    df = read_csv(data)
    flops, _ = text_flops(df.text, 256)
    ours = exapt_fit("full", data, tmp / "full-256-fused", 256, attention_dropout=0.0).history[-1]["seconds"]
    return {"exapt_examples_per_s": len(df) * EPOCHS / ours, "exapt_mfu": EPOCHS * flops / ours / peak}


def lora_row(tmp: Path, peak: float) -> dict:
    from peft_bench import memory, peft_trainer_throughput

    data = TWEETS / "throughput_960.csv"
    df = read_csv(data)
    flops, _ = text_flops(df.text, 64, lora=True)
    ours = exapt_fit("lora", data, tmp / "lora", 64).history[-1]["seconds"]
    n = len(df) * EPOCHS
    theirs = n / peft_trainer_throughput(df.text, df.label, EPOCHS)
    mem = memory(tmp)
    return {"exapt_examples_per_s": n / ours, "peer_examples_per_s": n / theirs, "ratio": theirs / ours,
            "exapt_mfu": EPOCHS * flops / ours / peak, "peer_mfu": EPOCHS * flops / theirs / peak,
            "peak_rss_mb": {"lora": mem["lora"]["peak_rss_mb"], "full": mem["full"]["peak_rss_mb"]},
            "memory_ratio": mem["ratio_peak"]}


def pretrain_rows(peak: float, steps: int = 20) -> list[dict]:
    from pretrain_bench import time_exapt, time_trainer

    from exapt.pretrain.setup import ARCHS

    rows = []
    for arch in ("tiny", "small"):
        hidden, layers, _, inter = ARCHS[arch]
        n = layers * (4 * hidden * hidden + 2 * hidden * inter)  # the blocks' matmul weights
        per_token = flops_per_example(n, layers, hidden, 128) / 128
        peer = time_trainer(arch, steps, 64, 128, 600_000)
        ours = time_exapt(arch, steps, 64, 128, 600_000)
        rows.append({"arch": arch, "exapt_tokens_per_s": ours, "peer_tokens_per_s": peer, "ratio": ours / peer,
                     "exapt_mfu": ours * per_token / peak, "peer_mfu": peer * per_token / peak})
    return rows


def freeze_row(tmp: Path, full_epoch2: float) -> dict:
    run = exapt_fit("freeze:4", TWEETS / "throughput_960.csv", tmp / "freeze4", 64)
    epoch2 = run.history[1]["seconds"] - run.history[0]["seconds"]
    return {"freeze4_epoch2_s": epoch2, "full_epoch2_s": full_epoch2, "ratio": epoch2 / full_epoch2}


def probe_row(tmp: Path) -> dict:
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
    bb = load_backbone("minilm-l6", max_length=64)
    prepared = bb.prepare_inputs(texts)
    start = time.perf_counter()
    encode(bb, prepared, progress=False)
    one_pass = time.perf_counter() - start
    start = time.perf_counter()
    for s in seeds:
        for n in sizes:
            exapt.fit(str(TWEETS / f"train_n256_s{s}.csv"), "linear-probe", "minilm-l6", test=str(TWEETS / "test.csv"),
                      n_per_class=n, val_fraction=0, seed=s, max_length=64, out=tmp / f"probe-{n}-{s}",
                      overwrite=True, progress=False, log=lambda *a: None)
    sweep = time.perf_counter() - start
    return {"texts": len(texts), "one_encoding_pass_s": one_pass, "sweep_15_probes_s": sweep, "ratio": sweep / one_pass}


def markdown(r: dict) -> str:
    lines = ["| row | exapt | peer | exapt / peer | exapt MFU | peer MFU | target |", "|---|---:|---:|---:|---:|---:|---|"]
    goals = {"full-64": ">= 2x, >= 70% MFU", "full-256": ">= 60% MFU", "lora-64": ">= 1.3x"}
    for key, label in (("full-64", "full, <= 64 tokens (ex/s)"), ("full-256", "full, 256 tokens (ex/s)"),
                       ("lora-64", "lora vs PEFT + Trainer, <= 64 tokens (ex/s)")):
        if key in r:
            x = r[key]
            lines.append(f"| {label} | {x['exapt_examples_per_s']:.1f} | {x['peer_examples_per_s']:.1f} | "
                         f"{x['ratio']:.2f}x | {x['exapt_mfu']:.1%} | {x['peer_mfu']:.1%} | {goals[key]} |")
    if "full-256-fused" in r:
        x = r["full-256-fused"]
        lines.append(f"| full, 256 tokens, train.attention_dropout=0 (ex/s) | {x['exapt_examples_per_s']:.1f} | | | "
                     f"{x['exapt_mfu']:.1%} | | >= 60% MFU |")
    if "lora-64" in r:
        m = r["lora-64"]
        lines.append(f"| lora peak memory (MB, fresh process) | {m['peak_rss_mb']['lora']:.0f} | full "
                     f"{m['peak_rss_mb']['full']:.0f} | {m['memory_ratio']:.2f}x | | | <= 0.6x |")
    for p in r.get("pretrain", []):
        lines.append(f"| pretrain {p['arch']} vs Trainer + MLM collator (tokens/s) | {p['exapt_tokens_per_s']:,.0f} | "
                     f"{p['peer_tokens_per_s']:,.0f} | {p['ratio']:.2f}x | {p['exapt_mfu']:.1%} | {p['peer_mfu']:.1%} "
                     f"| >= 1.3x |")
    if "freeze" in r:
        f = r["freeze"]
        lines.append(f"| freeze:4 epoch vs full epoch (s) | {f['freeze4_epoch2_s']:.1f} | full {f['full_epoch2_s']:.1f} "
                     f"| {f['ratio']:.2f}x | | | <= 0.4x |")
    if "probe" in r:
        p = r["probe"]
        lines.append(f"| 15 probes vs one encoding pass of {p['texts']} texts (s) | {p['sweep_15_probes_s']:.1f} | "
                     f"{p['one_encoding_pass_s']:.1f} | {p['ratio']:.2f}x | | | <= 1.3x |")
    lines.append(f"\nfp32 matmul peak {r['peak_flops'] / 1e9:.1f} GFLOP/s (best of {r['peak_before'] / 1e9:.1f} before "
                 f"and {r['peak_after'] / 1e9:.1f} after); {r['machine']['cpu']}, {r['machine']['torch_threads']} threads.")
    return "\n".join(lines) + "\n"


def main() -> None:
    from exapt.threads import configure_threads

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--name", default="speed")
    args = ap.parse_args()
    rows = args.rows.split(",")
    configure_threads()
    before = matmul_peak()
    result: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EXAPT_CACHE"] = str(tmp / "cache")
        if "full-64" in rows or "freeze" in rows:
            result["full-64"] = full_row(tmp, TWEETS / "throughput_960.csv", 64, before)
        if "full-256" in rows:
            result["full-256"] = full_row(tmp, long_documents(tmp), 256, before)
        if "full-256-fused" in rows:
            result["full-256-fused"] = fused_row(tmp, long_documents(tmp), before)
        if "lora-64" in rows:
            result["lora-64"] = lora_row(tmp, before)
        if "pretrain" in rows:
            result["pretrain"] = pretrain_rows(before)
        if "freeze" in rows:
            result["freeze"] = freeze_row(tmp, result["full-64"]["full_epoch2_s"])
        if "probe" in rows:
            result["probe"] = probe_row(tmp)
    after = matmul_peak()
    peak = max(before, after)
    for row in [result.get(k) for k in ("full-64", "full-256", "full-256-fused", "lora-64")] + result.get("pretrain", []):
        for key in ("exapt_mfu", "peer_mfu"):  # against the better of the two peaks (the conservative one)
            if row and key in row:
                row[key] *= before / peak
    result.update(peak_flops=peak, peak_before=before, peak_after=after, machine=machine())
    write_json(RESULTS / f"{args.name}.json", result)
    md = markdown(result)
    (RESULTS / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
