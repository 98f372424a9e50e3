"""Black-box text attacks on a run, written here (TextAttack downloads its resources at
run time and cannot work offline).

Both attacks rank the words of an input by importance, the drop in the true class's
probability when the word is deleted (TextFooler's eq. 2 without its flip term; n
queries), then edit the most important words first, greedily:

- `charswap` (DeepWordBug, Gao et al. 2018): in each of at most `k` words, the one edit
  among swap two neighbouring letters, delete one, insert one, substitute one, that
  lowers the true class's probability most;
- `wordswap` (TextFooler, Jin et al. 2020): replace the word by one of its nearest
  neighbours (cosine) in the victim's own input-embedding matrix, keeping only
  replacements whose sentence similarity to the original (the bundled MiniLM sentence
  encoder) is >= 0.85, and at most 15% of the words changed.

An attack succeeds only when the prediction flips with every constraint holding. The
victim's predictions are argmax of its logits (a run's decision rule is not applied);
every text the victim scores counts as one query.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass, field

import numpy as np
import torch

from ..backbones import load_backbone
from ..train.loop import Split, predict_logits

STOP_WORDS = frozenset("a an the and or but if of to in on at by for with from as is are was were be been am i me my "
                       "we our you your he she it its they them their this that these those not no so do does did "
                       "has have had will would can could should just than then there here what which who".split())
NEIGHBOURS = 30


class Victim:
    """A text run's classifier as a black box: texts -> class probabilities, queries counted."""

    def __init__(self, model):
        self.model, self.backbone, self.queries = model, model.backbone, 0
        self.tokenizer = self.backbone.tokenizer

    def probs(self, texts: list[str]) -> np.ndarray:
        self.queries += len(texts)
        items = self.backbone.prepare_inputs(texts)
        split = Split(items, torch.zeros(len(items)), [self.backbone.item_length(x) for x in items])
        return torch.softmax(predict_logits(self.model, split), -1).numpy()

    def makes_unk(self, word: str) -> bool:
        unk = self.tokenizer.unk_token_id
        return unk is not None and unk in self.tokenizer(word, add_special_tokens=False)["input_ids"]


