// Kept objects: keep (a new object, or the selected one's new mask), delete, and the writes undo makes. Writes run
// one after another, in order (serial); each answer may come after the user moved to another image.

import { api } from "./api.js";
import { $, guarded, setStatus } from "./dom.js";
import { draw, keptObject, setObject } from "./draw.js";
import { renderCandidates, renderImageList, renderPanel } from "./lists.js";
import { snapshot } from "./prompts.js";
import { S, currentMask, imagePath, objectCount, resetPrompts, setCount } from "./state.js";

export function serial(fn) {
  return (...args) => { S.queue = S.queue.then(() => guarded(fn)(...args)); return S.queue; };
}

export function category() {
  const name = $("category").value.trim();
  if (!name) throw new Error("choose a class first (the Class field)");
  localStorage.setItem("segdet.category", name);
  return name;
}

// Saves a new object, or again one that was deleted (undo), which then carries its new id: steps further down
// the undo stack hold the same object.
export async function saveObject(segmentation, name, again = null) {
  const index = S.index;
  const answer = await api("POST", imagePath("objects"), { segmentation, category: name });
  const o = again || keptObject({ id: answer.id, category: name, segmentation });
  o.id = answer.id;
  o.version = answer.version;
  if (S.index === index) S.objects.push(o);
  objectsChanged(index, +1);
  return o;
}

export async function removeObject(o) {
  const index = S.index;
  await api("DELETE", imagePath(`objects/${encodeURIComponent(String(o.id))}`));
  if (S.index === index) {
    S.objects = S.objects.filter((x) => x !== o);
    if (S.selected === o.id) S.selected = null;
  }
  objectsChanged(index, -1);
}

// The answer may come after the user moved to another image: only that image's count changes then.
export function objectsChanged(index, change) {
  const image = S.images[index];
  if (S.index === index) setCount(image, S.objects.length);
  else if (!image.frames) image.objects = Math.max(0, objectCount(image) + change);  // a stack recounts when shown
  renderImageList();
  if (S.index === index) { renderPanel(); draw(); }
}

export const commit = serial(async function commit() {
  const mask = currentMask();
  const selected = S.objects.find((x) => x.id === S.selected);
  if (selected) { await saveEdit(selected, mask); return; }
  if (!mask) throw new Error("nothing to keep: click the object first");
  const before = snapshot(), index = S.index;
  const o = await saveObject(mask.segmentation, category());
  if (S.index !== index) return;           // kept; the user is on another image by now
  S.history.push({ type: "keep", object: o, before });
  resetPrompts();
  renderCandidates(); draw();
  setStatus(`kept object ${o.id} (${o.category}) · ${S.objects.length} on this image`);
});

// Enter on a selected object: its new mask (and the class in the field) replace its own, if nobody changed it
// since this page read it; else (409) the page takes the object as it is now and keeps the new mask and its
// prompts, so a second Enter saves them over that change and Esc drops them.
async function saveEdit(o, mask) {
  const name = category();
  if (!mask && name === o.category) {
    throw new Error(`object ${o.id} is selected: click or drag to change its mask (Esc lets it go)`);
  }
  const index = S.index, before = snapshot();
  const old = { segmentation: o.segmentation, category: o.category };
  const body = { category: name, version: o.version };
  if (mask) body.segmentation = mask.segmentation;
  let answer;
  try {
    answer = await api("PUT", imagePath(`objects/${encodeURIComponent(String(o.id))}`), body);
  } catch (e) {
    if ((e.status !== 409 && e.status !== 404) || S.index !== index) throw e;
    if (!(await reloadObject(o))) {
      throw new Error(`object ${o.id} was deleted elsewhere (404); your mask is still here: Enter keeps it as a ` +
                      "new object, Esc drops it");
    }
    throw new Error(`object ${o.id} was changed elsewhere since this page read it (409): it now shows that ` +
                    "change; your mask is still here: Enter saves it over that change, Esc drops it");
  }
  setObject(o, mask ? mask.segmentation : o.segmentation, answer.category, answer.version);
  if (S.index !== index) return;
  S.history.push({ type: "edit", object: o, old, before });
  resetPrompts();
  S.selected = null;
  renderCandidates(); renderPanel(); draw();
  setStatus(`saved object ${o.id} (${o.category}) · version ${o.version}`);
}

// The object as the server holds it now (true), or gone from this page if it was deleted elsewhere (false).
async function reloadObject(o) {
  const now = (await api("GET", imagePath("objects"))).find((x) => String(x.id) === String(o.id));
  if (now) setObject(o, now.segmentation, now.category, now.version);
  else {
    S.objects = S.objects.filter((x) => x !== o);
    if (S.selected === o.id) S.selected = null;
    objectsChanged(S.index, -1);
  }
  renderPanel(); draw();
  return Boolean(now);
}

export const deleteSelected = serial(async function deleteSelected() {
  const o = S.objects.find((x) => x.id === S.selected);
  if (!o) throw new Error("select a kept object first (alt-click it, or click it in the list)");
  await removeObject(o);
  resetPrompts();                           // its box and points were for it
  renderCandidates();
  S.history.push({ type: "delete", object: o });
  setStatus(`deleted object ${o.id}`);
});
