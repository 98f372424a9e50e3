"""Shared fixtures: a tiny BERT folder (fast), tiny CSVs, an isolated cache.

The tiny model is a real Hugging Face BERT folder (config, tokenizer, safetensors
weights) with 2 layers of width 32, saved once per session with MiniLM's vocabulary:
every code path that a full-size model takes, at a fraction of the cost.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch thread: the tiny models gain nothing from more, and on a shared 2-core
# machine two threads fighting another process made fits ~8x slower. Set before torch
# is imported; exapt's configure_threads() respects it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.exists():
    SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
TWEETS = SHARED / "data" / "tweets"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from exapt.backbones import resolve_alias

    return resolve_alias("minilm-l6")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_dir) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_dir, layers=2, heads=2)


def _save_tiny_bert(out: Path, minilm_dir: Path, layers: int, heads: int) -> Path:
    """A BERT of width 32, seeded, with MiniLM's vocabulary and tokenizer, saved to `out`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=64, max_position_embeddings=512, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dropout(tmp_path_factory, tiny_bert) -> Path:
    """The same tiny model with dropout on: makes RNG handling matter (resume tests)."""
    import json

    out = tmp_path_factory.mktemp("tiny-bert-dropout")
    for f in tiny_bert.iterdir():
        shutil.copy(f, out / f.name)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="session")
def tweets_small(tmp_path_factory) -> Path:
    """48 real tweets (16 per class) from the fixed splits, as a plain CSV."""
    src = TWEETS / "train_n16_s0.csv"
    if not src.exists():
        pytest.skip(f"{src} missing")
    return src


@pytest.fixture(scope="session")
def tweets_test_small(tmp_path_factory) -> Path:
    import pandas as pd

    if not (TWEETS / "test.csv").exists():
        pytest.skip(f"{TWEETS / 'test.csv'} missing")
    df = pd.read_csv(TWEETS / "test.csv").groupby("label").head(20)
    out = tmp_path_factory.mktemp("tweets") / "test60.csv"
    df.to_csv(out, index=False)
    return out


def quiet(*_args, **_kwargs) -> None:
    """A `log=` for exapt.fit that prints nothing."""


@pytest.fixture(scope="session")
def probe_run(tmp_path_factory, tiny_bert, tweets_small) -> Path:
    """One complete linear-probe run (tiny BERT, 48 tweets), shared read-only by tests
    that need an existing run; tests that change a run must make their own."""
    import exapt

    out = tmp_path_factory.mktemp("probe-run") / "run"
    with pytest.MonkeyPatch.context() as mp:  # same isolated cache as the autouse fixture
        mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
        exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), out=out, progress=False, log=quiet)
    return out


@pytest.fixture(scope="session")
def tiny_bert3(tmp_path_factory, minilm_dir) -> Path:
    """A 3-layer tiny BERT: distil and prune need layers to cut and heads to remove."""
    return _save_tiny_bert(tmp_path_factory.mktemp("tiny-bert3"), minilm_dir, layers=3, heads=4)


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory, tiny_bert3, tweets_small) -> Path:
    """A `full` run of the 3-layer tiny BERT: the teacher distil and prune read (read-only)."""
    import exapt

    out = tmp_path_factory.mktemp("teacher") / "run"
    with pytest.MonkeyPatch.context() as mp:  # same isolated cache as the autouse fixture
        mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
        exapt.fit(str(tweets_small), "full", str(tiny_bert3), out=out, epochs=2, max_length=32, progress=False,
                  log=quiet)
    return out


def interrupt_at(mp, spec: str, at_epoch: int) -> None:
    """Make strategy `spec` raise KeyboardInterrupt (Ctrl-C) when epoch `at_epoch` starts
    (0-based): the resume tests' simulated kill. `mp`: a MonkeyPatch; undo() ends it."""
    from exapt.strategies import parse_strategy

    cls = type(parse_strategy(spec))
    original = cls.apply

    def apply(self, model, epoch):
        if epoch == at_epoch:
            raise KeyboardInterrupt
        return original(self, model, epoch)

    mp.setattr(cls, "apply", apply)
