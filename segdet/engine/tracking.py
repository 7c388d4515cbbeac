"""``logger=mlflow``: a training run's parameters, scalars and files in an MLflow run, beside TensorBoard.

One MLflow run per training run (rank 0 only): params are the flattened resolved config, metrics every scalar the
hooks log (per logged step and per epoch), artifacts at the end ``config.yaml``, ``metrics.json``, ``plots/`` and,
with ``mlflow.log_checkpoint=true``, ``best.pt``. A sweep's jobs open their runs under the sweep's run
(``mlflow.parent_run_id``). The client API is used throughout, never the fluent one, so no "active run" is left
in a process that runs several jobs (Hydra's basic and joblib launchers).

``mlflow.tracking_uri`` null is a local SQLite store, ``outputs/mlflow.db``, with artifacts beside it: nothing
leaves the machine unless the user names a remote server. MLflow's telemetry is off unless the user turned it on.

A store MLflow refuses or cannot reach (its retired ``file://`` store, a server that is down, an unknown scheme)
ends the run before training, on one line naming the URI and a store that works; segdet does not switch MLflow's
file store back on (``MLFLOW_ALLOW_FILE_STORE``) behind the user's back. Once the run is open, a failure of the
store is one warning and training goes on without it: a tracking server's outage must not cost the training.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import urllib.parse
from pathlib import Path

from segdet.errors import SegdetError
from segdet.files.atomic import write_text

log = logging.getLogger(__name__)

INSTALL = "pip install 'segdet[mlflow]'"
PARENT_RUN_FILE = "mlflow_parent_run_id"  # in a sweep dir: the sweep's run, for its jobs in other processes
_MAX_KEY, _MAX_PARAM = 250, 6000           # MLflow's limits on a key's and a param value's length


def _mlflow():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # otherwise MLflow looks up its telemetry host
    try:
        import mlflow
    except ImportError:
        raise SegdetError(f"logger=mlflow needs MLflow, which is not installed: {INSTALL}") from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (creating the store) are not news
    return mlflow


def tracking_uri(value) -> str:
    """``mlflow.tracking_uri``: null → ``sqlite:///<abs>/outputs/mlflow.db``; a URI as given; a plain path → the
    folder of a SQLite store."""
    if value in (None, ""):
        return f"sqlite:///{Path('outputs').resolve() / 'mlflow.db'}"
    value = str(value)
    return value if "://" in value or value == "databricks" else f"sqlite:///{Path(value).resolve() / 'mlflow.db'}"


def _what_works(uri: str) -> str:
    """A store to use instead of ``uri``: for a folder MLflow refuses as its file store, a SQLite store in it."""
    if uri.startswith("file:"):
        folder = Path(urllib.parse.urlparse(uri).path)
        return f"use mlflow.tracking_uri={tracking_uri(str(folder))} (or the folder itself: mlflow.tracking_uri={folder})"
    return "check that the store is reachable, or keep the run local: mlflow.tracking_uri=DIR (a SQLite store in DIR)"


@contextlib.contextmanager
def backend(uri: str):
    """Any error of the tracking store ``uri`` as one line (``SegdetError``) naming the URI and what works."""
    mlflow = _mlflow()
    try:
        yield
    except (mlflow.exceptions.MlflowException, OSError) as e:
        said = str(getattr(e, "message", e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        said = said.split(". ")[0][:200]  # its first sentence: MLflow's messages run to a paragraph
        raise SegdetError(f"mlflow.tracking_uri={uri}: MLflow cannot use it ({said}); {_what_works(uri)}") from None


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside it; a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).parent / "mlflow-artifacts").as_uri()


def _key(name: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", name)[:_MAX_KEY]  # the characters MLflow accepts in a key


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """``{"optim": {"lr": 1e-4}}`` → ``{"optim.lr": "0.0001"}``; lists and null as JSON."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[_key(f"{prefix}{k}")] = (v if isinstance(v, str) else json.dumps(v))[:_MAX_PARAM]
    return out


