"""`exapt pretrain`: masked-language-model pre-training, from scratch or continued.

    result = pretrain("ecoli", alphabet="dna", arch="tiny", out="models/ecoli-tiny", steps=3000)
    # then: exapt fit splice --model models/ecoli-tiny --strategy full

The output folder is an ordinary Hugging Face model folder (config.json,
model.safetensors, tokenizer files) plus `exapt.json` (how sequences are written for
the tokenizer, the corpus and its hash, the held-out masked-LM loss and accuracy,
tokens per second) and `history.jsonl`/`loss.png`. The folder counts as finished only
when exapt.json is written, last. Training state lives in `OUT/.train/` while the
run is under way, so `--resume` continues after an interruption; it is removed at the
end.

Why it is fast: windows are pre-tokenized into one integer array; masking is a few
tensor ops per batch; batches of full windows skip the attention mask; and the
masked-LM head runs only on the ~15% of positions that are predicted, not all of them.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.sequence_input import SETTINGS_FILE, SequenceInput
from ..errors import ExaptError
from ..train.checkpoint import atomic_save_tensors, atomic_write_text, load_tensors
from .corpus import BUILTIN_CORPORA, Corpus, build_corpus, corpus_records, resolve_corpus
from .masking import IGNORE, mask_tokens
from .setup import SPECIAL_TOKENS, arch_config, build_tokenizer, init_model, load_vocabulary, vocabulary_sha256

STATE_DIR = ".train"
EVAL_MASK_SEED = 1234
PREDICT_BUCKET = 256  # the held-out slice is masked the same way at every evaluation


@dataclass
class PretrainConfig:
    corpus: str
    alphabet: str = "dna"
    kmer: int = 1
    arch: str = "tiny"
    init: str | None = None
    max_length: int = 128
    batch_size: int = 64
    steps: int | None = None       # default: one pass over the training windows
    epochs: float | None = None
    max_minutes: float | None = None  # a time budget instead: minutes of training steps
    lr: float | None = None        # default 5e-4 from scratch, 5e-5 continued
    warmup: float = 0.06
    weight_decay: float = 0.01
    mask_probability: float = 0.15
    holdout: float = 0.05
    eval_every: int | None = None  # default: 10 evaluations per run
    eval_windows: int = 1024
    max_tokens: int | None = None
    vocab_size: int = 8000         # text from scratch: WordPiece vocabulary
    tokenizer: str | None = None   # text from scratch: reuse this folder's vocabulary instead of learning one
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("batch_size", "max_length", "eval_windows"):
            if getattr(self, name) < 1:
                raise ExaptError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        for name in ("steps", "eval_every", "max_tokens"):  # optional counts: None is the default
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ExaptError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.epochs is not None and self.epochs <= 0:
            raise ExaptError(f"--epochs must be positive (got {self.epochs})")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ExaptError(f"--max-minutes must be positive (got {self.max_minutes})")
        if sum(x is not None for x in (self.steps, self.epochs, self.max_minutes)) > 1:
            raise ExaptError("give one of --steps, --epochs and --max-minutes")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ExaptError(f"--lr must be in (0, 1) (got {self.lr})")
        if not 0 <= self.warmup < 1:
            raise ExaptError(f"--warmup is a fraction of the steps, in [0, 1) (got {self.warmup})")
        if not 0 < self.mask_probability < 1:
            raise ExaptError(f"--mask-probability must be in (0, 1) (got {self.mask_probability})")
        if self.max_length > 512:
            raise ExaptError(f"--max-length is at most 512 tokens (got {self.max_length})")
        if self.init is None and self.alphabet == "text" and self.vocab_size < 100:
            raise ExaptError(f"--vocab-size must be at least 100 (got {self.vocab_size})")
        if self.tokenizer is not None and self.init is not None:
            raise ExaptError("--tokenizer does not apply with --init: the model keeps its own tokenizer")
        if self.tokenizer is not None and self.alphabet != "text":
            raise ExaptError(f"--tokenizer applies to --alphabet text only ({self.alphabet} vocabularies are fixed)")


@dataclass
class PretrainResult:
    folder: Path
    heldout_before: dict
    heldout_after: dict
    tokens_per_second: float
    steps: int

    def __str__(self) -> str:
        b, a = self.heldout_before, self.heldout_after
        return (f"{self.folder}: held-out masked-LM loss {b['loss']:.3f} -> {a['loss']:.3f}, "
                f"accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}; {self.tokens_per_second:,.0f} tokens/s")


# -- the model's forward for masked-LM ----------------------------------------------------
def mlm_loss(model, inputs: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None):
    """(loss, number correct, number predicted). BERT models run their prediction head
    only on the masked positions; others fall back to the full forward."""
    predicted = labels != IGNORE
    n = int(predicted.sum())
    if n == 0:
        return None, 0, 0
    flat_labels = labels.reshape(-1)
    # The positions to predict, padded up to a multiple of PREDICT_BUCKET with ignored
    # ones: their count changes every batch, and a new matrix shape each step made
    # the CPU kernels re-plan and the allocator fragment (steps 4x slower, RSS 3 GB).
    where = predicted.reshape(-1).nonzero().squeeze(1)
    extra = -n % PREDICT_BUCKET
    if extra:
        where = torch.cat([where, torch.zeros(extra, dtype=where.dtype, device=where.device)])
        target = torch.cat([flat_labels[where[:n]],
                            torch.full((extra,), IGNORE, dtype=labels.dtype, device=labels.device)])
    else:
        target = flat_labels[where]
    with _autocast(inputs.device):
        if hasattr(model, "bert") and hasattr(model, "cls"):
            hidden = model.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state
            logits = model.cls(hidden.reshape(-1, hidden.shape[-1])[where])
        else:
            logits = model(input_ids=inputs, attention_mask=attention_mask).logits
            logits = logits.reshape(-1, logits.shape[-1])[where]
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE)
    correct = int((logits[:n].argmax(-1) == target[:n]).sum())
    return loss, correct, n


def training_device() -> torch.device:
    """A GPU when torch sees one (as `exapt fit` does through Accelerate), else the CPU.
    CUDA_VISIBLE_DEVICES="" keeps a run on the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device):
    """bf16 autocast on a GPU (the loss is taken in fp32 either way); nothing on the CPU,
    where bf16 matrix products are slower than fp32 on most processors."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(device: torch.device, *tensors):
    return tuple(None if t is None else t.to(device, non_blocking=True) for t in tensors)


class _Batcher:
    """Turns window rows into (input_ids, attention_mask or None) trimmed to the batch's longest."""

    def __init__(self, windows, pad_id: int):
        self.ids = torch.from_numpy(windows.ids.astype(np.int64))
        self.lengths = torch.from_numpy(windows.lengths.astype(np.int64))
        self.pad_id = pad_id

    def __call__(self, rows):
        lengths = self.lengths[rows]
        width = int(lengths.max())
        ids = self.ids[rows, :width]
        if bool((lengths == width).all()):
            return ids, None  # no padding: let attention skip the mask
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return ids, mask


