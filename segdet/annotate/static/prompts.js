// Prompts → masks: points and a box on the image, SAM's answer to them (one mask, or three candidates to choose
// from), and selecting a kept object to refine it. Each change of the prompts is a step of the undo stack.

import { api } from "./api.js";
import { $, clearError, guarded } from "./dom.js";
import { draw, maskBox } from "./draw.js";
import { renderCandidates, renderPanel } from "./lists.js";
import { rleDecode } from "./rle.js";
import { S, canvas, imagePath, resetPrompts } from "./state.js";

export function snapshot() {
  return { points: S.points.slice(), box: S.box, masks: S.masks, scores: S.scores, choice: S.choice,
           selected: S.selected };
}
export function restore(snap) {
  S.segSeq++;                               // an answer still on its way belongs to the old prompts
  canvas.dataset.busy = "0";
  const selected = S.objects.some((o) => o.id === snap.selected) ? snap.selected : null;
  Object.assign(S, { points: snap.points.slice(), box: snap.box, masks: snap.masks, scores: snap.scores,
                     choice: snap.choice, selected });
  renderCandidates(); renderPanel(); draw();
}

// Selecting a kept object starts its refinement: its box is the first prompt (drag another to replace it), the
// clicks that follow add points to it, Enter saves the new mask over the object's (PUT, with its version).
export function select(o) {
  if ((o ? o.id : null) === S.selected) {          // selecting it again lets it go
    if (!o) return;
    o = null;
  }
  S.history.push({ type: "prompts", before: snapshot() });
  resetPrompts();
  S.selected = o ? o.id : null;
  S.box = o ? maskBox(o.mask) : null;
  renderCandidates(); renderPanel(); draw();
}

export function addPrompt(change) {
  clearError();
  S.history.push({ type: "prompts", before: snapshot() });
  change();
  draw();
  segment();
}

export const segment = guarded(async function segment() {
  const seq = ++S.segSeq;
  if (!S.points.length && !S.box) { S.masks = []; S.scores = []; renderCandidates(); draw(); return; }
  const multimask = $("multimask").checked;
  canvas.dataset.busy = "1";
  try {
    const answer = await api("POST", imagePath("segment"),
                             { points: S.points, boxes: S.box ? [S.box] : [], multimask });
    if (seq !== S.segSeq) return;           // newer prompts were sent meanwhile
    S.masks = answer.masks.map((rle) => ({ segmentation: rle, mask: rleDecode(rle), layer: null }));
    S.scores = answer.scores || [];
    // The best candidate first; 1/2/3 pick another.
    S.choice = S.scores.length > 1 ? S.scores.indexOf(Math.max(...S.scores)) : 0;
    S.maskVersion++;
    canvas.dataset.maskVersion = S.maskVersion;
    renderCandidates(); draw();
  } finally {
    if (seq === S.segSeq) canvas.dataset.busy = "0";
  }
});

export function choose(i) {
  if (i >= S.masks.length || i === S.choice) return;
  S.history.push({ type: "prompts", before: snapshot() });
  S.choice = i;
  renderCandidates(); draw();
}

export function clearPrompts() {
  if (S.points.length || S.box || S.masks.length) S.history.push({ type: "prompts", before: snapshot() });
  resetPrompts();
  S.selected = null;
  renderCandidates(); renderPanel(); draw();
}
