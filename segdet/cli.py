"""``segdet <command> <overrides>``: picks the command's primary config and hands the rest to Hydra.

Usage errors (unknown command, missing or unknown task, unknown option, bad file) end with one line
``segdet: error: ...`` on stderr and exit code 2 — never a traceback.
"""
from __future__ import annotations

import os
import re
import sys
from datetime import datetime

from segdet.malloc import keep_freed_memory

COMMANDS = {"train": "train", "eval": "eval", "evaluate": "eval", "predict": "predict"}
TASKS = ("sam", "frcnn")

USAGE = """usage: segdet <command> task=<task> [group=option ...] [key=value ...] [hydra flags]

commands:
  train     fit a model                     segdet train task=sam data=folder data.root=DIR
  eval      score a checkpoint              segdet eval task=sam ckpt=PATH [data.root=DIR]
  predict   write predictions of a ckpt     segdet predict task=frcnn ckpt=PATH input=DIR

tasks:
  sam       fine-tune Segment Anything for binary segmentation
  frcnn     Faster R-CNN object detection (VGG16, the paper's way)

presets: experiment=smoke (seconds, tiny) | experiment=quickstart (learns in minutes on a CPU)
Hydra flags after the command: --help, --cfg job, -m (multirun sweep), hydra.run.dir=DIR
"""


def fail(message: str, code: int = 2):
    print(f"segdet: error: {message}", file=sys.stderr)
    sys.exit(code)


def _one_line(text: str) -> str:
    text = re.sub(r"\s*\n\s*", " ", str(text).strip())
    return text.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "").strip()


def _task_of(args: list[str]) -> str | None:
    for a in args:
        if a.startswith("task="):
            return a.split("=", 1)[1]
    return None


def _hydra_flag(args: list[str]) -> bool:
    return any(a.startswith("-") for a in args)


def _check_composes(command: str, args: list[str]) -> None:
    """Compose once up front so a bad option is a one-line error instead of Hydra's report."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from segdet.paths import config_dir

    overrides = [a for a in args if not a.startswith("hydra.") and not a.startswith("hydra/")]
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose(command, overrides=overrides)
        missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
        if missing:
            fail(f"{missing[0]} is required (give it as {missing[0]}=...)")
    except (HydraException, OmegaConfBaseException) as e:
        msg = _one_line(e)
        m = re.search(r"Could not find '([\w/]+)/([^']+)'.*?Available options in '[\w/]+': (.*)", msg)
        if m:
            fail(f"unknown {m.group(1)} '{m.group(2)}'; choose from: {', '.join(m.group(3).split())}")
        if "Missing mandatory value" in msg:
            key = re.search(r"full_key: ([\w.]+)", msg)
            fail(f"{key.group(1) if key else 'a required value'} is required (give it as "
                 f"{key.group(1) if key else 'key'}=...)")
        fail(msg)


def _stored_settings(command: str, args: list[str]) -> list[str]:
    """eval/predict rebuild the model from the checkpoint's config, which their own configs do not hold, so
    ``model.KEY=VALUE`` is given to Hydra as ``+model.KEY=VALUE``, and then laid over the stored value."""
    if command == "train":
        return args
    return ["+" + a if a.startswith("model.") and "=" in a else a for a in args]


def _shared_run_dir(command: str, args: list[str]) -> list[str]:
    """Under torchrun every rank would stamp its own run dir; rank 0 decides and the others follow."""
    from segdet.engine import distributed as dist_utils

    device = next((a.split("=", 1)[1] for a in args if a.startswith("trainer.device=")), "auto")
    dist_utils.init_from_env(device)
    stamp = dist_utils.broadcast_object(datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    return args + [f"hydra.run.dir=outputs/{_task_of(args)}/{command}/{stamp}"]


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        sys.exit(0 if argv else 2)
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command '{command}'; choose from: train, eval, predict")
    config_name = COMMANDS[command]
    asks_help = any(a in ("--help", "-h", "--hydra-help", "--info") for a in args)
    if asks_help and _task_of(args) is None:
        args = ["task=sam"] + args  # Hydra's help composes a config; every group's options are listed either way
    args = _stored_settings(config_name, args)
    if not asks_help:
        task = _task_of(args)
        if task is None:
            fail(f"task is required: segdet {command} task=<{'|'.join(TASKS)}> ...")
        if task not in TASKS:
            fail(f"unknown task '{task}'; choose from: {', '.join(TASKS)}")
        if not _hydra_flag(args):
            _check_composes(config_name, args)
        if os.environ.get("WORLD_SIZE", "1") != "1" and not any(a.startswith("hydra.run.dir=") for a in args):
            args = _shared_run_dir(config_name, args)

    from segdet.hydra_app import launch

    launch(config_name, args)


if __name__ == "__main__":
    main()
