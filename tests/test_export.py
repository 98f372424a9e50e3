"""`exapt export`: every kind of run as an ONNX folder, its parity checked, predicted
through `ExportPredictor` (onnxruntime, tokenizers, numpy: a test imports it where torch
and transformers fail), and refused in one line when it cannot be trusted."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import exapt
from exapt.backbones.sequence_input import SequenceInput
from exapt.cli import main
from exapt.deploy import export_parity
from exapt.deploy.export import export_run
from exapt.deploy.predictor import (
    ExportFiles,
    ExportFolderError,
    ExportPredictor,
    sequence_text,
)
from exapt.errors import ExaptError

QUIET = {"progress": False, "log": lambda *a: None}
PREDICTOR = Path(exapt.__file__).parent / "deploy" / "predictor.py"


def _fit(data, strategy, model, out, **kw):
    return exapt.fit(str(data), strategy, str(model), out=out, epochs=1, **QUIET, **kw)


def _export(run, out, **kw):
    return export_run(run.path if hasattr(run, "path") else run, out, log=lambda *a: None, **kw)


def _same_predictions(run, folder, data):
    """The export predicts what the run predicts, through the CLI's evaluate/predict path too."""
    ours = exapt.load_run(run.path).predict(data)
    p = ExportPredictor.load(folder)
    assert [r["label"] for r in p.predict(ours["text"].tolist())] == ours["prediction"].tolist()
    return p


@pytest.fixture(scope="module")
def lp_export(tmp_path_factory, tiny_bert, tweets_small):
    root = tmp_path_factory.mktemp("lp-export")
    run = _fit(tweets_small, "linear-probe", tiny_bert, root / "run")
    return run, _export(run, root / "export")


def test_export_folder_holds_what_it_says(lp_export, tweets_small):
    run, folder = lp_export
    files = ExportFiles(folder)
    assert files.model.is_file() and files.tokenizer.is_file() and files.labels.is_file()
    info = json.loads(files.info.read_text())
    assert info["source_run"]["weights_sha256"] == run.folder.weights_sha256()
    assert info["base_model"]["sha256"] == run.model.backbone.identity()["sha256"]
    assert info["graph"]["exporter"] == "dynamo" and info["graph"]["opset"] == 18
    assert info["parity"]["fp32"]["max_abs_logit_diff"] <= 1e-4 and info["parity"]["failures"] == []
    assert info["parity"]["fp32"]["rows"] == run.metrics["n_test"]
    assert set(info["files"]) == {"model.onnx", "tokenizer.json", "labels.json"}
    assert info["versions"]["onnxruntime"] and info["input"]["max_length"] == run.model.backbone.max_length
    p = _same_predictions(run, folder, tweets_small)
    assert p.task == "classification" and p.labels == run.task.classes
    # dynamic batch and sequence axes: one short text, then a batch of mixed lengths
    texts = ["ok", "the flight was late and the crew was rude but the food was fine honestly"] * 3
    out = p.outputs(texts[:1])
    assert out["logits"].shape == (1, 3) and out["embedding"].shape == (1, run.model.backbone.feature_dim)
    logits = exapt.load_run(run.path).logits(_table(texts))
    np.testing.assert_allclose(p.outputs(texts)["logits"], logits.numpy(), atol=1e-4)


def _table(texts):
    from exapt.data.columns import Table

    return Table(texts, None, "text", "texts", np.arange(1, len(texts) + 1))


