// Wires the modules: exposure → detection job → viewer, sources, record, forced photometry.
import { request, showError } from "./api.js";
import { initDetect } from "./detect.js";
import { initForced } from "./forced.js";
import { initLightCurve } from "./lightcurve.js";
import { histogram } from "./plots.js";
import { renderRecord } from "./record.js";
import { initExposures } from "./upload.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const state = { exposure: null, job: null };

const viewer = new Viewer($("viewer-canvas"), {
  onPick: (id) => pick(id),
  onCursor: (x, y) => { $("viewer-cursor").textContent = `x ${x.toFixed(1)}  y ${y.toFixed(1)}`; },
});

const detect = initDetect({ onCompleted: (job) => showJob(job), onPick: (id) => pick(id) });
const lightCurve = initLightCurve();
const forced = initForced({ onPositions: (xs, ys) => viewer.setMarks(xs, ys) });
initExposures({
  onSelect(exposure) {
    state.exposure = exposure;
    state.job = null;
    detect.setExposure(exposure);
    forced.setTarget(null);
    viewer.clear();
    $("viewer-section").hidden = true;
    $("forced-section").hidden = true;
  },
  onOpenJob: (job) => detect.open(job),
});

async function showJob(job) {
  state.job = job;
  if (!state.exposure || state.exposure.id !== job.exposure_id) {
    try {
      state.exposure = await request(`v1/exposures/${job.exposure_id}`);
    } catch (error) {
      showError(error, "reading the job's exposure");
      return;
    }
  }
  $("viewer-section").hidden = false;
  $("forced-section").hidden = false;
  $("source-record").replaceChildren("Click a source on the image or in the table.");
  forced.setTarget(job.exposure_id, job.id);
  viewer.setMarks(null, null);
  const count = $("viewer-count");
  count.textContent = "loading sources…";
  delete count.dataset.n;
  await Promise.all([
    loadImage(),
    viewer.loadSources(job.id).then(({ n, counts, rows }) => {
      detectionSnr(rows);
      count.textContent = `${n} sources drawn (${counts.isolated} isolated, ${counts.parent} ` +
        `parents, ${counts.child} children)`;
      count.dataset.n = String(n);
    }).catch((error) => {
      count.textContent = "sources not loaded";
      showError(error, "loading the sources for the overlay");
    }),
  ]);
}

/** The S/N histogram of the detections (log10 of base_PsfFlux S/N). */
function detectionSnr(rows) {
  const canvas = $("snr-histogram");
  const snr = rows.map((r) => r.base_PsfFlux_instFlux / r.base_PsfFlux_instFluxErr)
    .filter((v) => Number.isFinite(v) && v > 0).map(Math.log10);
  canvas.hidden = !snr.length;
  if (snr.length) {
    histogram(canvas, snr, { bins: 30, xlabel: "log10 (base_PsfFlux S/N)",
      title: `PSF-flux S/N of ${snr.length} detections` });
  }
}

function loadImage() {
  if (!state.job) return Promise.resolve();
  return viewer.loadImage(state.exposure, state.job.id, {
    stretch: $("viewer-stretch").value, addBackground: $("viewer-add-background").checked,
    plane: $("viewer-plane").value,
  });
}

async function pick(id) {
  if (!state.job) return;
  const box = $("source-record");
  try {
    const detail = await request(`v1/jobs/${state.job.id}/sources/${id}`);
    detail.exposure_id = state.job.exposure_id;
    renderRecord(box, detail, pick, (ra, dec) => lightCurve.at(ra, dec));
    viewer.select(id, detail.footprint);
    detect.highlightRow(id);
  } catch (error) {
    showError(error, `reading source ${id}`);
  }
}

$("viewer-add-background").addEventListener("change", loadImage);
$("viewer-stretch").addEventListener("change", loadImage);
$("viewer-plane").addEventListener("change", loadImage);
$("viewer-fit").addEventListener("click", () => viewer.fit());
$("viewer-show-sources").addEventListener("change", (e) => {
  viewer.showSources = e.target.checked;
  viewer.draw();
});
window.addEventListener("unhandledrejection", (e) => showError(e.reason, "unexpected"));

// for the browser tests and the console
window.skyphot = { viewer, state };
