"""Where the packaged configs live, for a source checkout, an editable install and a regular install alike."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def config_dir() -> Path:
    # A regular install ships conf/ inside the package; a checkout (or editable install) has it beside it.
    for candidate in (_HERE / "conf", _HERE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError("segdet's configs (conf/train.yaml) are missing from this installation")
