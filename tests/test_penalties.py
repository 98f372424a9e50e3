"""Every penalty against its paper's formula, computed directly on the tiny BERT.

Each test builds the model as `fit` would (same `_prepare`), lets the penalty set
itself up on the start model, moves the weights by a known amount, and compares the
penalty's value with the formula written out here by hand: L2-SP (Li et al. 2018, eq.
3), EWC (Kirkpatrick et al. 2017, eq. 3) with a Fisher recomputed by an independent
route (torch.func Jacobians; for the masked-LM source, the Hugging Face model's own
loss), source-head multi-task, LwF (Li & Hoiem 2016, eq. 2) and the tree prior.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import exapt
from exapt.cli import main
from exapt.config import DataConfig, FitConfig
from exapt.errors import ExaptError
from exapt.fit import _prepare
from exapt.penalties import Step, parse_penalties, parse_penalty
from exapt.penalties.hierarchy import edge_matrix
from exapt.strategies import parse_strategy
from exapt.train.loop import Split

from conftest import TWEETS


def quiet(*_a, **_k):
    pass


TARGET = TWEETS / "train_n16_s1.csv"


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, tiny_bert, tweets_small):
    out = tmp_path_factory.mktemp("source") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
        exapt.fit(str(tweets_small), "full", str(tiny_bert), out=out, epochs=2, max_length=32, progress=False,
                  log=quiet)
    return out


def prepared(tmp_path, data, model, strategy="full", penalties=(), init=None, corpus=None):
    """What fit has in hand just before training: the built model and the penalties' context."""
    cfg = FitConfig(data=DataConfig(source=str(data)), model=str(model) if model else None, strategy=strategy,
                    max_length=32, init=str(init) if init else None, penalties=list(penalties))
    cfg.source.corpus = str(corpus) if corpus else None
    cfg.train.seed = 0
    pset = parse_penalties(cfg.penalties)
    prep = _prepare(cfg, parse_strategy(strategy), penalties=pset)
    bb = prep.model.backbone
    items = bb.prepare_inputs(prep.tables["train"].inputs)
    ctx = prep.context
    ctx.train = Split(items, prep.targets["train"], [bb.item_length(x) for x in items])
    ctx.run_dir, ctx.progress, ctx.log = tmp_path, False, quiet
    return prep, ctx, pset


def nudge(model, seed=1, scale=0.01):
    """Move every parameter by a known random amount; returns the start values."""
    g = torch.Generator().manual_seed(seed)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return start


def a_step(ctx, model, epoch=0, batch=0):
    idx = np.arange(6)
    feats = model.features(model.backbone.collate([ctx.train.items[i] for i in idx]))
    return Step(idx, feats, epoch, batch)


# -- L2-SP ----------------------------------------------------------------------------
def test_l2sp_is_li_et_al_eq3(tmp_path, tiny_bert, tweets_small):
    prep, ctx, pset = prepared(tmp_path, tweets_small, tiny_bert, penalties=["l2sp:alpha=0.7,beta=0.3"])
    pset.setup(ctx)
    model = prep.model
    start = nudge(model)
    by_hand_drift = sum(((p - start[n]) ** 2).sum() for n, p in model.named_parameters() if n.startswith("backbone."))
    by_hand_head = (model.head.weight ** 2).sum() + (model.head.bias ** 2).sum()
    expected = 0.7 / 2 * by_hand_drift + 0.3 / 2 * by_hand_head
    value = pset.items[0](model, a_step(ctx, model))
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert value.requires_grad  # it trains: the gradient reaches the weights


def test_l2sp_with_lora_anchors_the_pretrained_weights_and_decays_the_new_ones(tmp_path, tiny_bert, tweets_small):
    prep, ctx, pset = prepared(tmp_path, tweets_small, tiny_bert, strategy="lora", penalties=["l2sp:alpha=2,beta=0.5"])
    model = prep.model
    assert model.new_parameter_names and all("lora_" in n for n in model.new_parameter_names)
    pset.setup(ctx)
    start = nudge(model)
    for n, p in model.named_parameters():  # as the loop sets them: only LoRA and the head train
        p.requires_grad_("lora_" in n or n.startswith("head."))
    new = [p for n, p in model.named_parameters() if "lora_" in n or n.startswith("head.")]
    expected = 0.5 / 2 * sum((p ** 2).sum() for p in new)  # frozen pretrained weights add nothing
    assert pset.items[0](model, a_step(ctx, model)).item() == pytest.approx(expected.item(), rel=1e-5)
    for n, p in model.named_parameters():  # unfreeze the pretrained weights: their drift counts too
        p.requires_grad_(not n.startswith("source_head."))
    drift = sum(((p - start[n]) ** 2).sum() for n, p in model.named_parameters()
                if n.startswith("backbone.") and "lora_" not in n)
    assert pset.items[0](model, a_step(ctx, model)).item() == pytest.approx((expected + drift).item(), rel=1e-5)


