"""`exapt rank`: layer features, truncated copies, the cache, source-head scores from runs and
classifier checkpoints, --validate, the CLI, and the errors users can cause. Tiny BERT
everywhere except one ranking of the real MiniLM against its scratch twin."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import exapt
from exapt.backbones import load_backbone
from exapt.data import load_data
from exapt.errors import ExaptError
from exapt.select import leep, nce
from exapt.select import layer_cache
from exapt.select.cli import add_parser, run as cli_run
from exapt.select.candidates import parse_candidates
from exapt.select.layer_cache import layer_features, source_probabilities, truncated_model_folder
from exapt.select.rank import DEFAULT_SCORES, rank
from exapt.train.features import encode

from conftest import TWEETS, quiet

CLASSES = ["negative", "neutral", "positive"]


def texts_of(path) -> list[str]:
    return list(load_data(str(path)).inputs)


def own_features(model: str, texts, max_length: int = 128) -> np.ndarray:
    bb = load_backbone(model, max_length=max_length)
    return encode(bb, bb.prepare_inputs(texts), progress=False).numpy()


def cache_shards() -> list:
    from exapt.train.features import cache_root

    return sorted((cache_root() / "rank").glob("*/shard-*.safetensors"))


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory, tiny_bert):
    """A tiny Hugging Face BertForSequenceClassification folder with 4 source classes."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-clf")
    cfg = BertConfig.from_pretrained(tiny_bert)
    cfg.num_labels = 4
    cfg.id2label = {i: f"src{i}" for i in range(4)}
    cfg.label2id = {f"src{i}": i for i in range(4)}
    torch.manual_seed(1)
    BertForSequenceClassification(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(out)
    return out


# ----------------------------------------------------------------- layer features
def test_last_layer_is_the_backbones_own_output(tiny_bert, tweets_small):
    texts = texts_of(tweets_small)[:20]
    feats = layer_features(str(tiny_bert), texts, "all")
    assert sorted(feats) == [1, 2] and feats[1].shape == (20, 32)
    np.testing.assert_allclose(feats[2], own_features(str(tiny_bert), texts), atol=1e-6)
    assert not np.allclose(feats[1], feats[2])          # a different layer is a different feature


def test_truncated_folder_has_the_layer_features(tiny_bert, tweets_small, tmp_path):
    texts = texts_of(tweets_small)[:20]
    folder = truncated_model_folder(str(tiny_bert), 1, tmp_path / "tiny-1")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1
    assert (folder / "tokenizer.json").exists() or (folder / "vocab.txt").exists()
    bb = load_backbone(str(folder))
    assert len(bb.layers) == 1
    np.testing.assert_allclose(own_features(str(folder), texts), layer_features(str(tiny_bert), texts, [1])[1],
                               atol=1e-6)
    # a scratch twin's truncated copy holds the same random weights that were scored
    scratch = truncated_model_folder(f"scratch:{tiny_bert}", 1, tmp_path / "scratch-1", seed=3)
    np.testing.assert_allclose(own_features(str(scratch), texts),
                               layer_features(f"scratch:{tiny_bert}", texts, [1], seed=3)[1], atol=1e-6)


@pytest.mark.slow
def test_pretrained_minilm_outranks_its_scratch_twin(minilm_dir, tweets_small, tweets_test_small, tmp_path):
    """The real encoder against the same architecture with random weights, on real tweets;
    the truncated copy keeps the sentence-transformers pooling (mean + L2 normalisation)."""
    frame = rank(str(TWEETS / "train_n64_s0.csv"), "minilm-l6,scratch:minilm-l6", test=str(tweets_test_small),
                 max_length=32, progress=False, log=quiet)
    by = frame.set_index("candidate")
    for score in DEFAULT_SCORES:       # 192 tweets: every score prefers the pretrained weights
        assert by.loc["minilm-l6", score] > by.loc["scratch:minilm-l6", score], score
        assert by.loc["minilm-l6", f"{score}_rank"] == 1
    said = frame.attrs["meta"]["suggestion"]
    assert said["candidate"] == "minilm-l6" and said["by"] == "linear-probe-cv" and not said["close"]
    assert said["few_examples"] and said["n_train"] == 192 and said["dim"] == 384   # LogME is flagged here
    # On the 48 tweets of tweets_small (n < d = 384) LogME does not separate them (it is
    # unreliable with fewer examples than dimensions); the other three scores still do.
    small = rank(str(tweets_small), "minilm-l6,scratch:minilm-l6", test=str(tweets_test_small), max_length=32,
                 progress=False, log=quiet).set_index("candidate")
    for score in ("h-score", "knn", "linear-probe-cv"):
        assert small.loc["minilm-l6", score] > small.loc["scratch:minilm-l6", score], score

    texts = texts_of(tweets_small)[:8]
    folder = truncated_model_folder("minilm-l6", 2, tmp_path / "minilm-2", max_length=32)
    assert (folder / "modules.json").exists() and any((folder / p).is_dir() for p in ("1_Pooling",))
    bb = load_backbone(str(folder), max_length=32)
    assert bb.normalize and bb.pooling == "mean" and len(bb.layers) == 2
    np.testing.assert_allclose(own_features(str(folder), texts, 32),
                               layer_features("minilm-l6", texts, [2], max_length=32)[2], atol=1e-5)


# ----------------------------------------------------------------- the cache
def test_second_rank_reads_the_cache(tiny_bert, tweets_small, monkeypatch):
    models = f"{tiny_bert},scratch:{tiny_bert}"
    first = rank(str(tweets_small), models, layers="all", progress=False, log=quiet)
    assert len(first) == 4          # (the cache is shared by the session: earlier tests encoded some texts)
    shards = cache_shards()

    def boom(*_a, **_k):
        raise AssertionError("the encoder ran although every feature was cached")

    monkeypatch.setattr(layer_cache, "_load_encoder", boom)
    monkeypatch.setattr(layer_cache, "_encode", boom)
    second = rank(str(tweets_small), models, layers="all", progress=False, log=quiet)
    assert cache_shards() == shards
    assert (second["cache_hits"] == first.attrs["meta"]["n_train"]).all()
    pd.testing.assert_frame_equal(first.drop(columns=["score_seconds", "cache_hits"]),
                                  second.drop(columns=["score_seconds", "cache_hits"]))
    # a subset of the same texts (another seed's sample) is served from the cache too
    sub = rank(str(tweets_small), models, layers="2", n_per_class=4, progress=False, log=quiet)
    assert list(sub["candidate"]) == [f"{tiny_bert}@2", f"scratch:{tiny_bert}@2"]


# ----------------------------------------------------------------- source heads
def test_leep_and_nce_from_a_run_with_a_head(probe_run, tiny_bert, tweets_small, tweets_test_small):
    frame = rank(str(tweets_small), [str(probe_run), str(tiny_bert)], scores="logme,leep,nce",
                 test=str(tweets_test_small), progress=False, log=quiet)
    by = frame.set_index("candidate")
    assert bool(by.loc[str(probe_run), "source_head"]) and not bool(by.loc[str(tiny_bert), "source_head"])
    assert np.isnan(by.loc[str(tiny_bert), "leep"]) and np.isnan(by.loc[str(tiny_bert), "nce"])
    # the same numbers as the run's own predictions put through the formulas
    pred = exapt.load_run(probe_run).predict(str(tweets_small))
    probs = pred[[f"p_{c}" for c in CLASSES]].to_numpy()
    labels = load_data(str(tweets_small)).labels
    assert by.loc[str(probe_run), "leep"] == pytest.approx(leep(probs, labels), abs=1e-5)
    assert by.loc[str(probe_run), "nce"] == pytest.approx(nce(probs, labels), abs=1e-9)
    assert by.loc[str(probe_run), "leep"] <= 0 and by.loc[str(probe_run), "nce"] <= 0
    # the run's encoder is the probe's (unchanged) base model: same LogME
    assert by.loc[str(probe_run), "logme"] == pytest.approx(by.loc[str(tiny_bert), "logme"], abs=1e-9)


def test_leep_from_a_classifier_checkpoint(classifier_ckpt, tweets_small):
    texts = texts_of(tweets_small)
    probs = source_probabilities(str(classifier_ckpt), texts)
    from transformers import AutoModelForSequenceClassification

    clf = AutoModelForSequenceClassification.from_pretrained(classifier_ckpt).eval()
    bb = load_backbone(str(classifier_ckpt))
    with torch.no_grad():
        batch = bb.collate(bb.prepare_inputs(texts[:5]))
        want = torch.softmax(clf(**batch).logits, -1).numpy()
    np.testing.assert_allclose(probs[:5], want, atol=1e-5)
    frame = rank(str(tweets_small), str(classifier_ckpt), scores="leep,nce,logme", progress=False, log=quiet)
    assert frame.loc[0, "kind"] == "classifier" and np.isfinite(frame.loc[0, "leep"])
    # its last layer is still the plain backbone's output
    np.testing.assert_allclose(layer_features(str(classifier_ckpt), texts[:5])[2],
                               own_features(str(classifier_ckpt), texts[:5]), atol=1e-5)


def test_a_lora_run_is_merged_before_ranking(tiny_bert, tweets_small, tmp_path):
    out = tmp_path / "lora"
    exapt.fit(str(tweets_small), "lora:r=2", str(tiny_bert), epochs=1, out=out, progress=False, log=quiet)
    texts = texts_of(tweets_small)[:10]
    run = exapt.load_run(out)
    items = run.model.backbone.prepare_inputs(texts)
    with torch.no_grad():
        want = run.model.backbone(run.model.backbone.collate(items)).numpy()
    np.testing.assert_allclose(layer_features(str(out), texts)[2], want, atol=1e-5)


# ----------------------------------------------------------------- --validate
def test_validate_writes_tau_per_score(tiny_bert, tweets_small, tweets_test_small, tmp_path, monkeypatch):
    out = tmp_path / "rank"
    frame = rank(str(tweets_small), [f"{tiny_bert}@1", str(tiny_bert), f"scratch:{tiny_bert}"], seed=1,
                 validate=True, strategy="linear-probe", test=str(tweets_test_small), out=out, progress=False,
                 log=quiet)
    assert {"rank.csv", "tau.csv", "rank.png", "rank.md", "rank.json", "finetune"} == {p.name for p in out.iterdir()}
    tau = pd.read_csv(out / "tau.csv")
    assert list(tau["score"]) == list(DEFAULT_SCORES)
    assert {"weighted_tau", "kendall_tau", "pick", "picks_best"} <= set(tau.columns)
    assert (tau["n_candidates"] == 3).all()
    table = pd.read_csv(out / "rank.csv")
    assert table["test_accuracy"].between(0, 1).all() and (table["finetune_seconds"] > 0).all()
    assert list(table["candidate"]) == list(frame["candidate"])
    meta = json.loads((out / "rank.json").read_text())
    assert meta["n_train"] == 48 and meta["rank_to_finetune_ratio"] > 0
    # each fine-tuning trained on exactly the scored examples, from the candidate's own network
    records = [json.loads(p.read_text()) for p in sorted((out / "finetune").glob("*.json"))]
    assert {r["n_train"] for r in records} == {48}
    truncated = next(r for r in records if r["candidate"].endswith("@1"))
    assert json.loads((Path(truncated["model"]) / "config.json").read_text())["num_hidden_layers"] == 1
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))
    assert (out / "rank.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same call again reuses every fine-tuning result
    def no_fit(*_a, **_k):
        raise AssertionError("fine-tuned again")

    with monkeypatch.context() as m:
        m.setattr(sys.modules["exapt.select.rank_validate"], "fit", no_fit)   # where --validate calls exapt.fit
        again = rank(str(tweets_small), [f"{tiny_bert}@1", str(tiny_bert), f"scratch:{tiny_bert}"], seed=1,
                     validate=True, strategy="linear-probe", test=str(tweets_test_small), out=out, progress=False,
                     log=quiet)
    assert list(again["test_accuracy"]) == list(frame["test_accuracy"])
    assert pd.DataFrame(frame.attrs["tau"])["score"].tolist() == list(DEFAULT_SCORES)
    assert len(pd.concat([frame, again])) == 6          # attrs hold no DataFrame that pandas cannot compare
    # other data in the same folder needs --overwrite
    with pytest.raises(ExaptError, match="other data or options.*--overwrite"):
        rank(str(tweets_small), str(tiny_bert), seed=2, out=out, progress=False, log=quiet)
    rank(str(tweets_small), str(tiny_bert), seed=2, out=out, overwrite=True, progress=False, log=quiet)
    assert not (out / "tau.csv").exists() and not (out / "finetune").exists()


# ----------------------------------------------------------------- the suggestion
def _scored(**columns) -> pd.DataFrame:
    frame = pd.DataFrame({"candidate": ["a", "b", "c"], "dim": [384, 384, 128]})
    for name, values in columns.items():
        frame[name.replace("_", "-")] = values
    return frame


def test_the_suggestion_follows_the_probe_and_names_a_close_call():
    from exapt.select.suggest import suggest, suggestion_lines

    frame = _scored(logme=[-0.52, -0.51, -0.60], knn=[0.66, 0.67, 0.55], linear_probe_cv=[0.672, 0.647, 0.60])
    s = suggest(frame, ["logme", "knn", "linear-probe-cv"], n_train=768)
    se = (0.672 * 0.328 / 768) ** 0.5                       # a binomial standard error: 0.0169
    assert s["candidate"] == "a" and s["by"] == "linear-probe-cv" and s["standard_error"] == pytest.approx(se, abs=1e-4)
    assert s["close"] == [] and s["picks"] == {"logme": "b", "knn": "b"} and not s["few_examples"]
    s = suggest(frame, ["logme", "knn", "linear-probe-cv"], n_train=192)   # se 0.034: b is within it
    assert s["close"] == ["b"] and s["few_examples"] and s["dim"] == 384
    text = "\n".join(suggestion_lines(s))
    assert "suggested: a (best by linear-probe-cv, 0.672); logme picks b, knn picks b" in text
    assert "a close call: b within one standard error (0.034)" in text and "192 examples for 384 feature" in text


def test_without_the_probe_the_suggestion_follows_logme_and_none_without_scores():
    from exapt.select.suggest import suggest, suggestion_lines

    frame = _scored(logme=[-0.52, -0.51, -0.60], leep=[float("nan")] * 3)
    s = suggest(frame, ["logme", "leep"], n_train=48)
    assert s["candidate"] == "b" and s["by"] == "logme" and s["close"] == [] and s["standard_error"] is None
    assert s["picks"] == {} and s["few_examples"]               # leep: no candidate has it
    assert "add linear-probe-cv to --scores" in "\n".join(suggestion_lines(s))
    assert suggest(_scored(leep=[float("nan")] * 3), ["leep"], n_train=48) is None
    assert suggestion_lines(None) == []


# ----------------------------------------------------------------- the command
def test_cli_end_to_end(tiny_bert, tweets_small, tweets_test_small, tmp_path, capsys):
    from exapt.cli import _Parser

    parser = _Parser(prog="exapt")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_parser(sub)
    out = tmp_path / "r"
    args = parser.parse_args(["rank", str(tweets_small), "--models", f"{tiny_bert},scratch:{tiny_bert}",
                              "--layers", "all", "--scores", "logme,knn", "--test", str(tweets_test_small),
                              "--validate", "--epochs", "1", "--out", str(out), "--quiet"])
    assert args.command == "rank" and args.max_length == 128 and args.strategy == "linear-probe"
    cli_run(args)
    printed = capsys.readouterr().out
    assert f"{tiny_bert}@1" in printed and "weighted Kendall tau" in printed and "rank.md" in printed
    assert "suggested: " in printed and "(best by logme, " in printed   # no linear-probe-cv asked for: LogME leads
    table = pd.read_csv(out / "rank.csv")
    assert len(table) == 4 and {"logme", "logme_rank", "knn", "knn_rank", "test_accuracy"} <= set(table.columns)
    assert len(pd.read_csv(out / "tau.csv")) == 2
    with pytest.raises(ExaptError):   # --models is required (our parser turns argparse's exit into one line)
        parser.parse_args(["rank", str(tweets_small)])


# ----------------------------------------------------------------- errors users can cause
@pytest.mark.parametrize("kwargs, message", [
    ({"models": "no-such-model"}, "no such alias, model folder or run folder"),
    ({"models": "{tiny}@3"}, r"layer 3 is out of range; .* has 2 layers"),
    ({"models": "{tiny}@x"}, "MODEL@K with K a layer number"),
    ({"models": "{tiny}", "layers": "0,1"}, "--layers"),
    ({"models": "{tiny}", "scores": "logme,fancy"}, "unknown score 'fancy'"),
    ({"models": "{tiny}", "scores": "leep"}, "none of the candidates .* has a source classifier"),
    ({"models": "{tiny}", "validate": True}, "--validate needs at least 2 candidates"),
    ({"models": "{tiny},scratch:{tiny}", "validate": True, "strategy": "nonsense"}, "nonsense"),
    ({"models": "mlp"}, "compares text encoders, efficientnet-lite0 and runs"),
    ({"models": "cnn:8,16"}, "the cnn backbone has no pretrained weights"),
    ({"models": "efficientnet-lite0:8"}, "image size of at least 32"),
    ({"models": "efficientnet-lite0:32"}, "the candidates are image models .* but this data has texts"),
    ({"models": "{tiny},efficientnet-lite0:32"}, "mixes image models .*efficientnet-lite0:32.* with text encoders"),
    ({"models": ""}, "name at least one candidate"),
    ({"models": "{tiny}", "n_per_class": 0}, "--n-per-class"),
])
def test_bad_input(tiny_bert, tweets_small, kwargs, message):
    kwargs = {k: v.format(tiny=tiny_bert) if isinstance(v, str) else v for k, v in kwargs.items()}
    models = kwargs.pop("models")
    with pytest.raises(ExaptError, match=message):
        rank(str(tweets_small), models, progress=False, log=quiet, **kwargs)


def test_bad_out_folder_and_runs(tiny_bert, tweets_small, tmp_path, probe_run):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ExaptError, match="not an earlier `exapt rank` output"):
        rank(str(tweets_small), str(tiny_bert), out=foreign, overwrite=True, progress=False, log=quiet)
    assert (foreign / "notes.txt").read_text() == "keep me"
    # an interrupted run is refused; a run@K has no head (LEEP reads the last layer only)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text((probe_run / "config.yaml").read_text())
    with pytest.raises(ExaptError, match="not a complete run"):
        parse_candidates(str(half))
    with pytest.raises(ExaptError, match="none of the candidates .*@1.* has a source classifier"):
        rank(str(tweets_small), f"{probe_run}@1", scores="leep", progress=False, log=quiet)


