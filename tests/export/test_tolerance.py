"""An export whose check against the PyTorch model is above the format's tolerance (segdet.export_check) is
refused: one line naming the output folder, the output and its largest difference against the tolerance, exit 2,
and nothing at ``output=``. The exported artefact is perturbed as it is loaded back, as a wrong graph or a lost
weight would be."""
from __future__ import annotations

import re

import pytest
import torch

from segdet import onnx_export
from segdet.errors import SegdetError
from segdet.export_check import TOLERANCE, CheckFailed, within
from tests.export.conftest import export


def test_within_is_assert_close_at_the_formats_tolerance():
    reference = torch.tensor([0.0, 10.0, -200.0], dtype=torch.float64)
    for fmt, tol in TOLERANCE.items():
        allowed = tol * (1 + reference.abs())
        close = reference + 0.999 * allowed
        torch.testing.assert_close(close, reference, atol=tol, rtol=tol)  # what assert_close lets through
        assert within(fmt, "boxes", close, reference) == pytest.approx(0.999 * float(allowed.max()))
        over = reference.clone()
        over[2] -= 2 * allowed[2] + 1e-9
        with pytest.raises(CheckFailed, match=rf"the {fmt} export's boxes differ from the PyTorch model's by up to "
                                              rf"[0-9.e-]+ \(at a value of -200\), above the {fmt} tolerance "
                                              rf"{tol:g} x \(1 \+ \|value\|\)$"):
            within(fmt, "boxes", over, reference)
    with pytest.raises(CheckFailed, match="scores differ .* by up to nan"):  # a NaN is not within anything
        within("onnx", "scores", torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(CheckFailed, match=r"scores have shape \(2,\) where the PyTorch model's have \(3,\)"):
        within("onnx", "scores", torch.zeros(2), torch.zeros(3))
    assert within("pt2", "boxes", torch.zeros(0, 4), torch.zeros(0, 4)) == 0.0


def refused(err: str, out, fmt: str, output: str) -> float:
    """The one-line refusal's largest difference, after checking its words; and that ``out`` was not written."""
    line = re.fullmatch(rf"{re.escape(str(out))}: the {fmt} export's {output} differ from the PyTorch model's by "
                        rf"up to ([0-9.e+-]+) \(at a value of [0-9.e+-]+\), above the {fmt} tolerance "
                        rf"{TOLERANCE[fmt]:g} x \(1 \+ \|value\|\); nothing was written", err)
    assert line, err
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    return float(line.group(1))


def test_a_torchscript_detector_off_by_a_fraction_of_a_pixel_is_refused_through_the_cli(frcnn_ckpt, tmp_path,
                                                                                     monkeypatch, capsys):
    from segdet import cli

    real = torch.jit.load

    def perturbed(path, *args, **kwargs):  # the saved model, its box regression moved by 1 % of a box's width
        module = real(path, *args, **kwargs)
        with torch.no_grad():
            module.roi_heads.box_predictor.bbox_pred.bias.add_(0.1)
        return module

    monkeypatch.setattr(torch.jit, "load", perturbed)
    out = tmp_path / "out" / "ts"
    with pytest.raises(SystemExit) as e:
        cli.main(["export", f"ckpt={frcnn_ckpt}", "format=torchscript", f"output={out}",
                  f"hydra.run.dir={tmp_path / 'run'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segdet: error: "), err
    assert refused(err[0][len("segdet: error: "):], out, "torchscript", "boxes") > 100 * TOLERANCE["torchscript"]


def test_sam_onnx_logits_off_by_a_thousandth_are_refused(sam_ckpt, tmp_path, monkeypatch):
    real = onnx_export.session

    class Perturbed:  # the decoder graph's mask logits, 0.1 % larger than it computes
        def __init__(self, path):
            self.session, self.decoder = real(path), path.name == "decoder.onnx"

        def run(self, names, feed):
            outputs = self.session.run(names, feed)
            return [outputs[0] * 1.001, *outputs[1:]] if self.decoder else outputs

    monkeypatch.setattr(onnx_export, "session", Perturbed)
    out = tmp_path / "out" / "sam_onnx"
    with pytest.raises(SegdetError) as e:
        export(sam_ckpt, "onnx", out)
    assert refused(str(e.value), out, "onnx", "masks_logits") > TOLERANCE["onnx"]


def test_a_weight_that_loads_back_changed_is_refused(sam_ckpt, tmp_path, monkeypatch):
    from transformers import SamModel

    real = SamModel.from_pretrained.__func__

    def perturbed(cls, *args, **kwargs):  # one weight a float32 step off, as a lossy conversion would leave it
        loaded = real(cls, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        with torch.no_grad():
            weight = model.mask_decoder.iou_token.weight
            weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(float("inf")))
        return loaded

    monkeypatch.setattr(SamModel, "from_pretrained", classmethod(perturbed))
    out = tmp_path / "out" / "sam_hf"
    with pytest.raises(SegdetError) as e:
        export(sam_ckpt, "hf", out)
    assert refused(str(e.value), out, "hf", "weight mask_decoder.iou_token.weight") > 0
