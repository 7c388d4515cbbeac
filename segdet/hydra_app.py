"""The thin ``@hydra.main`` layer: Hydra parses overrides and makes the run dir; plain functions do the work."""
from __future__ import annotations

import importlib
import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from segdet import overrides, sweeps
from segdet.commands import COMMANDS
from segdet.config import config_dir
from segdet.errors import Interrupted, SegdetError

log = logging.getLogger(__name__)


def _join_sweep_run(cfg: DictConfig, sweep_dir: Path) -> None:
    """A sweep job's MLflow run goes under the sweep's run, opened by the process that runs the sweep."""
    from segdet.engine.tracking import sweep_run_id

    if OmegaConf.select(cfg, "logger.name") == "mlflow" and not cfg.mlflow.get("parent_run_id"):
        with open_dict(cfg):
            cfg.mlflow.parent_run_id = sweep_run_id(sweep_dir)


def _job(cfg: DictConfig):
    """Runs the command; in a sweep returns the value the sweeper optimises (sweeps.objective). A sweep job never
    exits the process on a user error: the launcher may run other jobs in it, and the sweep goes on."""
    from segdet.engine import distributed, session

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode.name == "MULTIRUN"
    completed = False
    try:
        if multirun:
            _join_sweep_run(cfg, Path(hc.sweep.dir))
        result = importlib.import_module(COMMANDS[hc.job.name][0]).run(cfg, run_dir)
        completed = True
        return sweeps.objective(result, str(OmegaConf.select(cfg, "trainer.monitor"))) if multirun else None
    except (SegdetError, OmegaConfBaseException) as e:
        if isinstance(e, OmegaConfBaseException):  # e.g. a required value left as ???
            e = SegdetError(str(e).strip().splitlines()[0])
        print(f"segdet: error: {e}", file=sys.stderr)
        if multirun:  # one bad job must not end the sweep: the others still run and keep their results
            log.error("job %s failed: %s", hc.job.num, e)
            sweeps.record(run_dir, hc.job.num, "failed", str(e))
            return None
        sys.exit(e.exit_code)
    except Interrupted as e:
        where = f"; saved {e.path} — continue with trainer.resume=true ckpt={e.path}" if e.path else ""
        print(f"segdet: stopped by {e}{where}", file=sys.stderr)
        if multirun:
            sweeps.record(run_dir, hc.job.num, "stopped", f"stopped by {e}{where}")
            if e.signum == getattr(signal, "SIGUSR2", None):  # this job's time is up, not the sweep's
                return None
        sys.exit(128 + e.signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    finally:
        session.finish()
        if not multirun:
            distributed.cleanup(completed)


def launch(command: str, args: list[str]) -> None:
    sys.argv = [f"segdet {command}"] + overrides.flags_first(args)
    main = hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")(_job)
    completed = False
    try:
        main()
        completed = True
    finally:  # also after a sweep that stopped early (a crashed job, a signal): end its MLflow run, report
        failed = sweeps.finish(completed)
        if failed:  # the other jobs ran and kept their results; the sweep as a whole still failed
            print(f"segdet: error: {len(failed)} sweep job(s) failed: "
                  + "; ".join(f"#{job}: {why}" for job, why in failed), file=sys.stderr)
    if failed:
        sys.exit(1)
