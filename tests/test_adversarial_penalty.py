"""`--penalty adversarial`: the loss on FGSM/PGD inputs for images and on FGM-perturbed
word embeddings for text, checked against the definitions, and trained end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from exapt.cli import main
from exapt.config import DataConfig, FitConfig
from exapt.fit import _prepare
from exapt.penalties import Step, parse_penalties
from exapt.penalties.adversarial import embedding_features, fgm, word_embeddings
from exapt.strategies import parse_strategy
from exapt.train.loop import Split


def _prepared(tmp_path, data, model, spec, **data_kw):
    cfg = FitConfig(data=DataConfig(source=str(data), **data_kw), model=str(model), strategy="full", max_length=32,
                    penalties=[spec])
    cfg.train.seed = 0
    pset = parse_penalties(cfg.penalties)
    prep = _prepare(cfg, parse_strategy("full"), penalties=pset)
    bb = prep.model.backbone
    items = bb.prepare_inputs(prep.tables["train"].inputs)
    ctx = prep.context
    ctx.train = Split(items, prep.targets["train"], [bb.item_length(x) for x in items])
    ctx.run_dir, ctx.progress = tmp_path, False
    pset.setup(ctx)
    return prep, ctx, pset.items[0]


def test_image_penalty_is_the_loss_on_fgsm_inputs(tmp_path):
    prep, ctx, penalty = _prepared(tmp_path, "optdigits", "cnn:4,8", "adversarial:eps=0.2,weight=0.5")
    model, idx = prep.model, np.arange(8)
    x = torch.stack([torch.as_tensor(ctx.train.items[i]) for i in idx])
    y = ctx.train.targets[torch.as_tensor(idx)]
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model({"x": xg}), y, reduction="sum").backward()
    expected = 0.5 * torch.nn.functional.cross_entropy(model({"x": (x + 0.2 * xg.grad.sign()).clamp(0, 1)}), y)
    model.zero_grad(set_to_none=True)
    value = penalty(model, Step(idx, None, 0, 0))
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert value.item() > 0.5 * torch.nn.functional.cross_entropy(model({"x": x}), y).item()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("head"))  # the attack left no grads


def test_text_penalty_is_fgm_on_the_word_embeddings(tmp_path, tiny_bert, tweets_small):
    prep, ctx, penalty = _prepared(tmp_path, tweets_small, tiny_bert, "adversarial:eps=0.3")
    model, bb, idx = prep.model, prep.model.backbone, np.arange(6)
    batch = bb.collate([ctx.train.items[i] for i in idx])
    mask, y = batch["attention_mask"], ctx.train.targets[torch.as_tensor(idx)]
    embeds = word_embeddings(bb)(batch["input_ids"]).detach()
    model.eval()  # the tiny BERT has no dropout; eval makes the identity below exact either way
    torch.testing.assert_close(embedding_features(bb, embeds, mask), bb(batch))  # same model, from embeddings

    def forward(e):
        return model.head(embedding_features(bb, e, mask))
    eps = 0.3 * mask.sum(1).float().sqrt()
    r = fgm(forward, embeds, y, eps) - embeds
    torch.testing.assert_close(r.flatten(1).norm(dim=1), eps, rtol=1e-4, atol=1e-5)  # per-token rms 0.3
    e = embeds.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(forward(e), y, reduction="sum").backward()
    g = e.grad.flatten(1)
    cos = torch.nn.functional.cosine_similarity(r.flatten(1), g, dim=1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-4)  # along the gradient
    expected = torch.nn.functional.cross_entropy(forward(embeds + r), y)
    assert penalty(model, Step(idx, None, 0, 0)).item() == pytest.approx(expected.item(), rel=1e-4)


def test_adversarial_penalty_trains_and_is_logged(tmp_path, tiny_bert, tweets_small):
    import exapt

    run = exapt.fit("optdigits", "full", "cnn:4,8", penalties=["adversarial:eps=0.1,steps=2"], n_per_class=10,
                    epochs=2, lr=3e-3, max_test=40, out=tmp_path / "img", progress=False, log=lambda *a, **k: None)
    assert all("penalty_adversarial" in h for h in run.history)
    run = exapt.fit(str(tweets_small), "lora", str(tiny_bert), penalties=["adversarial"], epochs=1, max_length=32,
                    out=tmp_path / "txt", progress=False, log=lambda *a, **k: None)
    assert "penalty_adversarial" in run.history[0] and np.isfinite(run.history[0]["penalty_adversarial"])


@pytest.mark.parametrize("spec, message", [("adversarial:eps=-1", "eps must be >= 0"),
                                           ("adversarial:steps=-2", "steps must be >= 0")])
def test_bad_adversarial_options(tmp_path, capsys, spec, message):
    code = main(["fit", "optdigits", "--model", "cnn:4", "--strategy", "full", "--penalty", spec,
                 "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_adversarial_penalty_refuses_numeric_features(tmp_path, capsys):
    rows = "".join(f"{i % 7 / 7:.3f},{(i * 3) % 5 / 5:.3f},{'ab'[i % 2]}\n" for i in range(30))
    (tmp_path / "f.csv").write_text("f1,f2,label\n" + rows)
    code = main(["fit", str(tmp_path / "f.csv"), "--features", "f1,f2", "--model", "mlp", "--strategy", "full",
                 "--penalty", "adversarial", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "attacks image or text classifiers" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
