"""``segdet <command> <overrides>``: picks the command's primary config and hands the rest to Hydra.

Usage errors (unknown command, missing or unknown task, unknown option, bad file) end with one line
``segdet: error: ...`` on stderr and exit code 2 — never a traceback. The config is composed once here, before
Hydra makes a run dir, so a wrong option leaves nothing behind.
"""
from __future__ import annotations

import re
import sys
from datetime import datetime

from segdet.commands import ALIASES, COMMANDS, IMPLIED_TASK, TASK_FROM_CHECKPOINT
from segdet.config import task_config_dir, task_of
from segdet.engine.cluster import env_rank, launched_distributed
from segdet.errors import SegdetError
from segdet.malloc import keep_freed_memory
from segdet.sweeps import missing_extra, plugin_missing, with_sweeper_settings
from segdet.tasks import TASKS, check_command


def usage() -> str:
    commands = "\n".join(f"  {name:<9} {what:<31} {example}" for name, (_, what, example) in COMMANDS.items())
    tasks = "\n".join(f"  {name:<9} {info.what}" for name, info in TASKS.items())
    return (f"usage: segdet <command> task=<task> [group=option ...] [key=value ...] [hydra flags]\n"
            f"       ({', '.join(TASK_FROM_CHECKPOINT)}: no task=, the checkpoint names it)\n\n"
            f"commands:\n{commands}\n\ntasks:\n{tasks}\n\n"
            "presets: experiment=smoke (seconds, tiny) | experiment=quickstart (learns in minutes on a CPU)\n"
            "Hydra flags after the command: --help, --cfg job, -m (multirun sweep), hydra.run.dir=DIR\n"
            "segdet <command> task=<task> --help lists that task's config groups and options.\n")


def fail(message: str, code: int = 2):
    print(f"segdet: error: {message}", file=sys.stderr)
    sys.exit(code)


def _one_line(text: str) -> str:
    text = re.sub(r"\s*\n\s*", " ", str(text).strip())
    return text.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "").strip()


def _hydra_flag(args: list[str]) -> bool:
    return any(a.startswith("-") for a in args)


def _compose(command: str, args: list[str]):
    """The composed config, or a one-line error: an unknown option names the task's valid choices."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from segdet.config import compose

    overrides = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        cfg = compose(command, overrides)
        missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
        if missing:
            fail(f"{missing[0]} is required (give it as {missing[0]}=...)")
        return cfg
    except (HydraException, OmegaConfBaseException) as e:
        msg = _one_line(e)
        m = re.search(r"Could not find '([\w/]+)/([^']+)'.*?Available options in '[\w/]+': (.*?)(?: Config search"
                      r" path:|$)", msg)
        if m and plugin_missing(m.group(1), m.group(2)):  # e.g. an experiment preset that picks the Optuna sweeper
            fail(plugin_missing(m.group(1), m.group(2)))
        if m:
            fail(f"unknown {m.group(1)} '{m.group(2)}' for task={task_of(args)}; choose from: "
                 f"{', '.join(m.group(3).split())}")
        if "Missing mandatory value" in msg:
            key = re.search(r"full_key: ([\w.]+)", msg)
            fail(f"{key.group(1) if key else 'a required value'} is required (give it as "
                 f"{key.group(1) if key else 'key'}=...)")
        fail(msg)


def _checkpoint_task(args: list[str]) -> str:
    """export takes no task=: the checkpoint names it (read without loading its tensors)."""
    from segdet.engine.checkpoint import load

    path = next((a.split("=", 1)[1] for a in args if a.startswith("ckpt=")), None)
    if not path:
        fail("ckpt is required (give it as ckpt=...)")
    try:
        task = load(path, mmap=True).get("task")
    except SegdetError as e:
        fail(str(e))
    if task not in TASKS:
        fail(f"{path}: a checkpoint of task '{task}', which this segdet does not know ({', '.join(TASKS)})")
    return task


def _stored_settings(command: str, args: list[str]) -> list[str]:
    """eval/predict rebuild the model from the checkpoint's config, which their own configs do not hold, so
    ``model.KEY=VALUE`` is given to Hydra as ``+model.KEY=VALUE``, and then laid over the stored value."""
    if command == "train":
        return args
    return ["+" + a if a.startswith("model.") and "=" in a else a for a in args]


def _shared_run_dir(command: str, args: list[str], cfg) -> list[str]:
    """Under torchrun or srun every rank would stamp its own run dir; rank 0 decides and the others follow."""
    from segdet.engine import distributed
    from segdet.engine.runtime import resolve_device

    distributed.init_from_env(resolve_device(cfg.trainer.device))
    stamp = distributed.broadcast_object(datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    return args + [f"hydra.run.dir=outputs/{task_of(args)}/{command}/{stamp}"]


def _claim_given_run_dir(command: str, args: list[str]) -> None:
    """A run dir named on the command line is claimed before Hydra writes its .hydra/ files into it, so a second
    process given the same one stops before touching anything (the run dir's lock: ``engine.session``)."""
    given = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
    if not given or env_rank() != 0:  # under DDP rank 0 holds the run dir for all ranks
        return
    from segdet.engine import session
    try:
        session.claim(given[-1], "hydra.run.dir", command)
    except SegdetError as e:
        fail(str(e))


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        sys.exit(0 if argv else 2)
    command, args = ALIASES.get(argv[0], argv[0]), argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command '{argv[0]}'; choose from: {', '.join(COMMANDS)}")
    asks_help = any(a in ("--help", "-h", "--hydra-help", "--info") for a in args)
    if command in TASK_FROM_CHECKPOINT and task_of(args) is None and not asks_help:
        args = [f"task={_checkpoint_task(args)}"] + args
    if command in IMPLIED_TASK and task_of(args) is None:
        args = [f"task={IMPLIED_TASK[command]}"] + args
    if task_of(args) in TASKS:
        try:
            check_command(task_of(args), command)
        except SegdetError as e:
            fail(str(e))
    if asks_help and task_of(args) is None:
        args = [f"task={next(iter(TASKS))}"] + args  # Hydra's help composes a config, so it needs a task
    args = _stored_settings(command, args)
    missing = missing_extra(args)
    if missing:
        fail(missing)
    args = with_sweeper_settings(args)
    if not asks_help:
        task = task_of(args)
        if task is None:
            fail(f"task is required: segdet {command} task=<{'|'.join(TASKS)}> ...")
        if task not in TASKS:
            fail(f"unknown task '{task}'; choose from: {', '.join(TASKS)}")
        cfg = None if _hydra_flag(args) else _compose(command, args)
        if launched_distributed() and not any(a.startswith("hydra.run.dir=") for a in args):
            args = _shared_run_dir(command, args, cfg if cfg is not None else _compose(command, args))
        if cfg is not None:
            _claim_given_run_dir(command, args)

    from segdet.hydra_app import launch

    # the task's own groups join Hydra's search path from the start, so its --help lists them too
    task = task_of(args)
    launch(command, [f"--config-dir={task_config_dir(task)}"] + args if task in TASKS else args)


if __name__ == "__main__":
    main()
