"""The contract every registered strategy must keep, checked on the tiny BERT.

The matrix runs over `STRATEGIES.names()`, so a new strategy is covered (and fails
until its rule is written into `expected_blocks` below). Expectations come from each
strategy's documented rule and its options, checked against a table written by hand
(BY_HAND), never from the strategy's own helpers (first_trainable, trainable_names):

    block 0 = embeddings, block 1 = encoder layer 0, block 2 = encoder layer 1;
    the head always trains.

The parameter-efficient strategies (NEW_MODULE) keep the pretrained weights frozen and
train "the new parameters + the head (+ every parameter of the top `unfreeze_top`
blocks)". Which parameters are new is worked out here from the names alone, never from
the strategy's `is_new`: whatever exists only after injection (compared with the plain
model that `full` builds) is new, except for bitfit, whose new parameters are the
existing ones named `backbone.*.bias`. Injected names are mapped back to their block by
dropping PEFT's `base_model.model.` infix and `.base_layer` wrapper and the adapter's
`.base` wrapper (`base_name`).
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
from exapt.files import load_tensors

from conftest import interrupt_at

E, L0, L1 = "embeddings", "layer.0", "layer.1"
ALL = frozenset({E, L0, L1})
HEAD_ONLY = frozenset()
BLOCK_INDEX = {E: 0, L0: 1, L1: 2}
VIRTUAL = "virtual tokens"  # prompt / prefix embeddings: in front of the encoder, in no block
NEW_MODULE = ("lora", "ia3", "prompt", "prefix", "adapter", "bitfit")
PEFT_LIBRARY = ("lora", "ia3", "prompt", "prefix")  # the ones whose runs carry adapter/
PRETRAINED_LR = 5e-5  # the documented lr of unfrozen pretrained blocks, written out (not imported)


def quiet(*_a, **_k):
    pass


ORDER = [E, L0, L1]


def expected_blocks(spec: str, epoch: int) -> frozenset:
    """Backbone blocks that train in `epoch` on the 3-block tiny model, from each
    strategy's documented rule and its options (so tuned defaults are followed)."""
    s = parse_strategy(spec)
    if s.name in ("full", "layerwise-lr", "lp-ft", "scratch", "baseline-cnn"):
        return ALL
    if s.name in ("linear-probe", "baseline"):  # the baseline: a probe on its own features
        return HEAD_ONLY
    if s.name == "freeze":                      # the first k blocks stay frozen
        return frozenset(ORDER[s.k:])
    if s.name == "gradual-unfreeze":            # top block(s) first, blocks_per_epoch more each epoch
        return frozenset(ORDER[max(0, 3 - (epoch + 1) * s.blocks_per_epoch):])
    if s.name in NEW_MODULE:                    # pretrained blocks: only the top `unfreeze_top` train
        top = getattr(s, "unfreeze_top", 0)     # (bitfit, prompt, prefix have no such option)
        return frozenset(ORDER[3 - min(top, 3):])
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
    # new-module strategies: the pretrained blocks that train in full (new parameters come on top)
    "lora:r=4,layer_decay=0.5": [HEAD_ONLY] * 4,
    "lora:unfreeze_top=1": [{L1}] * 4,
    "adapter:size=8,unfreeze_top=2": [{L0, L1}] * 4,
    "ia3:unfreeze_top=9": [ALL] * 4,
    "bitfit": [HEAD_ONLY] * 4,
    "prompt:tokens=3": [HEAD_ONLY] * 4,
}
EXTRA_SPECS = ["freeze:0", "freeze:1", "freeze:2", "freeze:3", "gradual-unfreeze:2", "layerwise-lr:0.5",
               "lora:r=4,layer_decay=0.5", "lora:unfreeze_top=1", "adapter:size=8",
               "adapter:size=8,layer_decay=0.5,unfreeze_top=1", "ia3:layer_decay=0.5,unfreeze_top=2",
               "bitfit:0.5", "prompt:tokens=3", "prefix:tokens=3"]
