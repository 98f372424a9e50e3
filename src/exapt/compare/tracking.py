"""Log compare cells to MLflow: parameters, metrics, and the cell's run folder.

By default the store is local to the compare folder (`sqlite:///DIR/mlflow.db`, artifacts
in `DIR/mlartifacts`), so `mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db` shows
the panel with no server set up. MLflow's file store is in maintenance mode and refuses
to start by default, hence SQLite.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ExaptError

EXPERIMENT = "exapt-compare"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """One MLflow experiment per compare folder; one MLflow run per cell."""

    def __init__(self, out: Path, uri: str | None):
        try:
            import mlflow  # heavy: imported on first use
        except ImportError:
            raise ExaptError("tracking needs MLflow: pip install mlflow-skinny sqlalchemy alembic "
                             "(or pass --no-tracking)") from None
        for name in ("mlflow", "alembic", "sqlalchemy"):  # their INFO lines would break the progress bars
            logging.getLogger(name).setLevel(logging.WARNING)
        self.mlflow = mlflow
        out = Path(out).resolve()
        self.uri = uri or f"sqlite:///{out / 'mlflow.db'}"
        try:
            self.client = mlflow.MlflowClient(tracking_uri=self.uri)
            experiment = self.client.get_experiment_by_name(f"{EXPERIMENT}:{out.name}")
            if experiment is None:
                location = (out / "mlartifacts").as_uri() if uri is None else None
                self.experiment_id = self.client.create_experiment(f"{EXPERIMENT}:{out.name}",
                                                                   artifact_location=location)
            else:
                self.experiment_id = experiment.experiment_id
        except Exception as e:  # MLflow raises many kinds; the user needs the URI and the first line
            raise ExaptError(f"--tracking-uri {self.uri}: MLflow cannot use it ({str(e).splitlines()[0][:200]})") from None

    def log_cell(self, name: str, params: dict, metrics: dict, folder: Path, tags: dict) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
        run_id = run.info.run_id
        from mlflow.entities import Metric, Param  # heavy: imported on first use

        flat = {k: v for k, v in _flatten(params).items()}
        self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()],
                              metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()
                                       if isinstance(v, (int, float)) and v == v])
        self.client.log_artifacts(run_id, str(folder), artifact_path="run")
        self.client.set_terminated(run_id)
        return run_id
