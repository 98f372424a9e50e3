"""The folder `exapt pretrain` writes: checking it before a run, the resumable training
state under `OUT/.train/`, and the finished model (exapt.json last, marking it done)."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..backbones.sequence_input import SETTINGS_FILE
from ..errors import ExaptError
from ..files import atomic_save_tensors, atomic_write_text, file_mode, load_tensors
from ..masked_lm.corpus import Corpus
from ..run_folder import RunFolder  # the history file is named as in a run
from .setup import vocabulary_sha256

STATE_DIR = ".train"


def prepare_out(out: Path, cfg, *, resume: bool, overwrite: bool) -> None:
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


def save_state(path, model, optimizer, schedule, rng, step, order, cursor, history, seconds, tokens, cfg) -> None:
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


def load_state(path, model, optimizer, schedule, rng):
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


def write_model(out: Path, model, tokenizer, seq_input, cfg, data: Corpus, history, speed, step, n_params,
                init_folder: Path | None):
    model.save_pretrained(out, safe_serialization=True)
    (out / "model.safetensors").chmod(file_mode())  # shared like any file, not 0600
    tokenizer.save_pretrained(out)
    atomic_write_text(out / RunFolder.HISTORY, "".join(json.dumps(h) + "\n" for h in history))
    plot_history(history, out / "loss.png")
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


def plot_history(history, path: Path) -> None:
    import matplotlib  # heavy: imported on first use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: imported on first use

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
