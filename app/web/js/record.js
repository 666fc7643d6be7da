// One source's record: key measurements, every column, its footprint (spans, peaks, heavy
// pixels) and links to its parent and children.
import { apiUrl, el, fmt, request, showError } from "./api.js";
import { sourceKind } from "./viewer.js";

const KEY_COLUMNS = [
  "base_SdssCentroid_x", "base_SdssCentroid_y", "coord_ra", "coord_dec",
  "base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr", "base_PsfFlux_flux", "base_PsfFlux_fluxErr",
  "base_GaussianFlux_flux", "base_CircularApertureFlux_12_0_flux", "base_SdssShape_xx",
  "base_SdssShape_yy", "base_SdssShape_xy", "base_ClassificationExtendedness_value",
  "base_Blendedness_abs", "footprint_area", "deblend_nChild", "deblend_nPeaks",
];

/** An <img> of an API PNG; if it fails, the API's error message is shown, not swallowed. */
function apiImage(path, query, attrs) {
  const img = el("img", { src: apiUrl(path, query), ...attrs });
  img.addEventListener("error", async () => {
    img.remove();
    try {
      await request(path, { query, raw: true });
      showError(new Error("the image could not be decoded"), attrs.alt);
    } catch (error) {
      showError(error, attrs.alt);
    }
  }, { once: true });
  return img;
}

function definitionList(entries) {
  return el("dl", {}, ...entries.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, fmt(v, 6))]));
}

export function renderRecord(box, detail, onPick, onLightCurve = null) {
  const row = detail.source || {};
  const kind = sourceKind({ parent: detail.parent, deblend_nChild: row.deblend_nChild });
  const psf = row.base_PsfFlux_instFlux / row.base_PsfFlux_instFluxErr;
  const links = el("p", { class: "links", testid: "record-links" },
    detail.parent ? ["parent ", el("button", { type: "button", class: "small",
      testid: "record-parent", onclick: () => onPick(detail.parent) }, `#${detail.parent}`)]
      : "no parent",
    " · ",
    detail.children.length ? [`${detail.children.length} children `,
      ...detail.children.map((c) => el("button", { type: "button", class: "small",
        testid: "record-child", onclick: () => onPick(c) }, `#${c}`))] : "no children");
  const lightCurve = onLightCurve && Number.isFinite(row.coord_ra) && Number.isFinite(row.coord_dec)
    ? el("button", { type: "button", class: "small", testid: "record-lightcurve",
      onclick: () => onLightCurve(row.coord_ra, row.coord_dec) }, "light curve here") : null;
  const fp = detail.footprint;
  const footprint = fp ? el("div", { testid: "record-footprint" },
    el("h4", {}, "Footprint"),
    definitionList([["bbox (x0, y0, x1, y1)", fp.bbox.join(", ")], ["area (pixels)", fp.area],
      ["spans", fp.spans.length], ["peaks", fp.peaks.length], ["heavy", String(fp.heavy)]]),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "peak"), el("th", {}, "x"),
      el("th", {}, "y"), el("th", {}, "value"))),
    el("tbody", {}, ...fp.peaks.slice(0, 20).map((p, i) => el("tr", {}, el("td", {}, i),
      el("td", { class: "num" }, p.x), el("td", { class: "num" }, p.y),
      el("td", { class: "num" }, fmt(p.value)))))),
    footprintPixels(detail, fp),
    fp.heavy ? el("a", { href: apiUrl(`v1/jobs/${detail.job_id}/sources/${detail.id}/footprint`),
      testid: "record-heavy" }, "heavy-footprint pixels (FITS: IMAGE, MASK, VARIANCE)") : null)
    : el("p", { class: "status" }, "no footprint stored");
  const columns = Object.entries(row);
  box.replaceChildren(
    el("h4", { testid: "record-title" }, `Source #${detail.id} — ${kind}`,
      Number.isFinite(psf) ? ` — PSF S/N ${psf.toFixed(1)}` : ""),
    links,
    lightCurve,
    definitionList(KEY_COLUMNS.filter((k) => k in row).map((k) => [k, row[k]])),
    footprint,
    el("details", {}, el("summary", {}, `all ${columns.length} columns`),
      definitionList(columns)),
  );
  box.dataset.sourceId = String(detail.id);
  psfHere(box, detail, row);
}

/** The footprint's bounding box, a few pixels wider: image and mask planes, enlarged. */
function footprintPixels(detail, fp) {
  const [x0, y0, x1, y1] = fp.bbox;
  const m = 4;
  const query = { x0: x0 - m, y0: y0 - m, width: x1 - x0 + 1 + 2 * m,
    height: y1 - y0 + 1 + 2 * m, format: "png", job_id: detail.job_id };
  // same height for both (the mask PNG carries a legend on its right)
  const height = Math.round(Math.min(200, 6 * Math.max(query.width, query.height))
    * (query.height / Math.max(query.width, query.height)));
  const style = `height:${height}px;max-width:48%;object-fit:contain;object-position:left;` +
    "image-rendering:pixelated;margin:4px 6px 0 0";
  const exposure = detail.exposure_id;
  if (!exposure) return null;
  return el("div", { testid: "record-pixels" },
    apiImage(`v1/exposures/${exposure}/image`, { ...query, stretch: "asinh" },
      { alt: "footprint pixels", title: "image (asinh)", style }),
    apiImage(`v1/exposures/${exposure}/image`, { ...query, plane: "mask", mask_over_image: true },
      { alt: "footprint mask", title: "mask planes", style }));
}

/** The PSF model at the source's centroid: FWHM, and its stamp. */
async function psfHere(box, detail, row) {
  const x = row.base_SdssCentroid_x ?? row.peak_x;
  const y = row.base_SdssCentroid_y ?? row.peak_y;
  if (!detail.exposure_id || !Number.isFinite(x) || !Number.isFinite(y)) return;
  const path = `v1/exposures/${detail.exposure_id}/psf`;
  try {
    const psf = await request(path, { query: { x, y, job_id: detail.job_id } });
    if (box.dataset.sourceId !== String(detail.id)) return;
    box.append(el("div", { testid: "record-psf" }, el("h4", {}, "PSF here"),
      `σ = ${psf.sigma_pixels.toFixed(3)} px, FWHM = ${psf.fwhm_pixels.toFixed(3)} px`,
      psf.fwhm_arcsec == null ? "" : ` = ${psf.fwhm_arcsec.toFixed(3)}″`, el("br"),
      apiImage(path, { x, y, job_id: detail.job_id, format: "png" },
        { alt: "PSF stamp", style: "width:120px;image-rendering:pixelated;margin-top:4px" })));
  } catch (error) {
    showError(error, `the PSF at source ${detail.id}`);
  }
}