ALL_SPECS = STRATEGIES.names() + EXTRA_SPECS

# New parameters on the tiny model (hidden 32, feed-forward 64, 2 layers), by hand:
# lora r=8 on query+value: 2 layers x 2 targets x (A 8x32 + B 32x8);
# ia3: key, value scaled on the output side (32 each), attention.output.dense and output.dense on the input side (32, 64);
# adapter size 64 after 2 sublayers x 2 layers: down 32x64+64, up 64x32+32;
# bitfit: embeddings LayerNorm bias + per layer q,k,v,o (4x32), 2 LayerNorms (2x32), intermediate 64, output 32;
# prompt 20 x 32; prefix 20 x (2 layers x key,value x 32).
NEW_BY_HAND = {  # strategy -> (tensors, numbers)
    "lora": (8, 2 * 2 * (8 * 32 + 32 * 8)),
    "ia3": (8, 2 * (32 + 32 + 32 + 64)),
    "adapter": (16, 2 * 2 * (32 * 64 + 64 + 64 * 32 + 32)),
    "bitfit": (17, 32 + 2 * (4 * 32 + 2 * 32 + 64 + 32)),
    "prompt": (1, 20 * 32),
    "prefix": (1, 20 * 2 * 2 * 32),
}


def lr_scale_expected(spec: str, block: int, n_blocks: int = 3) -> float:
    s = parse_strategy(spec)
    if s.name == "layerwise-lr":
        return s.decay ** (n_blocks - 1 - block)
    return 1.0


def lr_expected(spec: str, kind: str, new: bool, lr: float, n_blocks: int = 3) -> float:
    """The lr of a backbone parameter of block `kind`; `new`: injected (or bitfit's biases)."""
    s = parse_strategy(spec)
    if s.name not in NEW_MODULE:
        return lr * lr_scale_expected(spec, BLOCK_INDEX[kind], n_blocks)
    if kind == VIRTUAL:  # no layer_decay option: always lr
        assert not hasattr(s, "layer_decay")
        return lr
    # new modules at lr, unfrozen pretrained blocks at the small pretrained lr: both x layer_decay**(blocks above)
    scale = getattr(s, "layer_decay", 1.0) ** (n_blocks - 1 - BLOCK_INDEX[kind])
    return (lr if new else PRETRAINED_LR) * scale


@pytest.mark.parametrize("spec", sorted(BY_HAND))
def test_expectations_match_the_hand_written_table(spec):
    assert [set(expected_blocks(spec, e)) for e in range(4)] == [set(b) for b in BY_HAND[spec]]


def test_every_new_module_strategy_is_registered():
    assert set(NEW_MODULE) <= set(STRATEGIES.names())


# ------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tweets(tweets_small):
    return load_data(str(tweets_small))


def make_model(spec: str, tiny: Path, tweets):
    strategy = parse_strategy(spec)
    cfg = FitConfig(model=str(tiny), strategy=spec)
    task = Task.from_labels("classification", tweets.labels)
    return strategy, task, build_model(cfg, task, None, strategy)


def base_name(name: str) -> str:
    """The plain model's name of a parameter of an injected model: PEFT's infix
    (`base_model.model.` for LoRA/IA3, `base_model.` for prompt learning) and wrapper
    (`.base_layer`), and the adapter's wrapper (`.base`), dropped. New parameters keep
    their own tail (`...query.lora_A.default.weight`, `...dense.adapter.up.bias`)."""
    for infix in ("backbone.model.base_model.model.", "backbone.model.base_model."):
        if name.startswith(infix):
            name = "backbone.model." + name[len(infix):]
            break
    return name.replace(".base_layer.", ".").replace(".base.", ".")


def new_parameter_names(spec: str, model, plain: set[str]) -> set[str]:
    """Parameters a strategy adds: whatever has no counterpart in the plain model
    (bitfit adds none: its rule is every bias of the backbone)."""
    names = [n for n, _ in model.named_parameters()]
    if parse_strategy(spec).name == "bitfit":
        return {n for n in names if n.startswith("backbone.") and n.endswith(".bias")}
    return {n for n in names if base_name(n) not in plain}


