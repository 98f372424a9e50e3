"""An export folder used like a run: `exapt evaluate EXPORT data.csv` and `exapt predict
EXPORT data.csv -o out.csv` read the data as the run's config said (its columns, its
image size, recorded in export.json) and predict through `ExportPredictor`: the output
columns and metrics are those of `Run.evaluate` / `Run.predict`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import load_data
from ..decision import DecisionRule
from ..errors import ExaptError
from ..run import prediction_frame
from ..tasks import Task
from .predictor import ExportFiles, ExportFolderError, ExportPredictor

BATCH = 32


def is_export(path) -> bool:
    return ExportFiles(path).is_export()


def table_logits(predictor: ExportPredictor, table, batch_size: int = BATCH) -> np.ndarray:
    """The graph's logits for every row of a loaded Table."""
    kind = predictor.input["kind"]
    if table.kind != kind:
        raise ExaptError(f"{table.source}: this export takes {kind} inputs, the data has {table.kind}")
    n = len(table)
    if n == 0:
        raise ExaptError(f"{table.source}: no rows")
    out = []
    for i in range(0, n, batch_size):
        chunk = table.inputs[i:i + batch_size]
        try:
            if kind == "image":  # already float [N, C, H, W] in [0, 1]: straight to the graph
                expected = tuple(int(d) for d in predictor.input["shape"])
                if tuple(chunk.shape[1:]) != expected:
                    raise ValueError(f"this export takes images of shape {list(expected)} (C, H, W), got "
                                     f"{list(chunk.shape[1:])}; resize with --set data.image_size")
                out.append(predictor.run({"x": np.ascontiguousarray(chunk, dtype=np.float32)})["logits"])
            else:
                out.append(predictor.outputs(list(chunk) if kind == "text" else chunk, batch_size)["logits"])
        except ValueError as e:
            raise ExaptError(f"{table.source}: {e}") from None
    return np.concatenate(out)


class ExportedRun:
    def __init__(self, path: Path, predictor: ExportPredictor):
        self.path, self.predictor = Path(path), predictor
        info = predictor.info()
        self.data = info.get("data", {})
        self.task = Task.from_json(predictor.task_json())
        self.decision = DecisionRule.from_json(info["decision"]) if info.get("decision") else None

    @classmethod
    def load(cls, path) -> ExportedRun:
        try:
            return cls(path, ExportPredictor.load(path))
        except ExportFolderError as e:
            raise ExaptError(str(e)) from None

    def load_table(self, data, require_label: bool):
        d = self.data
        return load_data(str(data), text=d.get("text"), label=d.get("label"), features=d.get("features"),
                         require_label=require_label, image_size=d.get("image_size"))

    def logits(self, table) -> torch.Tensor:
        return torch.from_numpy(table_logits(self.predictor, table))

    def evaluate(self, data) -> dict[str, float]:
        table = data if hasattr(data, "inputs") else self.load_table(data, require_label=True)
        targets = self.task.encode(table.labels, table.rows, table.source)
        metrics = self.task.metrics(self.logits(table), targets, self.decision)
        metrics["n"] = len(table)
        return metrics

    def predict(self, data) -> pd.DataFrame:
        """The columns of `Run.predict`: row (file, text), prediction, p_CLASS."""
        table = data if hasattr(data, "inputs") else self.load_table(data, require_label=False)
        return prediction_frame(table, self.logits(table), self.task, self.decision)

