// Input: the mouse on the canvas (click a point, shift-click a negative one, drag a box, alt-click a kept object),
// the keys, the buttons, and clicks on the rows of the lists.

import { $, clearError, guarded } from "./dom.js";
import { boxFrom, draw, fitCanvas } from "./draw.js";
import { goTo } from "./images.js";
import { renderPanel } from "./lists.js";
import { commit, deleteSelected } from "./objects.js";
import { accept, acceptAll, propose, reject } from "./propose.js";
import { addPrompt, choose, clearPrompts, segment, select } from "./prompts.js";
import { S, canvas } from "./state.js";
import { train } from "./train.js";
import { undo } from "./undo.js";

function toImage(e) {
  const r = canvas.getBoundingClientRect();
  const x = Math.min(Math.max((e.clientX - r.left) / r.width, 0), 1) * S.W;
  const y = Math.min(Math.max((e.clientY - r.top) / r.height, 0), 1) * S.H;
  return [x, y];
}

function objectAt(x, y) {
  const i = Math.min(Math.floor(y), S.H - 1) * S.W + Math.min(Math.floor(x), S.W - 1);
  for (let k = S.objects.length - 1; k >= 0; k--) if (S.objects[k].mask.data[i]) return S.objects[k];
  return null;
}

canvas.addEventListener("mousedown", (e) => {
  if (e.button !== 0 || !S.img) return;
  e.preventDefault();                       // no text selection while dragging; the keys go to the page again
  canvas.focus({ preventScroll: true });
  S.drag = { start: toImage(e), end: toImage(e), x0: e.clientX, y0: e.clientY, moved: false };
});
window.addEventListener("mousemove", (e) => {
  if (!S.drag) return;
  S.drag.end = toImage(e);
  if (Math.hypot(e.clientX - S.drag.x0, e.clientY - S.drag.y0) > 4) S.drag.moved = true;
  if (S.drag.moved) draw();
});
window.addEventListener("mouseup", (e) => {
  const drag = S.drag;
  if (!drag) return;
  S.drag = null;
  drag.end = toImage(e);
  if (drag.moved) {
    addPrompt(() => { S.box = boxFrom(drag.start, drag.end); });
  } else if (e.altKey) {
    select(objectAt(...drag.start));
  } else {
    addPrompt(() => { S.points.push([drag.start[0], drag.start[1], e.shiftKey ? 0 : 1]); });
  }
});
canvas.addEventListener("contextmenu", (e) => e.preventDefault());

document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLInputElement && e.target.type === "text";
  if (typing && e.key !== "Enter" && e.key !== "Escape") return;
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key;
  if (key === "Enter") { e.preventDefault(); if (typing) e.target.blur(); commit(); }
  else if (key === "Escape") { if (typing) e.target.blur(); clearPrompts(); }
  else if (key === "n" || key === "N") guarded(goTo)(S.index + 1);
  else if (key === "p" || key === "P") guarded(goTo)(S.index - 1);
  else if (key === "1" || key === "2" || key === "3") choose(Number(key) - 1);
  else if (key === "Delete" || key === "Backspace") { e.preventDefault(); deleteSelected(); }
  else if (key === "a" || key === "A") accept();
  else if (key === "x" || key === "X") reject();
  else return;
});

// A click on a row of a list: which row (its place among its siblings), and the list's own action for it.
function onRow(listId, selector, action) {
  $(listId).addEventListener("click", (e) => {
    const row = e.target.closest(selector);
    if (!row || row.parentElement !== $(listId)) return;
    action([...row.parentElement.children].indexOf(row), row, e);
  });
}
onRow("images", "li", (i) => guarded(goTo)(i));
onRow("candidates", "button", (i) => choose(i));
onRow("objects", "li", (i, row) => {
  const o = S.objects.find((x) => String(x.id) === row.dataset.objectId);
  if (o) select(o);
});
onRow("proposals", "li", (i, row, e) => {
  const button = e.target.closest("button");
  if (button && button.dataset.testid === "accept") accept(i);
  else if (button && button.dataset.testid === "reject") reject(i);
  else { S.focused = i; renderPanel(); draw(); }
});

$("next").onclick = () => guarded(goTo)(S.index + 1);
$("prev").onclick = () => guarded(goTo)(S.index - 1);
$("commit").onclick = () => commit();
$("undo").onclick = () => undo();
$("clear").onclick = () => clearPrompts();
$("delete").onclick = () => deleteSelected();
$("propose").onclick = () => propose();
$("accept-all").onclick = () => acceptAll();
$("train").onclick = () => train();
$("error-close").onclick = clearError;
$("multimask").onchange = () => { if (S.points.length || S.box) segment(); };
$("category").value = localStorage.getItem("segdet.category") || "";
new ResizeObserver(() => { fitCanvas(); draw(); }).observe($("stage"));