def test_l2sp_decoupled_moves_each_anchored_weight_towards_its_start_by_lr_alpha(tmp_path, tiny_bert, tweets_small):
    prep, ctx, pset = prepared(tmp_path, tweets_small, tiny_bert, penalties=["l2sp-decoupled:alpha=40"])
    pset.setup(ctx)
    model = prep.model
    start = nudge(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    head = [p for n, p in model.named_parameters() if n.startswith("head.")]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": 0.01}, {"params": head, "lr": 0.5}])
    assert pset(model, a_step(ctx, model))[0].item() == 0  # nothing through the loss
    pset.before_step(optimizer)
    for n, p in model.named_parameters():
        if n.startswith("backbone."):  # w - lr * alpha * (w - w0): 40% of the drift taken back
            torch.testing.assert_close(p.detach(), before[n] - 0.01 * 40 * (before[n] - start[n]))
        else:  # the head (and the kept source head) are new: left to the optimiser
            torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0)


def test_l2sp_decoupled_from_a_zero_start_is_adamw_weight_decay():
    """With w0 = 0 the decoupled pull is exactly AdamW's decoupled weight decay
    (Loshchilov & Hutter 2019, Algorithm 2 line 12): the same steps give the same weights."""
    from exapt.penalties.l2sp import L2SPDecoupled

    torch.manual_seed(0)
    ours, ref = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    ref.load_state_dict(ours.state_dict())
    penalty = L2SPDecoupled(alpha=3.0)
    penalty._start = {id(p): torch.zeros_like(p) for p in ours.parameters()}
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=0.05, weight_decay=0.0)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=0.05, weight_decay=3.0)
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    for _ in range(5):
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            if model is ours:
                penalty.before_step(opt)
            opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


# -- EWC ------------------------------------------------------------------------------
def _fisher_by_jacobian(model, source, rows):
    """F_i = mean_x sum_y p(y|x) (d log p(y|x) / d theta_i)^2 via torch.func, one Jacobian per example."""
    from torch.func import functional_call, jacrev

    names = [n for n, _ in model.named_parameters() if n.startswith("backbone.")]
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    bb = model.backbone
    model.eval()
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    items = bb.prepare_inputs([source.train.inputs[i] for i in rows])
    for item in items:
        batch = bb.collate([item])

        def logp(ps, batch=batch):
            out = functional_call(model.backbone, {k[len("backbone."):]: v for k, v in ps.items()}, (batch,))
            return torch.log_softmax(model.source_head(out), -1)[0]

        jac = jacrev(logp)(params)
        probs = logp(params).exp().detach()
        for n in names:
            total[n] += (probs.view(-1, *[1] * params[n].ndim) * jac[n] ** 2).sum(0)
    return {n: t / len(items) for n, t in total.items()}


def test_ewc_fisher_and_penalty_are_kirkpatrick_eq3(tmp_path, tiny_bert, source_run):
    prep, ctx, pset = prepared(tmp_path, TARGET, None, penalties=["ewc:weight=50,samples=5"], init=source_run)
    ewc = pset.items[0]
    pset.setup(ctx)
    from exapt.penalties.fisher import _rows

    expected = _fisher_by_jacobian(prep.model, ctx.source, _rows(ctx.source, 5))
    for n, f in expected.items():
        torch.testing.assert_close(ewc.fisher_[n], f, rtol=1e-4, atol=1e-9)
    assert sum(float(f.sum()) for f in expected.values()) > 0
    model = prep.model
    start = nudge(model)
    by_hand = 50 / 2 * sum((expected[n] * (p - start[n]) ** 2).sum() for n, p in model.named_parameters()
                           if n in expected)
    assert ewc(model, a_step(ctx, model)).item() == pytest.approx(by_hand.item(), rel=1e-4)


