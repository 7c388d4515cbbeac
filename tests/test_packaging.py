"""The wheel ships every subpackage and every config, and building it prints no setuptools packaging warning, so
`pip install .` works from any directory and `make install` stays quiet."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds the wheel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", str(ROOT),
                           "-w", str(out)], capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = set(zipfile.ZipFile(next(out.glob("segdet-*.whl"))).namelist())
    return names, proc.stdout + proc.stderr


def test_wheel_carries_every_subpackage(wheel):
    names, _ = wheel
    on_disk = {f"{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "segdet").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert {p for p in on_disk if p.endswith("__init__.py")}, "no subpackage found on disk"
    assert on_disk <= names, f"missing from the wheel: {sorted(on_disk - names)}"
    assert "segdet/cli.py" in names


def test_wheel_carries_the_configs(wheel):
    names, _ = wheel
    on_disk = {f"segdet/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert "segdet/conf/common/train.yaml" in on_disk
    assert on_disk <= names, f"missing from the wheel: {sorted(on_disk - names)}"


def test_building_prints_no_packaging_warning(wheel):
    _, output = wheel
    warnings = [line for line in output.splitlines()
                if "Warning" in line or "is absent from the `packages` configuration" in line]
    assert not warnings, "\n".join(warnings[:20])
