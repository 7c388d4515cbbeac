// Train: start a run on everything kept, follow it (epoch, loss, validation Dice) and show which model segments;
// when a run ends well the server segments with its best.pt, and the current prompts get the new model's answer.

import { api } from "./api.js";
import { $, clearError, guarded, setStatus, showError } from "./dom.js";
import { segment } from "./prompts.js";
import { S } from "./state.js";

function metric(metrics, test) {
  for (const [k, v] of Object.entries(metrics || {})) if (test(k.toLowerCase()) && typeof v === "number") return v;
  return undefined;
}

export function showTrain(t) {
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

export async function pollTrain() {
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

export const train = guarded(async function train() {
  clearError();
  $("train").disabled = true;
  try {
    await api("POST", "train", {});
  } catch (e) { $("train").disabled = false; throw e; }
  S.train.state = "running";
  setStatus("training running · starting");
  pollTrain();
});