def param_blocks(model) -> dict[str, set[str]]:
    """Parameter names per block, read from the parameter names alone (injected
    parameters join the block whose module they sit in)."""
    out: dict[str, set[str]] = {E: set(), L0: set(), L1: set(), "head": set(), VIRTUAL: set()}
    for name, _ in model.named_parameters():
        base = base_name(name)
        if base.startswith("backbone.model.embeddings."):
            out[E].add(name)
        elif base.startswith("backbone.model.encoder.layer.0."):
            out[L0].add(name)
        elif base.startswith("backbone.model.encoder.layer.1."):
            out[L1].add(name)
        elif base.startswith("head."):
            out["head"].add(name)
        elif base.startswith("backbone.model.prompt_encoder."):
            out[VIRTUAL].add(name)
        else:
            pytest.fail(f"parameter {name} belongs to no block of the tiny BERT")
    assert all(out[k] for k in (E, L0, L1, "head")), {k: len(v) for k, v in out.items()}
    return out


def names_of(blocks: dict[str, set[str]], which) -> set[str]:
    return set().union(*(blocks[b] for b in which)) | blocks["head"]


def expected_trainable(spec: str, model, plain: set[str], epoch: int) -> set[str]:
    """Every parameter of the blocks that train + the head (+ the new parameters)."""
    want = names_of(param_blocks(model), expected_blocks(spec, epoch))
    if parse_strategy(spec).name in NEW_MODULE:
        want |= new_parameter_names(spec, model, plain)
    return want


