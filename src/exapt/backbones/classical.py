"""Hand-made features, the `classical` backbone: what a statistician would fit a logistic
regression on before reaching for a pretrained encoder (the `baseline` strategy's model).

- text: TF-IDF of word 1- and 2-grams, as scikit-learn's `TfidfVectorizer(ngram_range=(1, 2),
  max_features=16384)` computes it (lower case, words of 2+ word characters, smoothed IDF,
  rows L2-normalised); the vocabulary (each n-gram's crc32) and the IDF are buffers
  fitted on the training split, so a saved run needs no vocabulary file;
- DNA: frequencies of every k-mer, k = KMIN..KMAX (4^k each; k-mers with N skipped), then
  standardised with the training split's mean and standard deviation;
- proteins: amino-acid (20) and dipeptide (400) composition, standardised likewise;
- numeric columns and images: the raw values (pixels flattened), standardised likewise.

Which of text, DNA and protein an input is, the training split says (`fit_input_stats`):
only bases -> DNA, only residue letters -> protein, anything else -> text. The choice is
kept in a buffer, so a loaded run reads new inputs the way it was trained. Text inputs of
every kind share one width (16,384 slots; DNA and proteins use the first few thousand),
because the head is built before the training split is seen; zero columns leave an
L2-regularised logistic regression unchanged.

Names: `classical` (k = 3..6) or `classical:K` / `classical:KMIN-KMAX` (1 <= k <= 6). There
are no pretrained weights: `scratch:classical` is the same thing.
"""
from __future__ import annotations

import re
import zlib
from collections import Counter

import numpy as np
import torch

from ..errors import ExaptError
from ..registry import BACKBONES
from .base import Backbone, BackboneFamily, LoadOptions
from .sequence_input import DNA_LETTERS, PROTEIN_LETTERS

TEXT_FEATURES = 16384
DEFAULT_KMERS = (3, 6)
MAX_K = 6
MODES = ("text", "dna", "protein", "values")
_WORD = re.compile(r"(?u)\b\w\w+\b")        # scikit-learn's default token_pattern
_LETTERS = re.compile(r"^[A-Z]+$")
_RESIDUE = {c: i for i, c in enumerate(PROTEIN_LETTERS)}


def parse_kmers(base: str) -> tuple[int, int]:
    """`classical` -> (3, 6); `classical:4` -> (4, 4); `classical:2-5` -> (2, 5)."""
    option = base.partition(":")[2].strip()
    if not option:
        return DEFAULT_KMERS
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", option)
    kmin, kmax = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
    if not m or not 1 <= kmin <= kmax <= MAX_K:
        raise ExaptError(f"--model {base!r}: write classical:K or classical:KMIN-KMAX with 1 <= KMIN <= KMAX <= "
                         f"{MAX_K} (the k-mer sizes of DNA features)")
    return kmin, kmax


def ngram_ids(text: str) -> list[int]:
    """crc32 of each word 1- and 2-gram of `text` (lower-cased), in order."""
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return [zlib.crc32(g.encode("utf-8")) for g in grams]


def kmer_counts(seq: str, kmin: int, kmax: int) -> Counter:
    """Slot -> frequency of each k-mer (per k, divided by the number of k-mers of that size)."""
    out: Counter = Counter()
    offset = 0
    codes = ["ACGT".find(c) for c in seq]
    for k in range(kmin, kmax + 1):
        total = max(1, len(seq) - k + 1)
        for i in range(len(seq) - k + 1):
            window = codes[i:i + k]
            if -1 in window:   # an N
                continue
            index = 0
            for c in window:
                index = index * 4 + c
            out[offset + index] += 1.0 / total
        offset += 4 ** k
    return out


def composition(seq: str) -> Counter:
    """Slot -> amino-acid (20 slots) and dipeptide (400 slots) frequency; X is skipped."""
    out: Counter = Counter()
    codes = [_RESIDUE.get(c, -1) for c in seq]
    for c in codes:
        if c >= 0:
            out[c] += 1.0 / max(1, len(seq))
    for a, b in zip(codes, codes[1:]):
        if a >= 0 and b >= 0:
            out[20 + a * 20 + b] += 1.0 / max(1, len(seq) - 1)
    return out


def detect_mode(texts: list[str]) -> str:
    """dna, protein or text, from the training split's inputs: letters only (no spaces) is a
    sequence, DNA when at least 95% of them are bases or N (ambiguity codes such as R or S
    occur in DNA data sets; they are skipped like N)."""
    cleaned = [str(t).strip().upper() for t in texts]
    if not cleaned or not all(_LETTERS.match(t) for t in cleaned):
        return "text"
    letters = "".join(cleaned)
    bases = sum(letters.count(c) for c in DNA_LETTERS + "N")
    return "dna" if bases >= 0.95 * len(letters) else "protein"


