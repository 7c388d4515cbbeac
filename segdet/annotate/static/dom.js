// The page's messages: the status line under the image and the one-line error in red, which every action's
// failure reaches instead of being lost in the console.

export const $ = (id) => document.getElementById(id);

export function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}
export function clearError() { $("error").hidden = true; $("error-text").textContent = ""; }
export function setStatus(text) { $("status").textContent = text; }

// Runs an action, showing its error in the page instead of losing it in the console.
export function guarded(fn) {
  return async (...args) => {
    try { return await fn(...args); } catch (e) { showError(e.message); }
  };
}
