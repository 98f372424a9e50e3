"""Inputs longer than the window (issue 22, part 1): the model's own --max-length, the
truncation count every fit reports, and `--long chunk`: overlapping windows pooled per
input, in training, prediction, the feature cache and `rank`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import quiet

import exapt
from exapt.backbones import load_backbone, model_max_length
from exapt.backbones.windows import cut_windows, pool_windows
from exapt.config import FitConfig, LongInputs
from exapt.errors import ExaptError
from exapt.run_folder import RunFolder
from exapt.select.layer_cache import layer_features
from exapt.train.features import FeatureCache, encode

LONG_TEXT = "the flight was delayed again and the crew said nothing while we waited at the gate " * 6


# ------------------------------------------------------------------ the default length
def test_default_max_length_is_the_models_own(tiny_bert):
    assert FitConfig().max_length is None
    assert model_max_length("minilm-l6") == 256            # sentence_bert_config.json: max_seq_length
    assert model_max_length(str(tiny_bert)) == 512         # no sentence-transformers config: the position table
    assert model_max_length("antiberty") in (None, 512)    # its position table (None: not installed)
    assert model_max_length("mlp") is None                 # not a token model
    assert load_backbone(str(tiny_bert), max_length=None).max_length == 512


def test_a_fit_records_the_resolved_length_and_reloads_with_it(tiny_bert, tweets_small, tmp_path):
    run = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), out=tmp_path / "r", progress=False, log=quiet)
    assert run.config.max_length == 512
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["max_length"] == 512
    assert exapt.load_run(tmp_path / "r").model.backbone.max_length == 512


def test_a_run_made_before_keeps_its_length(tiny_bert, tweets_small, tmp_path):
    """A config.yaml of an older exapt: max_length 128 and no `long` key."""
    exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), out=tmp_path / "r", max_length=128,
              progress=False, log=quiet)
    path = tmp_path / "r" / "config.yaml"
    old = yaml.safe_load(path.read_text())
    old.pop("long")
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    run = exapt.load_run(tmp_path / "r")
    assert run.config.max_length == 128 and run.config.long is None and run.model.backbone.max_length == 128
    assert run.model.backbone.long is None and "long" not in run.model.backbone.identity()


# ------------------------------------------------------------------ the parts
def test_long_spec_parses_and_refuses():
    assert LongInputs.parse("chunk") == LongInputs(None, "mean")
    assert LongInputs.parse("chunk:64,pool=attention") == LongInputs(64, "attention")
    assert LongInputs.parse("chunk:pool=attention") == LongInputs(None, "attention")
    for bad, match in [("chunk:pool=max", "unknown pooling 'max'"), ("slide", "the only way is chunk"),
                       ("chunk:0", "neither a stride"), ("chunk:x", "neither a stride")]:
        with pytest.raises(ExaptError, match=match):
            LongInputs.parse(bad)
    with pytest.raises(ExaptError, match="--long"):
        FitConfig(long="chunk:pool=sum")


def test_windows_cover_every_token_and_overlap():
    ids = list(range(100, 110))
    windows = cut_windows(ids, content=4, stride=2, frame=([1], [2]))
    assert [w[1:-1] for w in windows] == [[100, 101, 102, 103], [102, 103, 104, 105], [104, 105, 106, 107],
                                          [106, 107, 108, 109]]
    assert all(w[0] == 1 and w[-1] == 2 for w in windows)
    assert cut_windows([5, 6], content=4, stride=2, frame=([1], [2])) == [[1, 5, 6, 2]]  # short: one window
    # the last window ends at the input's end even when the stride does not reach it
    assert cut_windows(list(range(7)), 4, 2, ([], [])) == [[0, 1, 2, 3], [2, 3, 4, 5], [3, 4, 5, 6]]


def test_window_pooling():
    emb = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    owner = torch.tensor([0, 0, 1, 2])
    mean = pool_windows(emb, owner, 3, "mean")
    assert torch.allclose(mean, torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, 5.0]]))
    att = pool_windows(emb, owner, 3, "attention")
    assert torch.allclose(att[1:], mean[1:])  # one window: itself
    # two windows: a convex mix that leans to the one agreeing more with their mean
    assert 2.0 < att[0, 0] < 3.0 and att[0, 1] == 0


# ------------------------------------------------------------------ the backbone
def test_chunked_backbone_gives_one_vector_per_input(tiny_bert):
    plain = load_backbone(str(tiny_bert), max_length=16).eval()
    chunked = load_backbone(str(tiny_bert), max_length=16, long="chunk").eval()
    texts = ["short one", LONG_TEXT]
    items = chunked.prepare_inputs(texts)
    assert len(items[0]) == 1 and len(items[1]) > 5
    assert all(len(w) <= 16 for w in items[1])
    with torch.no_grad():
        out = chunked(chunked.collate(items))
        assert out.shape == (2, plain.feature_dim)
        # an input that fits one window is read exactly as without --long
        assert torch.allclose(out[0], plain(plain.collate(plain.prepare_inputs(texts[:1])))[0], atol=1e-6)
        assert not torch.allclose(out[1], plain(plain.collate(plain.prepare_inputs(texts[1:])))[0], atol=1e-3)
    assert chunked.n_too_long(texts, items) == 1 and plain.n_too_long(texts, plain.prepare_inputs(texts)) == 1
    assert not chunked.supports_prefix
    assert chunked.identity()["long"] == "chunk" and "long" not in plain.identity()
    assert FeatureCache(chunked).dir != FeatureCache(plain).dir  # the cache key includes the chunking
    with pytest.raises(ExaptError, match="must be smaller than the window"):
        load_backbone(str(tiny_bert), max_length=16, long="chunk:14")


def test_truncation_count_is_exact(tiny_bert, tweets_small):
    bb = load_backbone(str(tiny_bert), max_length=24)
    texts = list(pd.read_csv(tweets_small)["text"])
    full = bb.tokenizer(texts, truncation=False)["input_ids"]
    assert bb.n_too_long(texts, bb.prepare_inputs(texts)) == sum(len(ids) > 24 for ids in full) > 0


# ------------------------------------------------------------------ fit, predict, rank
def test_fit_reports_truncation_and_chunks_end_to_end(tiny_bert, tweets_small, tweets_test_small, tmp_path):
    lines = []
    exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), test=str(tweets_test_small), max_length=16,
              out=tmp_path / "cut", progress=False, log=lines.append)
    cut = RunFolder(tmp_path / "cut").read_metrics()
    assert cut["n_truncated"]["test"] > 0 and "n_chunked" not in cut
    assert any("inputs longer than 16 tokens, truncated" in line for line in lines)
    for strategy, spec in [("linear-probe", "chunk:pool=attention"), ("full", "chunk:6")]:
        out = tmp_path / strategy
        run = exapt.fit(str(tweets_small), strategy, str(tiny_bert), test=str(tweets_test_small), max_length=16,
                        long=spec, epochs=1, out=out, progress=False, log=quiet)
        m = RunFolder(out).read_metrics()
        assert m["n_truncated"] == {"train": 0, "val": 0, "test": 0}
        assert m["n_chunked"]["test"] == cut["n_truncated"]["test"]
        loaded = exapt.load_run(out)
        assert loaded.config.long == spec and loaded.model.backbone.long is not None
        again = loaded.evaluate(str(tweets_test_small))  # prediction reads the windows the same way
        assert again["accuracy"] == pytest.approx(m["test"]["accuracy"])
        assert run.config.long == spec


def test_rank_features_pool_the_windows(tiny_bert):
    texts = ["short one", LONG_TEXT, LONG_TEXT + " and more"]
    got = layer_features(str(tiny_bert), texts, max_length=16, long="chunk")[2]
    bb = load_backbone(str(tiny_bert), max_length=16, long="chunk")
    own = encode(bb, bb.prepare_inputs(texts), progress=False).numpy()
    assert np.allclose(got, own, atol=1e-5)
    plain = layer_features(str(tiny_bert), texts, max_length=16)[2]
    assert not np.allclose(plain[1], got[1], atol=1e-3)


# ------------------------------------------------------------------ DNA: a real built-in
@pytest.fixture(scope="module")
def dna_model(tmp_path_factory):
    """A tiny DNA encoder from `exapt pretrain` (4 steps, windows of 24 tokens)."""
    from exapt.pretrain import pretrain

    rng = np.random.default_rng(0)
    genome = tmp_path_factory.mktemp("genome") / "g.fa"
    genome.write_text(">chr\n" + "".join(rng.choice(list("ACGT"), 6000)) + "\n")
    arch = tmp_path_factory.mktemp("arch") / "tiny.json"
    arch.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 64}))
    out = tmp_path_factory.mktemp("dna") / "model"
    pretrain(str(genome), out=out, alphabet="dna", arch=str(arch), steps=4, batch_size=16, max_length=24,
             progress=False, log=quiet)
    return out


def test_dna_builtin_defaults_to_the_pretrained_window_and_chunks(dna_model, tmp_path):
    assert model_max_length(str(dna_model)) == 24  # exapt.json: the windows it was trained on
    run = exapt.fit("promoters", "linear-probe", str(dna_model), out=tmp_path / "cut", progress=False, log=quiet)
    cut = RunFolder(tmp_path / "cut").read_metrics()
    assert run.config.max_length == 24
    assert cut["n_truncated"]["test"] == cut["n_test"]  # 57 bases > 22
    exapt.fit("promoters", "linear-probe", str(dna_model), long="chunk", out=tmp_path / "chunk", progress=False,
              log=quiet)
    chunked = RunFolder(tmp_path / "chunk").read_metrics()
    assert chunked["n_chunked"]["test"] == chunked["n_test"] and chunked["n_truncated"]["test"] == 0
    assert 0 <= chunked["test"]["accuracy"] <= 1


def test_a_compare_folder_made_before_resumes_with_its_length(tiny_bert, tweets_small, tmp_path):
    """A panel from before the default became the model's own holds max_length 128: run
    again without --max-length it continues (nothing re-run), and a new one takes 512."""
    options = dict(strategies="linear-probe", n_per_class="4", seeds=1, tracking=False, progress=False, log=quiet)
    first = exapt.compare(str(tweets_small), str(tiny_bert), out=tmp_path / "old", max_length=128, **options)
    said = []
    again = exapt.compare(str(tweets_small), str(tiny_bert), out=tmp_path / "old", **{**options, "log": said.append})
    assert any("1 of 1 cells already done" in line for line in said)
    assert again.results["test_accuracy"].tolist() == first.results["test_accuracy"].tolist()
    exapt.compare(str(tweets_small), str(tiny_bert), out=tmp_path / "new", **options)
    assert yaml.safe_load((tmp_path / "new" / "compare.yaml").read_text())["settings"]["max_length"] == 512
