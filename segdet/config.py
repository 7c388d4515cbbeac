"""Where segdet's configs live and how a command's config is composed.

``conf/common/`` holds each command's primary config (train.yaml, eval.yaml, predict.yaml), the task configs
(task/) and the groups every task shares (optim, sched, trainer, experiment, hydra). A task's own groups (data,
model, loss, augment) live in ``conf/<task>/``, which is added to Hydra's search path once the task is known:
``model=frcnn_tiny`` under ``task=sam`` is then an unknown option at composition, and ``--help`` lists only the
task's options.
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def conf_root() -> Path:
    """conf/: a regular install ships it inside the package; a checkout (or editable install) has it beside it."""
    for candidate in (_HERE / "conf", _HERE.parent / "conf"):
        if (candidate / "common" / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError("segdet's configs (conf/common/train.yaml) are missing from this installation")


def config_dir() -> Path:
    """Hydra's primary config dir: the commands' configs and the groups every task shares."""
    return conf_root() / "common"


def task_config_dir(task: str) -> Path:
    """A task's own groups (data, model, loss, augment)."""
    return conf_root() / task


def with_task_groups(args: list[str]) -> list[str]:
    """``args`` plus the search-path override that makes the named task's groups (conf/<task>/) visible."""
    from segdet import overrides

    task = overrides.value(args, "task")
    folder = task_config_dir(str(task))
    if task is None or not folder.is_dir():
        return list(args)
    return list(args) + [f"hydra.searchpath=['file://{folder.as_posix()}']"]


def compose(command: str, overrides: list[str] = ()):
    """The config ``segdet <command> <overrides>`` runs with, composed without making a run dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose(command, overrides=with_task_groups(overrides))
