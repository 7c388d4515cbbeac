"""Seeded train/validation split shared by every task, and finding a checkpoint's own validation samples."""
from __future__ import annotations

import logging

import numpy as np

from segdet.errors import SegdetError

log = logging.getLogger(__name__)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle ``range(n)`` with ``seed``; the first ``round(n * val_fraction)`` (at least 1 if n > 1) go to val."""
    if n == 0:
        return [], []
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def checkpoint_val_indices(ids: list[str], split_ids: dict | None) -> list[int]:
    """Positions in ``ids`` of the validation samples a checkpoint recorded (``split.json``'s ``val``), in the
    checkpoint's order; samples no longer present are named in a warning."""
    wanted = list((split_ids or {}).get("val") or [])
    if not wanted:
        raise SegdetError("this checkpoint stores no validation split; pass data.split=all (with data.root=DIR)")
    where = {sid: i for i, sid in enumerate(ids)}
    missing = [sid for sid in wanted if sid not in where]
    if missing:
        log.warning("%d validation samples of the checkpoint are not under data.root (e.g. %s)",
                    len(missing), missing[0])
    return [where[sid] for sid in wanted if sid in where]


# --- splits of a task's sample source (sam, semantic: ``build(data_cfg, seed, root, bad)`` makes the source) ---
def separate_val(data_cfg):
    """(data settings, root) of a separate validation set, if one is given: ``data.val_root`` (a folder of the same
    layout) or ``data.val_ann_file`` (coco: another annotation file over the same images folder)."""
    from omegaconf import OmegaConf

    if data_cfg.get("val_root"):
        return data_cfg, data_cfg.val_root
    if data_cfg.get("val_ann_file"):
        return OmegaConf.merge(data_cfg, {"ann_file": data_cfg.val_ann_file}), data_cfg.get("root")
    return None


def build_splits(data_cfg, seed: int, make, build, check_val=None) -> dict:
    """Seeded train/val split of ``data.root`` (``data.val_fraction``), all of it and a separate validation set
    (``data.val_root``, ``data.val_ann_file``; ``check_val(train_source, val_source)`` may refuse it), or the
    source's own split (raster scenes hold out a strip). ``make(source, indices, train, bad)`` wraps a source."""
    from segdet.data.io import BadSamples

    policy = str(data_cfg["on_bad_sample"])
    bad = BadSamples(policy)
    source = build(data_cfg, seed, data_cfg.get("root"), bad)
    separate = separate_val(data_cfg)
    if separate is not None:
        val_bad = BadSamples(policy)
        val_source = build(separate[0], seed, separate[1], val_bad)
        if check_val is not None:
            check_val(source, val_source)
        return {"train": make(source, range(len(source)), True, bad),
                "val": make(val_source, range(len(val_source)), False, val_bad)}
    if hasattr(source, "split"):
        tr, va = source.split("train"), source.split("val")
    else:
        tr, va = split_indices(len(source), float(data_cfg["val_fraction"]), seed)
    return {"train": make(source, tr, True, bad), "val": make(source, va, False, BadSamples(policy))}


def build_eval_split(data_cfg, seed: int, split: str, split_ids: dict | None, make, build):
    """``all``: every sample under ``data.root``; ``val``: the checkpoint's own validation samples."""
    from segdet.data.io import BadSamples

    bad = BadSamples(str(data_cfg["on_bad_sample"]))
    separate = separate_val(data_cfg)
    if split == "val" and separate is not None:
        source = build(separate[0], seed, separate[1], bad)
        return make(source, range(len(source)), False, bad)
    source = build(data_cfg, seed, data_cfg.get("root"), bad)
    if hasattr(source, "split"):
        return make(source, source.split(split), False, bad)
    if split == "all":
        return make(source, range(len(source)), False, bad)
    return make(source, checkpoint_val_indices(source.ids, split_ids), False, bad)
