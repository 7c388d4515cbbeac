// The lists around the canvas, drawn from the state: the images (done / to do), SAM's candidates for the current
// prompts, the kept objects and the proposals, and the class names the Class field offers. What a click on a
// row does is wired in input.js.

import { $ } from "./dom.js";
import { S, objectCount } from "./state.js";

export function renderImageList() {
  const list = $("images");
  list.textContent = "";
  let done = 0;
  S.images.forEach((image, i) => {
    const n = objectCount(image);
    const finished = image.frames ? image.frames.every((f) => Number(f.objects) > 0) : n > 0;
    if (finished) done++;
    const li = document.createElement("li");
    li.dataset.testid = "image-item";
    li.dataset.imageId = image.id;
    li.className = (finished ? "done" : "") + (i === S.index ? " current" : "");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = image.stack ? `${image.stack} · ${image.frames.length} dates` : image.file_name.split("/").pop();
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = n ? String(n) : "";
    li.append(name, count);
    li.title = `${image.file_name} · ${image.width}×${image.height} · ${n} object${n === 1 ? "" : "s"}`;
    list.appendChild(li);
  });
  $("progress").textContent = `${done} done · ${S.images.length - done} to do`;
  const current = list.children[S.index];
  if (current) current.scrollIntoView({ block: "nearest" });
}

export function renderCandidates() {
  const box = $("candidates");
  box.textContent = "";
  S.masks.forEach((m, i) => {
    const b = document.createElement("button");
    b.dataset.testid = "candidate";
    const score = S.scores[i] === undefined ? "" : ` · IoU ${Number(S.scores[i]).toFixed(3)}`;
    b.textContent = S.masks.length > 1 ? `${i + 1}${score}` : `predicted${score}`;
    b.className = i === S.choice ? "chosen" : "";
    box.appendChild(b);
  });
}

function swatch(rgb) {
  const s = document.createElement("span");
  s.className = "swatch";
  s.style.background = `rgb(${rgb.join(",")})`;
  return s;
}

export function renderPanel() {
  const objects = $("objects");
  objects.textContent = "";
  for (const o of S.objects) {
    const li = document.createElement("li");
    li.dataset.testid = "object";
    li.dataset.objectId = o.id;
    li.className = o.id === S.selected ? "selected" : "";
    li.append(swatch(o.color), `${o.category} #${o.id}` + (o.propagated != null ? " · propagated" : ""));
    if (o.propagated != null) li.dataset.propagated = String(o.propagated);
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
    const no = document.createElement("button");
    no.textContent = "✗"; no.title = "reject (X)"; no.dataset.testid = "reject";
    const score = p.score === undefined ? "" : ` ${Number(p.score).toFixed(2)}`;
    li.append(swatch([255, 200, 0]), `${p.category || "candidate"}${score}`, yes, no);
    proposals.appendChild(li);
  });
  $("accept-all").hidden = S.proposals.length === 0;
  offerCategories(S.objects.map((o) => o.category));
}

// The class field offers every name seen (the server's list, then the objects'); empty, it takes the first.
export function offerCategories(names) {
  const list = $("categories");
  for (const name of names) {
    if (!name || [...list.options].some((opt) => opt.value === name)) continue;
    const opt = document.createElement("option");
    opt.value = name;
    list.appendChild(opt);
  }
  if (!$("category").value && list.options.length) $("category").value = list.options[0].value;
}
