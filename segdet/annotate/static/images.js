// Moving between images: the image's bytes and its kept objects from the server, the address (#image=ID) kept in
// step so that a reload comes back to the same image.

import { api } from "./api.js";
import { clearError, setStatus } from "./dom.js";
import { draw, fitCanvas, keptObject } from "./draw.js";
import { renderImageList, renderPanel } from "./lists.js";
import { currentFrame, showStack } from "./stack.js";
import { S, canvas, ctx, imageId, imagePath, resetPrompts, setCount } from "./state.js";

export async function goTo(index) {
  if (!S.images.length) return;
  index = (index + S.images.length) % S.images.length;
  clearError();
  S.index = index;
  const image = S.images[index];
  history.replaceState(null, "", `${location.pathname}${location.search}#image=${encodeURIComponent(imageId())}`);
  resetPrompts();
  S.objects = []; S.selected = null; S.proposals = []; S.history = [];
  S.img = null;                             // no prompts on the old picture while the new one loads
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  canvas.removeAttribute("data-image-id");
  canvas.removeAttribute("data-date");
  renderImageList();
  renderPanel();
  const resp = await api("GET", imagePath("image"), undefined, true);
  const url = URL.createObjectURL(await resp.blob());
  const img = new Image();
  img.src = url;
  await img.decode();
  URL.revokeObjectURL(url);
  if (S.index !== index) return;            // the user moved on meanwhile
  const objects = await api("GET", imagePath("objects"));
  if (S.index !== index) return;
  S.img = img; S.W = img.naturalWidth; S.H = img.naturalHeight;
  canvas.width = S.W; canvas.height = S.H;
  S.objects = (Array.isArray(objects) ? objects : objects.objects || []).map(keptObject);
  setCount(image, S.objects.length);
  fitCanvas();
  draw();
  canvas.dataset.imageId = imageId();
  showStack(image);
  renderImageList();
  renderPanel();
  setStatus(`${(currentFrame(image) || image).file_name} · ${S.W}×${S.H}`);
}