@pytest.fixture(scope="module")
def plain(tiny_bert, tweets) -> set[str]:
    """Parameter names of the plain model (no strategy adds anything to `full`)."""
    _, _, model = make_model("full", tiny_bert, tweets)
    return {n for n, _ in model.named_parameters()}


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
def test_injection_keeps_every_pretrained_weight(spec, tiny_bert, tweets, plain):
    """Injected models hold each plain parameter once (renamed at most), unchanged; the
    strategies whose new modules start at zero (LoRA's B, the adapter's up) or one (IA3)
    start exactly from the pretrained function."""
    _, task, model = make_model(spec, tiny_bert, tweets)
    _, _, reference = make_model("full", tiny_bert, tweets)
    name = parse_strategy(spec).name
    new = new_parameter_names(spec, model, plain)
    if name not in NEW_MODULE:
        assert not new, f"{spec} adds parameters {sorted(new)[:3]}"
    elif name in NEW_BY_HAND and spec == name:  # default options: the counts written out above
        params = dict(model.named_parameters())
        assert (len(new), sum(params[n].numel() for n in new)) == NEW_BY_HAND[name]
    ref = dict(reference.named_parameters())
    old = [n for n, _ in model.named_parameters() if name == "bitfit" or n not in new]
    assert sorted(base_name(n) for n in old) == sorted(ref), f"{spec}: pretrained parameters lost or duplicated"
    for n in old:
        assert torch.equal(model.get_parameter(n), ref[base_name(n)]), n
    if name in ("lora", "ia3", "adapter", "bitfit"):
        model.eval()
        reference.eval()
        batch, _ = real_batch(model, task, tweets)
        with torch.no_grad():
            assert torch.allclose(model(batch), reference(batch), atol=1e-6), f"{spec} changes the function at init"


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_trainable_parameters_per_epoch(spec, tiny_bert, tweets, plain):
    strategy, _, model = make_model(spec, tiny_bert, tweets)
    for epoch in range(4):
        strategy.apply(model, epoch=epoch)
        got = {n for n, p in model.named_parameters() if p.requires_grad}
        want = expected_trainable(spec, model, plain, epoch)
        assert got == want, (f"{spec} epoch {epoch}: unexpectedly trainable {sorted(got - want)[:4]}, "
                             f"unexpectedly frozen {sorted(want - got)[:4]}")


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_one_optimiser_step_changes_exactly_the_trainable_parameters(spec, tiny_bert, tweets, plain):
    """One step changes exactly the trainable parameters, with one exception by design:
    LoRA's B and the adapter's up projection start at zero (training starts from the
    pretrained function), so their partners (A, down) get a zero gradient in the first
    step and move from the second."""
    strategy, task, model = make_model(spec, tiny_bert, tweets)
    strategy.apply(model, epoch=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(spec, model, plain, 0)
    zero = {n for n in trainable if ".lora_B." in n or ".adapter.up." in n}
    partners = {n for n in trainable if ".lora_A." in n or ".adapter.down." in n}
    assert bool(zero) == bool(partners) == (parse_strategy(spec).name in ("lora", "adapter"))
    assert all(not model.get_parameter(n).any() for n in zero), f"{spec}: B / up must start at zero"
    opt = torch.optim.AdamW(strategy.param_groups(model, 1e-3, 1e-2, 0.01))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    for m in strategy.frozen_modules(model, 0):
        m.eval()

    def step(rows: slice) -> set[str]:
        bb = model.backbone
        batch = bb.collate(bb.prepare_inputs(tweets.inputs[rows]))
        task.loss(model(batch), task.encode(tweets.labels[rows])).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}

    changed, want = step(slice(0, 16)), trainable - partners
    assert changed == want, (f"{spec}: changed but frozen {sorted(changed - want)[:4]}, "
                             f"trainable but unchanged {sorted(want - changed)[:4]}")
    if partners:
        changed = step(slice(16, 32))
        assert changed == trainable, (f"{spec} step 2: changed but frozen {sorted(changed - trainable)[:4]}, "
                                      f"trainable but unchanged {sorted(trainable - changed)[:4]}")


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_param_groups_learning_rates_and_decay(spec, tiny_bert, tweets, plain):
    strategy, _, model = make_model(spec, tiny_bert, tweets)
    blocks = param_blocks(model)
    block_of = {n: b for b, names in blocks.items() for n in names}
    new = new_parameter_names(spec, model, plain)
    new_module = parse_strategy(spec).name in NEW_MODULE
    name_of = {id(p): n for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    lr, head_lr, wd = 2e-4, 5e-3, 0.05
    groups = strategy.param_groups(model, lr, head_lr, wd)

    seen: list[str] = []
    for g in groups:
        names = [name_of[id(p)] for p in g["params"]]
        seen += names
        kinds = {(block_of[n], n in new) for n in names}
        assert len(kinds) == 1, f"{spec}: one group mixes blocks (or new and pretrained parameters) {kinds}"
        kind, is_new = kinds.pop()
        if kind == "head":
            assert g["lr"] == pytest.approx(head_lr, rel=1e-12)
            assert g["weight_decay"] == 0.0
        else:
            assert g["lr"] == pytest.approx(lr_expected(spec, kind, is_new, lr), rel=1e-12), (spec, kind, is_new)
            if is_new:  # new modules start at zero (LoRA B, adapter up) or one (IA3): never decayed
                assert g["weight_decay"] == 0.0, names[:2]
            else:
                for n in names:  # matrices decay, biases and LayerNorm weights do not
                    if new_module and params[n].ndim <= 1:
                        continue  # unfrozen pretrained 1-d tensors: test_unfrozen_pretrained_biases_do_not_decay
                    assert g["weight_decay"] == (wd if params[n].ndim > 1 else 0.0), n
    assert len(seen) == len(set(seen)), f"{spec}: a parameter is in two groups"
    ever = set().union(*(expected_trainable(spec, model, plain, e) for e in range(4)))
    assert set(seen) == ever, (f"{spec}: the optimiser must hold every parameter that ever trains: extra "
                               f"{sorted(set(seen) - ever)[:3]}, missing {sorted(ever - set(seen))[:3]}")


@pytest.mark.parametrize("spec", ["lora:unfreeze_top=1", "adapter:size=8,unfreeze_top=1"])
def test_unfrozen_pretrained_biases_do_not_decay(spec, tiny_bert, tweets):
    strategy, _, model = make_model(spec, tiny_bert, tweets)
    name_of = {id(p): n for n, p in model.named_parameters()}
    decayed = {name_of[id(p)] for g in strategy.param_groups(model, 2e-4, 5e-3, 0.05) if g["weight_decay"]
               for p in g["params"] if p.ndim <= 1}
    assert not decayed, f"{spec}: weight decay on {sorted(decayed)[:3]}"


@pytest.mark.parametrize("spec", ["layerwise-lr:0.5", "lp-ft:decay=0.5"])
def test_layerwise_lr_values_by_hand(tiny_bert, tweets, spec):
    """lr * decay**(n_blocks - 1 - block) with numbers written out: decay 0.5 -> 0.25, 0.5, 1 x lr."""
    strategy, _, model = make_model(spec, tiny_bert, tweets)
    probes = {E: "backbone.model.embeddings.word_embeddings.weight",
              L0: "backbone.model.encoder.layer.0.attention.self.query.weight",
              L1: "backbone.model.encoder.layer.1.output.dense.bias",
              "head": "head.weight"}
    lr_of = {id(p): g["lr"] for g in strategy.param_groups(model, 1e-3, 1e-2, 0.0) for p in g["params"]}
    got = {b: lr_of[id(model.get_parameter(n))] for b, n in probes.items()}
    assert got == pytest.approx({E: 2.5e-4, L0: 5e-4, L1: 1e-3, "head": 1e-2}, rel=1e-12)


@pytest.mark.parametrize("spec, want", [
    # lr 1e-3, head 1e-2, layer_decay 0.5: new modules at 1e-3 x 0.5**(blocks above), the
    # unfrozen top block's pretrained weights at 5e-5
    ("lora:layer_decay=0.5,unfreeze_top=1", {
        "backbone.model.base_model.model.encoder.layer.0.attention.self.query.lora_A.default.weight": 5e-4,
        "backbone.model.base_model.model.encoder.layer.1.attention.self.value.lora_B.default.weight": 1e-3,
        "backbone.model.base_model.model.encoder.layer.1.attention.self.query.base_layer.weight": 5e-5,
        "backbone.model.base_model.model.encoder.layer.1.output.LayerNorm.bias": 5e-5,
        "head.weight": 1e-2}),
    ("adapter:size=8,layer_decay=0.5,unfreeze_top=2", {
        "backbone.model.encoder.layer.0.output.dense.adapter.down.weight": 5e-4,
        "backbone.model.encoder.layer.0.output.dense.base.weight": 2.5e-5,
        "backbone.model.encoder.layer.1.attention.output.dense.adapter.up.bias": 1e-3,
        "backbone.model.encoder.layer.1.attention.output.dense.base.weight": 5e-5}),
    ("bitfit:0.5", {
        "backbone.model.embeddings.LayerNorm.bias": 2.5e-4,
        "backbone.model.encoder.layer.0.attention.self.key.bias": 5e-4,
        "backbone.model.encoder.layer.1.output.dense.bias": 1e-3}),
    ("prompt:tokens=3", {"backbone.model.prompt_encoder.default.embedding.weight": 1e-3}),
])
def test_new_module_learning_rates_by_hand(spec, want, tiny_bert, tweets):
    strategy, _, model = make_model(spec, tiny_bert, tweets)
    lr_of = {id(p): g["lr"] for g in strategy.param_groups(model, 1e-3, 1e-2, 0.0) for p in g["params"]}
    got = {n: lr_of.get(id(model.get_parameter(n))) for n in want}
    assert got == pytest.approx(want, rel=1e-12)
    # the lower layer's pretrained query weight (renamed or not) is frozen unless unfreeze_top reaches it
    [query] = [n for n, _ in model.named_parameters()
               if base_name(n) == "backbone.model.encoder.layer.0.attention.self.query.weight"]
    assert lr_of.get(id(model.get_parameter(query))) == (5e-5 * 0.5 if "unfreeze_top=2" in spec else None)


# ------------------------------------------------------------ fit, save and load
def _saved_names(path: Path) -> set[str]:
    with safe_open(str(path / "weights.safetensors"), framework="pt") as f:
        return set(f.keys())


# plain `freeze` (k=4) would leave only the head of the 3-block tiny model: refused, tested elsewhere
@pytest.mark.parametrize("spec", [n if n != "freeze" else "freeze:2" for n in STRATEGIES.names()]
                         + ["freeze:1", "lora:r=4,unfreeze_top=1", "adapter:size=8,layer_decay=0.5"])
def test_fit_save_load_round_trip(spec, tiny_bert, tweets, tweets_small, tweets_test_small, tmp_path, plain):
    if parse_strategy(spec).own_model():  # fits its own model, not the tiny BERT: see tests/test_baseline.py
        pytest.skip("a strategy with a model of its own has its round trip tested in its own file")
    out = tmp_path / "run"
    # no validation split: the final weights are the last epoch's, not a restored best epoch
    run = exapt.fit(str(tweets_small), spec, str(tiny_bert), epochs=2, val_fraction=0, out=out,
                    progress=False, log=quiet)
    strategy, _, base = make_model(spec, tiny_bert, tweets)  # the weights before any training
    expected = set().union(*(expected_trainable(spec, base, plain, e) for e in range(2)))

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

    # the runs of PEFT's methods carry PEFT's own adapter folder; the others carry none
    assert (out / "adapter" / "adapter_config.json").exists() == (strategy.name in PEFT_LIBRARY)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == sum(then[n].numel() for n in expected)
    assert metrics["total_parameters"] == sum(p.numel() for p in then.values())
    assert metrics["trainable_fraction"] == pytest.approx(metrics["trainable_parameters"] / metrics["total_parameters"],
                                                          rel=1e-12)
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
def _history(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in (path / "history.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("spec", ["full", "freeze:1", "gradual-unfreeze", "layerwise-lr", "scratch", "lp-ft",
                                  "lora", "ia3", "adapter:size=8", "bitfit", "prompt:tokens=4", "prefix:tokens=4"])
def test_resume_after_kill_equals_uninterrupted(spec, tiny_bert_dropout, tweets_small, tweets_test_small,
                                                tmp_path, monkeypatch):
    kw = dict(epochs=4, progress=False, log=quiet)
    whole = exapt.fit(str(tweets_small), spec, str(tiny_bert_dropout), out=tmp_path / "whole", **kw)

    part = tmp_path / "part"
    with monkeypatch.context() as mp:
        interrupt_at(mp, spec, 2)
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
        interrupt_at(mp, "full", 2)
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


def test_lp_ft_wise_is_the_weight_space_mix(tmp_path, tiny_bert, tweets_small):
    """WiSE-FT (Wortsman et al. 2022): theta = (1 - a) theta_start + a theta_finetuned, where
    start = pretrained encoder + probe head; checked against two plain runs."""
    import exapt
    from exapt.backbones import load_backbone

    kw = dict(epochs=2, max_length=32, val_fraction=0, progress=False, log=lambda *a, **k: None)
    plain = exapt.fit(str(tweets_small), "lp-ft", str(tiny_bert), out=tmp_path / "plain", **kw)
    mixed = exapt.fit(str(tweets_small), "lp-ft:wise=0.25", str(tiny_bert), out=tmp_path / "wise", **kw)
    pre = load_backbone(str(tiny_bert), max_length=32).model.state_dict()
    ft, wise = plain.model.backbone.model.state_dict(), mixed.model.backbone.model.state_dict()
    checked = 0
    for name, value in pre.items():
        if value.is_floating_point():
            torch.testing.assert_close(wise[name], 0.75 * value + 0.25 * ft[name], atol=1e-6, rtol=1e-5)
            checked += 1
    assert checked > 10
    assert not torch.allclose(ft["encoder.layer.0.attention.self.query.weight"],
                              wise["encoder.layer.0.attention.self.query.weight"])
