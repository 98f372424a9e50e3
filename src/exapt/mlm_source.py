"""A self-supervised source: a masked-LM model folder and its unlabelled corpus.

`fit TARGET --model FOLDER --source-corpus CORPUS`, FOLDER made by `exapt pretrain`
(any BERT masked-LM folder whose weights include the prediction head, `cls.*`). The
source "task" is the masked-LM objective: its held-out loss is scored before and after
fine-tuning (forgetting), and `ewc` takes its Fisher from it.

The prediction head is read from FOLDER once and never trains. "After" runs the
fine-tuned encoder under that same head, so the loss says how well the encoder still
serves the objective it was pre-trained on. It goes through the backbone's own forward,
so LoRA, adapters and prompt tuning are scored like plain weights.

Windows, masking and the loss are exapt pretrain's own (`build_corpus`, `mask_tokens`,
`mlm_loss`, `evaluate`: the held-out windows are masked the same way every time).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import safe_open
from torch import nn

from .backbones.sequence_input import SETTINGS_FILE, SequenceInput
from .errors import ExaptError
from .masked_lm.corpus import build_corpus, resolve_corpus
from .masked_lm.objective import evaluate

MAX_TOKENS = 2_000_000  # enough windows for the Fisher and the held-out score; bounds reading time
# (the held-out windows are chosen by position, so a capped read holds out a prefix of the same ones)


@dataclass
class MLMSource:
    corpus: str
    digest: str
    train: object          # Windows (Fisher)
    heldout: object        # Windows (forgetting)
    head: nn.Module        # the folder's masked-LM prediction head
    tok_ids: dict
    pad_id: int
    span: int
    limit: int

    def with_head(self, model) -> nn.Module:
        return _WithMLMHead(model.backbone.model, self.head)

    def evaluate(self, model) -> dict[str, float]:
        """Held-out masked-LM loss and accuracy of the model's encoder (mode restored)."""
        was = model.training
        try:
            out = evaluate(self.with_head(model), self.heldout, self.pad_id, self.tok_ids, batch_size=32,
                           span=self.span, limit=self.limit)
        finally:
            model.train(was)
        return {"loss": out["loss"], "accuracy": out["accuracy"], "windows": min(len(self.heldout), self.limit)}


class _Trunk(nn.Module):
    """The backbone's transformer, answering as `BertForMaskedLM.bert` does."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        extra = hidden.shape[1] - input_ids.shape[1]  # soft-prompt positions come first
        return SimpleNamespace(last_hidden_state=hidden[:, extra:] if extra > 0 else hidden)


class _WithMLMHead(nn.Module):
    def __init__(self, encoder, head):
        super().__init__()
        self.bert = _Trunk(encoder)
        self.cls = head


def load_mlm_source(cfg, model) -> MLMSource | None:
    corpus = cfg.source.corpus
    if not corpus:
        return None
    bb = model.backbone
    folder = getattr(bb, "folder", None)
    if folder is None or bb.identity().get("scratch"):
        raise ExaptError(f"--source-corpus needs a pretrained masked-LM --model folder (made by exapt pretrain); "
                         f"{cfg.model} is not one")
    head = _read_head(Path(folder), cfg.model)
    seq_input = bb.sequence_input or SequenceInput("text")
    resolve_corpus(corpus)  # a missing corpus fails here with its own message
    tok = _unpadded(bb.tokenizer)
    max_length, holdout = _windowing(Path(folder), cfg.max_length)
    data = build_corpus(corpus, tok, seq_input, max_length=max_length, holdout=holdout, max_tokens=MAX_TOKENS,
                        progress=False)
    special = torch.tensor(sorted({tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}))
    normal = torch.tensor([i for i in range(len(tok)) if i not in set(special.tolist())])
    return MLMSource(corpus, data.digest, data.train, data.heldout, head,
                     {"special": special, "mask": tok.mask_token_id, "normal": normal},
                     tok.pad_token_id or 0, seq_input.kmer, cfg.source.max_test)


def _windowing(folder: Path, default_length: int) -> tuple[int, float]:
    """The window length and held-out share exapt pretrain used for FOLDER (its exapt.json):
    the same windows, so the held-out ones are windows pre-training never trained on
    (other lengths would cut a genome elsewhere). A folder from elsewhere: the fit's length."""

    try:
        config = json.loads((folder / SETTINGS_FILE).read_text())["pretrain"]["config"]
        return int(config["max_length"]), float(config.get("holdout", 0.05))
    except (OSError, ValueError, KeyError, TypeError):
        return default_length, 0.05


def _unpadded(tokenizer):
    """A copy whose fast backend neither pads nor truncates. Some folders' tokenizer.json
    pad every encoding to 128 (all-MiniLM-L6-v2 does); build_corpus encodes through the
    backend, so each record would come back as 128 tokens, mostly [PAD]."""
    tok = copy.deepcopy(tokenizer)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()
    return tok


def _read_head(folder: Path, name: str) -> nn.Module:
    from transformers import BertForMaskedLM  # heavy: imported on first use

    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ExaptError(f"--source-corpus: {folder} has no model.safetensors (a masked-LM folder made by "
                         "exapt pretrain has one)")
    with safe_open(str(weights), framework="pt") as f:
        has_head = any(k.startswith("cls.") for k in f.keys())
    if not has_head:
        raise ExaptError(f"--source-corpus: --model {name} has no masked-LM head (no cls.* weights in {weights}); "
                         "it was not saved as a masked LM, so the source objective cannot be scored")
    try:
        mlm = BertForMaskedLM.from_pretrained(folder)
    except Exception as e:  # transformers raises many types for a folder it cannot read
        raise ExaptError(f"--source-corpus: cannot load {folder} as a BERT masked LM "
                         f"({str(e).splitlines()[0][:200]})") from None
    head = mlm.cls.eval()
    head.requires_grad_(False)
    return head
