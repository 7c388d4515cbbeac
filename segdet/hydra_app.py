"""The thin ``@hydra.main`` layer: Hydra parses overrides and makes the run dir; plain functions do the work."""
from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from segdet.paths import config_dir
from segdet.registry import SegdetError

RUNNERS = {"train": "segdet.commands.train", "eval": "segdet.commands.evaluate",
           "predict": "segdet.commands.predict"}
EXIT_SIGNAL = {2: 130, 15: 143}  # SIGINT, SIGTERM: the shell's 128 + signal number
_failed_jobs: list[int] = []      # sweep jobs that ended with a user error


def _job(cfg: DictConfig) -> None:
    from segdet.engine import distributed as dist_utils
    from segdet.engine.trainer import Interrupted

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode.name == "MULTIRUN"
    try:
        importlib.import_module(RUNNERS[hc.job.name]).run(cfg, run_dir)
    except (SegdetError, OmegaConfBaseException) as e:
        if isinstance(e, OmegaConfBaseException):  # e.g. a required value left as ???
            e = SegdetError(str(e).strip().splitlines()[0])
        print(f"segdet: error: {e}", file=sys.stderr)
        if multirun:  # one bad job must not end the sweep: the others still run and keep their results
            logging.getLogger("segdet").error("job %s failed: %s", hc.job.num, e)
            _failed_jobs.append(hc.job.num)
            return
        sys.exit(getattr(e, "exit_code", 2))
    except Interrupted as e:
        where = f"; saved {e.path} — continue with trainer.resume=true ckpt={e.path}" if e.path else ""
        print(f"segdet: stopped by {e}{where}", file=sys.stderr)
        sys.exit(EXIT_SIGNAL.get(e.signum, 1))
    finally:
        if not multirun:
            dist_utils.cleanup()


def launch(config_name: str, args: list[str]) -> None:
    sys.argv = [f"segdet {config_name}"] + args
    main = hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(_job)
    main()
    if _failed_jobs:  # the other jobs ran and kept their results; the sweep as a whole still failed
        print(f"segdet: error: {len(_failed_jobs)} sweep job(s) failed: {', '.join(map(str, _failed_jobs))}",
              file=sys.stderr)
        sys.exit(1)
