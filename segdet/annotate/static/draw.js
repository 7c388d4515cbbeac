// Drawing on the canvas: the image, kept objects, proposals, the current mask, then the prompts. Each mask is
// drawn from an offscreen layer of its own colour, made once and kept on the object that owns it.

import { rleDecode } from "./rle.js";
import { $ } from "./dom.js";
import { S, canvas, ctx, currentMask } from "./state.js";

const PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [245, 130, 48], [145, 30, 180], [70, 240, 240],
                 [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40], [128, 0, 0]];
const CURRENT = [30, 144, 255];
let colorIndex = 0;

export function keptObject(o) {
  return { id: o.id, category: o.category, segmentation: o.segmentation, version: o.version || 1,
           propagated: o.propagated_from ?? null,
           mask: rleDecode(o.segmentation), color: PALETTE[colorIndex++ % PALETTE.length], layer: null };
}

// A kept object takes what the server holds now (after an edit here, or one made elsewhere).
export function setObject(o, segmentation, name, version) {
  if (segmentation !== o.segmentation) { o.segmentation = segmentation; o.mask = rleDecode(segmentation); o.layer = null; }
  o.category = name;
  o.version = version;
}

// The continuous box [x1, y1, x2, y2] around a mask's pixels (a pixel's far edge included), or null when empty.
export function maskBox(mask) {
  let x1 = Infinity, y1 = Infinity, x2 = -1, y2 = -1;
  for (let y = 0; y < mask.h; y++) {
    const row = y * mask.w;
    for (let x = 0; x < mask.w; x++) {
      if (!mask.data[row + x]) continue;
      if (x < x1) x1 = x;
      if (x > x2) x2 = x;
      if (y < y1) y1 = y;
      y2 = y;
    }
  }
  return x2 < 0 ? null : [x1, y1, x2 + 1, y2 + 1];
}

export function boxFrom(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
}

// An offscreen canvas holding the mask in one colour (cached on the object that owns it).
function maskLayer(mask, rgb) {
  const layer = document.createElement("canvas");
  layer.width = mask.w; layer.height = mask.h;
  const lctx = layer.getContext("2d");
  const pixels = lctx.createImageData(mask.w, mask.h);
  for (let i = 0; i < mask.data.length; i++) {
    if (!mask.data[i]) continue;
    pixels.data[4 * i] = rgb[0]; pixels.data[4 * i + 1] = rgb[1]; pixels.data[4 * i + 2] = rgb[2];
    pixels.data[4 * i + 3] = 255;
  }
  lctx.putImageData(pixels, 0, 0);
  return layer;
}

function drawLayer(owner, rgb, alpha) {
  if (!owner.layer) owner.layer = maskLayer(owner.mask, rgb);
  ctx.globalAlpha = alpha;
  ctx.drawImage(owner.layer, 0, 0, S.W, S.H);
  ctx.globalAlpha = 1;
}

// Image pixels per CSS pixel, so markers keep their on-screen size whatever the zoom.
function pxPerCss() {
  const w = canvas.getBoundingClientRect().width;
  return w ? S.W / w : 1;
}

export function draw() {
  if (!S.img) return;
  ctx.clearRect(0, 0, S.W, S.H);
  ctx.drawImage(S.img, 0, 0);
  // The selected object stands out; once its new mask is on the way, that mask does instead.
  const editing = S.masks.length ? 0.2 : 0.7;
  for (const o of S.objects) drawLayer(o, o.color, o.id === S.selected ? editing : 0.4);
  S.proposals.forEach((p, i) => drawLayer(p, [255, 200, 0], i === S.focused ? 0.55 : 0.25));
  const mask = currentMask();
  if (mask) drawLayer(mask, CURRENT, 0.5);
  const u = pxPerCss();
  ctx.lineWidth = 2 * u;
  const box = S.drag && S.drag.moved ? boxFrom(S.drag.start, S.drag.end) : S.box;
  if (box) {
    ctx.setLineDash([6 * u, 4 * u]);
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    ctx.setLineDash([]);
  }
  for (const [x, y, label] of S.points) {
    ctx.beginPath();
    ctx.arc(x, y, 5 * u, 0, 2 * Math.PI);
    ctx.fillStyle = label ? "#21c55d" : "#ef4444";
    ctx.fill();
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
  }
}

// The canvas as large as the stage allows, at the image's aspect ratio.
export function fitCanvas() {
  if (!S.W) return;
  const r = $("stage").getBoundingClientRect();
  const scale = Math.min(r.width / S.W, r.height / S.H);
  canvas.style.width = `${S.W * scale}px`;
  canvas.style.height = `${S.H * scale}px`;
}
