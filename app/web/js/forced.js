// Forced photometry (POST /v1/forced) on three kinds of positions: N random blank-sky
// positions (histogram of F/σ, a unit Gaussian on blank sky), faint detections in an S/N
// range (forced vs detection flux), and pasted RA/Dec or x/y lines (a table). More positions
// than the server measures in one request (GET /v1/limits) run as a forced job instead.
import { el, fmt, followJob, FORMATS, request, saveBlob, showError } from "./api.js";
import { histogram, meanStd, scatter } from "./plots.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const TABLE_MAX = 200;

/** Rows as objects, whether the API sends objects or arrays in `columns` order. */
export function rowObjects(table) {
  const names = (table.columns || []).map((c) => (typeof c === "string" ? c : c.name));
  return (table.rows || []).map((row) => (Array.isArray(row)
    ? Object.fromEntries(names.map((n, i) => [n, row[i]])) : row));
}

/** Pasted lines → positions: "ra, dec" by default, or the names of a header line. */
export function parsePositions(text) {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  if (!lines.length) throw new Error("paste at least one position");
  const split = (l) => l.split(/[,;\s]+/).filter(Boolean);
  let names = ["ra", "dec"];
  if (/[a-df-z_]/i.test(lines[0].replace(/e[+-]?\d/gi, ""))) names = split(lines.shift());
  const hasPair = (a, b) => names.includes(a) && names.includes(b);
  if (!hasPair("ra", "dec") && !hasPair("x", "y")) {
    throw new Error(`the header names no ra, dec or x, y columns: ${names.join(", ")}`);
  }
  return lines.map((line, n) => {
    const values = split(line);
    if (values.length < names.length) {
      throw new Error(`line ${n + 1} has ${values.length} values, the header ${names.length}`);
    }
    return Object.fromEntries(names.map((name, i) => {
      const v = Number(values[i]);
      return [name, Number.isFinite(v) && values[i] !== "" ? v : values[i]];
    }));
  });
}

const snrOf = (r) => r.base_PsfFlux_instFlux / r.base_PsfFlux_instFluxErr;

