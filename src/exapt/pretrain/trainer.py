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

import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones.sequence_input import SequenceInput
from ..errors import ExaptError
from ..files import atomic_write_text
from ..masked_lm.corpus import BUILTIN_CORPORA, build_corpus, corpus_records, resolve_corpus
from ..masked_lm.masking import mask_tokens

# The training step calls mlm_loss through this module's name: tests and benchmarks/pretrain_bench.py
# replace trainer.mlm_loss to interrupt or time it. evaluate stays importable from here (mlm_source).
from ..masked_lm.objective import Batcher, evaluate, mlm_loss, special_mask, to_device, training_device
from ..train.dropout import cheap_dropout
from ..train.optim import training_heap
from .output import STATE_DIR, load_state, prepare_out, save_state, write_model
from .setup import SPECIAL_TOKENS, arch_config, build_tokenizer, init_model, load_vocabulary


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


# -- the run ------------------------------------------------------------------------------
def pretrain(corpus: str, *, out: str | Path, alphabet: str | None = None, kmer: int = 1, arch: str = "tiny",
             init: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
             log=print, **options) -> PretrainResult:
    """Pre-train (or continue pre-training) a masked-LM encoder; returns where it went."""
    from transformers.utils import logging as hf_logging  # heavy: imported on first use

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Writing model shards" for a one-file model is noise
    cfg = _config(corpus, alphabet, kmer, arch, init, options)
    out = Path(out)
    prepare_out(out, cfg, resume=resume, overwrite=overwrite)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model, tokenizer, seq_input, init_folder = _model(cfg, out, resume, log)
    log(f"reading {corpus} ...")
    data = build_corpus(corpus, tokenizer, seq_input, max_length=cfg.max_length, holdout=cfg.holdout,
                        max_tokens=cfg.max_tokens, progress=progress)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"corpus: {data.records:,} records, {data.characters:,} characters -> {len(data.train):,} training windows "
        f"({data.train.tokens:,} tokens), {len(data.heldout):,} held out; model {n_params / 1e6:.2f}M parameters")
    device = _to_training_device(model, log)
    if not resume:  # only now: bad input above leaves no folder behind, and --overwrite loses nothing early
        _start_folder(out, cfg, tokenizer)
    run = _Training(model, tokenizer, cfg, _plan(cfg, len(data.train)), data, rng, device,
                    out / STATE_DIR / "state.safetensors", span=seq_input.kmer, log=log, progress=progress)
    run.start(resume)
    run.loop()
    speed = run.tokens / max(run.seconds, 1e-9)
    write_model(out, model, tokenizer, seq_input, cfg, data, run.history, speed, run.step, n_params, init_folder)
    result = PretrainResult(out, run.history[0]["heldout"], run.history[-1]["heldout"], speed, run.step)
    log(str(result))
    return result


def _config(corpus: str, alphabet: str | None, kmer: int, arch: str, init: str | None, options: dict):
    _, implied = resolve_corpus(corpus)
    alphabet = alphabet or implied or "text"
    if implied and alphabet != implied:
        raise ExaptError(f"built-in corpus {corpus!r} is {implied}; drop --alphabet or give --alphabet {implied}")
    cfg = PretrainConfig(corpus=corpus, alphabet=alphabet, kmer=kmer, arch=arch, init=init, **options)
    cfg.validate()
    return cfg


def _model(cfg: PretrainConfig, out: Path, resume: bool, log):
    """(model, tokenizer, how it reads sequences, the --init folder or None)."""
    seq_input = SequenceInput(cfg.alphabet, kmer=cfg.kmer)
    if not cfg.init:
        tokenizer = _fresh_tokenizer(cfg, seq_input, out / STATE_DIR / "tokenizer", resume)
        config = arch_config(cfg.arch, len(tokenizer), tokenizer.pad_token_id)
        from transformers import BertForMaskedLM  # heavy: imported on first use

        return BertForMaskedLM(config), tokenizer, seq_input, None
    init, alphabet = cfg.init, cfg.alphabet
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
    return model, tokenizer, seq_input, init_folder