def _special_mask(ids: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    return torch.isin(ids, special_ids)


@torch.no_grad()
def evaluate(model, windows, pad_id: int, tokenizer_ids: dict, *, batch_size: int = 64, probability: float = 0.15,
             span: int = 1, limit: int = 1024) -> dict:
    """Masked-LM loss and accuracy on the held-out windows, masked the same way every time."""
    model.eval()
    device = next(model.parameters()).device
    batcher = _Batcher(windows, pad_id)
    gen = torch.Generator().manual_seed(EVAL_MASK_SEED)
    total_loss, correct, count = 0.0, 0, 0
    n = min(len(windows), limit)
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(n, start + batch_size))
        ids, mask = batcher(rows)
        inputs, labels = mask_tokens(ids, _special_mask(ids, tokenizer_ids["special"]), mask_id=tokenizer_ids["mask"],
                                     normal_ids=tokenizer_ids["normal"], probability=probability, span=span,
                                     generator=gen)
        inputs, labels, mask = _to(device, inputs, labels, mask)
        loss, c, k = mlm_loss(model, inputs, labels, mask)
        if loss is not None:
            total_loss += float(loss) * k
            correct += c
            count += k
    model.train()
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "perplexity": float("nan"), "predicted": 0}
    loss = total_loss / count
    return {"loss": loss, "accuracy": correct / count, "perplexity": math.exp(min(loss, 50)), "predicted": count}


