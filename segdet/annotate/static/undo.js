// Undo: the last step of this image taken back, a prompt, a keep, an edit, a delete, an accept or a reject. A step
// whose write fails stays on the stack, to be tried again.

import { api } from "./api.js";
import { setStatus } from "./dom.js";
import { draw, setObject } from "./draw.js";
import { renderPanel } from "./lists.js";
import { removeObject, saveObject, serial } from "./objects.js";
import { restore } from "./prompts.js";
import { S, imagePath } from "./state.js";

export const undo = serial(async function undo() {
  const step = S.history.pop();
  if (!step) { setStatus("nothing to undo"); return; }
  const index = S.index;
  try {
    if (step.type === "keep" || step.type === "accept") await removeObject(step.object);
    else if (step.type === "delete") await saveObject(step.object.segmentation, step.object.category, step.object);
    else if (step.type === "edit") {
      const o = step.object;
      const answer = await api("PUT", imagePath(`objects/${encodeURIComponent(String(o.id))}`),
                               { segmentation: step.old.segmentation, category: step.old.category, version: o.version });
      setObject(o, step.old.segmentation, answer.category, answer.version);
    }
  } catch (e) {
    if (S.index === index) S.history.push(step);   // not undone: it can be tried again
    throw e;
  }
  if (S.index !== index) return;
  if (step.type === "prompts" || step.type === "keep" || step.type === "edit") restore(step.before);
  if (step.type === "accept" || step.type === "reject") {
    S.proposals.splice(step.at, 0, step.proposal);
    S.focused = step.at;
    renderPanel(); draw();
  }
  setStatus(`undone: ${step.type}`);
});
