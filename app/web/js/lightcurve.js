// A light curve at a sky position: forced PSF flux on every stored exposure covering it;
// above the server's synchronous limit, or with exposures to characterize first, the answer
// is a job, followed until it ends.
import { apiUrl, el, followJob, FORMATS, request, showError } from "./api.js";
import { rowObjects } from "./forced.js";
import { scatter } from "./plots.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

export function initLightCurve() {
  const form = $("lightcurve-form");
  const status = $("lc-status");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const query = { ra: data.get("ra"), dec: data.get("dec"), band: data.get("band") };
    status.textContent = "measuring…";
    try {
      let answer = await request("v1/lightcurve", { query });
      let download = (format) => apiUrl("v1/lightcurve", { ...query, format });
      if (answer.phase !== undefined) { // measured as a job (many exposures, or some to
        // characterize first): follow it
        const job = await followJob(answer, (now) => {
          status.textContent = `light-curve job ${now.id}, ${now.phase} ` +
            `${Math.round(100 * (now.progress ?? 0))}% ${now.step ?? ""}`;
        });
        answer = await request(`v1/jobs/${job.id}/forced`, { query: { format: "json" } });
        download = (format) => apiUrl(`v1/jobs/${job.id}/forced`, { format });
      }
      const rows = rowObjects(answer);
      const canvas = $("lc-plot");
      canvas.hidden = false;
      const n = scatter(canvas, rows.map((r) => r.mjd), rows.map((r) => r.base_PsfFlux_flux), {
        yerr: rows.map((r) => r.base_PsfFlux_fluxErr), xlabel: "MJD",
        ylabel: "forced base_PsfFlux_flux (nJy)", zero: true,
        title: `RA ${Number(query.ra).toFixed(5)}°, Dec ${Number(query.dec).toFixed(5)}°` });
      canvas.dataset.n = String(n);
      status.textContent = `${rows.length} exposures cover it, ${n} with a flux`;
      $("lc-downloads").replaceChildren("Light curve: ", ...FORMATS.map((f) => el("a", {
        href: download(f), testid: `lc-download-${f}`,
      }, f)));
    } catch (error) {
      status.textContent = "failed";
      showError(error, "the light curve");
    }
  });

  return {
    /** Fill in a position (from a source record) and measure. */
    at(ra, dec) {
      $("lc-ra").value = ra;
      $("lc-dec").value = dec;
      form.requestSubmit();
      $("lightcurve-section").scrollIntoView({ behavior: "smooth", block: "nearest" });
    },
  };
}