def test_evaluate_and_predict_take_an_export_folder(lp_export, tweets_small, tmp_path, capsys):
    run, folder = lp_export
    assert main(["evaluate", str(folder), str(tweets_small), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = exapt.load_run(run.path).evaluate(tweets_small)
    assert got["accuracy"] == pytest.approx(want["accuracy"]) and got["n"] == want["n"]
    assert main(["predict", str(folder), str(tweets_small), "-o", str(tmp_path / "a.csv")]) == 0
    assert main(["predict", str(run.path), str(tweets_small), "-o", str(tmp_path / "b.csv")]) == 0
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert list(a.columns) == list(b.columns) and (a["prediction"] == b["prediction"]).all()
    np.testing.assert_allclose(a.filter(like="p_").to_numpy(), b.filter(like="p_").to_numpy(), atol=1e-5)


def test_predictor_imports_without_torch_or_transformers(lp_export, tweets_small):
    """The predictor module, loaded by path in a fresh process where importing torch or
    transformers raises, loads the folder and predicts what the run predicts."""
    run, folder = lp_export
    texts = pd.read_csv(tweets_small)["text"].tolist()[:6]
    want = exapt.load_run(run.path).predict(_table(texts))["prediction"].tolist()
    script = f"""
import importlib.abc, importlib.util, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "exapt"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location("predictor", {str(PREDICTOR)!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
p = mod.ExportPredictor.load({str(folder)!r})
out = p.predict({texts!r})
assert not any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules)
print(json.dumps([r["label"] for r in out]))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == want


@pytest.mark.parametrize("spec", ["lora", "ia3", "adapter", "prompt"])
def test_peft_and_adapter_runs_export(spec, tiny_bert, tweets_small, tmp_path):
    run = _fit(tweets_small, spec, tiny_bert, tmp_path / "run")
    folder = _export(run, tmp_path / "export")
    info = ExportPredictor.load(folder).info()
    assert info["parity"]["fp32"]["max_abs_logit_diff"] <= 1e-4
    _same_predictions(run, folder, tweets_small)


def test_int8_records_its_settings_and_refuses_what_misses_parity(lp_export, tmp_path, monkeypatch):
    run, _ = lp_export
    folder = _export(run, tmp_path / "int8", quantize="int8", force=True)
    info = ExportPredictor.load(folder).info()
    q = info["quantize"]
    assert q["mode"] == "int8" and q["per_channel"] is True
    assert q["reduce_range"] == (not q["instruction_set"]["vnni"])
    assert q["recipe"] == "dynamic"
    assert info["parity"]["int8"]["rows"] == run.metrics["n_test"] and "agreement" in info["parity"]["int8"]
    # a parity target no model can meet: refused in one line, nothing written; --force marks it
    monkeypatch.setattr(export_parity, "MIN_AGREEMENT", 1.01)
    with pytest.raises(ExaptError, match=r"export refused: int8 agrees .* points short.*--force"):
        _export(run, tmp_path / "refused", quantize="int8")
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused*"))
    forced = _export(run, tmp_path / "forced", quantize="int8", force=True)
    assert json.loads(ExportFiles(forced).info.read_text())["forced"] is True


def _feature_csv(path: Path, label) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(4)}, "label": [label(r) for r in x]}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("task", ["regression", "multilabel"])
def test_mlp_on_features_exports(task, tmp_path):
    label = (lambda r: round(float(r[0] * 2 + r[1]), 3)) if task == "regression" else \
        (lambda r: "|".join(n for n, on in (("a", r[0] > 0), ("b", r[1] > 0)) if on) or "c")
    data = _feature_csv(tmp_path / "f.csv", label)
    run = exapt.fit(str(data), "full", "mlp:16", out=tmp_path / "run", features="f0,f1,f2,f3", task=task,
                    epochs=2, **QUIET)
    folder = _export(run, tmp_path / "export")
    p = ExportPredictor.load(folder)
    assert p.task == task and p.info()["parity"]["fp32"]["max_abs_logit_diff"] <= 1e-4
    rows = pd.read_csv(data)[["f0", "f1", "f2", "f3"]].to_numpy()[:5].tolist()
    want = exapt.load_run(run.path).predict(data)["prediction"].tolist()[:5]
    got = p.predict(rows)
    if task == "regression":
        np.testing.assert_allclose([r["value"] for r in got], want, atol=1e-4)
    else:
        assert ["|".join(r["labels"]) for r in got] == [w if isinstance(w, str) else "" for w in want]


def test_cnn_image_run_exports_and_takes_uint8_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    y = np.array(["dark" if im.mean() < 127.5 else "light" for im in x])
    np.savez(tmp_path / "im.npz", x=x, y=y)
    run = exapt.fit(str(tmp_path / "im.npz"), "full", "cnn:8,8", out=tmp_path / "run", epochs=1, **QUIET)
    folder = _export(run, tmp_path / "export")
    p = ExportPredictor.load(folder)
    assert p.info()["input"]["shape"] == [1, 8, 8]
    want = exapt.load_run(run.path).predict(tmp_path / "im.npz")["prediction"].tolist()[:6]
    assert [r["label"] for r in p.predict(list(x[:6]))] == want
    with pytest.raises(ValueError, match="takes 8x8 images"):
        p.predict([np.zeros((9, 9), dtype=np.uint8)])


@pytest.mark.slow
def test_efficientnet_run_exports_with_its_resize_inside_the_graph(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(24, 20, 20, 3), dtype=np.uint8)
    y = np.array(["red" if im[..., 0].mean() > im[..., 2].mean() else "blue" for im in x])
    np.savez(tmp_path / "im.npz", x=x, y=y)
    run = exapt.fit(str(tmp_path / "im.npz"), "linear-probe", "efficientnet-lite0:32", out=tmp_path / "run", **QUIET)
    folder = _export(run, tmp_path / "export")
    p = ExportPredictor.load(folder)
    assert p.info()["input"]["shape"] == [3, 20, 20] and p.info()["parity"]["fp32"]["max_abs_logit_diff"] <= 1e-4
    want = exapt.load_run(run.path).predict(tmp_path / "im.npz")["prediction"].tolist()[:6]
    assert [r["label"] for r in p.predict(list(x[:6]))] == want


def test_dna_model_export_writes_sequences_as_its_tokenizer_expects(tiny_bert, tmp_path):
    model = tmp_path / "dna-model"
    shutil.copytree(tiny_bert, model)
    (model / "exapt.json").write_text(json.dumps({"input": {"alphabet": "dna", "kmer": 3}}))
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 20)) for _ in range(40)]
    pd.DataFrame({"text": seqs, "label": ["gc" if s.count("G") + s.count("C") > 10 else "at" for s in seqs]}
                 ).to_csv(tmp_path / "dna.csv", index=False)
    run = _fit(tmp_path / "dna.csv", "linear-probe", model, tmp_path / "run")
    folder = _export(run, tmp_path / "export")
    p = ExportPredictor.load(folder)
    spec = p.info()["input"]["sequence_input"]
    assert spec["kmer"] == 3
    for s in ("acgtnnRYacg", "AC-GT*TT.A", "A"):
        assert sequence_text(s, spec, "x") == SequenceInput("dna", kmer=3).to_tokenizer_text(s)
    assert [r["label"] for r in p.predict(seqs[:8])] == exapt.load_run(run.path).predict(
        _table(seqs[:8]))["prediction"].tolist()


def test_baseline_run_says_it_cannot_export(tweets_small, tmp_path):
    run = exapt.fit(str(tweets_small), "baseline", out=tmp_path / "run", **QUIET)
    with pytest.raises(ExaptError, match="cannot be exported: its TF-IDF"):
        _export(run, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_changed_or_missing_base_model_is_refused(tiny_bert, tweets_small, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    run = _fit(tweets_small, "linear-probe", model, tmp_path / "run")
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "model.safetensors")
    name = next(iter(weights))
    save_file({**weights, name: weights[name] + 1.0}, model / "model.safetensors", metadata={"format": "pt"})
    assert main(["export", str(run.path), "--out", str(tmp_path / "ex")]) == 2
    assert "base model's weights differ" in capsys.readouterr().err and not (tmp_path / "ex").exists()
    shutil.rmtree(model)
    assert main(["export", str(run.path), "--out", str(tmp_path / "ex")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such alias or folder" in err[0] and not (tmp_path / "ex").exists()


def test_damaged_export_folder_is_refused(lp_export, tmp_path):
    _, folder = lp_export
    for damage in ("missing-model", "corrupt-model", "missing-tokenizer", "corrupt-info", "missing-info"):
        copy = tmp_path / damage
        shutil.copytree(folder, copy)
        f = ExportFiles(copy)
        if damage == "corrupt-model":
            f.model.write_bytes(f.model.read_bytes()[:1000])
        elif damage == "corrupt-info":
            f.info.write_text("{not json")
        else:
            {"missing-model": f.model, "missing-tokenizer": f.tokenizer, "missing-info": f.info}[damage].unlink()
        with pytest.raises(ExportFolderError) as e:
            ExportPredictor.load(copy)
        assert len(str(e.value).splitlines()) == 1, damage


@pytest.mark.slow
def test_real_minilm_tweets_run_exports_fp32_and_int8(tweets_small, tweets_test_small, tmp_path):
    run = exapt.fit(str(tweets_small), "linear-probe", "minilm-l6", out=tmp_path / "run", test=str(tweets_test_small),
                    test_fraction=0, **QUIET)
    fp32 = ExportPredictor.load(_export(run, tmp_path / "fp32")).info()["parity"]
    assert fp32["fp32"]["max_abs_logit_diff"] <= 1e-4 and fp32["fp32"]["rows"] == 60
    int8 = ExportPredictor.load(_export(run, tmp_path / "int8", quantize="int8", optimize=True)).info()
    assert int8["parity"]["int8"]["agreement"] >= 0.99 and int8["parity"]["int8"]["points_lost"] <= 1.0
    assert int8["optimize"]["applied"] and int8["parity"]["failures"] == []
    size = lambda d: (d / "model.onnx").stat().st_size
    assert size(tmp_path / "int8") <= 0.3 * size(tmp_path / "fp32")


def test_rowwise_table_is_int8_per_row_and_looks_up_what_fp32_did():
    """The `rowwise` int8 recipe's embedding tables: q = round(w / s) with s = max|row| / 127,
    looked up by Gather -> Cast -> Mul(row scale); every value within s / 2 of fp32."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from exapt.deploy.export_int8 import quantize_rows, rowwise_tables

    rng = np.random.default_rng(0)
    table = (rng.normal(size=(100, 8)) * rng.uniform(0.01, 5, size=(100, 1))).astype(np.float32)
    table[7] = 0.0                                     # an all-zero row keeps a usable scale
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["out"], axis=0)], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 8])],
                              [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert rowwise_tables(model) == ["table"]
    onnx.checker.check_model(model)
    kinds = {i.name: i.data_type for i in model.graph.initializer}
    assert kinds == {"table_int8": TensorProto.INT8, "table_row_scale": TensorProto.FLOAT}
    ids = np.array([0, 7, 42, 99, 42], dtype=np.int64)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["out"], {"ids": ids})[0]
    q, scale = quantize_rows(table)
    assert np.allclose(scale[:, 0], np.where(np.abs(table).max(1) > 0, np.abs(table).max(1) / 127, 1.0))
    assert np.all(np.abs(got - table[ids]) <= scale[ids] / 2 + 1e-7)
    assert np.array_equal(got[1], np.zeros(8, np.float32)) and np.abs(q).max() == 127
