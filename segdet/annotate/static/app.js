// segdet annotate: the page. Plain JS, no build step, nothing fetched from outside the server.
// Coordinates sent to the API are image pixels; the canvas holds the image at its own resolution and is scaled
// by CSS to fill the stage, so a click at fraction (fx, fy) of the element is image pixel (fx·W, fy·H).
"use strict";

// ---------------------------------------------------------------------------------------------------------------
// COCO RLE, as pycocotools writes it (maskApi.c rleToString / rleFrString): runs alternate 0s and 1s starting with
// 0s over the mask in column-major order; each run (after the second, as the difference to the run two before) is
// written in 5-bit groups, low first, as chars 48 + group, with 0x20 meaning "more follows" and 0x10 the sign.
// Arithmetic rather than bit operators, so runs past 2^31 (huge images) stay exact.

function rleCountsFromString(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true, c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * Math.pow(32, k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x -= Math.pow(32, k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function rleCountsToString(counts) {
  let s = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      const c = ((x % 32) + 32) % 32;        // low 5 bits, also for negative x
      x = Math.floor(x / 32);                // arithmetic shift
      more = (c & 0x10) ? x !== -1 : x !== 0;
      s += String.fromCharCode(48 + (more ? c | 0x20 : c));
    }
  }
  return s;
}

// {size: [h, w], counts: string | number[]} → {h, w, data: Uint8Array (row-major, 0/1)}
function rleDecode(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? rleCountsFromString(rle.counts) : rle.counts;
  const data = new Uint8Array(h * w);
  let i = 0;
  for (let r = 0; r < counts.length; r++) {
    const end = Math.min(i + counts[r], h * w);
    if (r % 2 === 1) {
      for (let j = i; j < end; j++) data[(j % h) * w + Math.floor(j / h)] = 1;
    }
    i = end;
  }
  return { h, w, data };
}

// {h, w, data (row-major)} → {size: [h, w], counts: string}, byte-identical to pycocotools' encode.
function rleEncode(mask) {
  const { h, w, data } = mask;
  const counts = [];
  let prev = 0, run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = data[y * w + x] ? 1 : 0;
      if (v !== prev) { counts.push(run); run = 0; prev = v; }
      run++;
    }
  }
  counts.push(run);
  return { size: [h, w], counts: rleCountsToString(counts) };
}

window.segdetRle = { decode: rleDecode, encode: rleEncode, countsFromString: rleCountsFromString,
                     countsToString: rleCountsToString };

// ---------------------------------------------------------------------------------------------------------------
// State

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const S = {
  token: params.get("token") || "",
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
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

// ---------------------------------------------------------------------------------------------------------------
// API

function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    const d = detail[0];
    return (d.loc ? d.loc.join(".") + ": " : "") + (d.msg || JSON.stringify(d));
  }
  return detail === undefined ? "" : JSON.stringify(detail);
}

async function api(method, path, body, raw = false) {
  const headers = {};
  if (S.token) headers.Authorization = "Bearer " + S.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch("api/" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error(`${method} /api/${path}: the server does not answer (${e.message})`);
  }
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = formatDetail((await resp.json()).detail) || detail; } catch (e) { /* not JSON */ }
    const error = new Error(`${method} /api/${path}: ${resp.status} ${detail}`);
    error.status = resp.status;
    throw error;
  }
  if (raw) return resp;
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : null;
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}
function clearError() { $("error").hidden = true; $("error-text").textContent = ""; }
function setStatus(text) { $("status").textContent = text; }

// Runs an action, showing its error in the page instead of losing it in the console.
function guarded(fn) {
  return async (...args) => {
    try { return await fn(...args); } catch (e) { showError(e.message); }
  };
}

const imageId = () => S.images[S.index].id;
const imagePath = (suffix) => `images/${encodeURIComponent(String(imageId()))}/${suffix}`;

// ---------------------------------------------------------------------------------------------------------------
// Images and navigation

function objectCount(image) {
  return Array.isArray(image.objects) ? image.objects.length : Number(image.objects || 0);
}

function renderImageList() {
  const list = $("images");
  list.textContent = "";
  let done = 0;
  S.images.forEach((image, i) => {
    const n = objectCount(image);
    if (n > 0) done++;
    const li = document.createElement("li");
    li.dataset.testid = "image-item";
    li.dataset.imageId = image.id;
    li.className = (n > 0 ? "done" : "") + (i === S.index ? " current" : "");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = image.file_name.split("/").pop();
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = n ? String(n) : "";
    li.append(name, count);
    li.title = `${image.file_name} · ${image.width}×${image.height} · ${n} object${n === 1 ? "" : "s"}`;
    li.onclick = () => guarded(goTo)(i);
    list.appendChild(li);
  });
  $("progress").textContent = `${done} done · ${S.images.length - done} to do`;
  const current = list.children[S.index];
  if (current) current.scrollIntoView({ block: "nearest" });
}

