"""How long idle OpenMP threads spin before they sleep; must be set before torch loads its OpenMP runtime.

The step of a small model is thousands of short ops, each a parallel region. Threads that sleep between them
(``OMP_WAIT_POLICY=PASSIVE``) pay a wake-up on every op: on 2 cores that made segdet's SAM training 1.7x and
the detector's 1.2x slower than threads that spin (``make bench``, CPU rows). Spinning forever would instead take
the cores away from DataLoader workers while the main process waits for a batch, so the spin is bounded
(libgomp's GOMP_SPINCOUNT: about 0.1 ms instead of its default of a few ms).
"""
from __future__ import annotations

import os

SPIN_COUNT = "10000"


def set_openmp_wait() -> None:
    """Bound the spin of libgomp (torch's Linux wheels) unless the user chose a policy or a spin count."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
