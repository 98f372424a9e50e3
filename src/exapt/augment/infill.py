"""Masked-LM infilling (Ng et al. 2020, SSMBA; Kobayashi 2018, contextual augmentation):
mask a fraction of a real example's tokens and sample each masked token from a masked
language model given the rest, all masked positions at once. The new example keeps the
real one's label.

The masked LM must have its prediction head (`cls.*` weights): all-MiniLM-L6-v2, the
bundled text encoder, is a sentence encoder without one, so for text the model is one
`exapt pretrain` continued (or trained) on the domain; for DNA and proteins an
`exapt pretrain` model (single-letter tokens) or AntiBERTy (antibodies).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones import ALIASES, alias_tokenizer, resolve_alias
from ..backbones.sequence_input import (
    DNA_LETTERS,
    PROTEIN_LETTERS,
    SequenceInput,
    pretrained_window,
)
from ..errors import ExaptError

SPECIAL = re.compile(r"^\[.*\]$")   # [PAD] [CLS] [SEP] [MASK] [UNK] [unused7]...: never sampled


@dataclass
class MaskedLM:
    model: torch.nn.Module
    tokenizer: object
    seq_input: SequenceInput
    name: str
    window: int               # tokens per forward pass, [CLS] and [SEP] included
    allowed: torch.Tensor     # bool over the vocabulary: the ids a masked position may become


def load_masked_lm(spec: str | None) -> MaskedLM:
    """The masked LM `--method mlm:SPEC` names (an alias or a model folder)."""
    if not spec:
        raise ExaptError("--method mlm needs a masked LM: --method mlm:MODEL, MODEL a folder `exapt pretrain` wrote "
                         "(text: exapt pretrain CORPUS --init minilm-l6 --out FOLDER continues the bundled encoder on "
                         "your texts; DNA/proteins: an exapt pretrain model) or antiberty (antibodies)")
    from transformers import (  # heavy: imported on first use
        AutoConfig,
        AutoModelForMaskedLM,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging  # heavy: imported on first use

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars: the command says what it did in one line

    folder = resolve_alias(spec) if spec in ALIASES else Path(spec).expanduser()
    if not (folder / "config.json").exists():
        raise ExaptError(f"--method mlm:{spec}: not an alias ({', '.join(ALIASES)}) nor a Hugging Face model folder")
    tokenizer, seq_input = alias_tokenizer(spec, folder)
    try:
        if AutoConfig.from_pretrained(folder, trust_remote_code=False).model_type != "bert":
            raise ExaptError(f"--method mlm:{spec}: not a BERT-family masked LM")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=False,
                                                               output_loading_info=True)
    except ExaptError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to load is said in one line
        raise ExaptError(f"--method mlm:{spec}: cannot load {folder}: {str(e).splitlines()[0][:300]}") from None
    if any(k.startswith("cls.") for k in info.get("missing_keys", [])):
        raise ExaptError(f"--method mlm:{spec}: its weights have no masked-LM head (a sentence encoder such as "
                         f"minilm-l6 has none); continue its pre-training first: exapt pretrain CORPUS --init {spec} "
                         "--out FOLDER, then --method mlm:FOLDER")
    seq_input = seq_input or SequenceInput.from_folder(folder) or SequenceInput("text")
    if seq_input.is_sequence and seq_input.kmer > 1:
        raise ExaptError(f"--method mlm:{spec}: a {seq_input.kmer}-mer model; infilling needs one letter per token "
                         "(overlapping k-mers cannot be replaced one at a time)")
    window = min(pretrained_window(folder) or 512, model.config.max_position_embeddings)
    model.eval()
    return MaskedLM(model, tokenizer, seq_input, spec, window, _allowed_ids(tokenizer, seq_input))


def _allowed_ids(tokenizer, seq_input: SequenceInput) -> torch.Tensor:
    vocab = tokenizer.get_vocab()
    allowed = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
    # a sequence position becomes a letter of the alphabet (never N / X, the unknowns)
    letters = set(DNA_LETTERS if seq_input.alphabet == "dna" else PROTEIN_LETTERS) if seq_input.is_sequence else None
    for token, i in vocab.items():
        allowed[i] = token in letters if letters is not None else not SPECIAL.match(token)
    return allowed


def token_ids(mlm: MaskedLM, text: str) -> list[int]:
    """A row's token ids, no special tokens, not truncated."""
    if mlm.seq_input.is_sequence:
        text = mlm.seq_input.to_tokenizer_text(text)
    return list(mlm.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def decode(mlm: MaskedLM, ids: list[int]) -> str:
    if mlm.seq_input.is_sequence:  # one letter per token, written without spaces
        return "".join(mlm.tokenizer.convert_ids_to_tokens(ids))
    return mlm.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()


def masked_positions(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """round(fraction * n) positions (at least one) of a row's n tokens, without repeats."""
    k = min(n, max(1, int(round(fraction * n))))
    return np.sort(rng.choice(n, size=k, replace=False))


@torch.no_grad()
def infill(mlm: MaskedLM, rows: list[list[int]], masks: list[np.ndarray], generator: torch.Generator,
           batch_size: int = 32) -> list[list[int]]:
    """Each row's ids with its masked positions replaced by draws from the masked LM's
    distribution there (special tokens excluded). A row longer than the window is filled
    window by window, each window seeing its own tokens."""
    body = mlm.window - 2
    pieces = []   # (row, start) of each window
    for r, ids in enumerate(rows):
        pieces += [(r, s) for s in range(0, max(1, len(ids)), body)]
    out = [list(ids) for ids in rows]
    tok = mlm.tokenizer
    for b in range(0, len(pieces), batch_size):
        chunk = pieces[b:b + batch_size]
        width = max(len(rows[r][s:s + body]) for r, s in chunk) + 2
        ids = torch.full((len(chunk), width), tok.pad_token_id or 0, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, (r, s) in enumerate(chunk):
            piece = rows[r][s:s + body]
            ids[i, :len(piece) + 2] = torch.tensor([tok.cls_token_id, *piece, tok.sep_token_id])
            attention[i, :len(piece) + 2] = 1
            local = masks[r][(masks[r] >= s) & (masks[r] < s + body)] - s
            ids[i, torch.as_tensor(local + 1, dtype=torch.long)] = tok.mask_token_id
        logits = mlm.model(input_ids=ids, attention_mask=attention).logits.float()
        logits[..., ~mlm.allowed[:logits.shape[-1]]] = float("-inf")
        for i, (r, s) in enumerate(chunk):
            local = masks[r][(masks[r] >= s) & (masks[r] < s + body)] - s
            if len(local):
                probs = torch.softmax(logits[i, torch.as_tensor(local + 1, dtype=torch.long)], -1)
                drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1).tolist()
                for p, t in zip(local, drawn):
                    out[r][s + int(p)] = t
    return out
