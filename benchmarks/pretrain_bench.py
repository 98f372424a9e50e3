"""Issue 8 target: masked-LM pre-training throughput (tokens/s) of `exapt pretrain`
against the Hugging Face Trainer with DataCollatorForLanguageModeling, same
architecture, same corpus windows, same batch, in one process, one after the other.

Both train a BertForMaskedLM built from exapt's `tiny` (and `small`) config on the
E. coli genome (single-base tokens, windows of 128 tokens, batch 64, AdamW, linear
warm-up/decay, mask probability 0.15), for the same number of steps. Throughput is
tokens per second of training steps after the first WARM steps (data loading and
collation included, evaluation excluded). Peer: `Trainer.train()` on a Dataset of the
same token windows, collated by DataCollatorForLanguageModeling.

    python benchmarks/pretrain_bench.py              # ~6 min on 2 cores
    python benchmarks/pretrain_bench.py --quick      # smoke test
Run it alone: two heavy jobs on 2 cores distort every timing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

WARM = 3
TARGET = 1.0


def windows(max_tokens: int, max_length: int):
    from exapt.backbones.sequence_input import SequenceInput
    from exapt.masked_lm.corpus import build_corpus
    from exapt.pretrain.setup import build_tokenizer

    si = SequenceInput("dna")
    tok = build_tokenizer(si)
    corpus = build_corpus("ecoli", tok, si, max_length=max_length, max_tokens=max_tokens, progress=False)
    return tok, corpus


def time_exapt(arch: str, steps: int, batch: int, max_length: int, max_tokens: int) -> float:
    """exapt pretrain's own loop; tokens/s after WARM steps from its step timestamps."""
    from exapt.pretrain import trainer

    stamps: list[float] = []
    real = trainer.mlm_loss

    def stamped(model, *a, **k):  # called once per training step, before backward
        if model.training:
            stamps.append(time.perf_counter())
        return real(model, *a, **k)

    trainer.mlm_loss = stamped
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer.pretrain("ecoli", out=Path(tmp) / "m", arch=arch, steps=steps + 1, batch_size=batch,
                             max_length=max_length, max_tokens=max_tokens, eval_every=10**9, eval_windows=64,
                             progress=False, log=lambda *_: None)
    finally:
        trainer.mlm_loss = real
    # stamps[i] = start of step i's forward; steps WARM..steps-1 are whole steps between stamps
    return (steps - WARM) * batch * max_length / (stamps[steps] - stamps[WARM])


def time_trainer(arch: str, steps: int, batch: int, max_length: int, max_tokens: int) -> float:
    import torch
    from transformers import (BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    from exapt.pretrain.setup import arch_config

    tok, corpus = windows(max_tokens, max_length)
    full = corpus.train.lengths == max_length
    rows = [{"input_ids": r.tolist()} for r in corpus.train.ids[full]]

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return rows[i]

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    torch.manual_seed(0)
    model = BertForMaskedLM(arch_config(arch, len(tok), tok.pad_token_id))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps + 1,
                                 learning_rate=5e-4, warmup_steps=max(1, int(0.06 * steps)), weight_decay=0.01,
                                 lr_scheduler_type="linear", logging_strategy="no", save_strategy="no",
                                 report_to=[], dataloader_num_workers=0, use_cpu=True, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=Data(),
                          data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15),
                          callbacks=[Stamp()])
        trainer.train()
    return (steps - WARM) * batch * max_length / (stamps[steps] - stamps[WARM])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    import torch

    from exapt.threads import configure_threads

    configure_threads()
    steps = 8 if args.quick else args.steps
    batch, max_length, max_tokens = 64, 128, 600_000
    archs = ["tiny"] if args.quick else ["tiny", "small"]
    rows = []
    for arch in archs:
        # alternate the order so neither side always runs on a warmer machine
        peer = time_trainer(arch, steps, batch, max_length, max_tokens)
        ours = time_exapt(arch, steps, batch, max_length, max_tokens)
        peer2 = time_trainer(arch, steps, batch, max_length, max_tokens) if not args.quick else peer
        ours2 = time_exapt(arch, steps, batch, max_length, max_tokens) if not args.quick else ours
        peer_mean, ours_mean = (peer + peer2) / 2, (ours + ours2) / 2
        rows.append({"arch": arch, "exapt_tokens_per_s": ours_mean, "trainer_tokens_per_s": peer_mean,
                     "ratio": ours_mean / peer_mean, "runs": {"exapt": [ours, ours2], "trainer": [peer, peer2]}})
        print(f"{arch}: exapt {ours_mean:,.0f} tokens/s, Trainer+DataCollatorForLanguageModeling "
              f"{peer_mean:,.0f} tokens/s -> {ours_mean / peer_mean:.2f}x", flush=True)
    result = {"what": "masked-LM pre-training throughput, E. coli genome, single-base tokens, 128-token windows, "
                      f"batch {batch}, {steps} steps timed after {WARM}",
              "target_ratio": TARGET, "rows": rows, "machine": machine(), "torch_threads": torch.get_num_threads(),
              "quick": args.quick}
    write_json(RESULTS / ("pretrain_quick.json" if args.quick else "pretrain.json"), result)
    lines = ["| architecture | exapt pretrain (tokens/s) | Trainer + DataCollatorForLanguageModeling (tokens/s) | ratio |",
             "|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['exapt_tokens_per_s']:,.0f} | {r['trainer_tokens_per_s']:,.0f} | "
              f"**{r['ratio']:.2f}x** |" for r in rows]
    lines += ["", f"{result['what']}; mean of two alternating runs per side; target >= {TARGET:.1f}x."]
    (RESULTS / ("pretrain_quick.md" if args.quick else "pretrain.md")).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
