// Propose: candidate objects for the image (the detector's boxes through SAM, or segment-everything) to accept,
// each becoming a kept object, or reject.

import { api } from "./api.js";
import { clearError, guarded, setStatus } from "./dom.js";
import { draw } from "./draw.js";
import { renderPanel } from "./lists.js";
import { category, saveObject, serial } from "./objects.js";
import { rleDecode } from "./rle.js";
import { S, imagePath } from "./state.js";

export const propose = guarded(async function propose() {
  clearError();
  setStatus("proposing…");
  const index = S.index;
  const answer = await api("POST", imagePath("propose"), {});
  if (S.index !== index) return;
  const items = answer.candidates
    ? answer.candidates.map((c) => ({ segmentation: c.segmentation, score: c.score, category: c.category }))
    : (answer.masks || []).map((rle, i) => ({ segmentation: rle, score: (answer.scores || [])[i],
                                              category: (answer.categories || [])[i] || undefined }));
  S.proposals = items.map((p) => ({ ...p, mask: rleDecode(p.segmentation), layer: null }));
  S.focused = 0;
  renderPanel(); draw();
  setStatus(`${S.proposals.length} proposal${S.proposals.length === 1 ? "" : "s"}: A accepts, X rejects`);
});

export const accept = serial(async function accept(i = S.focused) {
  const p = S.proposals[i];
  if (!p) throw new Error("no proposal to accept (press Propose first)");
  const index = S.index;
  const o = await saveObject(p.segmentation, p.category || category());
  if (S.index !== index) return;
  S.proposals.splice(i, 1);
  S.focused = Math.min(i, S.proposals.length - 1);
  S.history.push({ type: "accept", object: o, proposal: p, at: i });
  renderPanel(); draw();
});

export function reject(i = S.focused) {
  const p = S.proposals[i];
  if (!p) return;
  S.proposals.splice(i, 1);
  S.focused = Math.min(i, S.proposals.length - 1);
  S.history.push({ type: "reject", proposal: p, at: i });
  renderPanel(); draw();
}

export async function acceptAll() {
  while (S.proposals.length) {
    const n = S.proposals.length;
    await accept(0);
    if (S.proposals.length === n) return;   // it failed; the error is shown
  }
}
