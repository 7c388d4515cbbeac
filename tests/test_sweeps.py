"""Searching and scaling with Hydra's plugins (the `sweep` extra) and tracking with MLflow (the `mlflow` extra), as
users run them: `segdet train -m hydra/sweeper=optuna ...`, `hydra/launcher=joblib|submitit_local`, `logger=mlflow`.
MLflow runs are read back with the plain MlflowClient in a process that does not import segdet."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segdet import sweeps
from tests.reliability.cli import segdet
from tests.trained import once

SMOKE = ["task=sam", "experiment=smoke", "trainer.max_epochs=1", "trainer.device=cpu"]

# MlflowClient's view of one tracking store: every run with its params, tags, metric histories and artifacts
_READ_BACK = """
import json, sys
from mlflow import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
runs = {}
for exp in client.search_experiments():
    for r in client.search_runs([exp.experiment_id]):
        def files(path=None):
            out = []
            for a in client.list_artifacts(r.info.run_id, path):
                out += files(a.path) if a.is_dir else [[a.path, a.file_size]]
            return out
        runs[r.info.run_id] = {
            "experiment": exp.name, "name": r.info.run_name, "status": r.info.status, "params": r.data.params,
            "tags": r.data.tags,
            "history": {k: [[m.step, m.value] for m in client.get_metric_history(r.info.run_id, k)]
                        for k in r.data.metrics},
            "artifacts": dict(files())}
print(json.dumps(runs))
"""


def read_mlflow(uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _READ_BACK, uri], capture_output=True, text=True, timeout=120,
                          cwd="/", env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture
def mlflow_store(tmp_path_factory, tmp_path) -> str:
    """The URI of a fresh sqlite tracking store in tmp_path. MLflow creates a store's tables in some twenty schema
    migrations, seconds each time; the tests start from a copy of one store made so, once in the session."""
    def create(folder: Path) -> None:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()

    template = once(tmp_path_factory, "mlflow_store", create) / "mlflow.db"
    (tmp_path / "store").mkdir()
    shutil.copyfile(template, tmp_path / "store" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def best_dice(job_dir: Path) -> float:
    return json.loads((job_dir / "metrics.json").read_text())["best_dice"]


@pytest.mark.slow
def test_optuna_search_optimises_the_monitored_metric_and_survives_a_failed_trial(tmp_path):
    # the sampler's seed 3 draws precision 32, 8, 32: trial 1 is a user error, reported, and the search goes on
    proc = segdet("train", "-m", *SMOKE, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                  "hydra.sweeper.sampler.seed=3", "optim.lr=tag(log, interval(1e-5, 1e-2))",
                  "trainer.precision=choice(32, 8)", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("segdet: error: 1 sweep job(s) failed: #1: "
                                                           "trainer.precision"), proc.stderr[-2000:]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    done = [tmp_path / j for j in ("0", "2")]
    # trainer.monitor_mode=max → the search maximises: its best value is the higher best_dice of the two runs
    assert results["best_value"] == pytest.approx(max(best_dice(d) for d in done))
    assert 1e-5 <= results["best_params"]["optim.lr"] <= 1e-2
    assert results["best_params"]["trainer.precision"] == 32
    lrs = [yaml.safe_load((d / "config.yaml").read_text())["optim"]["lr"] for d in done]
    assert len(set(lrs)) == 2 and all(1e-5 <= lr <= 1e-2 for lr in lrs)
    assert not (tmp_path / "1" / "metrics.json").exists()


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes_and_reports_a_failed_one(tmp_path):
    """Jobs run in joblib's worker processes: a user error there still fails the sweep, naming the job."""
    from joblib import cpu_count

    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    proc = segdet("train", "-m", *SMOKE, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  "trainer.precision=32,8", f"hydra.sweep.dir={tmp_path}", timeout=600, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("segdet: error: 1 sweep job(s) failed: #1: trainer.precision must be"), last
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "0" / "metrics.json").read_text())["history"]
    assert json.loads((tmp_path / "0" / sweeps.STATUS_FILE).read_text())["status"] == "ok"
    # each job gets its share of the cores
    assert f"threads={max(1, cpu_count() // 2)}" in (tmp_path / "0" / "train.log").read_text()


