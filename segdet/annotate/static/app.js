// segdet annotate: the page. Plain ES modules, no build step, nothing fetched from outside the server; each module
// does one job (rle.js the COCO RLE codec, api.js the API client, state.js the shared state, draw.js the canvas,
// lists.js the lists, images.js moving between images, prompts.js prompts → masks, objects.js keeping and
// deleting, undo.js, propose.js, train.js, input.js the mouse, keys and buttons, stack.js the date slider and Propagate). This one starts the page.

import { api } from "./api.js";
import { $, guarded, setStatus, showError } from "./dom.js";
import { goTo } from "./images.js";
import "./input.js";
import { offerCategories } from "./lists.js";
import { findImage } from "./stack.js";
import { S, objectCount } from "./state.js";
import { pollTrain, showTrain } from "./train.js";

// The list, then the image named in the address (#image=ID) or the first one still to do.
const start = guarded(async function start() {
  S.images = await api("GET", "images");
  try { offerCategories(await api("GET", "categories")); } catch (e) { /* optional: the field takes any name */ }
  if (!S.images.length) { $("progress").textContent = "no images"; setStatus("no images under data.root"); return; }
  const wanted = new URLSearchParams(location.hash.slice(1)).get("image");
  let index = findImage(wanted);
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
