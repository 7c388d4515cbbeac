"""What segdet loads from a folder of model weights it did not write (``model.pretrained=DIR``, and any loader of
a transformers folder or hub id): weights, never code.

* ``*.safetensors``: preferred. A folder that holds them is loaded from them alone.
* A pickle (``pytorch_model.bin`` or its shards): only when it holds nothing but tensors and plain containers.
  Each file is opened the way ``torch.load(weights_only=True)`` opens it before transformers reads it; one that
  names anything else (a function to call is how a pickle runs code) is refused on one line, and nothing in it
  runs.
* Never: code shipped with the folder (``trust_remote_code`` stays off, so ``auto_map`` entries are ignored).
* A hub id: its safetensors only. Before transformers is asked, the hub is probed once with a short timeout
  (``hub_access``): huggingface_hub would otherwise retry each file for a minute on a machine without a network.
  A model in the local cache is then loaded from the cache alone; one that is not ends on one line.

``from_pretrained(cls, src, what)`` is the one way segdet calls a transformers ``from_pretrained``; a new loader
(SAM-HQ, SAM 2, a detect→segment ``segmenter=DIR``) goes through it. ``refusal`` words the refusal of a pickle
that holds code, for segdet's own checkpoints too.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch

from segdet.errors import SegdetError

PICKLE_WEIGHTS = "pytorch_model.bin"  # transformers' name for pickled weights (and its .index.json for shards)
PROBE_TIMEOUT = 3.0  # seconds to wait for the hub's first answer: any answer at all means it can be reached


class HubUnreachable(OSError):
    """A hub id that can be neither downloaded nor found in the local cache; the message says why."""


def refusal(path, error: Exception) -> SegdetError:
    """One line for a pickle that holds more than weights, naming what it would have called. It does not repeat
    torch's advice to load it with ``weights_only=False``: that is exactly what runs the code."""
    found = re.search(r"GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)|global ([\w.]+)", str(error))
    what = next((g for g in found.groups() if g), None) if found else None
    held = f" ({what})" if what else ""
    return SegdetError(f"{path}: refused to load: the file holds objects other than weights{held}; segdet loads "
                       "only plain tensors from pickles, never code")


def check_pickle(path: Path) -> None:
    """Open ``path`` as weights only (memory-mapped, nothing copied), or refuse it on one line."""
    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped: read it
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise refusal(path, e) from None
    except Exception as e:  # not a torch file at all
        raise SegdetError(f"{path}: not a weights file ({type(e).__name__}: {str(e).strip()[:120]})") from None


def check_folder(folder: Path) -> bool:
    """Check the weight files of ``folder`` that transformers would read, before it reads them. Returns whether to
    load its safetensors (True) or its pickle weights, each checked (False): ``pytorch_model.bin`` or the shards
    its index names (other pickles, such as a trainer's ``training_args.bin``, are never read)."""
    folder = Path(folder)
    if any(p.suffix == ".safetensors" for p in folder.iterdir() if p.is_file()):
        return True
    shards = [folder / PICKLE_WEIGHTS] if (folder / PICKLE_WEIGHTS).is_file() else []
    index = folder / f"{PICKLE_WEIGHTS}.index.json"
    if index.is_file():
        try:
            shards += sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise SegdetError(f"{index}: not a weights index (a JSON object with a 'weight_map')") from None
    for p in shards:
        if p.is_file():
            check_pickle(p)
    return False


def is_folder(src: str) -> bool:
    """Whether ``src`` names a local folder (a path) rather than a hub id (``owner/name``)."""
    return src.startswith(("/", ".", "~")) or Path(src).expanduser().exists()


def hub_access(src: str) -> str:
    """How hub id ``src`` can be loaded: ``"online"`` (the hub answers), ``"cache"`` (it does not, or
    ``HF_HUB_OFFLINE`` is set, but the model is in the local cache), else ``HubUnreachable``."""
    import huggingface_hub
    from huggingface_hub import constants

    cached = isinstance(huggingface_hub.try_to_load_from_cache(src, "config.json"), str)
    if constants.HF_HUB_OFFLINE:  # HF_HUB_OFFLINE, read by huggingface_hub when imported
        if cached:
            return "cache"
        raise HubUnreachable(f"HF_HUB_OFFLINE is set and '{src}' is not in the local cache "
                             f"({constants.HF_HUB_CACHE})")
    try:  # huggingface_hub's own client: its proxies, endpoint and headers, without its retries
        huggingface_hub.utils.get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT)
    except Exception as e:  # noqa: BLE001 -- no route, no DNS, a timeout, a proxy refusing: all say "offline"
        if cached:
            return "cache"
        why = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise HubUnreachable(f"{constants.ENDPOINT} cannot be reached ({why}) and '{src}' is not in the local "
                             "cache") from None
    return "online"


def from_pretrained(cls, src: str, what: str):
    """``cls.from_pretrained(src)`` that loads weights only. ``src``: a folder (checked by ``check_folder``) or a
    hub id (safetensors only; ``HubUnreachable`` at once when it can be neither fetched nor found in the cache).
    ``what``: how the user gave it (``model.pretrained=DIR``), for the errors. A folder that does not exist is an
    error; transformers' own errors (not this model) are the caller's."""
    path = Path(src).expanduser()
    local_only = False
    if is_folder(src):
        if not path.is_dir():
            raise SegdetError(f"{what}: no such folder (expected a folder with config.json and weights, saved by "
                              f"{cls.__name__}.save_pretrained)")
        use_safetensors = check_folder(path)
        src = str(path)
    else:
        use_safetensors, local_only = True, hub_access(src) == "cache"
    return cls.from_pretrained(src, use_safetensors=use_safetensors, trust_remote_code=False,
                               local_files_only=local_only)
