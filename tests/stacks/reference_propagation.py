"""SAM 2 propagation as transformers' own API gives it, with no segdet imported: the reference the stack tests
compare segdet's propagate=true with.

    python reference_propagation.py MODEL_DIR FRAMES.json OUT.npz

FRAMES.json: {"frames": [paths in date order], "start": k, "objects": [[id, box or null, [[x, y, label]]]],
"reverse": bool}. OUT.npz: one (objects, H, W) array of mask logits per reached frame, ``frame_<k>``.
"""
import json
import sys

import numpy as np
import torch
from PIL import Image
from transformers import Sam2VideoModel, Sam2VideoProcessor

model_dir, spec_path, out_path = sys.argv[1:4]
spec = json.load(open(spec_path))
model = Sam2VideoModel.from_pretrained(model_dir).eval()
processor = Sam2VideoProcessor.from_pretrained(model_dir)
frames = [np.asarray(Image.open(p).convert("RGB")) for p in spec["frames"]]
h, w = frames[0].shape[:2]
start, results = spec["start"], {}
with torch.inference_mode():
    session = processor.init_video_session(video=frames, inference_device="cpu", dtype=torch.float32)
    for obj_id, box, points in spec["objects"]:  # one object at a time, then a forward pass on its frame
        given = {}
        if box is not None:
            given["input_boxes"] = [[box]]
        if points:
            given["input_points"] = [[[[x, y] for x, y, _ in points]]]
            given["input_labels"] = [[[label for _, _, label in points]]]
        processor.add_inputs_to_inference_session(session, frame_idx=start, obj_ids=[obj_id], **given)
        model(inference_session=session, frame_idx=start)
    passes = [False, True] if spec["reverse"] else [False]
    for reverse in passes:
        for out in model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
            logits = processor.post_process_masks([out.pred_masks], original_sizes=[[h, w]], binarize=False)[0]
            results.setdefault(f"frame_{out.frame_idx}", logits[:, 0].numpy())
np.savez(out_path, **results)
print(json.dumps({"segdet": "segdet" in sys.modules, "frames": sorted(results)}))