function resetPrompts() {
  S.points = []; S.box = null; S.masks = []; S.scores = []; S.choice = 0;
  S.segSeq++;                               // an answer still on its way belongs to the old prompts
  canvas.dataset.busy = "0";
}

async function goTo(index) {
  if (!S.images.length) return;
  index = (index + S.images.length) % S.images.length;
  clearError();
  S.index = index;
  const image = S.images[index];
  history.replaceState(null, "", `${location.pathname}${location.search}#image=${encodeURIComponent(image.id)}`);
  resetPrompts();
  S.objects = []; S.selected = null; S.proposals = []; S.history = [];
  S.img = null;                             // no prompts on the old picture while the new one loads
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  canvas.removeAttribute("data-image-id");
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
  image.objects = S.objects.length;
  fitCanvas();
  draw();
  canvas.dataset.imageId = image.id;
  renderImageList();
  renderPanel();
  setStatus(`${image.file_name} · ${S.W}×${S.H}`);
}

function fitCanvas() {
  if (!S.W) return;
  const r = $("stage").getBoundingClientRect();
  const scale = Math.min(r.width / S.W, r.height / S.H);
  canvas.style.width = `${S.W * scale}px`;
  canvas.style.height = `${S.H * scale}px`;
}

// ---------------------------------------------------------------------------------------------------------------
// Drawing: image, kept objects, proposals, the current mask, then the prompts

const PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [245, 130, 48], [145, 30, 180], [70, 240, 240],
                 [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40], [128, 0, 0]];
const CURRENT = [30, 144, 255];
let colorIndex = 0;

function keptObject(o) {
  return { id: o.id, category: o.category, segmentation: o.segmentation, version: o.version || 1,
           mask: rleDecode(o.segmentation), color: PALETTE[colorIndex++ % PALETTE.length], layer: null };
}

// A kept object takes what the server holds now (after an edit here, or one made elsewhere).
function setObject(o, segmentation, name, version) {
  if (segmentation !== o.segmentation) { o.segmentation = segmentation; o.mask = rleDecode(segmentation); o.layer = null; }
  o.category = name;
  o.version = version;
}

