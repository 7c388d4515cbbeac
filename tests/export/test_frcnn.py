"""Detector exports: TorchScript loaded in a fresh Python without segdet gives segdet predict's detections; the
ONNX graph (RoIPool or RoIAlign) runs in onnxruntime like the PyTorch module; the resize inside both is the
loader's, bit for bit."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segdet.commands import predict as predict_cmd
from segdet.data.io import list_images
from segdet.tasks.frcnn.detector import FasterRCNN
from segdet.tasks.frcnn.export import TORCHSCRIPT_CLIENT, compare, save_onnx
from segdet.tasks.frcnn.portable import example_images, portable
from segdet.tasks.frcnn.resize import resize_linear_exact
from segdet.tasks.frcnn.transforms import DetectionTransform
from tests.conftest import compose_cfg
from tests.export.conftest import export, run_client


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_the_torch_resize_is_the_loaders_bit_for_bit():
    """resize_linear_exact == cv2.INTER_LINEAR_EXACT (what the loader calls): up, down, exactly 2x down, 1-px
    sides, eager and scripted."""
    g = np.random.default_rng(0)
    scripted = torch.jit.script(resize_linear_exact)
    shapes = [((375, 500), (600, 800)), ((256, 256), (128, 128)), ((300, 400), (128, 171)), ((1, 7), (5, 3)),
              ((90, 100), (142, 128)), ((61, 90), (13, 1))] + [
        ((int(g.integers(1, 300)), int(g.integers(1, 300))), (int(g.integers(1, 300)), int(g.integers(1, 300))))
        for _ in range(20)]
    for (h, w), (nh, nw) in shapes:
        image = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR_EXACT).reshape(nh, nw, 3)
        chw = torch.from_numpy(image).permute(2, 0, 1)
        assert np.array_equal(resize_linear_exact(chw, [nh, nw]).permute(1, 2, 0).numpy(), ref), ((h, w), (nh, nw))
        assert np.array_equal(scripted(chw, [nh, nw]).permute(1, 2, 0).numpy(), ref)
    # and the loader (DetectionTransform) resizes exactly so
    image = g.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    tensor, _, _, _ = DetectionTransform(600, 1000)(image, np.zeros((0, 4), np.float32))
    assert torch.equal(tensor, resize_linear_exact(torch.from_numpy(image).permute(2, 0, 1), [600, 800]))


@pytest.fixture(scope="module")
def raccoon_pngs(shared_data, tmp_path_factory):
    """Four real photos of different sizes, saved losslessly: PNG decodes to the same pixels in PIL (segdet) and
    torchvision.io (the client); JPEG decoders may differ by a grey level."""
    folder = tmp_path_factory.mktemp("raccoon")
    for path in list_images(shared_data / "raccoon" / "images")[:4]:
        Image.open(path).convert("RGB").save(folder / f"{path.stem}.png")
    return folder


def predicted(out) -> list[dict]:
    """segdet predict's detections.json, per image (in images.json order), as xyxy boxes, labels, scores."""
    dets = json.loads((out / "detections.json").read_text())
    result = []
    for image in json.loads((out / "images.json").read_text()):
        mine = [d for d in dets if d["image_id"] == image["id"]]
        result.append({"file": image["file_name"],
                       "boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)],
                                             dtype=torch.float64).reshape(-1, 4),
                       "labels": torch.tensor([d["category_id"] for d in mine], dtype=torch.long),
                       "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float64)})
    return result


def test_torchscript_in_a_fresh_python_gives_predicts_detections(frcnn_ckpt, raccoon_pngs, tmp_path):
    out = tmp_path / "ts"
    result = export(frcnn_ckpt, "torchscript", out)
    assert result["check"]["boxes_max_abs_px"] == 0.0 and sum(result["check"]["detections"]) > 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["classes"] == ["square", "circle", "triangle"] and meta["input"]["dtype"] == "uint8"

    predict_cmd.run(compose_cfg("predict", ["task=frcnn", f"ckpt={frcnn_ckpt}", f"input={raccoon_pngs}",
                                            f"output={tmp_path / 'pred'}", "+data.batch_size=1"]), tmp_path / "run")
    ours = predicted(tmp_path / "pred")
    run_client(out, [[str(tmp_path / f"{d['file']}.json"), str(raccoon_pngs / d["file"])] for d in ours], tmp_path)
    for d in ours:
        theirs = json.loads((tmp_path / f"{d['file']}.json").read_text())[0]
        assert len(d["boxes"]) == len(theirs["boxes"]) > 0
        assert torch.equal(d["labels"], torch.tensor(theirs["labels"]))
        torch.testing.assert_close(torch.tensor(theirs["boxes"], dtype=torch.float64), d["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.tensor(theirs["scores"], dtype=torch.float64), d["scores"], atol=1e-4,
                                   rtol=0)


def test_onnx_at_a_fixed_size_matches_pytorch_and_predict(frcnn_ckpt, raccoon_pngs, tmp_path):
    image = sorted(raccoon_pngs.iterdir())[1]
    w, h = Image.open(image).size
    out = tmp_path / "onnx"
    result = export(frcnn_ckpt, "onnx", out, f"input_size=[{h},{w}]")
    meta = json.loads((out / "export.json").read_text())
    assert meta["input"]["size"] == [h, w]
    print("export check:", result["check"])
    predict_cmd.run(compose_cfg("predict", ["task=frcnn", f"ckpt={frcnn_ckpt}", f"input={image}",
                                            f"output={tmp_path / 'pred'}"]), tmp_path / "run")
    ours = predicted(tmp_path / "pred")[0]
    run_client(out, [[str(tmp_path / "client.json"), str(image)]], tmp_path)
    theirs = json.loads((tmp_path / "client.json").read_text())
    assert len(theirs["boxes"]) == len(ours["boxes"]) > 0 and theirs["labels"] == ours["labels"].tolist()
    # float32 boxes in pixels of a ~500 px image: one unit in the last place is 6e-5 px there, and onnxruntime's
    # sums round differently from torch's (and with the thread count), so a few units: 1e-6 of the value
    torch.testing.assert_close(torch.tensor(theirs["boxes"], dtype=torch.float64), ours["boxes"], atol=1e-4,
                               rtol=1e-6)
    torch.testing.assert_close(torch.tensor(theirs["scores"], dtype=torch.float64), ours["scores"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("roi_op", ["pool", "align"])
def test_roipool_and_roialign_graphs_run_in_onnxruntime(roi_op, tmp_path):
    """ONNX's MaxRoiPool (RoIPool) and RoiAlign both run in onnxruntime: the whole graph against PyTorch."""
    cfg = compose_cfg("train", ["task=frcnn", "model=frcnn_tiny", f"model.roi_op={roi_op}"])
    torch.manual_seed(0)
    model = FasterRCNN(cfg.model, cfg.loss, num_classes=3).eval()
    for layer in (model.roi_head.cls_score, model.rpn.head.cls_logits):  # spread the scores: detections to compare
        torch.nn.init.normal_(layer.weight, std=0.3)
    detector = portable(model, cfg.model)
    check = save_onnx(detector, tmp_path, (100, 150), opset=17)
    print(roi_op, check)
    assert check["detections"][0] > 10
    import onnx

    graph = onnx.load(str(tmp_path / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node} | {n.op_type for node in graph.graph.node for a in node.attribute
                                                   if a.g is not None for n in a.g.node}
    assert ("MaxRoiPool" if roi_op == "pool" else "RoiAlign") in ops and graph.opset_import[0].version >= 17
    assert check["boxes_max_abs_px"] < 1e-3 and check["scores_max_abs"] < 1e-5  # the stated tolerance
    # and a second image of the same size, not the one traced
    import onnxruntime as ort

    other = example_images([(100, 150), (100, 150)])[1]
    boxes, labels, scores = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"image": other.numpy()})
    with torch.no_grad():
        ref = detector([other])
    compare(ref, [{"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                   "scores": torch.from_numpy(scores)}], "onnx")


def test_the_export_guide_shows_the_client_the_tests_run():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "export.md").read_text()
    assert TORCHSCRIPT_CLIENT in guide
