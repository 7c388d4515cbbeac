// Stacks (stack=true): a stack is one item of the image list with one frame per date, each with its own image and
// objects. The date slider moves between the frames; Propagate carries the selected object to the other dates,
// where it arrives as new objects marked "propagated" that are corrected as any other object.

import { api } from "./api.js";
import { $, guarded, setStatus } from "./dom.js";
import { goTo } from "./images.js";
import { renderImageList } from "./lists.js";
import { S, canvas, imagePath, setCount } from "./state.js";

export function currentFrame(image) {
  return image && image.frames ? image.frames[image.frame || 0] : null;
}

// The item (and its frame) the address names (#image=ID: an image's or a frame's id); -1 when none.
export function findImage(wanted) {
  return S.images.findIndex((im) => {
    if (String(im.id) === wanted && !im.frames) return true;
    const k = (im.frames || []).findIndex((f) => String(f.id) === wanted);
    if (k >= 0) im.frame = k;
    return k >= 0;
  });
}

// Called once an item's frame is shown: the slider and its date, and the date on the canvas.
export function showStack(image) {
  const frame = currentFrame(image), slider = $("date-slider");
  $("stackbar").hidden = !frame;
  if (!frame) { canvas.removeAttribute("data-date"); return; }
  slider.max = String(image.frames.length - 1);
  slider.value = String(image.frame || 0);
  slider.dataset.date = frame.date;
  slider.title = frame.date;
  slider.setAttribute("aria-valuetext", frame.date);
  $("date").textContent = `${frame.date} · ${(image.frame || 0) + 1} of ${image.frames.length}`;
  canvas.dataset.date = frame.date;
}

async function toDate(k) {
  const image = S.images[S.index];
  if (!currentFrame(image) || k === (image.frame || 0)) return;
  await S.queue;                            // a keep or delete on its way belongs to the date it was made on
  image.frame = Math.min(Math.max(k, 0), image.frames.length - 1);
  await goTo(S.index);
}

const propagate = guarded(async function propagate() {
  const image = S.images[S.index];
  if (!currentFrame(image)) throw new Error("Propagate carries an object through a stack (start with stack=true)");
  const o = S.objects.find((x) => x.id === S.selected);
  if (!o) throw new Error("select a kept object first (alt-click it, or click it in the list)");
  await S.queue;
  const index = S.index, frame = image.frame || 0;
  $("propagate").disabled = true;
  let answer;
  try {
    answer = await api("POST", imagePath(`objects/${encodeURIComponent(String(o.id))}/propagate`), {});
  } finally { $("propagate").disabled = false; }
  for (const made of answer.objects) {
    const f = image.frames.find((x) => x.id === made.image_id);
    if (f) { f.objects = Number(f.objects || 0) + 1; f.done = true; }
  }
  if (S.index === index && (image.frame || 0) === frame) setCount(image, S.objects.length);
  renderImageList();
  const how = answer.method === "sam2" ? "SAM 2" : "its box on each date";
  const skipped = answer.skipped.map((s) => `${s.date}: ${s.reason}`).join("; ");
  setStatus(`propagated object ${o.id} to ${answer.objects.length} date(s) by ${how}` +
            (skipped ? ` · skipped ${skipped}` : ""));
});

$("date-slider").addEventListener("input", (e) => guarded(toDate)(Number(e.target.value)));
$("propagate").onclick = () => propagate();