// The continuous box [x1, y1, x2, y2] around a mask's pixels (a pixel's far edge included), or null when empty.
function maskBox(mask) {
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

function currentMask() {
  return S.masks.length ? S.masks[Math.min(S.choice, S.masks.length - 1)] : null;
}

// Image pixels per CSS pixel, so markers keep their on-screen size whatever the zoom.
function pxPerCss() {
  const w = canvas.getBoundingClientRect().width;
  return w ? S.W / w : 1;
}

function draw() {
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

// ---------------------------------------------------------------------------------------------------------------
// Prompts → masks

function snapshot() {
  return { points: S.points.slice(), box: S.box, masks: S.masks, scores: S.scores, choice: S.choice,
           selected: S.selected };
}
function restore(snap) {
  S.segSeq++;                               // an answer still on its way belongs to the old prompts
  canvas.dataset.busy = "0";
  const selected = S.objects.some((o) => o.id === snap.selected) ? snap.selected : null;
  Object.assign(S, { points: snap.points.slice(), box: snap.box, masks: snap.masks, scores: snap.scores,
                     choice: snap.choice, selected });
  renderCandidates(); renderPanel(); draw();
}

// Selecting a kept object starts its refinement: its box is the first prompt (drag another to replace it), the
// clicks that follow add points to it, Enter saves the new mask over the object's (PUT, with its version).
function select(o) {
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

function addPrompt(change) {
  clearError();
  S.history.push({ type: "prompts", before: snapshot() });
  change();
  draw();
  segment();
}

const segment = guarded(async function segment() {
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

function renderCandidates() {
  const box = $("candidates");
  box.textContent = "";
  S.masks.forEach((m, i) => {
    const b = document.createElement("button");
    b.dataset.testid = "candidate";
    const score = S.scores[i] === undefined ? "" : ` · IoU ${Number(S.scores[i]).toFixed(3)}`;
    b.textContent = S.masks.length > 1 ? `${i + 1}${score}` : `predicted${score}`;
    b.className = i === S.choice ? "chosen" : "";
    b.onclick = () => choose(i);
    box.appendChild(b);
  });
}

function choose(i) {
  if (i >= S.masks.length || i === S.choice) return;
  S.history.push({ type: "prompts", before: snapshot() });
  S.choice = i;
  renderCandidates(); draw();
}

function clearPrompts() {
  if (S.points.length || S.box || S.masks.length) S.history.push({ type: "prompts", before: snapshot() });
  resetPrompts();
  S.selected = null;
  renderCandidates(); renderPanel(); draw();
}

// ---------------------------------------------------------------------------------------------------------------
// Kept objects: keep, delete, undo (one write at a time, in order)

function serial(fn) {
  return (...args) => { S.queue = S.queue.then(() => guarded(fn)(...args)); return S.queue; };
}

function category() {
  const name = $("category").value.trim();
  if (!name) throw new Error("choose a class first (the Class field)");
  localStorage.setItem("segdet.category", name);
  return name;
}

// Saves a new object, or again one that was deleted (undo), which then carries its new id: steps further down
// the undo stack hold the same object.
async function saveObject(segmentation, name, again = null) {
  const index = S.index;
  const answer = await api("POST", imagePath("objects"), { segmentation, category: name });
  const o = again || keptObject({ id: answer.id, category: name, segmentation });
  o.id = answer.id;
  o.version = answer.version;
  if (S.index === index) S.objects.push(o);
  objectsChanged(index, +1);
  return o;
}

async function removeObject(o) {
  const index = S.index;
  await api("DELETE", imagePath(`objects/${encodeURIComponent(String(o.id))}`));
  if (S.index === index) {
    S.objects = S.objects.filter((x) => x !== o);
    if (S.selected === o.id) S.selected = null;
  }
  objectsChanged(index, -1);
}

// The answer may come after the user moved to another image: only that image's count changes then.
function objectsChanged(index, change) {
  const image = S.images[index];
  image.objects = S.index === index ? S.objects.length : Math.max(0, objectCount(image) + change);
  renderImageList();
  if (S.index === index) { renderPanel(); draw(); }
}

const commit = serial(async function commit() {
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

const deleteSelected = serial(async function deleteSelected() {
  const o = S.objects.find((x) => x.id === S.selected);
  if (!o) throw new Error("select a kept object first (alt-click it, or click it in the list)");
  await removeObject(o);
  resetPrompts();                           // its box and points were for it
  renderCandidates();
  S.history.push({ type: "delete", object: o });
  setStatus(`deleted object ${o.id}`);
});

const undo = serial(async function undo() {
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

// ---------------------------------------------------------------------------------------------------------------
// Propose: candidates to accept or reject

const propose = guarded(async function propose() {
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

const accept = serial(async function accept(i = S.focused) {
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

function reject(i = S.focused) {
  const p = S.proposals[i];
  if (!p) return;
  S.proposals.splice(i, 1);
  S.focused = Math.min(i, S.proposals.length - 1);
  S.history.push({ type: "reject", proposal: p, at: i });
  renderPanel(); draw();
}

async function acceptAll() {
  while (S.proposals.length) {
    const n = S.proposals.length;
    await accept(0);
    if (S.proposals.length === n) return;   // it failed; the error is shown
  }
}

function swatch(rgb) {
  const s = document.createElement("span");
  s.className = "swatch";
  s.style.background = `rgb(${rgb.join(",")})`;
  return s;
}

function renderPanel() {
  const objects = $("objects");
  objects.textContent = "";
  for (const o of S.objects) {
    const li = document.createElement("li");
    li.dataset.testid = "object";
    li.dataset.objectId = o.id;
    li.className = o.id === S.selected ? "selected" : "";
    li.append(swatch(o.color), `${o.category} #${o.id}`);
    li.onclick = () => select(o);
    objects.appendChild(li);
  }
  const proposals = $("proposals");
  proposals.textContent = "";
  S.proposals.forEach((p, i) => {
    const li = document.createElement("li");
    li.dataset.testid = "proposal";
    li.className = i === S.focused ? "focused" : "";
    const yes = document.createElement("button");
    yes.textContent = "✓"; yes.title = "accept (A)"; yes.dataset.testid = "accept";
    yes.onclick = (e) => { e.stopPropagation(); accept(i); };
    const no = document.createElement("button");
    no.textContent = "✗"; no.title = "reject (X)"; no.dataset.testid = "reject";
    no.onclick = (e) => { e.stopPropagation(); reject(i); };
    const score = p.score === undefined ? "" : ` ${Number(p.score).toFixed(2)}`;
    li.append(swatch([255, 200, 0]), `${p.category || "candidate"}${score}`, yes, no);
    li.onclick = () => { S.focused = i; renderPanel(); draw(); };
    proposals.appendChild(li);
  });
  $("accept-all").hidden = S.proposals.length === 0;
  offerCategories(S.objects.map((o) => o.category));
}

// The class field offers every name seen (the server's list, then the objects'); empty, it takes the first.
function offerCategories(names) {
  const list = $("categories");
  for (const name of names) {
    if (!name || [...list.options].some((opt) => opt.value === name)) continue;
    const opt = document.createElement("option");
    opt.value = name;
    list.appendChild(opt);
  }
  if (!$("category").value && list.options.length) $("category").value = list.options[0].value;
}

// ---------------------------------------------------------------------------------------------------------------
// Train: start, follow, and show which model segments

function metric(metrics, test) {
  for (const [k, v] of Object.entries(metrics || {})) if (test(k.toLowerCase()) && typeof v === "number") return v;
  return undefined;
}

function showTrain(t) {
  const modelName = t.model || S.train.model;
  if (modelName) {
    S.train.model = modelName;
    // A long path shows by its last parts (the run and the file); the whole of it is the tooltip.
    const parts = modelName.split("/");
    $("model").textContent = `model: ${parts.length > 4 ? "…/" + parts.slice(-4).join("/") : modelName}`;
    $("model").title = `the model that segments now: ${modelName}`;
  }
  if (!t.state || t.state === "idle") return;
  const parts = [`training ${t.state}`];
  if (t.epoch !== undefined && t.epoch !== null) parts.push(`epoch ${t.epoch}`);
  // The trainer's log keys: train/loss, val/dice (train/dice_ce is a loss, not a Dice).
  const loss = metric(t.metrics, (k) => k === "train/loss") ?? metric(t.metrics, (k) => k.endsWith("loss"));
  const dice = metric(t.metrics, (k) => k === "val/dice")
    ?? metric(t.metrics, (k) => k.startsWith("val") && k.includes("dice"));
  if (loss !== undefined) parts.push(`loss ${loss.toFixed(4)}`);
  if (dice !== undefined) parts.push(`val dice ${dice.toFixed(3)}`);
  setStatus(parts.join(" · "));
  $("train").disabled = t.state === "running";
}

async function pollTrain() {
  clearTimeout(S.train.timer);
  let t;
  try { t = await api("GET", "train"); } catch (e) { showError(e.message); $("train").disabled = false; return; }
  const was = S.train.state;
  S.train.state = t.state;
  showTrain(t);
  if (t.state === "running") { S.train.timer = setTimeout(pollTrain, 1000); return; }
  if (was === "running" && t.state === "failed") showError(`training failed: ${t.error || "see the server's log"}`);
  // The server now segments with the new best.pt; the current prompts get the new model's answer.
  if (was === "running" && t.state !== "failed" && (S.points.length || S.box)) segment();
}

const train = guarded(async function train() {
  clearError();
  $("train").disabled = true;
  try {
    await api("POST", "train", {});
  } catch (e) { $("train").disabled = false; throw e; }
  S.train.state = "running";
  setStatus("training running · starting");
  pollTrain();
});

// ---------------------------------------------------------------------------------------------------------------
// Input: mouse on the canvas, keys, buttons

function toImage(e) {
  const r = canvas.getBoundingClientRect();
  const x = Math.min(Math.max((e.clientX - r.left) / r.width, 0), 1) * S.W;
  const y = Math.min(Math.max((e.clientY - r.top) / r.height, 0), 1) * S.H;
  return [x, y];
}

function boxFrom(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
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

// ---------------------------------------------------------------------------------------------------------------
// Start: the list, then the image named in the address (#image=ID) or the first one still to do

const start = guarded(async function start() {
  S.images = await api("GET", "images");
  try { offerCategories(await api("GET", "categories")); } catch (e) { /* optional: the field takes any name */ }
  if (!S.images.length) { $("progress").textContent = "no images"; setStatus("no images under data.root"); return; }
  const wanted = new URLSearchParams(location.hash.slice(1)).get("image");
  let index = S.images.findIndex((im) => String(im.id) === wanted);
  if (index < 0) index = Math.max(0, S.images.findIndex((im) => objectCount(im) === 0));
  api("GET", "train").then((t) => {
    S.train.state = t.state;
    showTrain(t);
    if (t.state === "running") pollTrain();
  }).catch((e) => showError(e.message));
  await goTo(index);
  if (!$("category").value) $("category").value = "object";
});
start();
