"""How raw biological sequences become the text a model folder's tokenizer expects.

A model that exapt pre-trains on DNA or protein records, in `exapt.json` beside its
weights, how its inputs were written: upper case, unknown letters mapped to N (DNA) or
X (protein), overlapping k-mers joined by spaces (the tokenizer cannot make
overlapping pieces itself), or residues separated by spaces (AntiBERTy's vocabulary
works on space-separated residues). `exapt fit --model FOLDER` reads the same file,
so a user passes plain sequences such as "ACGTTGCA" at every stage.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ExaptError

SETTINGS_FILE = "exapt.json"

DNA_LETTERS = "ACGT"
# 20 standard residues; the rarer codes (B, Z, U, O, J) and unknowns become X.
PROTEIN_LETTERS = "ACDEFGHIKLMNPQRSTVWY"
ALPHABETS = ("dna", "protein", "text")
_UNKNOWN = {"dna": "N", "protein": "X"}
_NOT_LETTER = re.compile(r"[^A-Za-z*\-.]")


@dataclass(frozen=True)
class SequenceInput:
    alphabet: str = "text"   # dna | protein | text
    kmer: int = 1            # DNA only: overlapping k-mers as tokens
    spaced: bool = False     # residues/bases separated by spaces (AntiBERTy-style vocabularies)

    def __post_init__(self):
        if self.alphabet not in ALPHABETS:
            raise ExaptError(f"--alphabet must be one of {', '.join(ALPHABETS)} (got {self.alphabet!r})")
        if self.kmer < 1 or self.kmer > 8:
            raise ExaptError(f"--kmer must be between 1 and 8 (got {self.kmer})")
        if self.kmer > 1 and self.alphabet != "dna":
            raise ExaptError("--kmer applies to --alphabet dna only")

    @property
    def is_sequence(self) -> bool:
        return self.alphabet in ("dna", "protein")

    def clean(self, seq: str, where: str = "") -> str:
        """Upper case, gaps/stops dropped, unknown letters -> N or X; refuses non-letters."""
        if not self.is_sequence:
            return seq
        seq = "".join(seq.split())
        bad = _NOT_LETTER.search(seq)
        if bad:
            raise ExaptError(f"{where or 'sequence'}: {bad.group()!r} at position {bad.start() + 1} "
                             f"is not a {self.alphabet} letter")
        seq = seq.upper().replace("*", "").replace("-", "").replace(".", "")
        letters = DNA_LETTERS if self.alphabet == "dna" else PROTEIN_LETTERS
        unknown = _UNKNOWN[self.alphabet]
        return seq.translate(_unknown_table(letters, unknown))

    def to_tokenizer_text(self, seq: str, where: str = "") -> str:
        """The string handed to the tokenizer for one (cleaned) sequence."""
        seq = self.clean(seq, where)
        if self.kmer > 1:
            return " ".join(seq[i:i + self.kmer] for i in range(max(1, len(seq) - self.kmer + 1)))
        if self.spaced:
            return " ".join(seq)
        return seq

    # -- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_folder(cls, folder: Path) -> "SequenceInput | None":
        path = Path(folder) / SETTINGS_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text()).get("input", {})
            return cls(alphabet=data.get("alphabet", "text"), kmer=int(data.get("kmer", 1)),
                       spaced=bool(data.get("spaced", False)))
        except (OSError, ValueError, AttributeError) as e:
            raise ExaptError(f"{path}: unreadable ({e})") from None


def pretrained_window(folder: Path) -> int | None:
    """The window, in tokens, `exapt pretrain` trained the model in `folder` on (its
    exapt.json); None for a folder exapt did not pre-train. Positions beyond it were never
    trained, so it is the model's natural --max-length."""
    try:
        return int(json.loads((Path(folder) / SETTINGS_FILE).read_text())["pretrain"]["config"]["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


_TABLES: dict[tuple[str, str], dict] = {}


def _unknown_table(letters: str, unknown: str) -> dict:
    """str.translate table mapping every upper-case letter outside `letters` to `unknown`."""
    key = (letters, unknown)
    if key not in _TABLES:
        _TABLES[key] = {ord(c): unknown for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in letters}
    return _TABLES[key]
