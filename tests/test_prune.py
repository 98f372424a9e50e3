"""`exapt prune` (issue 19): head slicing is exact, the importance is Michel et al.'s
derivative, the pick, the pruned run reloads smaller, and its bad inputs."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import quiet

import exapt
from exapt.backbones import load_backbone
from exapt.backbones.shape import attention_parts, keep_heads, shape_of, split_shape
from exapt.cli import main
from exapt.deploy.prune import gate_hook, head_importance, heads_to_keep, prune
from exapt.errors import ExaptError
from exapt.run import Run
from exapt.train.loop import Split


def _batch(bb):
    return bb.collate(bb.prepare_inputs(["the flight was late again", "great crew, thanks", "ok"]))


def _with_gates(bb, gates, batch):
    hooks = [attention_parts(layer)[0].register_forward_hook(gate_hook(g)) for layer, g in zip(bb.layers, gates)]
    try:
        with torch.no_grad():
            return bb(batch)
    finally:
        for h in hooks:
            h.remove()


def test_removing_a_head_equals_gating_it_to_zero(tiny_bert3):
    bb = load_backbone(str(tiny_bert3)).eval()
    batch = _batch(bb)
    gates = [torch.ones(4) for _ in range(3)]
    gates[1][2] = 0.0
    gates[0][0] = gates[0][3] = 0.0
    want = _with_gates(bb, gates, batch)
    pruned = copy.deepcopy(bb)
    keep_heads(pruned.layers[1], [0, 1, 3])
    keep_heads(pruned.layers[0], [1, 2])
    with torch.no_grad():
        got = pruned(batch)
    assert torch.allclose(got, want, atol=1e-6)
    assert shape_of(pruned).heads == (2, 3, 4)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in bb.parameters())


def test_shape_names_reload_the_same_shape(tiny_bert3):
    name = f"{tiny_bert3}@2:heads=1-3"
    assert split_shape(name)[1].heads == (1, 3) and split_shape(str(tiny_bert3))[1] is None
    bb = load_backbone(name)
    assert shape_of(bb).layers == 2 and shape_of(bb).heads == (1, 3)
    with pytest.raises(ExaptError, match="5 heads asked"):
        load_backbone(f"{tiny_bert3}@1:heads=5")


def test_importance_is_the_gate_derivative_normalised_per_layer(teacher_run):
    run = Run.load(teacher_run)
    run.model.double()  # the finite differences need more than float32's digits
    bb, task = run.model.backbone, run.task
    texts = ["the flight was late again", "great crew, thanks", "ok", "lost my bag", "love it", "meh"]
    targets = torch.tensor([0, 2, 1, 0, 2, 1])
    split = Split.prepare(bb, texts, targets)
    got = head_importance(run.model, bb, split, task)
    batch = bb.collate(split.items)
    eps, fd = 1e-5, torch.zeros(3, 4, dtype=torch.float64)

    def loss_at(gates):
        hooks = [attention_parts(layer)[0].register_forward_hook(gate_hook(g)) for layer, g in zip(bb.layers, gates)]
        try:
            with torch.no_grad():
                return float(task.loss(run.model(batch).double(), targets))
        finally:
            for h in hooks:
                h.remove()
    for i in range(3):
        for h in range(4):
            up, down = [torch.ones(4, dtype=torch.float64) for _ in range(3)], [torch.ones(4, dtype=torch.float64) for _ in range(3)]
            up[i][h], down[i][h] = 1 + eps, 1 - eps
            fd[i, h] = abs(loss_at(up) - loss_at(down)) / (2 * eps)
    want = fd / fd.norm(dim=1, keepdim=True)
    assert torch.allclose(got.double(), want, atol=1e-5), (got, want)


def test_heads_to_keep_drops_the_least_important_and_keeps_one_per_layer():
    imp = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.05, 0.01, 0.02, 0.03], [0.8, 0.7, 0.6, 0.4]])
    assert heads_to_keep(imp, 0.25) == [[0, 1, 2, 3], [0], [0, 1, 2, 3]]  # 3 heads go: 0.01, 0.02, 0.03
    keep = heads_to_keep(imp, 0.5)  # 6 heads go; layer 1 keeps its best one
    assert keep == [[0, 2], [0], [0, 1, 2]] and sum(map(len, keep)) == 6
    with pytest.raises(ExaptError, match="each of the 3"):
        heads_to_keep(imp, 0.9)


def test_prune_heads_recovers_and_reloads_smaller(teacher_run, tmp_path, tweets_small):
    out = tmp_path / "pruned"
    pruned = prune(teacher_run, heads=0.5, out=out, progress=False, log=quiet)
    loaded = Run.load(out)
    assert sum(shape_of(loaded.model.backbone).heads) == 6
    table = exapt.data.load_data(str(tweets_small))
    assert torch.allclose(loaded.logits(table), pruned.logits(table), atol=1e-5)
    record = json.loads((out / "distil.json").read_text())
    assert record["prune"]["method"] == "heads" and record["prune"]["heads_before"] == 12
    assert record["prune"]["heads_after"] == 6 and record["parameters"]["student"] < record["parameters"]["teacher"]
    teacher = Run.load(teacher_run)
    assert loaded.evaluate(str(tweets_small))["n"] == teacher.evaluate(str(tweets_small))["n"]


def test_prune_layers_keeps_the_bottom_layers(teacher_run, tmp_path):
    code = main(["prune", str(teacher_run), "--layers", "2", "--recover-epochs", "1", "--out", str(tmp_path / "p"),
                 "--quiet"])
    assert code == 0
    loaded = Run.load(tmp_path / "p")
    assert loaded.config.model.endswith("@2") and len(loaded.model.backbone.layers) == 2
    assert json.loads((tmp_path / "p" / "distil.json").read_text())["prune"]["layers_kept"] == 2


@pytest.mark.parametrize("args,message", [(["--heads", "1.0"], "--heads 1.0"), (["--heads", "0"], "--heads 0"),
                                          (["--layers", "3"], "has 3 layers"), (["--layers", "7"], "has 3 layers")])
def test_bad_prune_requests_are_one_line(teacher_run, tmp_path, capsys, args, message):
    assert main(["prune", str(teacher_run), *args, "--out", str(tmp_path / "p")]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "p").exists()
