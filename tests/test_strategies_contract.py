"""The contract every registered strategy must keep, checked on the tiny BERT.

The matrix runs over `STRATEGIES.names()`, so a new strategy is covered (and fails
until its rule is written into `expected_blocks` below). Expectations come from each
strategy's documented rule and its options, checked against a table written by hand
(BY_HAND), never from the strategy's own helpers (first_trainable, trainable_names):

    block 0 = embeddings, block 1 = encoder layer 0, block 2 = encoder layer 1;
    the head always trains.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import exapt
from exapt.config import FitConfig
from exapt.data import load_data
from exapt.errors import ExaptError
from exapt.registry import STRATEGIES
from exapt.run import build_model
from exapt.strategies import parse_strategy
from exapt.tasks import Task
from exapt.train import loop as loop_mod
from exapt.train.checkpoint import load_tensors

E, L0, L1 = "embeddings", "layer.0", "layer.1"
ALL = frozenset({E, L0, L1})
HEAD_ONLY = frozenset()
BLOCK_INDEX = {E: 0, L0: 1, L1: 2}


def quiet(*_a, **_k):
    pass


ORDER = [E, L0, L1]


def expected_blocks(spec: str, epoch: int) -> frozenset:
    """Backbone blocks that train in `epoch` on the 3-block tiny model, from each
    strategy's documented rule and its options (so tuned defaults are followed)."""
    s = parse_strategy(spec)
    if s.name in ("full", "layerwise-lr", "lp-ft", "scratch"):
        return ALL
    if s.name == "linear-probe":
        return HEAD_ONLY
    if s.name == "freeze":                      # the first k blocks stay frozen
        return frozenset(ORDER[s.k:])
    if s.name == "gradual-unfreeze":            # top block(s) first, blocks_per_epoch more each epoch
        return frozenset(ORDER[max(0, 3 - (epoch + 1) * s.blocks_per_epoch):])
    pytest.fail(f"strategy {spec!r} is registered but has no expectation: add its rule to expected_blocks() "
                f"in {__file__}")


# The same, written out by hand for explicit options: spec -> blocks trained in epochs 0, 1, 2, 3.
BY_HAND = {
    "freeze:0": [ALL] * 4,
    "freeze:1": [{L0, L1}] * 4,
    "freeze:2": [{L1}] * 4,
    "freeze:3": [HEAD_ONLY] * 4,
    "freeze:7": [HEAD_ONLY] * 4,
    "gradual-unfreeze:1": [{L1}, {L0, L1}, ALL, ALL],
    "gradual-unfreeze:2": [{L0, L1}, ALL, ALL, ALL],
    "linear-probe:0.5": [HEAD_ONLY] * 4,
    "layerwise-lr:0.5": [ALL] * 4,
    "lp-ft:2.0": [ALL] * 4,
}
EXTRA_SPECS = ["freeze:0", "freeze:1", "freeze:2", "freeze:3", "gradual-unfreeze:2", "layerwise-lr:0.5"]
ALL_SPECS = STRATEGIES.names() + EXTRA_SPECS


def lr_scale_expected(spec: str, block: int, n_blocks: int = 3) -> float:
    s = parse_strategy(spec)
    if s.name == "layerwise-lr":
        return s.decay ** (n_blocks - 1 - block)
    return 1.0


@pytest.mark.parametrize("spec", sorted(BY_HAND))
def test_expectations_match_the_hand_written_table(spec):
    assert [set(expected_blocks(spec, e)) for e in range(4)] == [set(b) for b in BY_HAND[spec]]


# ------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tweets(tweets_small):
    return load_data(str(tweets_small))


def make_model(spec: str, tiny: Path, tweets):
    strategy = parse_strategy(spec)
    cfg = FitConfig(model=str(tiny), strategy=spec)
    task = Task.from_labels("classification", tweets.labels)
    return strategy, task, build_model(cfg, task, None, strategy)


