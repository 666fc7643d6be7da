// Detection: the config form (LSST names), job submission, live progress, summary, the
// sources table (first page, then by cursor) and the download links.
import { apiUrl, el, fmt, FORMATS, request, showError } from "./api.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const FINAL = new Set(["COMPLETED", "ERROR", "ABORTED"]);
const POLL_MS = 400;
const TABLE_COLUMNS = [
  ["id", "id"], ["parent", "parent"], ["deblend_nChild", "nChild"],
  ["base_SdssCentroid_x", "x"], ["base_SdssCentroid_y", "y"],
  ["base_PsfFlux_flux", "PsfFlux (nJy)"], ["base_PsfFlux_fluxErr", "σ (nJy)"],
  ["coord_ra", "RA"], ["coord_dec", "Dec"],
];
const PAGE = 50;

/** The config as nested JSON, from the fields that have a value ("detection.minPixels"). */
export function readConfig(form) {
  const config = {};
  for (const field of form.querySelectorAll("input[name], select[name]")) {
    if (field.value === "") continue;
    const [section, key] = field.name.split(".");
    const value = field.type === "number" ? Number(field.value) : field.value;
    (config[section] ??= {})[key] = value;
  }
  return config;
}

export function initDetect({ onCompleted, onPick }) {
  const form = $("detect-form");
  const submit = $("detect-submit");
  const cancel = $("detect-cancel");
  let exposure = null;
  let polling = null;
  let job = null;
  let cursor = null;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!exposure) return;
    submit.disabled = true;
    try {
      const created = await request("v1/jobs", {
        method: "POST", json: { kind: "detect", exposure_id: exposure.id, config: readConfig(form) },
      });
      $("results").hidden = true;
      track(created);
    } catch (error) {
      submit.disabled = false;
      showError(error, "submitting the detection");
    }
  });

  cancel.addEventListener("click", async () => {
    if (!job) return;
    try {
      showProgress(await request(`v1/jobs/${job.id}/cancel`, { method: "POST" }));
    } catch (error) {
      showError(error, "cancelling the job");
    }
  });

  function showProgress(j) {
    job = j;
    $("job-status").hidden = false;
    $("job-id").textContent = j.id;
    $("job-phase").textContent = j.phase;
    $("job-progress").value = j.progress ?? 0;
    $("job-step").textContent = j.step ?? "";
    cancel.hidden = FINAL.has(j.phase);
  }

  function track(j) {
    clearTimeout(polling);
    showProgress(j);
    const poll = async () => {
      let current;
      try {
        current = await request(`v1/jobs/${j.id}`);
      } catch (error) {
        showError(error, "reading the job's progress");
        submit.disabled = !exposure;
        return;
      }
      showProgress(current);
      if (!FINAL.has(current.phase)) {
        polling = setTimeout(poll, POLL_MS);
        return;
      }
      submit.disabled = !exposure;
      if (current.phase === "COMPLETED") {
        await showResults(current);
      } else {
        const e = current.error || {};
        showError({ name: e.code || current.phase, message: e.message || `the job ended ${current.phase}` },
          `detect job ${current.id}`);
      }
    };
    polling = setTimeout(poll, FINAL.has(j.phase) ? 0 : POLL_MS);
  }

  async function showResults(j) {
    const s = j.summary || {};
    $("summary-sources").textContent = fmt(s.n_sources);
    $("summary-parents").textContent = fmt(s.n_parents);
    $("summary-children").textContent = fmt(s.n_children);
    $("summary-psf-fwhm").textContent = s.psf_fwhm_pixels == null ? "—"
      : `${s.psf_fwhm_pixels.toFixed(2)} px` +
        (s.psf_fwhm_arcsec == null ? "" : ` = ${s.psf_fwhm_arcsec.toFixed(3)}″`);
    $("summary-threshold").textContent = s.threshold == null ? "—" : `${fmt(s.threshold)} ct`;
    $("summary-seconds").textContent = s.seconds == null ? "—" : `${s.seconds.toFixed(2)} s`;
    const links = FORMATS.map((f) => el("a", {
      href: f === "json" ? apiUrl(`v1/jobs/${j.id}/catalog`, { format: "json" })
        : apiUrl(`v1/jobs/${j.id}/sources`, { format: f }),
      download: `${j.id}-sources.${f === "votable" ? "vot" : f}`, testid: `download-${f}`,
    }, f));
    $("downloads").replaceChildren("Sources: ", ...links, " · ",
      el("a", { href: apiUrl(`v1/jobs/${j.id}/mask`), testid: "download-mask" }, "mask (FITS)"),
      el("a", { href: apiUrl(`v1/jobs/${j.id}/regions.reg`), testid: "download-regions" },
        "DS9 regions"),
      el("a", { href: apiUrl(`v1/jobs/${j.id}/overlay.png`), target: "_blank",
        testid: "download-overlay" }, "overlay PNG"));
    $("results").hidden = false;
    cursor = null;
    await loadPage(j, true);
    onCompleted(j);
  }

  async function loadPage(j, first) {
    const table = $("sources-table");
    try {
      const page = await request(`v1/jobs/${j.id}/sources`, {
        query: { limit: PAGE, cursor: first ? null : cursor },
      });
      cursor = page.next_cursor;
      table.querySelector("thead").replaceChildren(
        el("tr", {}, ...TABLE_COLUMNS.map(([, label]) => el("th", {}, label))));
      table.querySelector("tbody").replaceChildren(...page.sources.map((row) => el("tr", {
        testid: "source-row", "data-id": row.id, onclick: () => onPick(row.id),
      }, ...TABLE_COLUMNS.map(([name]) => el("td", { class: "num" }, fmt(row[name], 6))))));
      const start = page.sources.length ? page.sources[0].id : 0;
      $("sources-page-info").textContent = page.sources.length
        ? `ids ${start}–${page.sources.at(-1).id}` : "none";
      $("sources-next").hidden = !cursor;
    } catch (error) {
      showError(error, "reading the sources");
    }
  }
  $("sources-next").addEventListener("click", () => job && loadPage(job, false));

  return {
    setExposure(x) {
      exposure = x;
      submit.disabled = !x;
    },
    open(j) { track(j); },
    highlightRow(id) {
      for (const row of $("sources-table").querySelectorAll("tr[data-id]")) {
        row.classList.toggle("selected", Number(row.dataset.id) === id);
      }
    },
  };
}
