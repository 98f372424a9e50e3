"""The tokenizer and the masked-LM model that `exapt pretrain` starts from.

From scratch: a Hugging Face fast tokenizer built for the alphabet (single bases,
overlapping k-mers, residues, or WordPiece learnt from the text corpus) and a BERT of
the size `--arch` names. Continued (`--init MODEL`): the model's own tokenizer and
weights; its masked-LM head when the checkpoint has one, a fresh head otherwise.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from pathlib import Path

from ..backbones import ALIASES, alias_tokenizer, resolve_alias
from ..backbones.sequence_input import DNA_LETTERS, PROTEIN_LETTERS, SequenceInput
from ..errors import ExaptError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# name: (hidden, layers, heads, intermediate) -- small enough to pre-train on 2 CPU cores
ARCHS = {
    "tiny": (128, 4, 4, 512),     # ~0.8 M parameters in the encoder
    "small": (256, 6, 4, 1024),   # ~4.8 M
    "base": (512, 8, 8, 2048),    # ~25 M (AntiBERTy-sized); hours on a CPU
}
MAX_POSITIONS = 512


def symbols(seq_input: SequenceInput) -> list[str]:
    if seq_input.alphabet == "dna":
        letters = DNA_LETTERS + "N"
        if seq_input.kmer == 1:
            return list(letters)
        return ["".join(p) for p in itertools.product(letters, repeat=seq_input.kmer)]
    if seq_input.alphabet == "protein":
        return list(PROTEIN_LETTERS + "X")
    raise ValueError("text vocabularies are learnt from the corpus")


def build_tokenizer(seq_input: SequenceInput, text_iterator=None, vocab_size: int = 8000):
    """A PreTrainedTokenizerFast that AutoTokenizer reloads from the saved folder."""
    from tokenizers import (  # heavy: imported on first use
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast  # heavy: imported on first use

    if seq_input.is_sequence:
        vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + symbols(seq_input))}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        if seq_input.kmer > 1:  # k-mers arrive space-separated (see SequenceInput)
            tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        else:                   # one token per letter
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")])
    else:
        if text_iterator is None:
            raise ValueError("a text tokenizer needs the corpus to learn its vocabulary")
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                            show_progress=False)
        tok.train_from_iterator(text_iterator, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=MAX_POSITIONS)


def load_vocabulary(folder, what: str = "--tokenizer"):
    """The tokenizer saved in FOLDER (an earlier `exapt pretrain` model, or any folder with
    a BERT-style fast tokenizer), for pre-training a text model from scratch on a known
    vocabulary. Hugging Face's WordPiece trainer is not deterministic (huggingface/tokenizers
    issue 1794: ties between merges are broken in hash-map order), so reusing a saved
    vocabulary is the one way to repeat a text run exactly, and what `--resume` does."""
    from transformers import AutoTokenizer  # heavy: imported on first use
    from transformers.utils import logging as hf_logging  # heavy: imported on first use

    hf_logging.set_verbosity_error()
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ExaptError(f"{what} {folder}: no such folder")
    seq_input = SequenceInput.from_folder(path)
    if seq_input is not None and seq_input.alphabet != "text":
        raise ExaptError(f"{what} {folder}: a {seq_input.alphabet} model; only text vocabularies are reused "
                         "(DNA and protein vocabularies are fixed)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError... for a folder without one
        raise ExaptError(f"{what} {folder}: no tokenizer to load ({str(e).splitlines()[0][:200]})") from None
    missing = [t for t in ("mask", "pad", "cls", "sep") if getattr(tokenizer, f"{t}_token_id") is None]
    if missing or not getattr(tokenizer, "is_fast", False):
        raise ExaptError(f"{what} {folder}: a masked-LM vocabulary needs a fast tokenizer with [MASK], [PAD], [CLS] "
                         f"and [SEP] tokens" + (f" (missing: {', '.join(missing)})" if missing else ""))
    return tokenizer


def vocabulary_sha256(tokenizer) -> str:
    """A fingerprint of the vocabulary (tokens and their ids): equal for two models whose ids mean the same."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


def arch_config(arch: str, vocab_size: int, pad_id: int):
    """A BertConfig for a named size or a CONFIG.json file (any BertConfig fields)."""
    from transformers import BertConfig  # heavy: imported on first use

    if arch in ARCHS:
        hidden, layers, heads, inter = ARCHS[arch]
        fields = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=inter)
    else:
        path = Path(arch)
        if not path.is_file():
            raise ExaptError(f"--arch {arch!r}: not one of {', '.join(ARCHS)} nor a CONFIG.json file")
        try:
            fields = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ExaptError(f"--arch {path}: not readable JSON ({e})") from None
        if not isinstance(fields, dict):
            raise ExaptError(f"--arch {path}: must hold a JSON object of BertConfig fields")
        fields = {k: v for k, v in fields.items() if k not in ("vocab_size", "pad_token_id")}
    fields.setdefault("max_position_embeddings", MAX_POSITIONS)
    try:
        config = BertConfig(vocab_size=vocab_size, pad_token_id=pad_id, **fields)
    except (TypeError, ValueError) as e:
        raise ExaptError(f"--arch {arch}: {e}") from None
    if config.hidden_size % config.num_attention_heads:
        raise ExaptError(f"--arch {arch}: hidden_size {config.hidden_size} is not a multiple of "
                         f"num_attention_heads {config.num_attention_heads}")
    return config


def init_model(spec: str):
    """(masked-LM model, tokenizer, SequenceInput or None, folder) for `--init MODEL`."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer  # heavy: imported on first use
    from transformers.utils import logging as hf_logging  # heavy: imported on first use

    hf_logging.set_verbosity_error()
    folder = resolve_alias(spec) if spec in ALIASES else Path(spec).expanduser()
    if not (folder / "config.json").exists():
        raise ExaptError(f"--init {spec!r}: not an alias ({', '.join(ALIASES)}) nor a Hugging Face model folder")
    tokenizer, seq_input = alias_tokenizer(spec, folder)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        if config.model_type != "bert":
            raise ExaptError(f"--init {spec!r}: a {config.model_type} model; exapt pretrain continues BERT-family "
                             "encoders only")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=False,
                                                               output_loading_info=True)
        # a sentence encoder (MiniLM) ships no masked-LM head: it starts untrained, say so
        model.exapt_fresh_head = any(k.startswith("cls.") for k in info.get("missing_keys", []))
    except ExaptError:
        raise
    except Exception as e:
        raise ExaptError(f"--init {spec!r}: cannot load {folder}: {str(e).splitlines()[0][:300]}") from None
    if tokenizer.mask_token_id is None:
        raise ExaptError(f"--init {spec!r}: its tokenizer has no [MASK] token")
    return model, tokenizer, seq_input or SequenceInput.from_folder(folder), folder
