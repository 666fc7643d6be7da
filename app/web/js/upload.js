// Exposures: upload a FITS file, list the stored ones, pick one and see its metadata.
import { el, fmt, request, showError } from "./api.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

export function initExposures({ onSelect, onOpenJob }) {
  const form = $("upload-form");
  const status = $("upload-status");
  let selectedId = null;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) return;
    const data = new FormData();
    data.append("file", file, file.name);
    const button = $("upload-submit");
    button.disabled = true;
    status.textContent = `uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
    try {
      const exposure = await request("v1/exposures", { method: "POST", body: data });
      status.textContent = `stored ${exposure.filename || exposure.id}`;
      await refresh();
      select(exposure);
    } catch (error) {
      status.textContent = "upload failed";
      showError(error, `uploading ${file.name}`);
    } finally {
      button.disabled = false;
    }
  });
  $("exposures-refresh").addEventListener("click", () => refresh());

  async function refresh() {
    const tbody = $("exposure-list").querySelector("tbody");
    try {
      const page = await request("v1/exposures", { query: { limit: 100 } });
      tbody.replaceChildren(...page.exposures.map((x) => el("tr", {
        testid: "exposure-row", "data-id": x.id, class: x.id === selectedId ? "selected" : null,
        onclick: () => select(x),
      },
      el("td", { title: x.id }, x.filename || x.id.slice(0, 8)),
      el("td", {}, x.shape ? x.shape.join("×") : "—"),
      el("td", {}, x.band ?? "—"), el("td", {}, fmt(x.visit)), el("td", {}, fmt(x.detector)),
      el("td", { class: "num" }, x.mjd == null ? "—" : x.mjd.toFixed(5)),
      el("td", {}, new Date(x.created_at).toLocaleString()),
      el("td", {}, el("button", { type: "button", class: "small", testid: "exposure-use" },
        "use")))));
      if (!page.exposures.length) {
        tbody.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "status" },
          "No exposures yet: upload a FITS file.")));
      }
    } catch (error) {
      showError(error, "listing exposures");
    }
  }

  async function select(exposure) {
    selectedId = exposure.id;
    for (const row of $("exposure-list").querySelectorAll("tr[data-id]")) {
      row.classList.toggle("selected", row.dataset.id === exposure.id);
    }
    const meta = $("exposure-meta");
    const item = (k, v) => [el("b", {}, k), ` ${v}   `];
    meta.replaceChildren(
      ...item("exposure", exposure.id),
      ...item("file", exposure.filename ?? "—"),
      ...item("shape", exposure.shape ? exposure.shape.join("×") : "—"),
      ...item("band", exposure.band ?? "—"),
      ...item("visit", fmt(exposure.visit)),
      ...item("detector", fmt(exposure.detector)),
      ...item("MJD", exposure.mjd == null ? "—" : exposure.mjd.toFixed(5)),
      ...item("nJy/count", fmt(exposure.njy_per_count)),
      ...item("RA", exposure.ra_min == null ? "—"
        : `${exposure.ra_min.toFixed(4)}…${exposure.ra_max.toFixed(4)}°`),
      ...item("Dec", exposure.dec_min == null ? "—"
        : `${exposure.dec_min.toFixed(4)}…${exposure.dec_max.toFixed(4)}°`),
    );
    meta.hidden = false;
    onSelect(exposure);
    await listJobs(exposure);
  }

  async function listJobs(exposure) {
    const box = $("exposure-jobs");
    try {
      const page = await request("v1/jobs", {
        query: { exposure_id: exposure.id, kind: "detect", phase: "COMPLETED", limit: 5 },
      });
      box.hidden = !page.jobs.length;
      box.replaceChildren("Earlier detections: ", ...page.jobs.map((job) => el("button", {
        type: "button", class: "small", testid: "open-job",
        title: JSON.stringify(job.config.detection ?? {}),
        onclick: () => onOpenJob(job),
      }, `${new Date(job.created_at).toLocaleString()} · ${job.summary?.n_sources ?? "?"} sources`)));
    } catch (error) {
      showError(error, "listing the exposure's detect jobs");
    }
  }

  refresh();
  return { refresh, select };
}
