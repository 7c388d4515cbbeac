"""What segdet adds to Hydra's multirun: the value a job hands the sweeper, each job's outcome, the sweep's report.

Hydra's launchers run a sweep's jobs in this process (basic), in reused worker processes (joblib) or in fresh
interpreters, maybe on other machines (submitit). The run dirs are all they share, so each job leaves
``job_status.json`` in its run dir (``record`` where segdet catches a user error, ``SweepReport.on_job_end``
otherwise), and the process that ran the sweep reads them back (``finish``): a job dir without one did not finish
(killed, timed out). The same callback opens and closes the sweep's MLflow run with ``logger=mlflow``.

The sweeper and launcher plugins, MLflow and export's ONNX packages are optional extras; asking for one that is
not installed ends with one line naming the pip command (``missing_extra``).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from segdet import overrides
from segdet.engine.cluster import env_rank
from segdet.errors import SegdetError
from segdet.files.atomic import write_json

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"
SWEEP_EXTRA = "pip install 'segdet[sweep]'"
# the options of Hydra's plugin groups that come with the sweep extra: the module that provides each
PLUGINS = {
    "hydra/sweeper": {"optuna": "hydra_plugins.hydra_optuna_sweeper"},
    "hydra/launcher": {"joblib": "hydra_plugins.hydra_joblib_launcher",
                       "submitit_local": "hydra_plugins.hydra_submitit_launcher",
                       "submitit_slurm": "hydra_plugins.hydra_submitit_launcher"},
}

# hydra.sweeper.direction from trainer.monitor_mode; registered wherever a job may run (this module is imported
# by the job function's module)
OmegaConf.register_new_resolver("segdet_direction", lambda mode: {"max": "maximize", "min": "minimize"}[str(mode)],
                                replace=True)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (hydra_plugins) is missing
        return False


def plugin_missing(group: str, option: str) -> str | None:
    """The one-line message when ``group=option`` names a plugin of the sweep extra that is not installed."""
    module = PLUGINS.get(group, {}).get(option)
    if module and not _installed(module):
        return f"{group}={option} needs a Hydra plugin that is not installed: {SWEEP_EXTRA}"
    return None


def missing_extra(args: list[str]) -> str | None:
    """What the command line asks for that is not installed (a sweeper or launcher plugin, MLflow, export's ONNX),
    if anything."""
    from segdet import onnx_export
    from segdet.engine.tracking import INSTALL

    for key in overrides.named(args):
        for option in overrides.options(args, key):
            message = plugin_missing(key, option)
            if message:
                return message
            if key == "logger" and option == "mlflow" and not _installed("mlflow"):
                return f"logger=mlflow needs MLflow, which is not installed: {INSTALL}"
            if key == "format" and option == "onnx" and onnx_export.missing():
                return onnx_export.missing()
    return None


def with_sweeper_settings(args: list[str]) -> list[str]:
    """``hydra/sweeper=optuna`` also lays segdet's settings over the plugin's defaults
    (conf/common/hydra/sweeper_settings/optuna.yaml: direction from trainer.monitor_mode, a failed trial does
    not stop the search, a seeded sampler); the command line's own ``hydra.sweeper.*`` still win."""
    if "optuna" in overrides.options(args, "hydra/sweeper") and "hydra/sweeper_settings" not in overrides.named(args):
        return args + ["hydra/sweeper_settings@hydra.sweeper=optuna"]
    return args


def objective(result, monitor: str) -> float | None:
    """What a sweep job returns to the sweeper: the monitored metric's best value (train) or its value (eval).
    None, which the Optuna sweeper records as a failed trial and moves on from, when there is none or it is not
    finite (a NaN would stop the whole study)."""
    if not isinstance(result, dict):
        return None
    value = result.get(f"best_{monitor}", result.get(monitor))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def record(run_dir: Path, job: int, status: str, error: str | None = None) -> None:
    """The job's outcome in its run dir (rank 0 only): ``ok``, ``failed`` (a user error), ``crashed`` (an
    unexpected exception), ``stopped`` (a signal)."""
    if env_rank() != 0:
        return
    write_json(Path(run_dir) / STATUS_FILE, {"job": job, "status": status, "error": error}, indent=None)


def _multirun(config: DictConfig) -> bool:
    return getattr(OmegaConf.select(config, "hydra.mode"), "name", None) == "MULTIRUN"


class _Sweep:
    """The running sweep, as seen by the process that runs it."""

    dir: Path | None = None
    mlflow_cfg = None
    mlflow_run: str | None = None


class SweepReport(Callback):
    """Hydra callback (conf/common/hydra/default.yaml). on_multirun_* run in the sweep's process, on_job_* in the
    job's."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _Sweep.dir = Path(str(config.hydra.sweep.dir))
        if OmegaConf.select(config, "logger.name") == "mlflow" and env_rank() == 0:  # torchrun: every rank sweeps
            from segdet.engine.tracking import open_sweep_run

            _Sweep.mlflow_cfg = config.mlflow
            try:
                _Sweep.mlflow_run = open_sweep_run(config.mlflow, _Sweep.dir)
            except SegdetError as e:  # Hydra would print an exception from a callback with its traceback
                print(f"segdet: error: {e}", file=sys.stderr)
                sys.exit(e.exit_code)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if _multirun(config) and env_rank() == 0:  # a status left by an earlier sweep into the same dir
            (Path(config.hydra.runtime.output_dir) / STATUS_FILE).unlink(missing_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        if not _multirun(config) or (run_dir / STATUS_FILE).exists():  # the job recorded its own outcome
            return
        if job_return.status == JobStatus.FAILED:
            record(run_dir, config.hydra.job.num, "crashed", repr(job_return._return_value))
        else:
            record(run_dir, config.hydra.job.num, "ok")


def failed_jobs(sweep_dir: Path | None) -> list[tuple[int, str]]:
    """(job number, what happened) for every job of the sweep that did not end well."""
    if sweep_dir is None or not sweep_dir.is_dir():
        return []
    out = []
    for job_dir in sweep_dir.iterdir():
        if not (job_dir / ".hydra").is_dir():  # not a job's run dir (.submitit/, results)
            continue
        status = job_dir / STATUS_FILE
        if not status.is_file():
            out.append((int(job_dir.name) if job_dir.name.isdigit() else -1, "did not finish"))
            continue
        st = json.loads(status.read_text())
        if st["status"] != "ok":
            out.append((st["job"], st["error"] or st["status"]))
    return sorted(out)


def finish(completed: bool) -> list[tuple[int, str]]:
    """After the sweep (``completed``: it ran to its end): end its MLflow run and return the jobs that failed."""
    if _Sweep.dir is None:
        return []
    failed = failed_jobs(_Sweep.dir)
    if _Sweep.mlflow_run is not None:
        from segdet.engine.tracking import close_sweep_run

        try:
            close_sweep_run(_Sweep.mlflow_cfg, _Sweep.mlflow_run, _Sweep.dir, ok=completed and not failed)
        except SegdetError as e:  # the jobs ran and kept their results: only the sweep's MLflow run is left open
            log.warning("%s; the sweep's MLflow run is left unfinished", e)
        _Sweep.mlflow_run = None
    return failed
