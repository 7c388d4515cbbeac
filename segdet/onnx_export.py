"""ONNX the way every segdet exporter writes and checks it: the optional packages, torch's exporter with segdet's
settings, and an onnxruntime session on the CPU.

segdet uses torch's TorchScript-based exporter (``dynamo=False``): it honours opset 17, handles the detector's
data-dependent NMS branches and exports in seconds, where the dynamo exporter emits opset 18 for SAM's encoder and
fixes the detector's dynamic sizes to the example's.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import torch

from segdet.errors import SegdetError

MIN_OPSET = 17
INSTALL = "pip install 'segdet[export]'"


def missing() -> str | None:
    """The one line naming the pip command when the optional ``export`` extra is not installed, else None."""
    names = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            names.append(name)
    if not names:
        return None
    verb = "is" if len(names) == 1 else "are"
    return f"format=onnx needs {' and '.join(names)}, which {verb} not installed: {INSTALL}"


def require_onnx() -> None:
    message = missing()
    if message:
        raise SegdetError(message)


def check_opset(opset) -> int:
    opset = int(opset)
    if opset < MIN_OPSET:
        raise SegdetError(f"opset={opset}: segdet exports ONNX at opset {MIN_OPSET} or newer")
    return opset


def export(module: torch.nn.Module, args: tuple, path: Path, *, input_names: list[str], output_names: list[str],
           dynamic_axes: dict | None, opset: int) -> None:
    """``torch.onnx.export`` of ``module`` traced on ``args``. The tracer's warnings (Python values taken as
    constants, deprecation) are not shown: the exporter's check runs the graph beside the module instead."""
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=check_opset(opset), do_constant_folding=True,
                          **kwargs)


def session(path: Path):
    """An onnxruntime session on the CPU, as a plain client would open it."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

