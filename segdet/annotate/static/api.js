// The server's JSON API: every call carries the token the page's own URL holds (?token=); an answer that is not
// 2xx becomes an Error whose message is one line ("METHOD /api/path: status detail"), with its `status`.

const token = new URLSearchParams(location.search).get("token") || "";

function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    const d = detail[0];
    return (d.loc ? d.loc.join(".") + ": " : "") + (d.msg || JSON.stringify(d));
  }
  return detail === undefined ? "" : JSON.stringify(detail);
}

export async function api(method, path, body, raw = false) {
  const headers = {};
  if (token) headers.Authorization = "Bearer " + token;
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
