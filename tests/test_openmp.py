"""The OpenMP spin bound the CLI sets before torch loads: only when the user has not chosen a policy."""
from __future__ import annotations

import os

from segdet.openmp import SPIN_COUNT, set_openmp_wait


def test_spin_is_bounded_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    set_openmp_wait()
    assert os.environ["GOMP_SPINCOUNT"] == SPIN_COUNT
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    set_openmp_wait()
    assert "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    set_openmp_wait()
    assert os.environ["GOMP_SPINCOUNT"] == "5"
