"""One training step's levers, outside exapt's loop (issue 25, docs/speed.md).

MiniLM-L6 + mean pooling + a linear head, batch 32, fused AdamW, gradient clipping: 3
warm-up steps, then the mean step time over the rest (tweets from test.csv; at lengths over
64, windows of 14 consecutive tweets cut at the length). Variants, combinable with `+`:

  default        the model as it ships (attention dropout 0.1: PyTorch's math attention)
  noattndrop     attention dropout 0: the fused scaled-dot-product kernel
  nodrop         all dropout 0 (what dropout masks cost altogether)
  bf16           torch.autocast(cpu, bfloat16)
  compile        torch.compile(dynamic=True) of the encoder (the warm-up includes compiling)
  trim           malloc_trim after every step (exapt's loop before the heap lever)
  keepheap       glibc mmap and automatic trim off (exapt's training_heap)
  cheapdrop      exapt's cheaper dropout masks (train/dropout.py: 16 random bits per element)

    python benchmarks/lever_micro.py 256 default trim keepheap noattndrop
    python benchmarks/lever_micro.py 64 keepheap keepheap+cheapdrop keepheap+nodrop
Run it alone. Prints one line per variant (each in a fresh process).

    python benchmarks/lever_micro.py ops
times the masks alone, forward + backward, with the heap kept as in training: one dropout
on [32, 40, 384] (a 64-token batch's hidden states) and attention with dropout 0.1 on
[32, 12, 256, 256], PyTorch's against train/dropout.py's, with the fused kernel (no
dropout) beside them.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = r"""
import contextlib, ctypes, sys, time
import torch
from common import TWEETS, minilm_dir, read_csv
from transformers import AutoModel, AutoTokenizer

length, variant = int(sys.argv[1]), sys.argv[2].split("+")
torch.set_num_threads(2)
libc = ctypes.CDLL("libc.so.6")
if "keepheap" in variant:
    libc.mallopt(-4, 0)   # M_MMAP_MAX
    libc.mallopt(-1, -1)  # M_TRIM_THRESHOLD
texts = list(read_csv(TWEETS / "test.csv").text)
if length > 64:
    texts = [" ".join(texts[i:i + 14]) for i in range(0, len(texts) - 14, 7)]
tok = AutoTokenizer.from_pretrained(minilm_dir())
steps = 12 if length <= 64 else 6
batches = [tok(texts[i:i + 32], truncation=True, max_length=length, padding=True, return_tensors="pt")
           for i in range(0, 32 * steps, 32)]
kw = {}
if "noattndrop" in variant:
    kw["attention_probs_dropout_prob"] = 0.0
if "nodrop" in variant:
    kw.update(attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
torch.manual_seed(0)
model = AutoModel.from_pretrained(minilm_dir(), **kw).train()
head = torch.nn.Linear(model.config.hidden_size, 3)
params = list(model.parameters()) + list(head.parameters())
opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
if "cheapdrop" in variant:
    from exapt.train.dropout import cheap_dropout
    keep_cheap = cheap_dropout(model)  # held: a dropped context manager would undo itself
    keep_cheap.__enter__()
encoder = torch.compile(model, dynamic=True) if "compile" in variant else model
autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in variant else contextlib.nullcontext

def step(b):
    with autocast():
        out = encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        mask = b["attention_mask"].unsqueeze(-1).float()
        pooled = (out.float() * mask).sum(1) / mask.sum(1)
        loss = torch.nn.functional.cross_entropy(head(pooled), torch.zeros(len(pooled), dtype=torch.long))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if "trim" in variant:
        libc.malloc_trim(0)

t0 = time.perf_counter()
for b in batches[:3]:
    step(b)
warm = time.perf_counter() - t0
t0 = time.perf_counter()
for b in batches[3:]:
    step(b)
per_step = (time.perf_counter() - t0) / len(batches[3:])
tokens = sum(int(b["attention_mask"].sum()) for b in batches[3:]) / len(batches[3:])
peak = int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")).split()[1]) // 1024
print(f"{length} tokens, {'+'.join(variant)}: warm-up {warm:.1f} s, step {per_step:.3f} s, "
      f"{tokens / per_step:.0f} real tokens/s, peak {peak} MB", flush=True)
"""

OPS = r"""
import ctypes, time
import torch
import torch.nn.functional as F
from exapt.train.dropout import attention_with_cheap_dropout, dropout

torch.set_num_threads(2)
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-4, 0)   # M_MMAP_MAX: the heap kept, as exapt's training_heap does
libc.mallopt(-1, -1)  # M_TRIM_THRESHOLD

def ms(fn, inputs, grad, reps):
    for _ in range(2):
        fn(*inputs).backward(grad)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(*inputs).backward(grad)
    return (time.perf_counter() - t0) / reps * 1e3

x = torch.randn(32, 40, 384, requires_grad=True)
g = torch.randn(32, 40, 384)
print(f"dropout 0.1, [32, 40, 384], forward + backward: PyTorch {ms(lambda a: F.dropout(a, 0.1, True), [x], g, 40):.2f} ms, "
      f"cheaper masks {ms(lambda a: dropout(a, 0.1), [x], g, 40):.2f} ms", flush=True)

class Block(torch.nn.Module):  # what the attention function reads of a Hugging Face attention module
    pass

T = 256
qkv = [torch.randn(32, 12, T, 32, requires_grad=True) for _ in range(3)]
allowed = torch.ones(32, 1, T, T, dtype=torch.bool)
allowed[:, :, :, T - T // 4:] = False
g = torch.randn(32, T, 12, 32)
def sdpa(q, k, v, p):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p).transpose(1, 2)
cheap = lambda q, k, v: attention_with_cheap_dropout(Block().train(), q, k, v, allowed, dropout=0.1)[0]
print(f"attention, dropout 0.1, [32, 12, {T}, {T}], forward + backward: PyTorch {ms(lambda *a: sdpa(*a, 0.1), qkv, g, 4):.0f} ms, "
      f"cheaper masks {ms(cheap, qkv, g, 4):.0f} ms, fused kernel without dropout {ms(lambda *a: sdpa(*a, 0.0), qkv, g, 4):.0f} ms",
      flush=True)
"""


def main() -> None:
    if sys.argv[1:2] == ["ops"]:
        subprocess.run([sys.executable, "-c", OPS], check=True)
        return
    length, variants = sys.argv[1], sys.argv[2:] or ["default"]
    for variant in variants:
        subprocess.run([sys.executable, "-c", CHILD, length, variant], check=True,
                       cwd=str(Path(__file__).resolve().parent))


if __name__ == "__main__":
    main()
