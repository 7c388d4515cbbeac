"""How close an export must come to the PyTorch model it was made from, and the refusal when it does not.

Every exporter runs what it wrote (``from_pretrained``, ``torch.jit.load``, ``torch.export.load``, onnxruntime)
beside the PyTorch model on the same inputs and hands each output to ``within``: an element may differ from the
PyTorch model's by at most ``TOLERANCE[format] * (1 + |PyTorch's value|)``, as ``torch.testing.assert_close``
with ``atol = rtol = TOLERANCE[format]`` would allow. Above it the export is refused with ``CheckFailed`` (one
line: the output, its largest difference, the tolerance), and ``segdet export`` leaves nothing at ``output=``.
docs/export.md states the tolerances.
"""
from __future__ import annotations

import torch

from segdet.errors import SegdetError

TOLERANCE = {
    # the weights themselves, written and read back: bit for bit
    "hf": 0.0,
    # the same kernels in the same process: equal, but for a program that orders a float sum differently
    "torchscript": 1e-5,
    "pt2": 1e-5,
    # another runtime's kernels round float32 their own way (a few units in the last place, 1e-6 of a value);
    # a wrong graph is off by orders more
    "onnx": 1e-4,
}


class CheckFailed(SegdetError):
    """An export that does not give its PyTorch model's outputs; ``segdet export`` names the output folder."""


def max_abs(a, b) -> float:
    """The largest absolute difference of two arrays or tensors of one shape (0.0 when empty)."""
    a = torch.as_tensor(a).double()
    b = torch.as_tensor(b).double()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a - b).abs().max()) if a.numel() else 0.0


def within(fmt: str, output: str, exported, reference) -> float:
    """The largest absolute difference of ``exported`` (one output of the export, as its client gets it) from
    ``reference`` (the PyTorch model's); ``CheckFailed`` where an element is off by more than the format's
    tolerance, or the shapes differ."""
    tol = TOLERANCE[fmt]
    a = torch.as_tensor(exported).detach().cpu().double()
    b = torch.as_tensor(reference).detach().cpu().double()
    if a.shape != b.shape:
        raise CheckFailed(f"the {fmt} export's {output} have shape {tuple(a.shape)} where the PyTorch model's have "
                          f"{tuple(b.shape)}")
    if not a.numel():
        return 0.0
    diff = (a - b).abs()
    bad = ~(diff <= tol * (1 + b.abs()))  # ~(<=): a NaN is off too
    if bad.any():
        worst = torch.where(bad, diff.nan_to_num(float("inf")), -1.0).argmax()
        raise CheckFailed(f"the {fmt} export's {output} differ from the PyTorch model's by up to "
                          f"{float(diff.flatten()[worst]):.3g} (at a value of {float(b.flatten()[worst]):.3g}), "
                          f"above the {fmt} tolerance {tol:g} x (1 + |value|)")
    return float(diff.max())
