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
    from segdet.engine import distributed, session

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
        session.finish()
        if not multirun:
            distributed.cleanup()


# Hydra's flags that take a value (``--cfg job``); the value is not an override
_FLAG_VALUES = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun"}


def flags_first(args: list[str]) -> list[str]:
    """Hydra's parser takes overrides only after its flags: ``task=sam -m a=1,2`` becomes ``-m task=sam a=1,2``."""
    flags, overrides, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            flags.append(a)
            if a in _FLAG_VALUES and i + 1 < len(args) and "=" not in args[i + 1] and not args[i + 1].startswith("-"):
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(a)
        i += 1
    return flags + overrides


def launch(command: str, args: list[str]) -> None:
    sys.argv = [f"segdet {command}"] + flags_first(args)
    main = hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")(_job)
    main()
    if _failed_jobs:  # the other jobs ran and kept their results; the sweep as a whole still failed
        print(f"segdet: error: {len(_failed_jobs)} sweep job(s) failed: {', '.join(map(str, _failed_jobs))}",
              file=sys.stderr)
        sys.exit(1)