def param_blocks(model) -> dict[str, set[str]]:
    """Parameter names per block, read from the parameter names alone."""
    out: dict[str, set[str]] = {E: set(), L0: set(), L1: set(), "head": set()}
    for name, _ in model.named_parameters():
        if name.startswith("backbone.model.embeddings."):
            out[E].add(name)
        elif name.startswith("backbone.model.encoder.layer.0."):
            out[L0].add(name)
        elif name.startswith("backbone.model.encoder.layer.1."):
            out[L1].add(name)
        elif name.startswith("head."):
            out["head"].add(name)
        else:
            pytest.fail(f"parameter {name} belongs to no block of the tiny BERT")
    assert all(out.values()), {k: len(v) for k, v in out.items()}
    return out


def names_of(blocks: dict[str, set[str]], which) -> set[str]:
    return set().union(*(blocks[b] for b in which)) | blocks["head"]


def real_batch(model, task, tweets, n=16):
    bb = model.backbone
    batch = bb.collate(bb.prepare_inputs(tweets.inputs[:n]))
    return batch, task.encode(tweets.labels[:n])


# ------------------------------------------------------------- which params train
def test_tiny_model_has_the_expected_blocks(tiny_bert, tweets):
    _, _, model = make_model("full", tiny_bert, tweets)
    assert [n for n, _ in model.blocks()] == [E, L0, L1]
    assert sorted(model.head_parameter_names()) == ["head.bias", "head.weight"]
    # every parameter is in exactly one block or the head: nothing is left untrained by accident
    blocks = param_blocks(model)
    assert sum(map(len, blocks.values())) == len(list(model.named_parameters()))


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_trainable_parameters_per_epoch(spec, tiny_bert, tweets):
    strategy, _, model = make_model(spec, tiny_bert, tweets)
    blocks = param_blocks(model)
    for epoch in range(4):
        strategy.apply(model, epoch=epoch)
        got = {n for n, p in model.named_parameters() if p.requires_grad}
        want = names_of(blocks, expected_blocks(spec, epoch))
        assert got == want, (f"{spec} epoch {epoch}: unexpectedly trainable {sorted(got - want)[:4]}, "
                             f"unexpectedly frozen {sorted(want - got)[:4]}")


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_one_optimiser_step_changes_exactly_the_trainable_parameters(spec, tiny_bert, tweets):
    strategy, task, model = make_model(spec, tiny_bert, tweets)
    strategy.apply(model, epoch=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(strategy.param_groups(model, 1e-3, 1e-2, 0.01))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    for m in strategy.frozen_modules(model, 0):
        m.eval()
    batch, y = real_batch(model, task, tweets)
    task.loss(model(batch), y).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == trainable, (f"{spec}: changed but frozen {sorted(changed - trainable)[:4]}, "
                                  f"trainable but unchanged {sorted(trainable - changed)[:4]}")


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_param_groups_learning_rates_and_decay(spec, tiny_bert, tweets):
    strategy, _, model = make_model(spec, tiny_bert, tweets)
    blocks = param_blocks(model)
    block_of = {n: b for b, names in blocks.items() for n in names}
    name_of = {id(p): n for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    lr, head_lr, wd = 2e-4, 5e-3, 0.05
    groups = strategy.param_groups(model, lr, head_lr, wd)

    seen: list[str] = []
    for g in groups:
        names = [name_of[id(p)] for p in g["params"]]
        seen += names
        kinds = {block_of[n] for n in names}
        assert len(kinds) == 1, f"{spec}: one group mixes blocks {kinds}"
        kind = kinds.pop()
        if kind == "head":
            assert g["lr"] == pytest.approx(head_lr, rel=1e-12)
            assert g["weight_decay"] == 0.0
        else:
            assert g["lr"] == pytest.approx(lr * lr_scale_expected(spec, BLOCK_INDEX[kind]), rel=1e-12), (spec, kind)
            for n in names:  # matrices decay, biases and LayerNorm weights do not
                assert g["weight_decay"] == (wd if params[n].ndim > 1 else 0.0), n
    assert len(seen) == len(set(seen)), f"{spec}: a parameter is in two groups"
    ever = set().union(*(expected_blocks(spec, e) for e in range(4)))
    assert set(seen) == names_of(blocks, ever), f"{spec}: the optimiser must hold every parameter that ever trains"


def test_layerwise_lr_values_by_hand(tiny_bert, tweets):
    """lr * decay**(n_blocks - 1 - block) with numbers written out: decay 0.5 -> 0.25, 0.5, 1 x lr."""
    strategy, _, model = make_model("layerwise-lr:0.5", tiny_bert, tweets)
    probes = {E: "backbone.model.embeddings.word_embeddings.weight",
              L0: "backbone.model.encoder.layer.0.attention.self.query.weight",
              L1: "backbone.model.encoder.layer.1.output.dense.bias",
              "head": "head.weight"}
    lr_of = {id(p): g["lr"] for g in strategy.param_groups(model, 1e-3, 1e-2, 0.0) for p in g["params"]}
    got = {b: lr_of[id(model.get_parameter(n))] for b, n in probes.items()}
    assert got == pytest.approx({E: 2.5e-4, L0: 5e-4, L1: 1e-3, "head": 1e-2}, rel=1e-12)


# ------------------------------------------------------------ fit, save and load
def _saved_names(path: Path) -> set[str]:
    with safe_open(str(path / "weights.safetensors"), framework="pt") as f:
        return set(f.keys())


# plain `freeze` (k=4) would leave only the head of the 3-block tiny model: refused, tested elsewhere
@pytest.mark.parametrize("spec", [n if n != "freeze" else "freeze:2" for n in STRATEGIES.names()] + ["freeze:1"])
def test_fit_save_load_round_trip(spec, tiny_bert, tweets, tweets_small, tweets_test_small, tmp_path):
    out = tmp_path / "run"
    # no validation split: the final weights are the last epoch's, not a restored best epoch
    run = exapt.fit(str(tweets_small), spec, str(tiny_bert), epochs=2, val_fraction=0, out=out,
                    progress=False, log=quiet)
    strategy, _, base = make_model(spec, tiny_bert, tweets)  # the weights before any training
    blocks = param_blocks(base)
    trained = set().union(*(expected_blocks(spec, e) for e in range(2)))
    expected = names_of(blocks, trained)

    # fit changed exactly what the strategy trains (linear-probe: the head alone)
    now, then = dict(run.model.named_parameters()), dict(base.named_parameters())
    changed = {n for n in now if not torch.equal(now[n].detach(), then[n].detach())}
    assert changed == expected, f"{spec}: changed {sorted(changed - expected)[:3]}, unchanged {sorted(expected - changed)[:3]}"

    # the weights file holds only what differs from the base model (everything for scratch)
    saved = _saved_names(out)
    if spec == "scratch":
        assert saved == set(base.state_dict())
    else:
        assert saved == expected
    if spec == "linear-probe":
        assert saved == {"head.weight", "head.bias"}
    if spec == "freeze:1":
        assert not any(n.startswith("backbone.model.embeddings.") for n in saved)
        assert any(n.startswith("backbone.model.encoder.layer.0.") for n in saved)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == sum(then[n].numel() for n in expected)
    assert metrics["total_parameters"] == sum(p.numel() for p in then.values())
    assert metrics["epochs_run"] == (0 if spec == "linear-probe" else 2)

    loaded = exapt.load_run(out)
    for n, v in run.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[n], v), n
    a, b = run.predict(str(tweets_test_small)), loaded.predict(str(tweets_test_small))
    assert len(a) == 60
    assert list(a["prediction"]) == list(b["prediction"])
    probs = [c for c in a.columns if c.startswith("p_")]
    assert probs == ["p_negative", "p_neutral", "p_positive"]
    assert np.abs(a[probs].to_numpy() - b[probs].to_numpy()).max() < 1e-6
    # the reported test metrics are the ones the saved run reproduces on the same split
    assert set(metrics["test"]) == {"accuracy", "macro_f1", "auroc"}


# ------------------------------------------------------------ resume == no interruption
def _interrupt_at(mp, spec: str, at_epoch: int) -> None:
    cls = type(parse_strategy(spec))
    original = cls.apply

    def apply(self, model, epoch):
        if epoch == at_epoch:
            raise KeyboardInterrupt
        return original(self, model, epoch)

    mp.setattr(cls, "apply", apply)


def _history(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in (path / "history.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("spec", ["full", "freeze:1", "gradual-unfreeze", "layerwise-lr", "scratch", "lp-ft"])
def test_resume_after_kill_equals_uninterrupted(spec, tiny_bert_dropout, tweets_small, tweets_test_small,
                                                tmp_path, monkeypatch):
    kw = dict(epochs=4, progress=False, log=quiet)
    whole = exapt.fit(str(tweets_small), spec, str(tiny_bert_dropout), out=tmp_path / "whole", **kw)

    part = tmp_path / "part"
    with monkeypatch.context() as mp:
        _interrupt_at(mp, spec, 2)
        with pytest.raises(KeyboardInterrupt):
            exapt.fit(str(tweets_small), spec, str(tiny_bert_dropout), out=part, **kw)
    # killed during epoch 3: two epochs checkpointed, nothing that looks complete
    assert not (part / "metrics.json").exists()
    assert not (part / "weights.safetensors").exists()
    assert (part / "checkpoint.safetensors").exists()
    assert load_tensors(part / "checkpoint.safetensors")[1]["epoch"] == 2
    with pytest.raises(ExaptError, match="not a complete run"):
        exapt.load_run(part)
    with pytest.raises(ExaptError, match="--resume"):
        exapt.fit(str(tweets_small), spec, str(tiny_bert_dropout), out=part, **kw)

    resumed = exapt.resume(part, progress=False, log=quiet)
    assert (part / "metrics.json").exists()
    assert not (part / "checkpoint.safetensors").exists()

    h_whole, h_part = _history(tmp_path / "whole"), _history(part)
    assert [h["epoch"] for h in h_part] == [1, 2, 3, 4]
    assert h_part == [pytest.approx(h, rel=1e-6, abs=1e-7) for h in h_whole]

    w_whole, _ = load_tensors(tmp_path / "whole" / "weights.safetensors")
    w_part, _ = load_tensors(part / "weights.safetensors")
    assert set(w_whole) == set(w_part)
    for n in w_whole:
        assert torch.allclose(w_whole[n], w_part[n], atol=1e-6), n
    assert resumed.metrics["test"] == pytest.approx(whole.metrics["test"], abs=1e-6)
    assert resumed.metrics["best_epoch"] == whole.metrics["best_epoch"]


def test_resume_test_would_catch_a_lost_rng_state(tiny_bert_dropout, tweets_small, tmp_path, monkeypatch):
    """Guard for the test above: with dropout on, resuming without restoring the RNG
    state gives different weights, so the equality above really tests the restore."""
    kw = dict(epochs=3, progress=False, log=quiet)
    exapt.fit(str(tweets_small), "full", str(tiny_bert_dropout), out=tmp_path / "whole", **kw)
    part = tmp_path / "part"
    with monkeypatch.context() as mp:
        _interrupt_at(mp, "full", 2)
        with pytest.raises(KeyboardInterrupt):
            exapt.fit(str(tweets_small), "full", str(tiny_bert_dropout), out=part, **kw)
    monkeypatch.setattr(loop_mod, "set_rng_state", lambda *a: None)
    exapt.resume(part, progress=False, log=quiet)
    assert _history(part)[:2] == _history(tmp_path / "whole")[:2]
    assert _history(part)[2]["train_loss"] != pytest.approx(_history(tmp_path / "whole")[2]["train_loss"], abs=1e-6)


# ------------------------------------------------------------ freeze prefix cache
def test_freeze_prefix_cache_gives_the_same_result(tiny_bert, tweets_small, tmp_path, monkeypatch):
    from exapt.backbones.hf import HFBackbone

    calls = {"n": 0}
    suffix = HFBackbone.forward_suffix

    def counting(self, state, k):
        calls["n"] += 1
        return suffix(self, state, k)

    monkeypatch.setattr(HFBackbone, "forward_suffix", counting)
    runs = {}
    for cache in (True, False):
        calls["n"] = 0
        runs[cache] = exapt.fit(str(tweets_small), "freeze:1", str(tiny_bert), epochs=2, cache_prefix=cache,
                                out=tmp_path / str(cache), progress=False, log=quiet)
        assert (calls["n"] > 0) == cache, "cache_prefix must decide whether the cached prefix is used"
    with_cache, without = runs[True], runs[False]
    assert with_cache.metrics["test"] == pytest.approx(without.metrics["test"], abs=1e-5)
    assert _history(tmp_path / "True") == [pytest.approx(h, abs=1e-5) for h in _history(tmp_path / "False")]
    a, b = with_cache.model.state_dict(), without.model.state_dict()
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-5), n