def test_ewc_fisher_is_saved_with_the_run_and_reused(tmp_path, tiny_bert, source_run):
    a = exapt.fit(str(TARGET), "full", init=str(source_run), penalties=["ewc:weight=10,samples=4"], epochs=1,
                  max_length=32, out=tmp_path / "a", progress=False, log=quiet)
    assert (a.path / "fisher.safetensors").exists()
    lines = []
    b = exapt.fit(str(TARGET), "full", init=str(source_run), penalties=["ewc:weight=10,samples=4"], epochs=1,
                  max_length=32, seed=0, out=tmp_path / "b", progress=False, log=lines.append)
    assert any("Fisher information read from" in x for x in lines)  # from the cache, not recomputed
    from exapt.files import load_tensors

    fa, fb = load_tensors(a.path / "fisher.safetensors")[0], load_tensors(b.path / "fisher.safetensors")[0]
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    assert a.metrics["penalties"] == ["ewc:weight=10.0,samples=4"]
    assert "penalty_ewc" in a.history[0]


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory, minilm_dir, tweets_small):   # tweets_small: skip when the splits are absent
    """A tiny BERT masked LM folder (with its cls.* head) and a small text corpus."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    out = tmp_path_factory.mktemp("tiny-mlm")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForMaskedLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(out)
    corpus = out / "corpus.txt"
    import pandas as pd

    texts = pd.read_csv(TWEETS / "test.csv")["text"].head(300)
    corpus.write_text("\n".join(texts) + "\n")
    return out, corpus


def test_ewc_masked_lm_fisher_matches_the_hf_model_loss(tmp_path, tiny_mlm, tweets_small):
    from transformers import BertForMaskedLM

    from exapt.penalties.fisher import MASK_SEED
    from exapt.masked_lm.masking import mask_tokens

    folder, corpus = tiny_mlm
    prep, ctx, pset = prepared(tmp_path, tweets_small, folder, penalties=["ewc:weight=1,samples=3"], corpus=corpus)
    pset.setup(ctx)
    fisher = pset.items[0].fisher_
    # by hand: the HF masked LM with the same weights, full logits, mean cross-entropy per window
    hf = BertForMaskedLM.from_pretrained(folder).eval()
    gen = torch.Generator().manual_seed(MASK_SEED)
    total = {n: torch.zeros_like(p) for n, p in hf.bert.named_parameters()}
    used = 0  # windows with a masked token (one with none carries no gradient and is not counted)
    for i in range(3):
        ids = torch.from_numpy(ctx.mlm.train.ids[i:i + 1, :int(ctx.mlm.train.lengths[i])].astype(np.int64))
        inputs, labels = mask_tokens(ids, torch.isin(ids, ctx.mlm.tok_ids["special"]), mask_id=ctx.mlm.tok_ids["mask"],
                                     normal_ids=ctx.mlm.tok_ids["normal"], generator=gen)
        if not (labels != -100).any():
            continue
        used += 1
        hf.zero_grad()
        hf(input_ids=inputs, labels=labels).loss.backward()
        for n, p in hf.bert.named_parameters():
            if p.grad is not None:
                total[n] += p.grad ** 2
    for n, t in total.items():
        if "pooler" in n:
            continue
        ours = fisher[f"backbone.model.{n}"]
        # the word embeddings also feed the (tied) decoder in HF's model; ours keeps the head fixed
        if "word_embeddings" in n:
            continue
        torch.testing.assert_close(ours, t / used, rtol=1e-3, atol=1e-10)
    assert used > 0 and float(fisher["backbone.model.embeddings.position_embeddings.weight"].sum()) > 0


def test_masked_lm_forgetting_is_reported(tmp_path, tiny_mlm, tweets_small):
    folder, corpus = tiny_mlm
    run = exapt.fit(str(tweets_small), "full", str(folder), source_corpus=str(corpus), source_max_test=8,
                    epochs=2, max_length=32, out=tmp_path / "r", progress=False, log=quiet, lr=1e-3)
    s = run.metrics["source_mlm"]
    assert s["windows"] <= 8 and s["before"]["loss"] > 0
    assert s["forgetting"] == pytest.approx(s["after"]["loss"] - s["before"]["loss"])
    assert s["after"]["loss"] != s["before"]["loss"]  # the encoder moved


def test_source_corpus_needs_a_masked_lm_head(tmp_path, tiny_bert, tweets_small, tiny_mlm):
    with pytest.raises(ExaptError, match="no masked-LM head"):
        exapt.fit(str(tweets_small), "full", str(tiny_bert), source_corpus=str(tiny_mlm[1]), out=tmp_path / "x",
                  progress=False, log=quiet)
    assert not (tmp_path / "x").exists()


# -- source-head and LwF --------------------------------------------------------------
def test_source_head_is_the_weighted_source_loss(tmp_path, source_run):
    prep, ctx, pset = prepared(tmp_path, TARGET, None, penalties=["source-head:0.4"], init=source_run)
    pset.setup(ctx)
    penalty, model = pset.items[0], prep.model
    nudge(model)
    rows = penalty.rows(epoch=2, batch=3)
    assert len(rows) == ctx.cfg.train.batch_size
    np.testing.assert_array_equal(rows, penalty.rows(epoch=2, batch=3))  # fixed by (seed, epoch, batch)
    bb = model.backbone
    items = bb.prepare_inputs([ctx.source.train.inputs[i] for i in rows])
    logits = model.source_head(bb(bb.collate(items)))
    expected = 0.4 * torch.nn.functional.cross_entropy(logits, ctx.source.train_targets[torch.as_tensor(rows)])
    assert penalty(model, a_step(ctx, model, 2, 3)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_lwf_is_li_hoiem_eq2(tmp_path, source_run):
    prep, ctx, pset = prepared(tmp_path, TARGET, None, penalties=["lwf:weight=0.5,temperature=3"], init=source_run)
    model = prep.model
    with torch.no_grad():
        z0 = model.source_head(model.features(model.backbone.collate(ctx.train.items[:6])))
    pset.setup(ctx)
    lwf = pset.items[0]
    step = a_step(ctx, model)
    p0 = torch.softmax(z0 / 3, -1)
    entropy = -(p0 * torch.log(p0)).sum(-1).mean()  # unchanged model: cross-entropy with itself
    assert lwf(model, step).item() == pytest.approx(0.5 * entropy.item(), rel=1e-4)
    nudge(model, scale=0.05)
    step = a_step(ctx, model)
    z = model.source_head(step.features)
    expected = 0.5 * -(p0 * torch.log_softmax(z / 3, -1)).sum(-1).mean()
    assert lwf(model, step).item() == pytest.approx(expected.item(), rel=1e-4)


# -- hierarchy ------------------------------------------------------------------------
def test_hierarchy_edges_by_hand():
    classes = ["A;x", "A;y", "B;z"]
    e = edge_matrix(classes, {c: tuple(c.split(";")) for c in classes})
    theta = torch.tensor([[1.0, 0.0], [3.0, 2.0], [-1.0, 5.0]])
    x, y, z = theta
    a = (x + y) / 2
    b = z                      # one child: B is z, and the edge z-B adds nothing
    root = (a + b) / 2
    by_hand = ((x - a) ** 2).sum() + ((y - a) ** 2).sum() + ((a - root) ** 2).sum() + ((b - root) ** 2).sum()
    assert (torch.as_tensor(e, dtype=torch.float32) @ theta).pow(2).sum().item() == pytest.approx(by_hand.item())
    # a shared top (everything under Bacteria) is the root: the same numbers
    shared = ["Bacteria;" + c for c in classes]
    e2 = edge_matrix(shared, {c: tuple(c.split(";")) for c in shared})
    assert (torch.as_tensor(e2, dtype=torch.float32) @ theta).pow(2).sum().item() == pytest.approx(by_hand.item())


def test_hierarchy_penalty_on_the_head(tmp_path, tiny_bert, tweets_small):
    import pandas as pd

    texts = pd.read_csv(tweets_small)["text"].head(48).tolist()   # the fixture skips when the splits are absent
    labels = ["Bacteria;Firmicutes;Bacilli", "Bacteria;Firmicutes;Clostridia", "Archaea;Euryarchaeota;Halobacteria"] * 16
    data = tmp_path / "tax.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(data, index=False)
    prep, ctx, pset = prepared(tmp_path, data, tiny_bert, penalties=["hierarchy:0.8"])
    pset.setup(ctx)
    head = prep.model.head
    theta = torch.cat([head.weight, head.bias[:, None]], 1)
    order = prep.task.classes  # sorted: Archaea..., Bacteria...Bacilli, Bacteria...Clostridia
    h, b, c = (theta[order.index(k)] for k in ("Archaea;Euryarchaeota;Halobacteria", "Bacteria;Firmicutes;Bacilli",
                                               "Bacteria;Firmicutes;Clostridia"))
    firm = (b + c) / 2
    root = (firm + h) / 2
    by_hand = 0.8 / 2 * (((b - firm) ** 2).sum() + ((c - firm) ** 2).sum() + ((firm - root) ** 2).sum()
                         + ((h - root) ** 2).sum())
    assert pset.items[0](prep.model, a_step(ctx, prep.model)).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_hierarchy_from_a_taxonomy_file(tmp_path, tiny_bert, tweets_small):
    tax = tmp_path / "tax.txt"
    tax.write_text("# kingdom;class\nmood;feeling;negative\nmood;feeling;positive\nmood;neutral\n")
    prep, ctx, pset = prepared(tmp_path, tweets_small, tiny_bert, penalties=[f"hierarchy:1,taxonomy={tax}"])
    e = pset.items[0]._edges
    assert e.shape == (4, 3)  # negative-feeling, positive-feeling, feeling-root, neutral-root
    tax.write_text("mood;feeling;negative\n")
    with pytest.raises(ExaptError, match="no path for class 'neutral'"):
        prepared(tmp_path, tweets_small, tiny_bert, penalties=[f"hierarchy:1,taxonomy={tax}"])
    with pytest.raises(ExaptError, match="needs a tree"):
        prepared(tmp_path, tweets_small, tiny_bert, penalties=["hierarchy"])


# -- composition and refusals ---------------------------------------------------------
def test_penalties_train_and_are_logged(tmp_path, tiny_bert, tweets_small):
    from exapt.backbones import load_backbone

    ref = {f"backbone.{n}": t for n, t in load_backbone(str(tiny_bert), max_length=32).state_dict().items()}

    def drift(run):
        return sum(float(((p.detach() - ref[n]) ** 2).sum()) for n, p in run.model.named_parameters()
                   if n.startswith("backbone."))

    # ~80 steps: under Adam a pull that dominates the task gradient keeps the weights within
    # about one step of w0, while free weights keep walking (measured: 2.5 vs 0.012)
    kw = dict(epochs=8, batch_size=4, patience=0, max_length=32, lr=1e-3, progress=False, log=quiet)
    free = exapt.fit(str(tweets_small), "full", str(tiny_bert), out=tmp_path / "free", **kw)
    held = exapt.fit(str(tweets_small), "full", str(tiny_bert), penalties=["l2sp:alpha=1000"], out=tmp_path / "held", **kw)
    assert len(held.history) == 8 and all("penalty_l2sp" in h for h in held.history)
    assert drift(held) < 0.05 * drift(free)
    # decoupled: at lr 1e-3 x alpha 300 each step takes back 30% of the drift (less in warm-up and decay)
    decoupled = exapt.fit(str(tweets_small), "full", str(tiny_bert), penalties=["l2sp-decoupled:300"],
                          out=tmp_path / "decoupled", **kw)
    assert drift(decoupled) < 0.05 * drift(free)


@pytest.mark.parametrize("args, message", [
    (["--strategy", "linear-probe", "--penalty", "l2sp"], "fits its head in closed form"),
    (["--strategy", "full", "--penalty", "lwf"], "needs a source head"),
    (["--strategy", "full", "--penalty", "ewc"], "needs the source task"),
    (["--strategy", "full", "--penalty", "l2sp", "--penalty", "l2sp:2"], "given twice"),
    (["--strategy", "full", "--penalty", "nope"], "unknown penalty 'nope'"),
    (["--strategy", "full", "--penalty", "l2sp:alpha=-1"], "alpha and beta must be >= 0"),
    (["--strategy", "full", "--lr", "1e-3", "--penalty", "l2sp-decoupled:1000"], "would pull past the start weights"),
    (["--strategy", "scratch", "--penalty", "l2sp"], "starts from random weights"),
])
def test_bad_penalties_fail_in_one_line_before_any_folder(tmp_path, capsys, tiny_bert, tweets_small, args, message):
    out = tmp_path / "run"
    code = main(["fit", str(tweets_small), "--model", str(tiny_bert), "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_parse_penalty_positional_weight_and_spec_round_trip():
    p = parse_penalty("ewc:250")
    assert (p.weight, p.samples) == (250.0, 256)
    assert parse_penalty(p.spec()) == p
    assert json.dumps(parse_penalty("l2sp").spec())


def test_rrna16s_builtins_give_phyla_and_taxonomy_paths():
    from exapt.data import load_data

    try:
        phyla = load_data("rrna16s")
    except ExaptError as e:
        pytest.skip(str(e))
    paths = load_data("rrna16s-taxonomy")
    assert (len(phyla), len(set(phyla.labels))) == (5155, 17)
    assert (len(paths), len(set(paths.labels))) == (5120, 23)
    assert all(len(x.split(";")) == 3 for x in set(paths.labels)) and phyla.labels[0] == "Actinobacteria"
    assert 1200 < len(phyla.inputs[0]) < 1700 and set(phyla.inputs[0]) <= set("ACGTNRYKMSWBDHV")
    classes = sorted(set(paths.labels))
    e = edge_matrix(classes, {c: tuple(c.split(";")) for c in classes})
    assert e.shape[1] == 23 and np.allclose(e.sum(1), 0)  # every edge is a difference of means