# -- the run ------------------------------------------------------------------------------
def pretrain(corpus: str, *, out: str | Path, alphabet: str | None = None, kmer: int = 1, arch: str = "tiny",
             init: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
             log=print, **options) -> PretrainResult:
    """Pre-train (or continue pre-training) a masked-LM encoder; returns where it went."""
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Writing model shards" for a one-file model is noise
    _, implied = resolve_corpus(corpus)
    alphabet = alphabet or implied or "text"
    if implied and alphabet != implied:
        raise ExaptError(f"built-in corpus {corpus!r} is {implied}; drop --alphabet or give --alphabet {implied}")
    cfg = PretrainConfig(corpus=corpus, alphabet=alphabet, kmer=kmer, arch=arch, init=init, **options)
    cfg.validate()
    out = Path(out)
    state_path = out / STATE_DIR / "state.safetensors"
    _prepare_out(out, cfg, resume=resume, overwrite=overwrite)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    seq_input = SequenceInput(alphabet, kmer=kmer)
    init_folder = None
    if init:
        model, tokenizer, init_input, init_folder = init_model(init)
        if getattr(model, "exapt_fresh_head", False):
            log(f"{init}: no masked-LM head in the checkpoint; a new one is trained (the encoder is kept)")
        if init_input is not None:
            if init_input.alphabet != alphabet:
                raise ExaptError(f"--init {init!r} reads {init_input.alphabet}, not --alphabet {alphabet}")
            seq_input = init_input
        elif alphabet != "text":
            raise ExaptError(f"--init {init!r} is a text model; --alphabet {alphabet} needs a model pre-trained "
                             f"on {alphabet} by exapt (or the antiberty alias for proteins)")
    else:
        tokenizer = _fresh_tokenizer(cfg, seq_input, out / STATE_DIR / "tokenizer", resume)
        config = arch_config(arch, len(tokenizer), tokenizer.pad_token_id)
        from transformers import BertForMaskedLM

        model = BertForMaskedLM(config)
    log(f"reading {corpus} ...")
    data = build_corpus(corpus, tokenizer, seq_input, max_length=cfg.max_length, holdout=cfg.holdout,
                        max_tokens=cfg.max_tokens, progress=progress)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"corpus: {data.records:,} records, {data.characters:,} characters -> {len(data.train):,} training windows "
        f"({data.train.tokens:,} tokens), {len(data.heldout):,} held out; model {n_params / 1e6:.2f}M parameters")

    device = training_device()
    model.to(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        log(f"training on {torch.cuda.get_device_name(device)} (bf16 autocast)")

    if not resume:  # only now: bad input above leaves no folder behind, and --overwrite loses nothing early
        if out.exists():
            shutil.rmtree(out)
        if not init:  # the vocabulary this run trains on: --resume must reuse it, not learn another
            tokenizer.save_pretrained(out / STATE_DIR / "tokenizer")
        atomic_write_text(out / STATE_DIR / "config.json", json.dumps(asdict(cfg), indent=2))
    steps_per_epoch = max(1, len(data.train) // cfg.batch_size)
    budget = cfg.max_minutes * 60 if cfg.max_minutes else None  # seconds of training steps
    total_steps = None if budget else cfg.steps or max(1, round((cfg.epochs or 1.0) * steps_per_epoch))
    eval_every = cfg.eval_every or (None if budget else max(1, total_steps // 10))
    lr = cfg.lr or (5e-5 if init else 5e-4)
    special = torch.tensor(sorted({tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}))
    normal = torch.tensor([i for i in range(len(tokenizer)) if i not in set(special.tolist())])
    tok_ids = {"special": special, "mask": tokenizer.mask_token_id, "normal": normal}
    span = seq_input.kmer
    pad_id = tokenizer.pad_token_id or 0

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel updates all tensors in one pass (the default loops over ~100 small ones)
        optimizer = torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(groups, lr=lr)
    clock = {"seconds": 0.0}  # training-step seconds so far: a time budget's schedule runs on them
    if budget:
        # warm-up and linear decay over the fraction of the budget spent (as Cramming BERT,
        # Geiping & Goldstein 2023, schedules a fixed-time run); the first step is not at lr 0
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _budget_shape(
            max(clock["seconds"] / budget, 0.01 * cfg.warmup), cfg.warmup))
    else:
        warm = max(1, int(cfg.warmup * total_steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warm, max(0.0, (total_steps - s) / max(1, total_steps - warm))))

    step, history, train_seconds, train_tokens = 0, [], 0.0, 0
    order = rng.permutation(len(data.train))
    cursor = 0
    if resume and state_path.exists():
        step, order, cursor, history, train_seconds, train_tokens = _load_state(
            state_path, model, optimizer, schedule, rng)
        clock["seconds"] = train_seconds
        log(f"resuming at step {step} of {total_steps}" if not budget else
            f"resuming at step {step}, {train_seconds / 60:.1f} of {cfg.max_minutes:g} minutes")
    batcher = _Batcher(data.train, pad_id)
    if step == 0:
        before = evaluate(model, data.heldout, pad_id, tok_ids, batch_size=cfg.batch_size,
                          probability=cfg.mask_probability, span=span, limit=cfg.eval_windows)
        history.append({"step": 0, "tokens": 0, "heldout": before})
        log(f"held-out before training: loss {before['loss']:.3f}, accuracy {before['accuracy']:.3f}")
    before = history[0]["heldout"]

    model.train()
    if budget:  # the bar counts seconds of the budget
        bar = tqdm(total=round(budget), initial=round(train_seconds), desc="pre-training", unit="s",
                   disable=not progress, bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s [{elapsed}<{remaining}{postfix}]")
    else:
        bar = tqdm(total=total_steps, initial=step, desc="pre-training", unit="step", disable=not progress)
    running = []
    mark = int(10 * train_seconds / budget) + 1 if budget else None  # time budget: evaluate at each tenth
    while (train_seconds < budget) if budget else (step < total_steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = rng.permutation(len(data.train)), 0
        rows = torch.from_numpy(order[cursor:cursor + cfg.batch_size].astype(np.int64))
        cursor += cfg.batch_size
        t0 = time.perf_counter()
        ids, mask = batcher(rows)
        inputs, labels = mask_tokens(ids, _special_mask(ids, special), mask_id=tok_ids["mask"], normal_ids=normal,
                                     probability=cfg.mask_probability, span=span)
        # masking stays on the CPU (its random stream is what --resume restores)
        loss, _, _ = mlm_loss(model, *_to(device, inputs, labels, mask))
        if loss is not None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            running.append(loss.item())
        step += 1
        took = time.perf_counter() - t0
        train_seconds += took
        clock["seconds"] = train_seconds  # before the schedule steps: a time budget's lr reads it
        with warnings.catch_warnings():  # a batch with nothing masked skips optimizer.step(); fine
            warnings.filterwarnings("ignore", message="Detected call of")
            schedule.step()
        train_tokens += int(ids.numel() if mask is None else mask.sum())
        bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}" if running else "-",
                        tok_s=f"{train_tokens / max(train_seconds, 1e-9):,.0f}")
        bar.update(min(took, max(0.0, bar.total - bar.n)) if budget else 1)
        done = train_seconds >= budget if budget else step == total_steps
        due = done or bool(eval_every and step % eval_every == 0)
        if budget and train_seconds >= mark * budget / 10:
            due, mark = True, int(10 * train_seconds / budget) + 1
        if due:
            held = evaluate(model, data.heldout, pad_id, tok_ids, batch_size=cfg.batch_size,
                            probability=cfg.mask_probability, span=span, limit=cfg.eval_windows)
            history.append({"step": step, "tokens": train_tokens, "train_loss": float(np.mean(running)) if running else None,
                            "heldout": held, "lr": schedule.get_last_lr()[0]})
            running = []
            where = f"step {step}/{total_steps}" if not budget else (
                f"step {step} ({min(1.0, train_seconds / budget):.0%} of {cfg.max_minutes:g} min)")
            line = f"{where}: held-out masked-LM loss {held['loss']:.4f}, accuracy {held['accuracy']:.4f}"
            if progress:
                bar.write(line)  # above the bar, not through it
            else:
                log(line)
            if not done:
                _save_state(state_path, model, optimizer, schedule, rng, step, order, cursor, history,
                            train_seconds, train_tokens, cfg)
    bar.close()
    after = history[-1]["heldout"]
    speed = train_tokens / max(train_seconds, 1e-9)
    _write_model(out, model, tokenizer, seq_input, cfg, data, history, speed, step, n_params, init_folder)
    result = PretrainResult(out, before, after, speed, step)
    log(str(result))
    return result


def _budget_shape(spent: float, warmup: float) -> float:
    """The learning-rate factor after `spent` (a fraction) of a time budget: linear warm-up
    over the first `warmup` of it, then linear decay to 0 at the end."""
    if warmup > 0 and spent < warmup:
        return spent / warmup
    return max(0.0, (1 - spent) / (1 - warmup))


def _fresh_tokenizer(cfg: PretrainConfig, seq_input: SequenceInput, saved: Path, resume: bool):
    """The tokenizer of a model trained from scratch: on --resume the one the run started with
    (a text vocabulary learnt again could differ, and the saved weights would then read
    other tokens), else --tokenizer's, else one built for the alphabet (learnt from the
    corpus for text)."""
    if resume and (saved / "tokenizer.json").exists():
        return load_vocabulary(saved, "--resume")
    if resume and cfg.alphabet == "text":  # DNA and protein vocabularies are fixed: built again, they are the same
        raise ExaptError(f"{saved.parent.parent}: this interrupted text run kept no vocabulary (an older exapt), "
                         "and a vocabulary learnt again may differ; start again with --overwrite")
    if cfg.tokenizer:
        return load_vocabulary(cfg.tokenizer)
    text_iter = (t for _, t in corpus_records(cfg.corpus, "text")) if cfg.alphabet == "text" else None
    return build_tokenizer(seq_input, text_iter, cfg.vocab_size)


# -- folders and state --------------------------------------------------------------------
def _prepare_out(out: Path, cfg: PretrainConfig, *, resume: bool, overwrite: bool) -> None:
    settings = out / SETTINGS_FILE
    state_cfg = out / STATE_DIR / "config.json"
    if resume:
        if not state_cfg.exists():
            if settings.exists():
                raise ExaptError(f"{out} is a finished pre-training run; nothing to resume")
            raise ExaptError(f"{out}: no interrupted pre-training to resume")
        saved = json.loads(state_cfg.read_text())
        diff = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in asdict(cfg).items() if saved.get(k) != v]
        if diff:
            raise ExaptError(f"{out} was started with other settings ({'; '.join(diff[:4])}); "
                             "resume with the same options or start again with --overwrite")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExaptError(f"{out} exists and is not empty; pass --overwrite to replace it "
                             "(or --resume to continue an interrupted run)")
        if not (settings.exists() or state_cfg.exists() or (out / "config.json").exists()):
            raise ExaptError(f"{out} does not look like a pre-training folder; refusing to delete it with --overwrite")
        # deleted only once the new corpus and model have loaded (see pretrain)


def _save_state(path, model, optimizer, schedule, rng, step, order, cursor, history, seconds, tokens, cfg) -> None:
    tensors, seen = {}, set()
    for k, v in model.state_dict().items():
        if v.data_ptr() not in seen:  # tied weights (decoder = word embeddings) are saved once
            seen.add(v.data_ptr())
            tensors[f"model.{k}"] = v.detach().cpu()
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu()
    tensors["order"] = torch.from_numpy(order.astype(np.int64))
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {"step": step, "cursor": cursor, "history": history, "seconds": seconds, "tokens": tokens,
            "schedule": schedule.state_dict() | {"lr_lambdas": None},
            "param_groups": opt["param_groups"], "numpy_rng": rng.bit_generator.state}
    atomic_save_tensors(tensors, path, meta)


def _load_state(path, model, optimizer, schedule, rng):
    tensors, meta = load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched = dict(meta["schedule"])
    sched.pop("lr_lambdas", None)
    schedule.__dict__.update(sched)
    torch.set_rng_state(tensors["torch_rng"])
    rng.bit_generator.state = meta["numpy_rng"]
    return (meta["step"], tensors["order"].numpy(), meta["cursor"], meta["history"], meta["seconds"], meta["tokens"])


def _write_model(out: Path, model, tokenizer, seq_input, cfg, data: Corpus, history, speed, step, n_params,
                 init_folder: Path | None):
    from ..train.checkpoint import _umask_mode

    model.save_pretrained(out, safe_serialization=True)
    (out / "model.safetensors").chmod(_umask_mode())  # shared like any file, not 0600
    tokenizer.save_pretrained(out)
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    _plot_history(history, out / "loss.png")
    if init_folder is not None:  # a sentence encoder keeps its pooling (modules.json and friends)
        for name in ("modules.json", "1_Pooling", "2_Normalize", "sentence_bert_config.json"):
            src = init_folder / name
            if src.is_dir():
                shutil.copytree(src, out / name, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy2(src, out / name)
    settings = {
        "input": seq_input.to_dict(),
        "pretrain": {
            "config": asdict(cfg), "corpus_file": data.source, "corpus_sha256": data.digest,
            "records": data.records, "characters": data.characters, "vocabulary_sha256": vocabulary_sha256(tokenizer),
            "train_windows": len(data.train), "train_tokens_per_pass": data.train.tokens,
            "heldout_windows": len(data.heldout), "steps": step, "tokens_seen": history[-1]["tokens"],
            "tokens_per_second": speed, "parameters": n_params,
            "heldout_before": history[0]["heldout"], "heldout_after": history[-1]["heldout"],
        },
    }
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    atomic_write_text(out / SETTINGS_FILE, json.dumps(settings, indent=2))  # last: marks the folder finished


def _plot_history(history, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ax[0].plot(steps, [h["heldout"]["loss"] for h in history], "o-", label="held-out")
    tr = [(h["step"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    if tr:
        ax[0].plot(*zip(*tr), "s--", label="training (mean since last)")
    ax[0].set(xlabel="step", ylabel="masked-LM loss")
    ax[0].legend(frameon=False)
    ax[1].plot(steps, [h["heldout"]["accuracy"] for h in history], "o-")
    ax[1].set(xlabel="step", ylabel="held-out masked-token accuracy")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


__all__ = ["pretrain", "PretrainConfig", "PretrainResult", "evaluate", "mlm_loss", "BUILTIN_CORPORA", "SPECIAL_TOKENS"]
