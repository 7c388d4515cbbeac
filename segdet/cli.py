"""``segdet <command> <overrides>``: picks the command's primary config and hands the rest to Hydra.

Usage errors (unknown command, missing or unknown task, unknown option, bad file) end with one line
``segdet: error: ...`` on stderr and exit code 2 — never a traceback. The config is composed once here, before
Hydra makes a run dir, so a wrong option leaves nothing behind.
"""
from __future__ import annotations

import re
import sys
from datetime import datetime

from segdet import overrides
from segdet.commands import ALIASES, COMMANDS, IMPLIED_TASK, TASK_FROM_CHECKPOINT
from segdet.config import task_config_dir
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


def _compose(command: str, args: list[str]):
    """The composed config, or a one-line error: an unknown option names the task's valid choices."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from segdet.config import compose

    try:
        cfg = compose(command, overrides.without_hydra(args))
        missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
        if missing:
            key = "input" if missing[0] == "input.path" else missing[0]  # input=P is how users give it
            fail(f"{key} is required (give it as {key}=...)")
        return cfg
    except (HydraException, OmegaConfBaseException) as e:
        msg = _one_line(e)
        m = re.search(r"Could not find '([\w/]+)/([^']+)'.*?Available options in '[\w/]+': (.*?)(?: Config search"
                      r" path:|$)", msg)
        if m and plugin_missing(m.group(1), m.group(2)):  # e.g. an experiment preset that picks the Optuna sweeper
            fail(plugin_missing(m.group(1), m.group(2)))
        if m:
            fail(f"unknown {m.group(1)} '{m.group(2)}' for task={overrides.value(args, 'task')}; choose from: "
                 f"{', '.join(m.group(3).split())}")
        if "Missing mandatory value" in msg:
            key = re.search(r"full_key: ([\w.]+)", msg)
            fail(f"{key.group(1) if key else 'a required value'} is required (give it as "
                 f"{key.group(1) if key else 'key'}=...)")
        fail(msg)


def _checkpoint_task(args: list[str]) -> str:
    """export takes no task=: the checkpoint names it (read without loading its tensors)."""
    from segdet.engine.checkpoint import load

    path = overrides.value(args, "ckpt")
    if not path:
        fail("ckpt is required (give it as ckpt=...)")
    task = load(path, mmap=True).get("task")
    if task not in TASKS:
        fail(f"{path}: a checkpoint of task '{task}', which this segdet does not know ({', '.join(TASKS)})")
    return task


def _shared_run_dir(command: str, args: list[str], cfg) -> list[str]:
    """Under torchrun or srun every rank would stamp its own run dir; rank 0 decides and the others follow (the
    process group is joined for that here, ``engine.session.join``, and ``session.start`` finds it joined)."""
    from segdet.engine import distributed, session

    session.join(cfg.trainer.device)
    stamp = distributed.broadcast_object(datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    return args + [f"hydra.run.dir=outputs/{overrides.value(args, 'task')}/{command}/{stamp}"]


def _claim_given_run_dir(command: str, args: list[str]) -> None:
    """A run dir named on the command line is claimed before Hydra writes its .hydra/ files into it, so a second
    process given the same one stops before touching anything (the run dir's lock: ``engine.session``)."""
    given = overrides.value(args, "hydra.run.dir")
    if given is None or env_rank() != 0:  # under DDP rank 0 holds the run dir for all ranks
        return
    from segdet.engine import session

    session.claim(given, "hydra.run.dir", command)


def _command_line(command: str, args: list[str]) -> list[str]:
    """What Hydra is handed for ``segdet <command> <args>``, after every check that can fail on one line."""
    asks_help = overrides.asks_help(args)
    if command in TASK_FROM_CHECKPOINT and overrides.value(args, "task") is None and not asks_help:
        args = [f"task={_checkpoint_task(args)}"] + args
    if command in IMPLIED_TASK:  # annotate is SAM's
        args = overrides.with_default(args, "task", IMPLIED_TASK[command])
    if overrides.value(args, "task") in TASKS:
        check_command(overrides.value(args, "task"), command)
    if asks_help:  # Hydra's help composes a config, so it needs a task
        args = overrides.with_default(args, "task", next(iter(TASKS)))
    if command != "train":
        # eval/predict rebuild the model from the checkpoint's config, which their own configs do not hold:
        # model.KEY=VALUE is given to Hydra as +model.KEY=VALUE, and then laid over the stored value
        args = overrides.added(args, "model")
    if command == "predict":  # input is a group (path, bands, scale): a plain input=P is its path
        args = overrides.renamed(args, "input", "input.path")
        for key in ("stack", "propagate"):  # stack=true: a group whose switch is its enabled key
            args = overrides.renamed(args, key, f"{key}.enabled")
        area = overrides.find(args, "aoi")  # aoi is a group (path, bounds, crs): aoi=FILE or aoi=[minx,miny,...]
        if area is not None and not area.is_delete():
            args = overrides.renamed(args, "aoi", "aoi.bounds" if isinstance(area.value(), list) else "aoi.path")
    missing = missing_extra(args)
    if missing:
        fail(missing)
    args = with_sweeper_settings(args)
    task = overrides.value(args, "task")
    if not asks_help:
        if task is None and overrides.options(args, "task"):
            fail("task= takes one task, not a sweep (its config groups depend on it): one sweep per task")
        if task is None:
            fail(f"task is required: segdet {command} task=<{'|'.join(TASKS)}> ...")
        if task not in TASKS:
            fail(f"unknown task '{task}'; choose from: {', '.join(TASKS)}")
        cfg = None if overrides.has_flag(args) else _compose(command, args)
        if launched_distributed() and overrides.value(args, "hydra.run.dir") is None:
            args = _shared_run_dir(command, args, cfg if cfg is not None else _compose(command, args))
        if cfg is not None:
            if command == "annotate":  # one server per folder: a second one is refused before any run dir exists
                from segdet.commands.annotate import claim_data_root

                claim_data_root(cfg)
            _claim_given_run_dir(command, args)
    # the task's own groups join Hydra's search path from the start, so its --help lists them too
    return [f"--config-dir={task_config_dir(task)}"] + args if task in TASKS else args


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        sys.exit(0 if argv else 2)
    command, args = ALIASES.get(argv[0], argv[0]), argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command '{argv[0]}'; choose from: {', '.join(COMMANDS)}")
    try:
        args = _command_line(command, args)
    except SegdetError as e:  # a line Hydra would refuse, a checkpoint that cannot be read ...
        fail(str(e))

    from segdet.hydra_app import launch

    launch(command, args)


if __name__ == "__main__":
    main()
