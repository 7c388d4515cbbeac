"""The server's own settings, read once from the composed config and checked.

Their defaults live in one place, ``conf/common/annotate.yaml``: nothing here or in the modules that take these
values repeats them. A value of the wrong kind (``memory_items=many``, ``propose.iou=2``) ends the command with one
line naming the key and what it takes.
"""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from segdet.errors import SegdetError


@dataclass(frozen=True)
class ServerSettings:
    memory_items: int           # embeddings kept in memory
    prefetch: bool              # the next image's embedding computed in the background
    max_body: int               # bytes a request body may have (max_body_mb)
    cache_embeddings: bool      # image embeddings on disk, shared with training
    cache_dir: str | None
    import_min_area: float      # DIR/masks/ import: smallest component kept
    propose_iou: float          # detector proposals overlapping a better one by more than this are dropped
    score_threshold: float      # detector proposals scoring at least this
    classes: list[str] | None   # the only category names objects may take
    threads: int | None         # torch CPU threads of the server
    train_enabled: bool
    train_overrides: list[str]

    @classmethod
    def from_cfg(cls, cfg) -> "ServerSettings":
        classes = _value(cfg, "classes")
        if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
            raise SegdetError("classes must be a list of names, e.g. classes=[water,road]")
        overrides = _value(cfg, "train.overrides")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise SegdetError("train.overrides must be a list of key=value strings, e.g. "
                              "'train.overrides=[trainer.max_epochs=20]'")
        cache_dir = _value(cfg, "cache_dir")
        threads = _value(cfg, "threads")
        return cls(memory_items=_integer(cfg, "memory_items", 1), prefetch=_flag(cfg, "prefetch"),
                   max_body=int(_number(cfg, "max_body_mb", above=0) * 2**20),
                   cache_embeddings=_flag(cfg, "cache_embeddings"),
                   cache_dir=None if cache_dir in (None, "") else str(cache_dir),
                   import_min_area=_number(cfg, "import_min_area", at_least=0),
                   propose_iou=_fraction(cfg, "propose.iou"), score_threshold=_fraction(cfg, "propose.score_threshold"),
                   classes=classes or None, threads=None if threads in (None, 0) else _integer(cfg, "threads", 1),
                   train_enabled=_flag(cfg, "train.enabled"), train_overrides=list(overrides))


def _value(cfg, key: str):
    """The key's value as plain Python; every key is declared in annotate.yaml, so a missing one is a bug there."""
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _integer(cfg, key: str, least: int) -> int:
    value = _value(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise SegdetError(f"{key} must be an integer >= {least}, not {value!r}")
    return value


def _number(cfg, key: str, above: float | None = None, at_least: float | None = None) -> float:
    value = _value(cfg, key)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value == value
    if not ok or (above is not None and value <= above) or (at_least is not None and value < at_least):
        bound = f" > {above}" if above is not None else f" >= {at_least}" if at_least is not None else ""
        raise SegdetError(f"{key} must be a number{bound}, not {value!r}")
    return float(value)


def _fraction(cfg, key: str) -> float:
    value = _value(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SegdetError(f"{key} must be a number from 0 to 1, not {value!r}")
    return float(value)


def _flag(cfg, key: str) -> bool:
    value = _value(cfg, key)
    if not isinstance(value, bool):
        raise SegdetError(f"{key} must be true or false, not {value!r}")
    return value