class ClassicalBackbone(Backbone):
    """Features computed, not learnt: no parameters, only buffers fitted on the training split.
    Its input kind is "features" for every data kind (it takes text and images too): the
    features depend on the training split, so they are never cached by input alone."""
    input_kind = "features"
    also_accepts = ("text", "image")

    def __init__(self, spec: str, n_inputs: int | tuple[int, ...] | None, kmers: tuple[int, int]):
        super().__init__()
        self.spec, self.kmers = spec, kmers
        self.n_inputs = n_inputs
        self.feature_dim = TEXT_FEATURES if n_inputs is None else int(np.prod(n_inputs))
        self.register_buffer("mode", torch.tensor(MODES.index("text" if n_inputs is None else "values")))
        self.register_buffer("vocab", torch.full((self.feature_dim,), -1, dtype=torch.int64))
        self.register_buffer("idf", torch.ones(self.feature_dim))
        self.register_buffer("mean", torch.zeros(self.feature_dim))
        self.register_buffer("std", torch.ones(self.feature_dim))
        self._slots: tuple[int, dict] | None = None   # (vocab version, crc32 -> slot), rebuilt after a load

    @property
    def kind(self) -> str:
        return MODES[int(self.mode)]

    # -- fitting on the training split ------------------------------------------------------
    def fit_input_stats(self, inputs) -> None:
        if self.n_inputs is None:
            texts = [_as_text(t) for t in inputs]
            self.mode.fill_(MODES.index(detect_mode(texts)))
            if self.kind == "text":
                self._fit_vocabulary(texts)
                return
        x = self.collate(self.prepare_inputs(inputs))["x"]
        self.mean.copy_(x.mean(0))
        std = x.std(0) if len(x) > 1 else torch.ones(self.feature_dim)
        # a column constant in training keeps its scale (as the mlp and StandardScaler do)
        self.std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))

    def _fit_vocabulary(self, texts: list[str]) -> None:
        """The most frequent n-grams (ties: the earlier crc32), their document frequency -> IDF."""
        total, docs = Counter(), Counter()
        for t in texts:
            ids = ngram_ids(t)
            total.update(ids)
            docs.update(set(ids))
        kept = sorted(total, key=lambda g: (-total[g], g))[:self.feature_dim]
        self.vocab.fill_(-1)
        self.idf.fill_(0.0)
        if kept:
            df = torch.tensor([docs[g] for g in kept], dtype=torch.float64)
            self.vocab[:len(kept)] = torch.tensor(kept, dtype=torch.int64)
            self.idf[:len(kept)] = (torch.log((1 + len(texts)) / (1 + df)) + 1).float()
        self._slots = None

    # -- inputs -----------------------------------------------------------------------------
    def prepare_inputs(self, inputs) -> list:
        """Per example: (slots, values) of its non-zero raw features (counts or frequencies)."""
        kind = self.kind
        if kind == "values":
            x = np.asarray(inputs, dtype=np.float32).reshape(len(inputs), -1)
            if x.shape[1] != self.feature_dim:
                raise ExaptError(f"the classical backbone expects {self.feature_dim} inputs (feature columns, or "
                                 f"pixels of an image), got {x.shape[1]}")
            return [(np.arange(self.feature_dim), row) for row in x]
        texts = [_as_text(t) for t in inputs]
        if kind == "text":
            slots = self._slot_table()
            return [_sparse(Counter(slots[g] for g in ngram_ids(t) if g in slots)) for t in texts]
        if kind == "dna":
            return [_sparse(kmer_counts("".join(t.split()).upper(), *self.kmers)) for t in texts]
        return [_sparse(composition("".join(t.split()).upper())) for t in texts]

    def _slot_table(self) -> dict:
        version = self.vocab._version
        if self._slots is None or self._slots[0] != version:
            ids = self.vocab.tolist()
            self._slots = (version, {g: i for i, g in enumerate(ids) if g >= 0})
        return self._slots[1]

    def item_length(self, item) -> int:
        return len(item[0])

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        x = torch.zeros(len(items), self.feature_dim)
        for i, (slots, values) in enumerate(items):
            x[i, torch.as_tensor(slots, dtype=torch.int64)] = torch.as_tensor(values, dtype=torch.float32)
        return {"x": x}

    # -- computation ------------------------------------------------------------------------
    def forward(self, batch):
        x = batch["x"]
        if self.kind == "text":
            x = torch.nn.functional.normalize(x * self.idf, p=2, dim=-1)
            return x
        return (x - self.mean) / self.std

    def blocks(self):
        return []   # nothing to train or freeze: only a head on top

    def identity(self):
        return {"model": self.spec, "family": "classical", "n_inputs": self.n_inputs, "sha256": None,
                "scratch": True}

    def describe(self) -> str:
        return f"{self.spec} ({self.kind} features, {self.feature_dim:,} columns)"


def _as_text(item) -> str:
    return " ".join(map(str, item)) if isinstance(item, (tuple, list)) else str(item)


def _sparse(counts: Counter) -> tuple[np.ndarray, np.ndarray]:
    slots = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    values = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    return slots, values


@BACKBONES.register("classical")
class ClassicalFamily(BackboneFamily):
    """`classical[:K|:KMIN-KMAX]`: TF-IDF, k-mer, composition or raw-value features."""
    input_kind = "features"
    pretrained = False

    def check_name(self, base: str) -> None:
        parse_kmers(base)

    def load(self, base: str, options: LoadOptions) -> ClassicalBackbone:
        kmers = parse_kmers(base)
        spec = "classical" if kmers == DEFAULT_KMERS else f"classical:{kmers[0]}-{kmers[1]}"
        return ClassicalBackbone(spec, options.n_inputs, kmers)

    def rows(self) -> list[dict]:
        return [{"name": "classical[:KMIN-KMAX]", "installed": True,
                 "description": "hand-made features (TF-IDF, k-mers, residue composition, raw values) "
                                "for --strategy baseline"}]
