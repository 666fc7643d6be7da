// The API client: every call goes through request(), every failure becomes an ApiError
// carrying the API's {"error": {"code", "message", "detail"}}, shown by showError().

export class ApiError extends Error {
  constructor(status, code, message, detail = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** A URL for an API path ("v1/jobs"), relative to the page so a path prefix keeps working. */
export function apiUrl(path, query = {}) {
  const url = new URL(path.replace(/^\//, ""), document.baseURI);
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, v);
  }
  return url.toString();
}

async function errorFrom(response) {
  let body = null;
  const text = await response.text().catch(() => "");
  try { body = JSON.parse(text); } catch { /* not JSON: use the text */ }
  const e = body && body.error;
  if (e && typeof e === "object") {
    return new ApiError(response.status, e.code || "error", e.message || response.statusText,
      e.detail ?? null);
  }
  const message = text.trim().slice(0, 300) || response.statusText || "request failed";
  return new ApiError(response.status, `http_${response.status}`, message);
}

/**
 * Call the API. `json` sends a JSON body, `body` anything fetch takes (FormData for uploads).
 * Returns parsed JSON, or the Response itself with `raw: true` (images, files).
 */
export async function request(path, { method = "GET", query, json, body, raw = false,
                                      signal } = {}) {
  const init = { method, signal, headers: {} };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["content-type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  if (!raw) init.headers.accept = "application/json";
  let response;
  try {
    response = await fetch(apiUrl(path, query), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", `${method} ${path}: the server did not answer ` +
      `(${error.message})`);
  }
  if (!response.ok) throw await errorFrom(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

const FINAL_PHASES = new Set(["COMPLETED", "ERROR", "ABORTED"]);

/** Poll a job until it ends, telling `onProgress(job)` each time; the COMPLETED job, or
 * an error carrying the job's. */
export async function followJob(job, onProgress, pollMs = 500) {
  while (!FINAL_PHASES.has(job.phase)) {
    onProgress(job);
    await new Promise((resolve) => { setTimeout(resolve, pollMs); });
    job = await request(`v1/jobs/${job.id}`);
  }
  if (job.phase !== "COMPLETED") {
    const e = job.error || {};
    throw Object.assign(new Error(e.message || `the ${job.kind} job ended ${job.phase}`),
      { name: e.code || job.phase });
  }
  return job;
}

const errorBox = () => document.querySelector("[data-testid=errors]");

/** Show an error as a visible, dismissable message; `context` says what was being done. */
export function showError(error, context = "") {
  if (error && error.name === "AbortError") return;
  const box = errorBox();
  const item = document.createElement("div");
  item.className = "error";
  item.setAttribute("role", "alert");
  item.dataset.testid = "error-message";
  const code = error instanceof ApiError ? error.code : (error && error.name) || "error";
  const status = error instanceof ApiError && error.status ? ` (HTTP ${error.status})` : "";
  const text = document.createElement("span");
  const codeEl = document.createElement("code");
  codeEl.textContent = code;
  text.append(context ? `${context}: ` : "", codeEl, ` ${error && error.message}${status}`);
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "×";
  close.title = "dismiss";
  close.addEventListener("click", () => item.remove());
  item.append(text, close);
  box.append(item);
  console.warn("skyphot:", context, error);
}

export function clearErrors() {
  errorBox().replaceChildren();
}

/** Save a Blob under a file name (for POST results, which a plain link cannot fetch). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export const FORMATS = ["json", "fits", "votable", "csv", "parquet"];

/** Small formatting helpers shared by the modules. */
export function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return String(value);
    if (Number.isInteger(value)) return String(value);
    const a = Math.abs(value);
    return a !== 0 && (a >= 1e6 || a < 1e-3) ? value.toExponential(digits - 1)
      : value.toPrecision(digits);
  }
  return String(value);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "testid") node.dataset.testid = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}
