"""Predict from an export folder (`exapt export`) with onnxruntime, tokenizers and numpy only.

This module imports nothing else of exapt and neither torch nor transformers (a test
imports it in a process where they fail), so it can be copied beside an export folder
and run where the training stack is not installed:

    p = ExportPredictor.load("runs/tweets-lp-ft-s0-export")
    p.predict(["lost my bag again", "great crew"])   # [{"label": ..., "probabilities": {...}}, ...]
    p.outputs(["lost my bag again"])                  # {"logits": [1, C], "embedding": [1, D]}

The folder's layout (its names are defined here, the one place that knows them):

    EXPORT/model.onnx        backbone + head in one graph; outputs logits and features
    EXPORT/model.onnx.data   its weights, when the exporter wrote them beside the graph
    EXPORT/tokenizer.json    text models: the fast tokenizer's JSON
    EXPORT/labels.json       the task: kind, classes (or the regression target's scale)
    EXPORT/export.json       written last: identity, input spec, parity, versions, and the
                             sha256 of every other file (checked on load)

Inputs: texts (or DNA / protein sequences, written as the model's tokenizer expects
them here), feature rows (lists of floats), or images as H x W x C (or H x W) uint8
arrays; decoding PNG/JPEG files is the caller's job.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class ExportFiles:
    MODEL = "model.onnx"
    TOKENIZER = "tokenizer.json"
    LABELS = "labels.json"
    INFO = "export.json"  # written last: its presence marks a complete export

    def __init__(self, path):
        self.path = Path(path)

    model = property(lambda self: self.path / self.MODEL)
    tokenizer = property(lambda self: self.path / self.TOKENIZER)
    labels = property(lambda self: self.path / self.LABELS)
    info = property(lambda self: self.path / self.INFO)

    def is_export(self) -> bool:
        return self.info.is_file()


class ExportFolderError(ValueError):
    """An export folder that cannot be used (missing or damaged file); one line."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportFolderError(f"{path}: missing; this is not a complete export folder "
                                f"(re-run `exapt export`)") from None
    except (OSError, ValueError) as e:
        raise ExportFolderError(f"{path}: unreadable {what} ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ExportFolderError(f"{path}: unreadable {what} (not a JSON object)")
    return data


def check_files(folder: ExportFiles, recorded: dict) -> None:
    """Every file export.json lists is there with the sha256 it was written with."""
    if not recorded:
        raise ExportFolderError(f"{folder.info}: lists no files; re-run `exapt export`")
    for name, digest in recorded.items():
        path = folder.path / name
        if not path.is_file():
            raise ExportFolderError(f"{path}: missing from the export folder; re-run `exapt export`")
        if file_sha256(path) != digest:
            raise ExportFolderError(f"{path}: changed or damaged since it was exported (sha256 differs); "
                                    "re-run `exapt export`")


# -- sequences (DNA / protein): the same text the model's tokenizer saw in training --------
_NOT_LETTER = re.compile(r"[^A-Za-z*\-.]")
_LETTERS = {"dna": ("ACGT", "N"), "protein": ("ACDEFGHIKLMNPQRSTVWY", "X")}


def sequence_text(seq: str, spec: dict | None, where: str) -> str:
    """A raw sequence as the tokenizer takes it (exapt.backbones.sequence_input's rules)."""
    if not spec or spec.get("alphabet", "text") not in _LETTERS:
        return seq
    seq = "".join(seq.split())
    bad = _NOT_LETTER.search(seq)
    if bad:
        raise ValueError(f"{where}: {bad.group()!r} at position {bad.start() + 1} is not a {spec['alphabet']} letter")
    letters, unknown = _LETTERS[spec["alphabet"]]
    seq = "".join(c if c in letters else unknown for c in seq.upper() if c not in "*-.")
    k = int(spec.get("kmer", 1))
    if k > 1:
        return " ".join(seq[i:i + k] for i in range(max(1, len(seq) - k + 1)))
    return " ".join(seq) if spec.get("spaced") else seq


class ExportPredictor:
    def __init__(self, folder: ExportFiles, info: dict, task: dict, session, tokenizer=None):
        self.folder, self._info, self._task, self.session, self.tokenizer = folder, info, task, session, tokenizer
        self.input = info["input"]
        self.task = task["task"]
        self.labels = list(task["classes"]) if self.task != "regression" else None
        self.decision = info.get("decision")

    # -- loading --------------------------------------------------------------------
    @classmethod
    def load(cls, folder, threads: int | None = None) -> ExportPredictor:
        files = ExportFiles(folder)
        if not files.path.is_dir():
            raise ExportFolderError(f"export folder not found: {files.path}")
        info = read_json(files.info, "export.json")
        missing = [k for k in ("input", "outputs", "files") if not isinstance(info.get(k), dict)]
        if missing or "kind" not in info["input"]:
            raise ExportFolderError(f"{files.info}: unreadable export.json (no {(missing or ['input.kind'])[0]}); "
                                    "re-run `exapt export`")
        check_files(files, info["files"])
        task = read_json(files.labels, files.LABELS)
        if task.get("task") not in ("classification", "multilabel", "regression"):
            raise ExportFolderError(f"{files.labels}: unknown task {task.get('task')!r}")
        # without the deploy extra exapt still starts; only loading an export needs onnxruntime
        import onnxruntime as ort  # heavy: imported on first use

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(files.model), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a damaged graph
            raise ExportFolderError(f"{files.model}: onnxruntime cannot load it ({str(e).splitlines()[0][:160]})") from None
        tokenizer = None
        if info["input"]["kind"] == "text":
            try:
                tokenizer = Tokenizer.from_file(str(files.tokenizer))
            except Exception as e:  # the tokenizers library raises plain Exceptions
                raise ExportFolderError(f"{files.tokenizer}: unreadable ({str(e).splitlines()[0][:160]})") from None
            tokenizer.no_padding()
            tokenizer.enable_truncation(int(info["input"]["max_length"]))
        return cls(files, info, task, session, tokenizer)

    def info(self) -> dict:
        """export.json's contents."""
        return dict(self._info)

    def task_json(self) -> dict:
        """labels.json's contents: the task kind, classes or the regression target's scale."""
        return dict(self._task)

    # -- inputs -> the graph's feeds ------------------------------------------------------
    def prepare(self, inputs: list) -> dict[str, np.ndarray]:
        """Raw inputs -> the graph's input arrays (token ids and mask, or x)."""
        kind = self.input["kind"]
        if kind == "text":
            return self._tokens(inputs)
        if kind == "features":
            return {"x": self._rows(inputs)}
        return {"x": np.stack([self._image(x, i) for i, x in enumerate(inputs)])}

    def _tokens(self, texts) -> dict[str, np.ndarray]:
        spec = self.input.get("sequence_input")
        texts = [sequence_text(t, spec, f"input {i + 1}") if isinstance(t, str) else self._not_text(i, t)
                 for i, t in enumerate(texts)]
        ids = [e.ids for e in self.tokenizer.encode_batch(texts)]
        width = max(len(x) for x in ids)
        out = np.full((len(ids), width), int(self.input["pad_id"]), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            out[i, :len(row)], mask[i, :len(row)] = row, 1
        return {"input_ids": out, "attention_mask": mask}

    @staticmethod
    def _not_text(i: int, value) -> str:
        raise ValueError(f"input {i + 1}: this model takes text, got {type(value).__name__}")

    def _rows(self, rows) -> np.ndarray:
        n = int(self.input["shape"][0])
        try:
            x = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"this model takes rows of {n} numbers") from None
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(f"this model takes rows of {n} numbers, got shape {list(x.shape)}")
        if not np.isfinite(x).all():
            raise ValueError("the feature rows hold NaN or infinite values")
        return x

    def _image(self, img, i: int) -> np.ndarray:
        """H x W (x C) uint8 -> C x H x W float32 in [0, 1], with the channels the model takes."""
        c, h, w = (int(d) for d in self.input["shape"])
        x = np.asarray(img)
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise ValueError(f"image {i + 1}: expected an H x W x C uint8 array, got {x.dtype} {list(x.shape)}")
        if x.shape[:2] != (h, w):
            raise ValueError(f"image {i + 1}: this model takes {h}x{w} images, got {x.shape[0]}x{x.shape[1]}; resize first")
        if x.shape[2] == 4:  # RGBA: the alpha channel carries no colour
            x = x[:, :, :3]
        if x.shape[2] != c:
            x = x.mean(axis=2, keepdims=True) if c == 1 else np.repeat(x[:, :, :1], c, axis=2)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)

    # -- the graph ------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph on prepared arrays: {"logits": [B, C], "embedding": [B, D]}."""
        names = self._info["outputs"]
        logits, features = self.session.run([names["logits"], names["embedding"]], feeds)
        return {"logits": logits, "embedding": features}

    def outputs(self, inputs: list, batch_size: int = 32) -> dict[str, np.ndarray]:
        inputs = list(inputs)
        if not inputs:
            raise ValueError("no inputs")
        parts = [self.run(self.prepare(inputs[i:i + batch_size])) for i in range(0, len(inputs), batch_size)]
        return {k: np.concatenate([p[k] for p in parts]) for k in ("logits", "embedding")}

    # -- logits -> predictions ------------------------------------------------------------
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities (calibrated by the run's decision rule, when it has one),
        label probabilities (multilabel), or values (regression)."""
        z = np.asarray(logits, dtype=np.float64)
        if self.task == "classification":
            if self.decision:
                z = z / self.decision["temperature"] + np.asarray(self.decision["shift"])
            z = np.exp(z - z.max(axis=1, keepdims=True))
            return z / z.sum(axis=1, keepdims=True)
        if self.task == "multilabel":
            return 1 / (1 + np.exp(-z))
        return z[:, 0] * self._task["target_std"] + self._task["target_mean"]

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Single-label class indices: the argmax, or the run's decision rule."""
        z = np.asarray(logits, dtype=np.float64)
        if self.decision:
            z = z / self.decision["temperature"] + np.asarray(self.decision["shift"]) + np.asarray(self.decision["offsets"])
        return z.argmax(axis=1)

    def predict(self, inputs: list) -> list[dict]:
        logits = self.outputs(inputs)["logits"]
        probs = self.probabilities(logits)
        if self.task == "regression":
            return [{"value": float(v)} for v in probs]
        if self.task == "multilabel":
            return [{"labels": [c for c, p in zip(self.labels, row) if p >= 0.5],
                     "probabilities": {c: float(p) for c, p in zip(self.labels, row)}} for row in probs]
        return [{"label": self.labels[k], "probabilities": {c: float(p) for c, p in zip(self.labels, row)}}
                for k, row in zip(self.decide(logits), probs)]