def test_regression_keeps_logme_only(tiny_bert, tweets_small, tmp_path):
    frame = pd.read_csv(tweets_small)
    frame["label"] = np.random.default_rng(0).normal(size=len(frame)).round(3)
    data = tmp_path / "reg.csv"
    frame.to_csv(data, index=False)
    table = rank(str(data), str(tiny_bert), progress=False, log=quiet)     # default scores: the ones that apply
    assert table.attrs["meta"]["task"] == "regression" and table.attrs["meta"]["scores"] == ["logme"]
    assert np.isfinite(table.loc[0, "logme"])
    with pytest.raises(ExaptError, match="knn: does not support a regression task"):
        rank(str(data), str(tiny_bert), scores="logme,knn", progress=False, log=quiet)


def test_interrupted_validate_resumes_in_the_same_folder(tmp_path, tiny_bert, tweets_small, tweets_test_small,
                                                         monkeypatch):
    fit_module = sys.modules["exapt.select.rank_validate"]  # where --validate calls exapt.fit
    real, calls = fit_module.fit, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second candidate's fine-tuning
        return real(*a, **k)

    out = tmp_path / "rank"
    kw = dict(validate=True, strategy="linear-probe", test=str(tweets_test_small), out=out, progress=False,
              log=quiet)
    candidates = [f"{tiny_bert}@1", str(tiny_bert), f"scratch:{tiny_bert}"]
    with monkeypatch.context() as m:
        m.setattr(fit_module, "fit", interrupted)
        with pytest.raises(KeyboardInterrupt):
            rank(str(tweets_small), candidates, **kw)
    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(fit_module, "fit", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
        table = rank(str(tweets_small), candidates, **kw)
    assert len(calls) == 2 and table["test_accuracy"].notna().all()


# ----------------------------------------------------------------- image models
@pytest.mark.slow
def test_rank_efficientnet_blocks_on_images(tmp_path, monkeypatch):
    """Every block of efficientnet-lite0 (and its scratch twin) is a candidate; the last
    block's features are the backbone's own output, the others what the next block
    receives, averaged over the image; ImageNet features beat random ones."""
    kw = dict(n_per_class=6, max_test=60, progress=False, log=quiet)
    table = rank("mnist", "efficientnet-lite0:32,scratch:efficientnet-lite0:32", layers="all", **kw)
    assert len(table) == 18 and set(table["layer"]) == set(range(1, 10))
    assert table["logme"].notna().all()
    pre = table[table["kind"] == "pretrained"].set_index("layer")
    scratch = table[table["kind"] == "scratch"].set_index("layer")
    assert pre["linear-probe-cv"].max() > scratch["linear-probe-cv"].max()

    images = load_data("mnist").inputs[:5]
    feats = layer_features("efficientnet-lite0:32", images, "all")
    assert [feats[k].shape[1] for k in range(1, 10)] == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    bb = load_backbone("efficientnet-lite0:32").eval()
    with torch.no_grad():
        batch = bb.collate(bb.prepare_inputs(images))
        own = bb(batch).numpy()
        stem = bb.model._bn0(bb.model._conv_stem(bb._network_input(batch["x"])))
    np.testing.assert_allclose(feats[9], own, rtol=1e-5, atol=1e-5)
    # layer 1: the stem after its activation (what stage 1 receives), averaged over the image
    activated = torch.nn.functional.relu6(stem).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(feats[1], activated, rtol=1e-5, atol=1e-5)

    # the cache serves a second call without running the network
    def boom(*_a, **_k):
        raise AssertionError("the encoder ran although every feature was cached")

    monkeypatch.setattr(layer_cache, "_load_encoder", boom)
    again = rank("mnist", "efficientnet-lite0:32,scratch:efficientnet-lite0:32", layers="all", **kw)
    pd.testing.assert_frame_equal(table.drop(columns=["score_seconds", "cache_hits"]),
                                  again.drop(columns=["score_seconds", "cache_hits"]))
    monkeypatch.undo()

    # --validate fine-tunes whole models; a block's features are scored only
    with pytest.raises(ExaptError, match="fine-tunes whole image models only"):
        rank("mnist", "efficientnet-lite0:32@5,efficientnet-lite0:32", validate=True, **kw)
    out = tmp_path / "rank"
    valid = rank("mnist", "efficientnet-lite0:32,scratch:efficientnet-lite0:32", validate=True,
                 strategy="linear-probe", out=out, **kw)
    assert valid["test_accuracy"].notna().all() and (out / "rank.png").exists()
    assert pd.DataFrame(valid.attrs["tau"])["n_candidates"].eq(2).all()


@pytest.mark.slow
def test_rank_a_cnn_run_on_another_image_set(tmp_path):
    """A cnn trained on mnist-8x8 is a candidate for optdigits: per block, with LEEP/NCE
    from its head, and --validate fine-tunes it from the run (exapt fit --init RUN)."""
    src = exapt.fit("mnist-8x8", strategy="full", model="cnn:8,16", n_per_class=20, epochs=3, lr=3e-3,
                    out=tmp_path / "src", progress=False, log=quiet)
    kw = dict(n_per_class=8, max_test=80, progress=False, log=quiet)
    table = rank("optdigits", str(src.path), layers="all", scores="logme,leep,nce", **kw)
    assert list(table["layer"]) == [1, 2] and list(table["source_head"]) == [False, True]
    assert np.isfinite(table.loc[1, "leep"]) and np.isnan(table.loc[0, "leep"])
    images = load_data("optdigits").inputs[:4]
    feats = layer_features(str(src.path), images, "all")
    bb = exapt.load_run(src.path).model.backbone.eval()
    with torch.no_grad():
        batch = bb.collate(bb.prepare_inputs(images))
        np.testing.assert_allclose(feats[2], bb(batch).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(feats[1], bb.layers[0](batch["x"]).mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    out = tmp_path / "rank"
    valid = rank("optdigits", f"{src.path},efficientnet-lite0:32", validate=True, strategy="linear-probe", out=out,
                 **kw)
    assert valid["test_accuracy"].notna().all()
    record = next(json.loads(p.read_text()) for p in (out / "finetune").glob("*.json")
                  if json.loads(p.read_text())["init"])
    assert record["init"] == str(src.path) and record["model"] == "cnn:8,16"