@pytest.mark.slow
def test_submitit_local_jobs_nest_under_one_mlflow_run(tmp_path, mlflow_store):
    store = mlflow_store
    proc = segdet("train", "-m", *SMOKE, "hydra/launcher=submitit_local", "optim.lr=1e-3,1e-4", "logger=mlflow",
                  f"mlflow.tracking_uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # the jobs ran as submitit jobs
    parent_id = (sweep / "mlflow_parent_run_id").read_text().strip()
    runs = read_mlflow(store)
    assert runs[parent_id]["status"] == "FINISHED"
    children = {r["params"]["optim.lr"]: r for r in runs.values() if r["tags"].get("mlflow.parentRunId") == parent_id}
    assert set(children) == {"0.001", "0.0001"} and len(runs) == 3
    for job, lr in (("0", "0.001"), ("1", "0.0001")):
        child = children[lr]
        assert child["status"] == "FINISHED" and child["tags"]["segdet.run_dir"] == str(sweep / job)
        assert child["history"]["val/dice"][-1][1] == pytest.approx(best_dice(sweep / job))


@pytest.mark.slow
def test_mlflow_run_holds_config_metrics_and_files(tmp_path, mlflow_store):
    run, store = tmp_path / "run", mlflow_store
    proc = segdet("train", "task=sam", "experiment=smoke", "trainer.device=cpu", "trainer.log_every_n_steps=1",
                  "optim.lr=3e-4", "logger=mlflow", f"mlflow.tracking_uri={store}", "mlflow.log_checkpoint=true",
                  f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (mlrun,) = read_mlflow(store).values()
    assert mlrun["experiment"] == "segdet-sam" and mlrun["status"] == "FINISHED"
    # params: the flattened resolved config
    config = yaml.safe_load((run / "config.yaml").read_text())
    flat = sweeps_flat(config)
    assert mlrun["params"] == flat and mlrun["params"]["optim.lr"] == "0.0003"
    # metrics: each optimizer step (trainer.log_every_n_steps=1) and each epoch, as in metrics.json
    history = json.loads((run / "metrics.json").read_text())["history"]
    steps = history[-1]["step"]
    assert [s for s, _ in mlrun["history"]["train_step/loss"]] == list(range(1, steps + 1))
    assert mlrun["history"]["val/dice"] == [[h["epoch"], pytest.approx(h["val/dice"])] for h in history]
    # artifacts: the run dir's files, byte for byte the same size
    for name in ("config.yaml", "metrics.json", "plots/loss_curves.png", "checkpoints/best.pt"):
        local = run / name
        assert mlrun["artifacts"][name] == local.stat().st_size, name
    assert not (tmp_path / "outputs").exists()  # nothing in the default store when a URI is given


def sweeps_flat(config: dict) -> dict:
    """The config flattened as an MLflow user would expect: dotted keys, strings as they are, the rest as JSON."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in sweeps_flat(v).items()})
        else:
            out[k] = v if isinstance(v, str) else json.dumps(v)
    return out


@pytest.mark.parametrize("args, extra", [
    (["-m", "hydra/sweeper=optuna"], "sweep"),
    (["-m", "hydra/launcher=joblib"], "sweep"),
    (["-m", "hydra/launcher=submitit_slurm"], "sweep"),
    (["logger=mlflow"], "mlflow"),
    (["-m", "logger=tensorboard,mlflow"], "mlflow"),                 # any option of a sweep
    (["-m", "logger=choice(tensorboard, mlflow)"], "mlflow"),
    (["-m", "hydra/launcher='joblib'"], "sweep"),                    # quoted
])
def test_a_missing_extra_is_one_line_naming_the_pip_command(args, extra, monkeypatch, capsys):
    from segdet import cli

    monkeypatch.setattr(sweeps, "_installed", lambda module: False)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "task=sam", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segdet: error: ") and f"pip install 'segdet[{extra}]'" in err[0]


@pytest.mark.parametrize("args, direction", [
    (["hydra/sweeper=optuna"], "maximize"),                                   # sam's monitor: dice, max
    (["hydra/sweeper=optuna", "trainer.monitor_mode=min"], "minimize"),
    (["hydra/sweeper=optuna", "hydra.sweeper.direction=minimize"], "minimize"),  # the command line wins
    (["experiment=sweep_sam_lr"], "maximize"),
    (["experiment=sweep_sam_lr", "hydra/sweeper=optuna"], "maximize"),     # the preset and the CLI agree
    (["hydra/sweeper='optuna'", "trainer.monitor_mode=min"], "minimize"),   # quoted, as Hydra reads it
])
def test_optuna_takes_its_direction_from_the_monitored_metric(args, direction):
    proc = segdet("train", "task=sam", *args, "--cfg", "all", "--resolve")
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweeper = yaml.safe_load(proc.stdout)["hydra"]["sweeper"]
    assert sweeper["direction"] == direction
    assert sweeper["max_failure_rate"] == 1.0 and sweeper["sampler"]["seed"] == 42


@pytest.mark.parametrize("result, value", [
    ({"dice": 0.5, "best_dice": 0.7}, 0.7),
    ({"dice": 0.5}, 0.5),                        # eval: the metric itself
    ({"dice": 0.5, "best_dice": None}, None),    # no validation ran: a failed trial
    ({"best_dice": float("nan")}, None),         # a NaN would stop the whole study
    (None, None),
])
def test_the_objective_is_the_best_monitored_value(result, value):
    assert sweeps.objective(result, "dice") == value


# --- a tracking store MLflow refuses ----------------------------------------------------------------------------
def test_a_file_store_uri_ends_on_one_line_naming_a_store_that_works(tmp_path):
    """MLflow refuses its retired file store (``file://DIR``) unless MLFLOW_ALLOW_FILE_STORE is set: the run ends
    on one line, before training, naming the URI and a store that works, which then does."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}
    uri = (tmp_path / "ml").as_uri()
    proc = segdet("train", *SMOKE, "logger=mlflow", f"mlflow.tracking_uri={uri}", f"hydra.run.dir={tmp_path / 'run'}",
                  env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    line = lines[-1]
    assert sum(x.startswith("segdet: error") for x in lines) == 1, proc.stderr[-3000:]
    works = f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"
    assert line.startswith(f"segdet: error: mlflow.tracking_uri={uri}: MLflow cannot use it (") and works in line
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained

    from segdet.engine.tracking import MlflowRun
    from tests.conftest import compose_cfg

    cfg = compose_cfg("train", [*SMOKE, "logger=mlflow", f"mlflow.tracking_uri={works}"])
    run = MlflowRun(cfg, tmp_path / "run")
    run.finish(tmp_path / "run", ok=True)
    (mlrun,) = read_mlflow(works).values()
    assert mlrun["status"] == "FINISHED" and mlrun["params"]["task.name"] == "sam"


def test_a_store_that_fails_mid_run_is_one_warning_and_training_goes_on(tmp_path, caplog, mlflow_store):
    from mlflow.exceptions import MlflowException

    from segdet.engine.tracking import MlflowRun
    from tests.conftest import compose_cfg

    store = mlflow_store
    run = MlflowRun(compose_cfg("train", [*SMOKE, "logger=mlflow", f"mlflow.tracking_uri={store}"]), tmp_path)
    sent = []

    def down(*args, **kwargs):
        sent.append(kwargs)
        raise MlflowException("API request to http://tracking/ failed: connection refused")

    run.client.log_batch = run.client.set_terminated = down
    for step in range(3):
        run.scalars("train_step", {"loss": 1.0}, step)  # does not raise
    run.finish(tmp_path, ok=True)
    warned = [r.getMessage() for r in caplog.records if "MLflow tracking is off" in r.getMessage()]
    assert len(sent) == 1 and len(warned) == 1, warned
    assert warned[0].startswith(f"mlflow.tracking_uri={store}: MLflow cannot use it (API request to http://tracking/"
                                " failed: connection refused)")