class Similarity:
    """Cosine similarity of sentence embeddings from the bundled MiniLM sentence encoder
    (mean pooling, L2-normalised, as its authors use it)."""

    def __init__(self, model: str = "minilm-l6"):
        self.encoder = load_backbone(model, max_length=128)
        self.encoder.eval()

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 64):
            batch = self.encoder.collate(self.encoder.prepare_inputs(texts[i:i + 64]))
            out.append(self.encoder(batch))
        return torch.cat(out)

    def to(self, original: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        e = self.embed([original] + list(texts))
        return (e[1:] @ e[0]).numpy()


@dataclass
class TextAttackResult:
    original: str
    adversarial: str
    label: int
    original_prediction: int
    adversarial_prediction: int
    success: bool
    skipped: bool                  # already misclassified: nothing to attack
    words: int
    words_changed: int
    queries: int
    similarity: float
    edits: int = 0
    unk_edits: int = 0             # edits after which the edited word tokenises to [UNK]
    notes: list = field(default_factory=list)


def split_word(word: str) -> tuple[str, str, str]:
    """Leading punctuation, the core, trailing punctuation ("(great!" -> "(", "great", "!")."""
    core = word.strip(string.punctuation)
    if not core:
        return word, "", ""
    start = word.index(core)
    return word[:start], core, word[start + len(core):]


def importance(victim: Victim, words: list[str], label: int, p_true: float) -> list[int]:
    """Word positions, most important first: the drop in p(label) when the word is deleted."""
    if len(words) < 2:
        return list(range(len(words)))
    probs = victim.probs([" ".join(words[:i] + words[i + 1:]) for i in range(len(words))])
    drop = p_true - probs[:, label]
    return [int(i) for i in np.argsort(-drop, kind="stable")]


def char_edits(word: str, rng: np.random.Generator) -> list[str]:
    """DeepWordBug's four edits of a word's core, at random positions: swap, delete, insert, substitute."""
    pre, core, post = split_word(word)
    if len(core) < 2:
        return []
    letters = string.ascii_lowercase
    i = int(rng.integers(0, len(core) - 1))
    swap = core[:i] + core[i + 1] + core[i] + core[i + 2:]
    j = int(rng.integers(0, len(core)))
    delete = core[:j] + core[j + 1:]
    k = int(rng.integers(0, len(core) + 1))
    insert = core[:k] + letters[int(rng.integers(0, 26))] + core[k:]
    m = int(rng.integers(0, len(core)))
    sub = core[:m] + letters[(letters.find(core[m].lower()) + 1 + int(rng.integers(0, 25))) % 26] + core[m + 1:]
    return [pre + c + post for c in dict.fromkeys((swap, delete, insert, sub)) if c != core]


def _start(victim: Victim, text: str, label: int) -> tuple[list[str], np.ndarray, int]:
    words = text.split()
    p = victim.probs([" ".join(words)])[0]
    return words, p, int(p.argmax())


def charswap(victim: Victim, text: str, label: int, k: int = 3, seed: int = 0,
             similarity: Similarity | None = None) -> TextAttackResult:
    """DeepWordBug: the best of four character edits in each of the k most important words."""
    before = victim.queries
    words, p, pred = _start(victim, text, label)
    result = TextAttackResult(text, text, label, pred, pred, False, pred != label, len(words), 0, 0, 1.0)
    if pred == label:
        rng = np.random.default_rng([seed, len(text)])
        current = list(words)
        for i in importance(victim, words, label, p[label])[:k]:
            options = char_edits(current[i], rng)
            if not options:
                continue
            texts = [" ".join(current[:i] + [o] + current[i + 1:]) for o in options]
            probs = victim.probs(texts)
            best = int(probs[:, label].argmin())
            current[i] = options[best]
            result.words_changed += 1
            result.edits += 1
            result.unk_edits += victim.makes_unk(split_word(options[best])[1])
            result.adversarial_prediction = int(probs[best].argmax())
            if result.adversarial_prediction != label:
                result.success = True
                break
        result.adversarial = " ".join(current)
        if similarity is not None and result.words_changed:
            result.similarity = float(similarity.to(" ".join(words), [result.adversarial])[0])
    result.queries = victim.queries - before
    return result


class Neighbours:
    """Nearest neighbours of a word in the victim's own input-embedding matrix (cosine),
    among whole-word vocabulary entries (alphabetic, not word pieces, not special tokens)."""

    def __init__(self, backbone, n: int = NEIGHBOURS):
        self.tokenizer, self.n = backbone.tokenizer, n
        table = backbone.model.get_input_embeddings().weight.detach().float()
        self.unit = torch.nn.functional.normalize(table, dim=-1)
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(table))))
        self.vocab = vocab
        self.whole = torch.tensor([t.isalpha() and t.isascii() and len(t) > 1 for t in vocab])

    def of(self, word: str) -> list[str]:
        ids = self.tokenizer(word.lower(), add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or not self.whole[ids[0]]:
            return []  # a word the vocabulary splits has no single embedding to search around
        cos = self.unit @ self.unit[ids[0]]
        cos[~self.whole] = -2
        cos[ids[0]] = -2
        return [self.vocab[int(j)] for j in torch.topk(cos, self.n).indices]


def _match_case(new: str, old: str) -> str:
    return new.upper() if old.isupper() and len(old) > 1 else new.capitalize() if old[:1].isupper() else new


def wordswap(victim: Victim, text: str, label: int, neighbours: Neighbours, similarity: Similarity,
             max_fraction: float = 0.15, min_similarity: float = 0.85) -> TextAttackResult:
    """TextFooler: greedy word substitution by importance; a candidate must keep the
    sentence similarity >= min_similarity; at most max_fraction of the words change."""
    before = victim.queries
    words, p, pred = _start(victim, text, label)
    result = TextAttackResult(text, text, label, pred, pred, False, pred != label, len(words), 0, 0, 1.0)
    budget = math.floor(max_fraction * len(words) + 1e-9)
    if pred == label and budget == 0:
        result.notes.append(f"{len(words)} words: {max_fraction:.0%} of them is less than one word")
    if pred == label and budget > 0:
        original, current, p_now = " ".join(words), list(words), p[label]
        for i in importance(victim, words, label, p[label]):
            pre, core, post = split_word(words[i])
            if core.lower() in STOP_WORDS or not core.isalpha():
                continue
            options = [pre + _match_case(c, core) + post for c in neighbours.of(core)]
            texts = [" ".join(current[:i] + [o] + current[i + 1:]) for o in options]
            sims = similarity.to(original, texts)
            keep = [j for j in range(len(texts)) if sims[j] >= min_similarity]
            if not keep:
                continue
            probs = victim.probs([texts[j] for j in keep])
            flipped = [n for n, j in enumerate(keep) if probs[n].argmax() != label]
            n = max(flipped, key=lambda n: sims[keep[n]]) if flipped else int(probs[:, label].argmin())
            if not flipped and probs[n, label] >= p_now:
                continue  # no candidate helps: leave the word as it is
            current[i], p_now = options[keep[n]], probs[n, label]
            result.words_changed += 1
            result.edits += 1
            result.unk_edits += victim.makes_unk(split_word(current[i])[1])
            result.similarity = float(sims[keep[n]])
            result.adversarial_prediction = int(probs[n].argmax())
            result.adversarial = " ".join(current)
            if flipped:
                result.success = True
                break
            if result.words_changed >= budget:
                break
    result.queries = victim.queries - before
    return result
