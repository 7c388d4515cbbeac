"""The detector as a ``torch.export`` program (``segdet export format=pt2``): ``SymbolicSizeDetector`` traced on
one image whose height and width are dynamic, so that one program takes every image size and every count of
boxes.

The counts of boxes that survive each step of the detector (score threshold, small-box filter, NMS) depend on the
pixels, so the tracer represents them as unbacked symbols, and whatever it assumes of them becomes a run-time
assertion of the program. Three places in torchvision would make it assume something a real image can break;
while the detector is traced (``traceable``), and only then, they are replaced by the same computation without
the assumption:

* ``torchvision::nms``'s fake kernel makes its kept count with ``create_unbacked_symint()``, whose lower bound is
  2 (a legacy default): the program then asserts that every NMS keeps at least two boxes, and fails on an image
  or a model that keeps 0 or 1 (a trained detector with no object in sight). The kernel used while tracing keeps
  0 to len(boxes).
* ``batched_nms`` branches on ``boxes.numel() == 0``; the same coordinate trick without the branch keeps the same
  boxes (none of none).
* ``BoxCoder.decode`` reshapes only ``if box_sum > 0`` (a reshape with -1 cannot infer a size of 0 rows); with a
  count that may be 0 the tracer cannot decide it. Its callers pass 2-D deltas, so the first reshape is the
  identity and the second is an ``unflatten`` of the last dimension, which holds for 0 rows too.

The program is run eagerly by ``torch.export.load(...).module()``, on torchvision's real kernels: the fake kernel
is only what the tracer reasons with.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import List, Tuple

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import boxes as box_ops
from torchvision.ops import nms

from segdet.errors import SegdetError

from .portable import PortableDetector, portable
from .resize import resize_linear_exact

# The image sizes one exported program takes (a side outside them is refused by the program's own check)
PT2_SIDE = (16, 8192)


class SymbolicSizeDetector(PortableDetector):
    """PortableDetector for ``torch.export`` with dynamic image sizes. The resized size is computed as the loader's
    (``resized_size``: the same float64 operations, round half to even) on tensors and read back as a symbolic
    size that the program keeps as it is (a size derived symbolically from the input grows expressions that make
    the program slow to export and to load). Every image goes through the resize (at its own size it copies the
    pixels), so no branch fixes the size."""

    def prepare(self, image: Tensor) -> Tuple[Tensor, Tuple[int, int], Tensor, Tensor]:
        original = self.sizes_tensor([(image.shape[-2], image.shape[-1])], None)[0]
        hw = original.to(torch.float64)
        s = torch.minimum(self.min_size / hw.min(), self.max_size / hw.max())
        new = torch.round(hw * s).clamp(min=1).to(torch.int64)
        nh, nw = new[0].item(), new[1].item()
        for side in (nh, nw):  # what the program may assume of them (a side of 1 pixel is refused)
            torch._check(side >= 2)
            torch._check(side <= int(max(self.min_size, self.max_size)) + 1)
        return resize_linear_exact(image, [nh, nw]), (nh, nw), (new.to(torch.float64) / hw).float(), original

    def sizes_tensor(self, sizes, device) -> Tensor:
        return torch.stack([torch.stack([torch.full((), h, device=device), torch.full((), w, device=device)])
                            for h, w in sizes])

    def pad(self, images: List[Tensor]) -> Tensor:
        """pad_batch of one image, as F.pad: its slice assignment would tie the program to whether the example's
        size was already a multiple of ``size_divisible``."""
        (image,) = images
        h, w, d = image.shape[-2], image.shape[-1], self.size_divisible
        return torch.nn.functional.pad(image, [0, (w + d - 1) // d * d - w, 0, (h + d - 1) // d * d - h])[None]


def batched_nms_without_branch(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's batched_nms (its coordinate trick: each class's boxes moved apart, one NMS) without its
    ``if boxes.numel() == 0`` branch; the same kept boxes (an empty input keeps none)."""
    top = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    return nms(boxes + (idxs.to(boxes) * (top + 1))[:, None], scores, iou_threshold)


def decode_without_branch(self, rel_codes: Tensor, boxes: List[Tensor]) -> Tensor:
    """torchvision's ``BoxCoder.decode`` for 2-D ``rel_codes`` (K, 4 * C), as the RPN and the RoI heads pass them:
    (K, C, 4) boxes, K = 0 included."""
    return self.decode_single(rel_codes, torch.cat(boxes, dim=0)).unflatten(1, (-1, 4))


def nms_fake(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """What the tracer takes ``torchvision::nms`` to return: the indices of 0 to len(dets) kept boxes."""
    kept = torch.library.get_ctx().new_dynamic_size()
    torch._check(kept <= dets.shape[0])
    return dets.new_empty(kept, dtype=torch.long)


@contextlib.contextmanager
def traceable():
    """While torch.export traces torchvision's detection heads: ``nms_fake`` as NMS's fake kernel,
    ``batched_nms_without_branch`` and ``decode_without_branch`` in place of theirs (the program then holds
    them). Everything is put back on leaving, also on an error."""
    if not hasattr(torch.library, "register_fake"):
        raise SegdetError(f"format=pt2 of a detector needs torch >= 2.4 (this is {torch.__version__})")
    lib = torch.library.Library("torchvision", "FRAGMENT")  # its registrations end with lib._destroy()
    original_nms, original_decode = box_ops.batched_nms, det_utils.BoxCoder.decode
    try:
        torch.library.register_fake("torchvision::nms", nms_fake, lib=lib)
        box_ops.batched_nms = batched_nms_without_branch
        det_utils.BoxCoder.decode = decode_without_branch
        yield
    finally:
        box_ops.batched_nms, det_utils.BoxCoder.decode = original_nms, original_decode
        lib._destroy()


def export_program(model: nn.Module, model_cfg: DictConfig, example: Tensor) -> torch.export.ExportedProgram:
    """torch.export of segdet's FasterRCNN (as SymbolicSizeDetector) on ``[example]``, its height and width
    dynamic within PT2_SIDE."""
    symbolic = portable(model, model_cfg, SymbolicSizeDetector)
    height, width = (torch.export.Dim(name, min=PT2_SIDE[0], max=PT2_SIDE[1]) for name in ("height", "width"))
    with traceable(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torchvision's meta kernels' deprecation notices: the check runs the result
        return torch.export.export(symbolic, ([example],), dynamic_shapes=([{1: height, 2: width}],), strict=False)