def _to_training_device(model, log) -> torch.device:
    device = training_device()
    model.to(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        log(f"training on {torch.cuda.get_device_name(device)} (bf16 autocast)")
    return device


def _start_folder(out: Path, cfg: PretrainConfig, tokenizer) -> None:
    if out.exists():
        shutil.rmtree(out)
    if not cfg.init:  # the vocabulary this run trains on: --resume must reuse it, not learn another
        tokenizer.save_pretrained(out / STATE_DIR / "tokenizer")
    atomic_write_text(out / STATE_DIR / "config.json", json.dumps(asdict(cfg), indent=2))


@dataclass
class _Plan:
    """How long the run trains, how often it evaluates, at what peak learning rate."""
    budget: float | None      # seconds of training steps (--max-minutes), else None
    total_steps: int | None   # None under a time budget
    eval_every: int | None
    lr: float


def _plan(cfg: PretrainConfig, n_windows: int) -> _Plan:
    steps_per_epoch = max(1, n_windows // cfg.batch_size)
    budget = cfg.max_minutes * 60 if cfg.max_minutes else None  # seconds of training steps
    total_steps = None if budget else cfg.steps or max(1, round((cfg.epochs or 1.0) * steps_per_epoch))
    eval_every = cfg.eval_every or (None if budget else max(1, total_steps // 10))
    lr = cfg.lr or (5e-5 if cfg.init else 5e-4)
    return _Plan(budget, total_steps, eval_every, lr)


def _optimizer(model, weight_decay: float, lr: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel updates all tensors in one pass (the default loops over ~100 small ones)
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


def _schedule(optimizer, warmup: float, plan: _Plan, seconds):
    """Warm-up then linear decay, over the steps or (a time budget) over `seconds()` spent."""
    budget, total_steps = plan.budget, plan.total_steps
    if budget:
        # warm-up and linear decay over the fraction of the budget spent (as Cramming BERT,
        # Geiping & Goldstein 2023, schedules a fixed-time run); the first step is not at lr 0
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _budget_shape(
            max(seconds() / budget, 0.01 * warmup), warmup))
    warm = max(1, int(warmup * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total_steps - s) / max(1, total_steps - warm))))


class _Training:
    """The training loop and where it stands: every field but `running` is saved for --resume."""

    def __init__(self, model, tokenizer, cfg: PretrainConfig, plan: _Plan, data, rng, device, state_path: Path, *,
                 span: int, log, progress: bool):
        self.model, self.cfg, self.plan, self.data, self.rng, self.device = model, cfg, plan, data, rng, device
        self.state_path, self.span, self.log, self.progress = state_path, span, log, progress
        special = torch.tensor(sorted({tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}))
        normal = torch.tensor([i for i in range(len(tokenizer)) if i not in set(special.tolist())])
        self.tok_ids = {"special": special, "mask": tokenizer.mask_token_id, "normal": normal}
        self.pad_id = tokenizer.pad_token_id or 0
        self.seconds = 0.0  # training-step seconds so far: a time budget's schedule runs on them
        self.optimizer = _optimizer(model, cfg.weight_decay, plan.lr)
        self.schedule = _schedule(self.optimizer, cfg.warmup, plan, lambda: self.seconds)
        self.step, self.history, self.tokens = 0, [], 0
        self.order = rng.permutation(len(data.train))
        self.cursor = 0
        self.running: list[float] = []  # training losses since the last evaluation

    def start(self, resume: bool) -> None:
        """Restore an interrupted run's state, or take the held-out loss before training."""
        cfg = self.cfg
        if resume and self.state_path.exists():
            self.step, self.order, self.cursor, self.history, self.seconds, self.tokens = load_state(
                self.state_path, self.model, self.optimizer, self.schedule, self.rng)
            self.log(f"resuming at step {self.step} of {self.plan.total_steps}" if not self.plan.budget else
                     f"resuming at step {self.step}, {self.seconds / 60:.1f} of {cfg.max_minutes:g} minutes")
        if self.step == 0:
            before = self.heldout()
            self.history.append({"step": 0, "tokens": 0, "heldout": before})
            self.log(f"held-out before training: loss {before['loss']:.3f}, accuracy {before['accuracy']:.3f}")

    def heldout(self) -> dict:
        cfg = self.cfg
        return evaluate(self.model, self.data.heldout, self.pad_id, self.tok_ids, batch_size=cfg.batch_size,
                        probability=cfg.mask_probability, span=self.span, limit=cfg.eval_windows)

    def loop(self) -> None:
        budget = self.plan.budget
        self.model.train()
        bar = _progress_bar(self.plan, self.step, self.seconds, self.progress)
        batcher = Batcher(self.data.train, self.pad_id)
        mark = int(10 * self.seconds / budget) + 1 if budget else None  # time budget: evaluate at each tenth
        # the batch's big tensors stay on the heap between steps (train/optim.py); dropout
        # masks come 16 bits an element (train/dropout.py)
        with training_heap(), cheap_dropout(self.model):
            self._steps(batcher, bar, budget, mark)
        bar.close()

    def _steps(self, batcher, bar, budget: float, mark) -> None:
        """Train steps until the step count or the time budget, evaluating when due."""
        while (self.seconds < budget) if budget else (self.step < self.plan.total_steps):
            took = self.train_step(batcher)
            bar.set_postfix(loss=f"{np.mean(self.running[-20:]):.3f}" if self.running else "-",
                            tok_s=f"{self.tokens / max(self.seconds, 1e-9):,.0f}")
            bar.update(min(took, max(0.0, bar.total - bar.n)) if budget else 1)
            done = self.seconds >= budget if budget else self.step == self.plan.total_steps
            due = done or bool(self.plan.eval_every and self.step % self.plan.eval_every == 0)
            if budget and self.seconds >= mark * budget / 10:
                due, mark = True, int(10 * self.seconds / budget) + 1
            if due:
                self.evaluate_and_save(bar, done)

    def train_step(self, batcher) -> float:
        """One batch forward and backward; returns its seconds."""
        cfg = self.cfg
        if self.cursor + cfg.batch_size > len(self.order):
            self.order, self.cursor = self.rng.permutation(len(self.data.train)), 0
        rows = torch.from_numpy(self.order[self.cursor:self.cursor + cfg.batch_size].astype(np.int64))
        self.cursor += cfg.batch_size
        t0 = time.perf_counter()
        ids, mask = batcher(rows)
        inputs, labels = mask_tokens(ids, special_mask(ids, self.tok_ids["special"]), mask_id=self.tok_ids["mask"],
                                     normal_ids=self.tok_ids["normal"], probability=cfg.mask_probability,
                                     span=self.span)
        # masking stays on the CPU (its random stream is what --resume restores)
        loss, _, _ = mlm_loss(self.model, *to_device(self.device, inputs, labels, mask))
        if loss is not None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.running.append(loss.item())
        self.step += 1
        took = time.perf_counter() - t0
        self.seconds += took  # before the schedule steps: a time budget's lr reads it
        with warnings.catch_warnings():  # a batch with nothing masked skips optimizer.step(); fine
            warnings.filterwarnings("ignore", message="Detected call of")
            self.schedule.step()
        self.tokens += int(ids.numel() if mask is None else mask.sum())
        return took

    def evaluate_and_save(self, bar, done: bool) -> None:
        """Record the held-out loss; save the state for --resume unless this was the last step."""
        budget, cfg = self.plan.budget, self.cfg
        held = self.heldout()
        self.history.append({"step": self.step, "tokens": self.tokens,
                             "train_loss": float(np.mean(self.running)) if self.running else None,
                             "heldout": held, "lr": self.schedule.get_last_lr()[0]})
        self.running = []
        where = f"step {self.step}/{self.plan.total_steps}" if not budget else (
            f"step {self.step} ({min(1.0, self.seconds / budget):.0%} of {cfg.max_minutes:g} min)")
        line = f"{where}: held-out masked-LM loss {held['loss']:.4f}, accuracy {held['accuracy']:.4f}"
        if self.progress:
            bar.write(line)  # above the bar, not through it
        else:
            self.log(line)
        if not done:
            save_state(self.state_path, self.model, self.optimizer, self.schedule, self.rng, self.step, self.order,
                       self.cursor, self.history, self.seconds, self.tokens, cfg)


def _progress_bar(plan: _Plan, step: int, seconds: float, progress: bool):
    if plan.budget:  # the bar counts seconds of the budget
        return tqdm(total=round(plan.budget), initial=round(seconds), desc="pre-training", unit="s",
                    disable=not progress,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=plan.total_steps, initial=step, desc="pre-training", unit="step", disable=not progress)


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


__all__ = ["pretrain", "PretrainConfig", "PretrainResult", "evaluate", "mlm_loss", "BUILTIN_CORPORA", "SPECIAL_TOKENS"]