class _Client:
    """The tracking client and the experiment, made once per run."""

    def __init__(self, mlflow_cfg):
        self.uri = tracking_uri(mlflow_cfg.get("tracking_uri"))
        mlflow = _mlflow()
        name = str(mlflow_cfg.experiment_name)
        with backend(self.uri):
            self.client = mlflow.MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(name, self._artifacts())
                except mlflow.exceptions.MlflowException:  # another job of the sweep created it meanwhile
                    self.experiment_id = self.client.get_experiment_by_name(name).experiment_id
            else:
                self.experiment_id = exp.experiment_id

    def _artifacts(self):
        location = _artifact_location(self.uri)
        if location:
            Path(location[len("file://"):]).mkdir(parents=True, exist_ok=True)
        return location

    def start(self, name: str, tags: dict) -> str:
        with backend(self.uri):
            return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id


class MlflowRun:
    """What RunLogger hands a training run's scalars and files to."""

    def __init__(self, cfg, run_dir: Path):
        from omegaconf import OmegaConf

        c = _Client(cfg.mlflow)
        self.client, self.uri, self.log_checkpoint = c.client, c.uri, bool(cfg.mlflow.log_checkpoint)
        self.off = False  # the store failed mid-run: warned once, nothing more is sent
        tags = {"segdet.run_dir": str(Path(run_dir).resolve()), "segdet.task": str(cfg.task.name)}
        if cfg.mlflow.get("parent_run_id"):
            tags["mlflow.parentRunId"] = str(cfg.mlflow.parent_run_id)
        self.run_id = c.start(Path(run_dir).name, tags)
        from mlflow.entities import Param

        params = flatten(OmegaConf.to_container(cfg, resolve=True))
        with backend(self.uri):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        log.info("mlflow: run %s in %s", self.run_id, c.uri)

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_key(f"{prefix}/{k}"), float(v), now, int(step)) for k, v in values.items()]
        if metrics:
            self._send(f"{prefix} at step {step}", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def _send(self, what: str, send) -> None:
        """Once the run is open, a failing store is one warning and nothing more is sent: training goes on."""
        if self.off:
            return
        try:
            with backend(self.uri):
                send()
        except SegdetError as e:
            self.off = True
            log.warning("%s; %s not sent, and MLflow tracking is off for the rest of this run", e, what)

    def finish(self, run_dir: Path, ok: bool) -> None:
        """The run's files as artifacts, then the run's end (FINISHED, or FAILED when training did not end)."""
        run_dir = Path(run_dir)
        files = [run_dir / "config.yaml", run_dir / "metrics.json"]
        if self.log_checkpoint:
            files.append(run_dir / "checkpoints" / "best.pt")
        for f in files:
            if f.is_file():
                self._send(f.name, lambda f=f: self.client.log_artifact(
                    self.run_id, str(f), "checkpoints" if f.suffix == ".pt" else None))
        if (run_dir / "plots").is_dir():
            self._send("plots/", lambda: self.client.log_artifacts(self.run_id, str(run_dir / "plots"), "plots"))
        self._send("the run's end", lambda: self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED"))


def open_sweep_run(mlflow_cfg, sweep_dir: Path) -> str:
    """The sweep's own run, opened in the process that runs the sweep; its jobs read the id from the sweep dir."""
    c = _Client(mlflow_cfg)
    run_id = c.start(Path(sweep_dir).name, {"segdet.sweep_dir": str(Path(sweep_dir).resolve())})
    write_text(Path(sweep_dir) / PARENT_RUN_FILE, run_id)
    return run_id


def close_sweep_run(mlflow_cfg, run_id: str, sweep_dir: Path, ok: bool) -> None:
    """Attach the search's results (Optuna's ``optimization_results.yaml``) and end the sweep's run."""
    c = _Client(mlflow_cfg)
    results = Path(sweep_dir) / "optimization_results.yaml"
    with backend(c.uri):
        try:
            if results.is_file():
                c.client.log_artifact(run_id, str(results))
        finally:
            c.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


def sweep_run_id(sweep_dir: Path) -> str | None:
    f = Path(sweep_dir) / PARENT_RUN_FILE
    return f.read_text().strip() if f.is_file() else None


def make_tracker(cfg, run_dir: Path):
    """The tracker ``logger=`` names, for RunLogger; None for ``tensorboard`` (RunLogger writes tb/ itself) and
    on ranks other than 0."""
    from segdet.engine import distributed

    name = cfg.logger.name
    if name not in ("tensorboard", "mlflow"):
        raise SegdetError(f"logger must be tensorboard or mlflow, not '{name}'")
    if name == "tensorboard" or not distributed.is_main():
        return None
    return MlflowRun(cfg, run_dir)
