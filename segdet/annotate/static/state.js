// The page's state, shared by its modules: the images and the current one, its kept objects, the prompts and
// SAM's answer to them, the proposals, the undo stack and training. Coordinates are image pixels; the canvas
// holds the image at its own resolution and is scaled by CSS to fill the stage.

import { $ } from "./dom.js";

export const S = {
  images: [], index: -1, img: null, W: 0, H: 0,
  objects: [], selected: null,              // kept objects of this image, {id, category, segmentation, version,
                                            // mask, color}; the selected one's id: new prompts refine it
  points: [], box: null,                    // prompts: [[x, y, 1|0]], [x1, y1, x2, y2] | null
  masks: [], scores: [], choice: 0,         // the answer to the current prompts
  proposals: [], focused: 0,                // candidates from Propose, {segmentation, score, category, mask}
  history: [],                              // undo stack for this image
  segSeq: 0, maskVersion: 0, drag: null,
  queue: Promise.resolve(),                 // writes (keep, delete, undo) run one after another
  train: { state: null, timer: null, model: null },
};
export const canvas = $("canvas");
export const ctx = canvas.getContext("2d");

export const imageId = () => {                    // a stack's current frame (stack.js), else the image
  const im = S.images[S.index];
  return im.frames ? im.frames[im.frame || 0].id : im.id;
};
export const imagePath = (suffix) => `images/${encodeURIComponent(String(imageId()))}/${suffix}`;

export function objectCount(image) {
  return Array.isArray(image.objects) ? image.objects.length : Number(image.objects || 0);
}

// The image's object count; on a stack, its current frame's, the item's being their total.
export function setCount(image, n) {
  if (!image.frames) { image.objects = n; return; }
  const frame = image.frames[image.frame || 0];
  frame.objects = n; frame.done = n > 0;
  image.objects = image.frames.reduce((sum, f) => sum + Number(f.objects || 0), 0);
}

export function currentMask() {
  return S.masks.length ? S.masks[Math.min(S.choice, S.masks.length - 1)] : null;
}

export function resetPrompts() {
  S.points = []; S.box = null; S.masks = []; S.scores = []; S.choice = 0;
  S.segSeq++;                               // an answer still on its way belongs to the old prompts
  canvas.dataset.busy = "0";
}
