"""One pair of untrained tiny parts (a detector with classes lake and river, a SAM) for every detseg test."""
from __future__ import annotations

import pytest

from tests.detseg.parts import detector_ckpt, sam_ckpt


@pytest.fixture(scope="session")
def parts(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("detseg_parts")
    return str(detector_ckpt(root / "det.pt")), str(sam_ckpt(root / "sam.pt"))
