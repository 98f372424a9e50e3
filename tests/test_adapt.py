"""Domain adaptation: the penalties against their papers' equations, density ratios
against a known ratio, and `fit --adapt-to` end to end (splits, selection, resume, errors)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import exapt
from exapt.estimators.density import density_ratios
from exapt.cli import main
from exapt.penalties.alignment import coral_loss, mk_mmd2
from exapt.penalties.dann import dann_lambda, reverse_gradient

from conftest import interrupt_at
from test_bad_input import expect_error

FEATURES = "f0,f1,f2,f3,f4"


# -------------------------------------------------------------------- the equations
def test_coral_is_the_papers_frobenius_distance_of_covariances():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) @ rng.normal(size=(6, 6))
    expected = ((np.cov(s, rowvar=False) - np.cov(t, rowvar=False)) ** 2).sum() / (4 * 6 ** 2)
    got = coral_loss(torch.tensor(s), torch.tensor(t)).item()
    assert got == pytest.approx(expected, rel=1e-9)
    assert coral_loss(torch.tensor(s), torch.tensor(s[::-1].copy())).item() == pytest.approx(0, abs=1e-12)


def test_mk_mmd_matches_a_direct_double_sum():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 1.0
    x = np.concatenate([s, t])
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    base = d2.sum() / (len(x) ** 2 - len(x))

    def k(a, b):
        dd = ((a - b) ** 2).sum()
        return sum(np.exp(-dd / (2 * base * 2.0 ** i)) for i in range(-2, 3))

    expected = (np.mean([k(a, b) for a in s for b in s]) + np.mean([k(a, b) for a in t for b in t])
                - 2 * np.mean([k(a, b) for a in s for b in t]))
    assert mk_mmd2(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected, rel=1e-9)
    near = mk_mmd2(torch.tensor(s), torch.tensor(s + 0.01)).item()
    far = mk_mmd2(torch.tensor(s), torch.tensor(s + 3.0)).item()
    assert 0 <= near < far


def test_gradient_reversal_and_the_lambda_schedule():
    x = torch.ones(3, requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + np.exp(-5)) - 1)
    assert 0.999 < dann_lambda(1.0) < 1.0


def test_density_ratios_recover_a_known_gaussian_ratio():
    # source N(0, 1), target N(1, 1): p_t(x) / p_s(x) = exp(x - 1/2), linear in the log,
    # so a logistic domain classifier is well specified and the ratio is recoverable.
    rng = np.random.default_rng(2)
    s, t = rng.normal(0, 1, (4000, 1)), rng.normal(1, 1, (4000, 1))
    ratios, _ = density_ratios(s, t, clip=1e9)
    true = np.exp(s[:, 0] - 0.5)
    central = np.abs(s[:, 0]) < 1.5
    assert np.median(np.abs(ratios.raw[central] / true[central] - 1)) < 0.1
    assert 0.70 < ratios.domain_auc < 0.81                   # Phi(1/sqrt(2)) = 0.76
    clipped, _ = density_ratios(s, t, clip=2.0)
    assert clipped.weights.mean() == pytest.approx(1.0) and clipped.clipped > 0
    assert clipped.effective_sample_size < len(s)


# -------------------------------------------------------------------- fit --adapt-to
def _domain(n: int, shift: float, seed: int, priors=(1 / 3, 1 / 3, 1 / 3)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=priors)
    x = rng.normal(size=(n, 5)) + y[:, None] * 1.5
    x[:, :2] += shift
    return pd.DataFrame({**{f"f{i}": x[:, i] for i in range(5)}, "label": [f"c{v}" for v in y]})


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    d = tmp_path_factory.mktemp("domains")
    _domain(300, 0.0, 0).to_csv(d / "source.csv", index=False)
    _domain(300, 3.0, 1).to_csv(d / "target.csv", index=False)
    _domain(300, 0.0, 2).drop(columns="label").to_csv(d / "unlabelled.csv", index=False)
    _domain(40, 0.0, 3).assign(label="c9").to_csv(d / "other_labels.csv", index=False)
    _domain(300, 0.0, 4, priors=(0.7, 0.2, 0.1)).to_csv(d / "label_shifted.csv", index=False)
    return d


def _fit(domains, out, penalty=None, **kw):
    opts = dict(features=FEATURES, epochs=3, lr=1e-3, seed=0, out=out, progress=False, log=lambda *a: None)
    opts.update(kw)
    return exapt.fit(str(domains / "source.csv"), "full", "mlp", adapt_to=str(domains / "target.csv"),
                     penalties=[penalty] if penalty else [], **opts)


@pytest.mark.parametrize("penalty", ["dann", "coral", "mmd:weight=2", "importance-weights", "label-shift"])
def test_fit_adapts_and_reports_the_target(domains, tmp_path, penalty):
    run = _fit(domains, tmp_path / "run", penalty)
    m = run.metrics
    assert m["n_target_test"] == 150 and m["n_target_unlabelled"] == 150
    assert set(m["target_test"]) >= {"accuracy", "macro_f1"}
    assert m["model_selection"]["validation"] == "source-val"
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert f"penalty_{penalty.partition(':')[0]}" in history[0]
    # the saved model is the model: dann's domain classifier stays out of it
    assert not [k for k in load_file(tmp_path / "run" / "weights.safetensors") if "discriminator" in k]
    assert exapt.load_run(tmp_path / "run").evaluate(str(domains / "target.csv"))["accuracy"] > 0


def test_target_rows_of_the_test_never_reach_training(domains, tmp_path):
    from exapt.adapt.target import load_target
    from exapt.config import AdaptConfig, FitConfig
    from exapt.data import load_data

    cfg = FitConfig(adapt=AdaptConfig(data=str(domains / "target.csv"), labels=4))
    cfg.data.features = FEATURES.split(",")
    source = load_data(domains / "source.csv", features=FEATURES)
    target = load_target(cfg, source, ["c0", "c1", "c2"])
    assert not set(target.test.rows) & set(target.unlabelled.rows)
    assert set(target.val.rows) <= set(target.unlabelled.rows)
    assert target.unlabelled.labels is None and target.selection == "target-labels"
    assert sorted(pd.Series(target.val.labels).value_counts()) == [4, 4, 4]


def test_selection_by_target_labels_and_by_importance_weighted_validation(domains, tmp_path):
    labelled = _fit(domains, tmp_path / "a", "coral", target_labels=5)
    assert labelled.metrics["model_selection"] == {"validation": "target-labels", "rows": 15,
                                                   "described": "a few labelled target examples"}
    weighted = _fit(domains, tmp_path / "b", "coral", select="weighted-val")
    sel = weighted.metrics["model_selection"]
    assert sel["validation"] == "weighted-val" and sel["domain_auc"] > 0.9
    history = [json.loads(x) for x in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert "val_iw_accuracy" in history[0] and "val_iw_loss" in history[0]


def test_label_shift_weights_follow_the_target_priors(domains, tmp_path):
    logs = []
    exapt.fit(str(domains / "source.csv"), "full", "mlp", features=FEATURES, adapt_to=str(domains / "label_shifted.csv"),
              penalties=["label-shift"], epochs=1, out=tmp_path / "r", progress=False, log=logs.append)
    line = next(x for x in logs if x.startswith("label shift (BBSE)"))
    estimated = {c: float(q) for c, q in re.findall(r"(c\d) ([0-9.]+) \(source", line)}
    assert len(estimated) == 3, line
    assert estimated["c0"] > 0.55 and estimated["c2"] < 0.2   # true target priors 0.7 / 0.2 / 0.1


def test_dann_resumes_to_the_uninterrupted_result(domains, tmp_path, monkeypatch):
    whole = _fit(domains, tmp_path / "whole", "dann", epochs=2)
    interrupt_at(monkeypatch, "full", 1)
    with pytest.raises(KeyboardInterrupt):
        _fit(domains, tmp_path / "cut", "dann", epochs=2)
    monkeypatch.undo()
    resumed = exapt.resume(tmp_path / "cut", progress=False, log=lambda *a: None)
    a = load_file(tmp_path / "whole" / "weights.safetensors")
    b = load_file(tmp_path / "cut" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["target_test"] == whole.metrics["target_test"]


# -------------------------------------------------------------------- refusals
def test_adaptation_refusals(domains, tmp_path, capsys):
    src = domains / "source.csv"
    base = ["fit", src, "--features", FEATURES, "--model", "mlp", "--strategy", "full", "--out", tmp_path / "r"]
    expect_error(capsys, base + ["--penalty", "dann"], "--penalty dann", "--adapt-to", out=tmp_path / "r")
    expect_error(capsys, base + ["--adapt-to", domains / "other_labels.csv"], "label(s) the source does not", "c9")
    expect_error(capsys, base + ["--adapt-to", domains / "unlabelled.csv", "--target-labels", "3"], "has no labels")
    expect_error(capsys, base + ["--adapt-to", domains / "target.csv", "--select", "target-labels"],
                 "--target-labels N")
    expect_error(capsys, base + ["--target-labels", "3"], "need --adapt-to")
    expect_error(capsys, base + ["--adapt-to", domains / "target.csv", "--select", "weighted-val", "--val-fraction", "0"],
                 "source validation split")
    expect_error(capsys, base + ["--adapt-to", "tweets", "--penalty", "coral"], "text inputs", "features")
    expect_error(capsys, base + ["--adapt-to", domains / "target.csv", "--strategy", "linear-probe", "--penalty", "mmd"],
                 "closed form")
    assert not (tmp_path / "r").exists()


def test_an_unlabelled_target_gives_no_target_test(domains, tmp_path, capsys):
    code = main([str(a) for a in ["fit", domains / "source.csv", "--features", FEATURES, "--model", "mlp", "--strategy",
                                  "full", "--epochs", "1", "--adapt-to", domains / "unlabelled.csv", "--penalty", "coral",
                                  "--out", tmp_path / "r", "--quiet"]])
    assert code == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "target_test" not in m and m["n_target_unlabelled"] == 300


# -------------------------------------------------------------------- pair-align
def test_info_nce_is_clips_symmetric_loss_and_learns_the_pairing():
    from exapt.penalties.pair_align import info_nce

    rng = np.random.default_rng(5)
    s, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    zs = s / np.linalg.norm(s, axis=1, keepdims=True)
    zt = t / np.linalg.norm(t, axis=1, keepdims=True)
    logits = zs @ zt.T / 0.1

    def ce(m):
        m = m - m.max(1, keepdims=True)
        return -np.mean(np.diag(m) - np.log(np.exp(m).sum(1)))

    expected = (ce(logits) + ce(logits.T)) / 2
    assert info_nce(torch.tensor(s), torch.tensor(t), 0.1).item() == pytest.approx(expected, rel=1e-9)

    # two "domains" that see the same 32 items through different random maps: a shared
    # encoder trained on the loss alone learns to retrieve each item's partner
    torch.manual_seed(0)
    items = torch.randn(32, 8)
    a, b = items @ torch.randn(8, 8), items @ torch.randn(8, 8)
    enc = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))

    def retrieval():
        with torch.no_grad():
            return float(((enc(a) @ enc(b).T).argmax(1) == torch.arange(32)).float().mean())

    before = retrieval()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        info_nce(enc(a), enc(b), 0.1).backward()
        opt.step()
    assert before < 0.2 and retrieval() > 0.6


def test_pair_align_trains_a_text_model_and_refuses_bad_pairs(tiny_bert, tweets_small, tmp_path, capsys):
    texts = pd.read_csv(tweets_small)["text"].tolist()[:24]
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"source": texts, "target": [" ".join(reversed(t.split())) for t in texts]}).to_csv(pairs, index=False)
    run = exapt.fit(str(tweets_small), "full", str(tiny_bert), penalties=[f"pair-align:pairs={pairs},batch=8"],
                    epochs=2, out=tmp_path / "r", progress=False, log=lambda *a: None)
    history = [json.loads(x) for x in (tmp_path / "r" / "history.jsonl").read_text().splitlines()]
    assert all(h["penalty_pair-align"] > 0 for h in history) and run.metrics["test"]["accuracy"] >= 0
    base = ["fit", tweets_small, "--model", tiny_bert, "--strategy", "full", "--out", tmp_path / "bad"]
    expect_error(capsys, base + ["--penalty", "pair-align"], "pairs=PAIRS.csv")
    pd.DataFrame({"source": texts, "other": texts}).to_csv(tmp_path / "cols.csv", index=False)
    expect_error(capsys, base + ["--penalty", f"pair-align:pairs={tmp_path / 'cols.csv'}"], "missing target")
    pd.DataFrame({"source": ["a", "b"], "target": ["c", ""]}).to_csv(tmp_path / "empty.csv", index=False)
    expect_error(capsys, base + ["--penalty", f"pair-align:pairs={tmp_path / 'empty.csv'}"], "line 3", "empty")
    assert not (tmp_path / "bad").exists()


def test_mlp_keeps_the_scale_of_a_column_constant_in_training():
    from exapt.backbones import load_backbone

    bb = load_backbone("mlp", n_inputs=3)
    x = np.array([[0.0, 1.0, 5.0], [0.0, 3.0, 5.0]], dtype=np.float32)
    bb.fit_input_stats(x)
    assert bb.std.tolist() == [1.0, pytest.approx(np.std([1.0, 3.0], ddof=1)), 1.0]
    # a border pixel that was always 0 in the source and is 1/16 in the target stays small
    h = (torch.tensor([[0.0625, 2.0, 5.0]]) - bb.mean) / bb.std
    assert h.abs().max() < 1


def test_start_features_are_encoded_once_and_a_closed_form_head_claims_no_selection(domains, tmp_path, monkeypatch):
    import exapt.adapt.in_fit as features  # where the start encoder's features are encoded

    calls = []
    original = features.encode

    def counting(backbone, prepared, *a, **k):
        calls.append(len(prepared))
        return original(backbone, prepared, *a, **k)

    monkeypatch.setattr(features, "encode", counting)
    _fit(domains, tmp_path / "a", "importance-weights", select="weighted-val", epochs=1)
    assert len(calls) == 3           # source train, target unlabelled, source val: once each
    monkeypatch.undo()

    probe = exapt.fit(str(domains / "source.csv"), "linear-probe", "mlp", features=FEATURES,
                      adapt_to=str(domains / "target.csv"), out=tmp_path / "b", progress=False, log=lambda *a: None)
    assert probe.metrics["model_selection"]["validation"] == "none"
    assert "target_test" in probe.metrics