export function initForced({ onPositions }) {
  const status = $("forced-status");
  let target = null; // {exposure_id, job_id}

  async function run(body, what, button, show) {
    button.disabled = true;
    status.textContent = `measuring ${what}…`;
    try {
      const limits = await request("v1/limits");
      const count = (body.positions || []).length + (body.random ? body.random.n : 0);
      let table;
      let fetchAs;
      if (count <= limits.forced_sync_max_positions) {
        table = await request("v1/forced", { method: "POST", json: body });
        fetchAs = (format) => request("v1/forced", { method: "POST", json: body,
          query: { format }, raw: true });
      } else {
        const job = await runJob(body, what);
        table = await request(`v1/jobs/${job.id}/forced`, { query: { format: "json" } });
        fetchAs = (format) => request(`v1/jobs/${job.id}/forced`, { query: { format },
          raw: true });
      }
      const rows = rowObjects(table);
      status.textContent = `${rows.length} ${what} measured`;
      onPositions(rows.map((r) => r.base_TransformedCentroid_x ?? r.x),
        rows.map((r) => r.base_TransformedCentroid_y ?? r.y));
      show(rows);
      downloads(fetchAs, body.exposure_id);
    } catch (error) {
      status.textContent = "failed";
      showError(error, `forced photometry on ${what}`);
    } finally {
      button.disabled = false;
    }
  }

  /** The same measurement as a forced job (POST /v1/jobs), followed until it ends. */
  async function runJob(body, what) {
    const { exposure_id: exposureId, ...config } = body;
    const job = await request("v1/jobs", { method: "POST",
      json: { kind: "forced", exposure_id: exposureId, config } });
    return followJob(job, (now) => {
      status.textContent = `more than one request measures: forced job ${now.id} on ${what}, ` +
        `${now.phase} ${Math.round(100 * (now.progress ?? 0))}% ${now.step ?? ""}`;
      status.dataset.jobId = now.id;
    });
  }

  // --- random blank sky ------------------------------------------------------------------
  $("forced-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!target) return;
    const data = new FormData(event.target);
    const body = { ...target, random: { n: Number(data.get("n")),
      min_distance_px: Number(data.get("min_distance_px")), seed: Number(data.get("seed")) } };
    run(body, "random blank-sky positions", $("forced-run"), (rows) => {
      snrHistogram(rows, "random blank-sky positions", true);
      $("forced-scatter").hidden = true;
      $("forced-scatter-caption").textContent = "";
      $("forced-table-wrap").hidden = true;
    });
  });

  // --- faint detections ------------------------------------------------------------------
  $("faint-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!target) return;
    const data = new FormData(event.target);
    let detections;
    try {
      const page = await request(`v1/jobs/${target.job_id}/sources`, { query: {
        min_psf_snr: data.get("min_psf_snr"), max_psf_snr: data.get("max_psf_snr"),
        limit: data.get("limit") || 32,
        columns: "id,coord_ra,coord_dec,base_SdssCentroid_x,base_SdssCentroid_y," +
          "base_PsfFlux_flux,base_PsfFlux_fluxErr",
      } });
      detections = page.sources;
    } catch (error) {
      showError(error, "selecting faint detections");
      return;
    }
    if (!detections.length) {
      showError(new Error("no detection in that S/N range"), "faint detections");
      return;
    }
    const sky = detections.every((d) => Number.isFinite(d.coord_ra) && Number.isFinite(d.coord_dec));
    const positions = detections.map((d) => (sky
      ? { ra: d.coord_ra, dec: d.coord_dec, detection_id: d.id }
      : { x: d.base_SdssCentroid_x, y: d.base_SdssCentroid_y, detection_id: d.id }));
    run({ ...target, positions }, "faint detections", $("faint-run"), (rows) => {
      snrHistogram(rows, "faint detections");
      const canvas = $("forced-scatter");
      canvas.hidden = false;
      const n = scatter(canvas, detections.map((d) => d.base_PsfFlux_flux),
        rows.map((r) => r.base_PsfFlux_flux), {
          xerr: detections.map((d) => d.base_PsfFlux_fluxErr),
          yerr: rows.map((r) => r.base_PsfFlux_fluxErr),
          xlabel: "detection base_PsfFlux_flux (nJy)", ylabel: "forced base_PsfFlux_flux (nJy)",
          title: "forced vs detection PSF flux (dashed: equal)", identity: true });
      canvas.dataset.n = String(n);
      $("forced-scatter-caption").textContent = `${n} faint detections, ` +
        `S/N ${data.get("min_psf_snr")}–${data.get("max_psf_snr")}`;
      table(rows, ["detection_id"]);
    });
  });

  // --- pasted positions ------------------------------------------------------------------
  $("paste-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!target) return;
    let positions;
    try {
      positions = parsePositions($("paste-positions").value);
    } catch (error) {
      showError(error, "reading the pasted positions");
      return;
    }
    const tags = Object.keys(positions[0]);
    run({ ...target, positions }, "pasted positions", $("paste-run"), (rows) => {
      snrHistogram(rows, "pasted positions");
      $("forced-scatter").hidden = true;
      $("forced-scatter-caption").textContent = "";
      table(rows, tags);
    });
  });

  // --- output ----------------------------------------------------------------------------
  function snrHistogram(rows, what, blankSky = false) {
    const snr = rows.map(snrOf);
    const { n, mean, std } = meanStd(snr);
    const canvas = $("forced-histogram");
    canvas.hidden = false;
    const finite = snr.filter(Number.isFinite);
    const lim = Math.max(5, Math.ceil(Math.max(0, ...finite.map(Math.abs))));
    histogram(canvas, snr, { bins: Math.min(40, Math.max(10, Math.round(Math.sqrt(n) * 2))),
      range: [-lim, lim], xlabel: "base_PsfFlux_instFlux / base_PsfFlux_instFluxErr",
      gaussian: blankSky ? { mu: 0, sigma: 1 } : null,
      title: `F/σ at ${n} ${what}` + (blankSky ? " (magenta: unit Gaussian)" : "") });
    canvas.dataset.n = String(n);
    canvas.dataset.kind = what;
    $("forced-stats").textContent = `n = ${n} (of ${rows.length}), mean F/σ = ${fmt(mean, 3)}, ` +
      `std = ${fmt(std, 3)}; flagged: ${rows.filter((r) => r.base_PsfFlux_flag).length}`;
  }

  function table(rows, tags) {
    const columns = [...tags, "base_PsfFlux_flux", "base_PsfFlux_fluxErr", "F/σ",
      "base_PsfFlux_flag", "base_PixelFlags_flag_offimage"];
    const wrap = $("forced-table-wrap");
    wrap.hidden = false;
    wrap.querySelector("thead").replaceChildren(el("tr", {}, ...columns.map((c) => el("th", {}, c))));
    wrap.querySelector("tbody").replaceChildren(...rows.slice(0, TABLE_MAX).map((r) => el("tr",
      { testid: "forced-row" },
      ...columns.map((c) => el("td", { class: "num" }, fmt(c === "F/σ" ? snrOf(r) : r[c], 6))))));
  }

  /** Download buttons; `fetchAs(format)` gives the Response of the same rows as a file. */
  function downloads(fetchAs, exposureId) {
    $("forced-downloads").replaceChildren("Forced sources: ", ...FORMATS.map((f) => el("button", {
      type: "button", class: "small", testid: `forced-download-${f}`,
      onclick: () => download(fetchAs, f, exposureId),
    }, f)));
  }

  async function download(fetchAs, format, exposureId) {
    try {
      const response = await fetchAs(format);
      const ext = format === "votable" ? "vot" : format;
      saveBlob(await response.blob(), `forced-${exposureId}.${ext}`);
    } catch (error) {
      showError(error, `downloading forced photometry as ${format}`);
    }
  }

  return {
    setTarget(exposureId, jobId) {
      target = exposureId ? { exposure_id: exposureId, job_id: jobId } : null;
      for (const id of ["forced-run", "faint-run", "paste-run"]) $(id).disabled = !target;
    },
  };
}
