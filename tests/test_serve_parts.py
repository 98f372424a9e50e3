"""The parts of `exapt serve` that need no server process: keys, LoRA runs sharing one base,
the drift monitor's statistics, the export-folder hook, `exapt keys` and `exapt drift`."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

import exapt
from exapt.cli import main
from exapt.deploy.keys import KeyFile
from exapt.deploy.monitor import DriftMonitor, Reference
from exapt.deploy.serving_model import load_export, load_predictor, load_run

from conftest import quiet


# ---------------------------------------------------------------------------- keys
def test_key_file_keeps_only_salted_hashes(tmp_path):
    path = tmp_path / "keys.json"
    kf = KeyFile(path)
    a, b = kf.add("alice", ["predict"]), kf.add("bob", ["metrics", "predict"], rate=5)
    text = path.read_text()
    # a key is exapt_<id>_<secret>; the secret (base64url: may itself hold "_") never reaches the file
    assert a not in text and a.split("_", 2)[2] not in text and b.split("_", 2)[2] not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    entries = json.loads(text)["keys"]
    assert entries[0]["salt"] != entries[1]["salt"] and len(entries[0]["hash"]) == 64
    fresh = KeyFile(path)   # another process: verifies from the file alone
    assert fresh.verify(a).name == "alice" and fresh.verify(a).roles == {"predict"}
    assert fresh.verify(b).rate == 5
    for wrong in (None, "", "alice", a + "x", a[:-2], b.replace("exapt_", "exapt_0"), "exapt__"):
        assert fresh.verify(wrong) is None
    kf.revoke("alice")
    assert fresh.verify(a) is None and fresh.verify(b).name == "bob"   # the file changed: the cache is dropped


def test_keys_cli(tmp_path, capsys):
    path = tmp_path / "k.json"
    assert main(["keys", "add", "ci", "--keys", str(path), "--role", "predict,metrics"]) == 0
    key = capsys.readouterr().out.splitlines()[0]
    assert KeyFile(path).verify(key).roles == {"predict", "metrics"}
    assert main(["keys", "list", "--keys", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "ci" in listing and "live" in listing and key not in listing
    assert main(["keys", "add", "ci", "--keys", str(path)]) == 2           # a live name is not reused
    assert main(["keys", "add", "x", "--keys", str(path), "--role", "root"]) == 2
    assert main(["keys", "revoke", "nobody", "--keys", str(path)]) == 2
    assert main(["keys", "revoke", "ci", "--keys", str(path)]) == 0
    assert KeyFile(path).verify(key) is None
    err = capsys.readouterr().err
    assert err.count("exapt: error: ") == 3 and "Traceback" not in err


# ---------------------------------------------------------------------------- models sharing a base
def test_lora_runs_share_one_base_and_answer_as_their_own_runs(tiny_bert, tweets_small, tweets_test_small, tmp_path):
    paths = []
    for seed in (0, 1):
        out = tmp_path / f"lora{seed}"
        exapt.fit(str(tweets_small), "lora", str(tiny_bert), epochs=1, seed=seed, val_fraction=0, out=out,
                  progress=False, log=quiet)
        paths.append(out)
    shared: list = []
    a, b = load_run(paths[0], "a", shared), load_run(paths[1], "b", shared)
    assert len(shared) == 1 and a.base is b.base                # one copy of the base weights
    assert any("lora_" in n for n in b.tensors) and len(b.tensors) < len(a.base.model.state_dict())
    texts = exapt.load_run(paths[0])._load_table(tweets_test_small, require_label=False).inputs[:12]
    for member, path in ((a, paths[0]), (b, paths[1]), (a, paths[0])):   # back and forth
        got = member.answers(member.outputs(member.prepare(texts))["logits"])
        want = exapt.load_run(path).predict(str(tweets_test_small)).head(12)
        assert [g["label"] for g in got] == list(want["prediction"])
        for g, (_, row) in zip(got, want.iterrows()):
            assert all(abs(p - row[f"p_{c}"]) < 1e-4 for c, p in g["probabilities"].items())
    differs = a.outputs(a.prepare(texts))["embedding"] - b.outputs(b.prepare(texts))["embedding"]
    assert np.abs(differs).max() > 1e-6     # each adapter really is applied


def test_a_different_base_gets_its_own_model(probe_run, tiny_bert, tweets_small, tmp_path):
    out = tmp_path / "mlp"
    csv = tmp_path / "f.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    csv.write_text("a,b,c,label\n" + "\n".join(f"{r[0]},{r[1]},{r[2]},{'yes' if r[0] > 0 else 'no'}" for r in x))
    exapt.fit(str(csv), "full", "mlp", features="a,b,c", epochs=1, out=out, progress=False, log=quiet)
    shared: list = []
    p1, p2 = load_predictor(probe_run, "text", shared), load_predictor(out, "rows", shared)
    assert p1.base is not p2.base and len(shared) == 2
    assert [r["label"] for r in p2.answers(p2.outputs(p2.prepare([[1, 0, 0], {"a": -1, "b": 0, "c": 0}]))["logits"])]
    with pytest.raises(exapt.ExaptError, match="row 1 has 2 values; the run takes 3 features"):
        p2.prepare([[1, 2]])
    with pytest.raises(exapt.ExaptError, match="row 1, column 'b': value 'x' is not a number"):
        p2.prepare([[1, "x", 2]])


# ---------------------------------------------------------------------------- export hook
def test_a_damaged_export_folder_is_one_line(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "export.json").write_text("{}")
    with pytest.raises(exapt.ExaptError, match="unreadable export.json"):   # a bare export.json is no export
        load_predictor(folder)
    with pytest.raises(exapt.ExaptError, match="not found"):
        load_export(tmp_path / "nowhere", "x")


# ---------------------------------------------------------------------------- the monitor's statistics
def reference(rng, n=300, k=3):
    emb = rng.normal(size=(n, 8))
    labels = rng.integers(0, k, n)
    predicted = np.where(rng.random(n) < 0.8, labels, rng.integers(0, k, n))
    return Reference(emb, predicted, ["a", "b", "c"], labels, np.bincount(labels, minlength=k) / n, "synthetic")


def logits_for(classes: np.ndarray, k: int = 3) -> np.ndarray:
    return np.eye(k)[classes] * 5.0


def test_monitor_alarm_needs_patience_and_reports_once():
    rng = np.random.default_rng(0)
    ref = reference(rng)
    lines = []
    m = DriftMonitor(ref, window=50, alpha=0.01, patience=2, permutations=200, log=lines.append)
    for _ in range(10):   # same distribution: nothing
        for emb, pred in m.add(rng.normal(size=(50, 8)), logits_for(ref.predicted[rng.integers(0, 300, 50)])):
            m.evaluate(emb, pred)
    assert m.alarms == 0 and not lines
    results = []
    for _ in range(3):   # moved inputs and a new class mix
        for emb, pred in m.add(rng.normal(1.0, 1, size=(50, 8)), logits_for(np.zeros(50, int))):
            results.append(m.evaluate(emb, pred))
    assert [r.alarm for r in results] == [False, True, True]
    assert results[0].flags and results[0].mmd_p < 0.01 and results[0].predicted_p < 0.01
    assert len(lines) == 1 and "ALERT" in lines[0]
    assert results[-1].bbse_priors["a"] > 0.8
    for emb, pred in m.add(rng.normal(size=(50, 8)), logits_for(ref.predicted[:50])):
        m.evaluate(emb, pred)
    assert not m.alarm and len(lines) == 2 and "cleared" in lines[1]


def test_monitor_windows_split_batches_exactly():
    rng = np.random.default_rng(1)
    m = DriftMonitor(reference(rng), window=40)
    assert m.add(rng.normal(size=(30, 8)), logits_for(np.zeros(30, int))) == []
    full = m.add(rng.normal(size=(95, 8)), logits_for(np.ones(95, int)))
    assert [len(p) for _, p in full] == [40, 40, 40] and m.summary()["filling"] == 5
    assert list(full[0][1][:30]) == [0] * 30 and list(full[0][1][30:]) == [1] * 10


# ---------------------------------------------------------------------------- exapt drift, offline
def test_drift_cli_over_a_logged_stream(probe_run, tmp_path, capsys):
    from exapt.data import load_data

    texts = load_data("tweets").inputs
    rng = np.random.default_rng(0)
    home = [texts[i] for i in rng.choice(len(texts), 60, replace=False)]
    away = load_data("tweets-self-driving").inputs[:60]
    log = tmp_path / "requests.jsonl"
    log.write_text("".join(json.dumps({"time": i, "inputs": [t]}) + "\n" for i, t in enumerate(home + away)))
    out = tmp_path / "report"
    assert main(["drift", str(probe_run), str(log), "--window", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "drift.json").read_text())
    assert len(data["windows"]) == 4 and data["windows"][1]["time"] == 59
    assert (out / "drift.png").read_bytes()[:4] == b"\x89PNG" and "drift.png" in (out / "report.md").read_text()
    assert data["verdict"] in printed
    assert main(["drift", str(probe_run), str(log), "--out", str(out)]) == 2              # no silent overwrite
    hashed = tmp_path / "hashed.jsonl"
    hashed.write_text(json.dumps({"inputs_sha256": ["ab"]}) + "\n")
    assert main(["drift", str(probe_run), str(hashed), "--out", str(tmp_path / "r2")]) == 2
    assert "--log-inputs" in capsys.readouterr().err and not (tmp_path / "r2").exists()


# ---------------------------------------------------------------------------- image inputs
def test_image_inputs_decode_png_and_jpeg_to_the_runs_shape():
    import base64
    import io

    from PIL import Image

    from exapt.deploy.serve_inputs import image_inputs

    def encoded(fmt, size, mode="RGB"):
        buf = io.BytesIO()
        Image.new(mode, size, (200, 200, 200)).save(buf, format=fmt)
        return base64.b64encode(buf.getvalue()).decode()

    x = image_inputs([encoded("PNG", (10, 12)), "data:image/jpeg;base64," + encoded("JPEG", (8, 8))], (1, 28, 28))
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert abs(float(x[0].mean()) - 200 / 255) < 0.01
    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, format="GIF")
    for bad, words in (("not base64!", "not a readable image"), (base64.b64encode(b"plain text").decode(), "not a readable image"),
                       (base64.b64encode(gif.getvalue()).decode(), "GIF is not PNG or JPEG"), ("", "base64 PNG or JPEG"),
                       (7, "base64 PNG or JPEG")):
        with pytest.raises(exapt.ExaptError, match=words):
            image_inputs([encoded("PNG", (4, 4)), bad], (3, 8, 8))


# ---------------------------------------------------------------------------- request log
def test_request_log_hashes_inputs_unless_asked(tmp_path):
    import hashlib

    from exapt.deploy.serve_state import RequestLog

    answers = [{"label": "negative", "probabilities": {}}]
    RequestLog(tmp_path / "hashed.jsonl", raw_inputs=False).write("alice", "m", ["my secret tweet"], answers, 0.01)
    RequestLog(tmp_path / "raw.jsonl", raw_inputs=True).write(None, "m", ["my secret tweet"], answers, 0.01)
    hashed = (tmp_path / "hashed.jsonl").read_text()
    assert "secret" not in hashed
    line = json.loads(hashed)
    assert line["inputs_sha256"] == [hashlib.sha256(b'"my secret tweet"').hexdigest()]
    assert line["caller"] == "alice" and line["predictions"] == ["negative"]
    assert json.loads((tmp_path / "raw.jsonl").read_text())["inputs"] == ["my secret tweet"]
