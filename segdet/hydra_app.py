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

from segdet.commands import COMMANDS
from segdet.config import config_dir
from segdet.errors import Interrupted, SegdetError

log = logging.getLogger(__name__)
EXIT_SIGNAL = {2: 130, 15: 143}  # SIGINT, SIGTERM: the shell's 128 + signal number
_failed_jobs: list[int] = []      # sweep jobs that ended with a user error


def _job(cfg: DictConfig) -> None:
    from segdet.engine import distributed

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode.name == "MULTIRUN"
    try:
        importlib.import_module(COMMANDS[hc.job.name][0]).run(cfg, run_dir)
    except (SegdetError, OmegaConfBaseException) as e:
        if isinstance(e, OmegaConfBaseException):  # e.g. a required value left as ???
            e = SegdetError(str(e).strip().splitlines()[0])
        print(f"segdet: error: {e}", file=sys.stderr)
        if multirun:  # one bad job must not end the sweep: the others still run and keep their results
            log.error("job %s failed: %s", hc.job.num, e)
            _failed_jobs.append(hc.job.num)
            return
        sys.exit(e.exit_code)
    except Interrupted as e:
        where = f"; saved {e.path} — continue with trainer.resume=true ckpt={e.path}" if e.path else ""
        print(f"segdet: stopped by {e}{where}", file=sys.stderr)
        sys.exit(EXIT_SIGNAL.get(e.signum, 1))
    finally:
        if not multirun:
            distributed.cleanup()


def launch(command: str, args: list[str]) -> None:
    sys.argv = [f"segdet {command}"] + args
    main = hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")(_job)
    main()
    if _failed_jobs:  # the other jobs ran and kept their results; the sweep as a whole still failed
        print(f"segdet: error: {len(_failed_jobs)} sweep job(s) failed: {', '.join(map(str, _failed_jobs))}",
              file=sys.stderr)
        sys.exit(1)
