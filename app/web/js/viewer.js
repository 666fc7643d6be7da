// The image viewer: one <canvas>, the exposure's PNG drawn with pan (drag) and zoom (wheel),
// every source drawn in a single pass on the same canvas (no DOM node per source), click →
// the nearest source. Coordinates are LSST parent-frame pixels (pixel centres at integers);
// the PNG has its origin at the bottom (FITS convention), possibly block-averaged.
import { request, showError } from "./api.js";

const KINDS = ["isolated", "parent", "child"];
const COLORS = { isolated: "#ffd84a", parent: "#ff5a5a", child: "#3ee0e0", forced: "#ff4fd8",
  selected: "#ffffff", footprint: "rgba(108,182,255,0.35)" };
const SOURCE_COLUMNS = ["id", "parent", "deblend_nChild", "base_SdssCentroid_x",
  "base_SdssCentroid_y", "peak_x", "peak_y", "base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr"];
const PICK_RADIUS = 14; // CSS pixels

export function sourceKind(row) {
  if (row.parent) return "child";
  return row.deblend_nChild > 0 ? "parent" : "isolated";
}

export class Viewer {
  constructor(canvas, { onPick, onCursor }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onPick = onPick;
    this.onCursor = onCursor;
    this.bitmap = null;
    this.frame = { x0: 0, y0: 0, width: 1, height: 1, binning: 1 };
    this.view = { k: 1, ox: 0, oy: 0 };
    this.sources = { id: new Int32Array(0), x: new Float64Array(0), y: new Float64Array(0),
      kind: new Uint8Array(0) };
    this.marks = null;
    this.selected = null;
    this.showSources = true;
    this.loadToken = 0;
    this.imagesLoaded = 0; // images drawn so far (tests wait on it)
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.bindPointer();
    this.resize();
  }

  // --- coordinates -----------------------------------------------------------------------
  /** Parent-frame pixel (x, y) → PNG pixel (u, v). */
  toPng(x, y) {
    const f = this.frame;
    return [(x - f.x0 + 0.5) / f.binning, this.pngHeight - (y - f.y0 + 0.5) / f.binning];
  }
  get pngWidth() { return this.bitmap ? this.bitmap.width : this.frame.width / this.frame.binning; }
  get pngHeight() {
    return this.bitmap ? this.bitmap.height : this.frame.height / this.frame.binning;
  }
  toScreen(x, y) {
    const [u, v] = this.toPng(x, y);
    return [u * this.view.k + this.view.ox, v * this.view.k + this.view.oy];
  }
  fromScreen(sx, sy) {
    const f = this.frame;
    const u = (sx - this.view.ox) / this.view.k;
    const v = (sy - this.view.oy) / this.view.k;
    return [u * f.binning + f.x0 - 0.5, (this.pngHeight - v) * f.binning + f.y0 - 0.5];
  }
  /** Where source `id` is drawn, in CSS pixels from the canvas's top-left (tests use it). */
  screenPosition(id) {
    const i = this.sources.id.indexOf(id);
    if (i < 0) return null;
    const [sx, sy] = this.toScreen(this.sources.x[i], this.sources.y[i]);
    return { x: sx, y: sy };
  }

  // --- data ----------------------------------------------------------------------------
  /** Load the image PNG of an exposure as job `jobId` characterized it; then redraw. */
  async loadImage(exposure, jobId, { stretch = "asinh", addBackground = false,
                                    plane = "image" } = {}) {
    const token = ++this.loadToken;
    const [height, width] = exposure.shape || [1, 1];
    this.frame = { x0: 0, y0: 0, width, height, binning: 1 };
    try {
      const response = await request(`v1/exposures/${exposure.id}/image`, {
        raw: true,
        query: { format: "png", stretch, add_background: addBackground, job_id: jobId,
          max_size: 4096, plane, mask_over_image: plane === "mask" ? true : null },
      });
      const box = (response.headers.get("x-skyphot-box") || "").split(",").map(Number);
      const binning = Number(response.headers.get("x-skyphot-binning") || 1);
      const bitmap = await createImageBitmap(await response.blob());
      if (token !== this.loadToken) return;
      if (box.length === 4 && box.every(Number.isFinite)) {
        this.frame = { x0: box[0], y0: box[1], width: box[2], height: box[3], binning };
      } else {
        this.frame = { ...this.frame, binning };
      }
      this.bitmap = bitmap;
      this.imagesLoaded += 1;
    } catch (error) {
      if (token !== this.loadToken) return;
      this.bitmap = null;
      showError(error, "loading the image (sources are drawn on a blank frame)");
    }
    this.fit();
  }

  /** Every source of a job, read page by page (only the columns the overlay needs). */
  async loadSources(jobId) {
    const rows = [];
    let cursor = null;
    do {
      const page = await request(`v1/jobs/${jobId}/sources`, {
        query: { limit: 10000, cursor, columns: SOURCE_COLUMNS.join(",") },
      });
      rows.push(...page.sources);
      cursor = page.next_cursor;
    } while (cursor);
    const n = rows.length;
    const s = { id: new Int32Array(n), x: new Float64Array(n), y: new Float64Array(n),
      kind: new Uint8Array(n) };
    rows.forEach((row, i) => {
      s.id[i] = row.id;
      const cx = row.base_SdssCentroid_x;
      const cy = row.base_SdssCentroid_y;
      const ok = Number.isFinite(cx) && Number.isFinite(cy);
      s.x[i] = ok ? cx : row.peak_x;
      s.y[i] = ok ? cy : row.peak_y;
      s.kind[i] = KINDS.indexOf(sourceKind(row));
    });
    this.sources = s;
    this.selected = null;
    this.draw();
    const counts = { isolated: 0, parent: 0, child: 0 };
    for (const k of s.kind) counts[KINDS[k]] += 1;
    return { n, counts, rows };
  }

  /** Extra positions (forced photometry's), drawn as crosses. */
  setMarks(xs, ys) {
    this.marks = xs && ys ? { x: xs, y: ys } : null;
    this.draw();
  }

  select(id, footprint = null) {
    this.selected = { id, footprint };
    this.draw();
  }

  clear() {
    this.loadToken += 1;
    this.bitmap = null;
    this.sources = { id: new Int32Array(0), x: new Float64Array(0), y: new Float64Array(0),
      kind: new Uint8Array(0) };
    this.marks = null;
    this.selected = null;
    this.draw();
  }

  // --- view ----------------------------------------------------------------------------
  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.draw();
  }

  fit() {
    const cw = this.canvas.clientWidth;
    const ch = this.canvas.clientHeight;
    const k = Math.min(cw / this.pngWidth, ch / this.pngHeight) || 1;
    this.view = { k, ox: (cw - this.pngWidth * k) / 2, oy: (ch - this.pngHeight * k) / 2 };
    this.draw();
  }

  zoomAt(sx, sy, factor) {
    const v = this.view;
    const k = Math.min(64, Math.max(0.05, v.k * factor));
    const f = k / v.k;
    this.view = { k, ox: sx - (sx - v.ox) * f, oy: sy - (sy - v.oy) * f };
    this.draw();
  }

  bindPointer() {
    const c = this.canvas;
    let drag = null;
    const local = (e) => {
      const r = c.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    };
    c.addEventListener("pointerdown", (e) => {
      const [sx, sy] = local(e);
      drag = { sx, sy, ox: this.view.ox, oy: this.view.oy, moved: false };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      const [sx, sy] = local(e);
      if (this.onCursor) this.onCursor(...this.fromScreen(sx, sy));
      if (!drag) return;
      const dx = sx - drag.sx;
      const dy = sy - drag.sy;
      if (Math.hypot(dx, dy) > 3) drag.moved = true;
      if (drag.moved) {
        this.view = { ...this.view, ox: drag.ox + dx, oy: drag.oy + dy };
        this.draw();
      }
    });
    c.addEventListener("pointerup", (e) => {
      const [sx, sy] = local(e);
      const wasClick = drag && !drag.moved;
      drag = null;
      if (wasClick) {
        const id = this.nearest(sx, sy);
        if (id !== null && this.onPick) this.onPick(id);
      }
    });
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const [sx, sy] = local(e);
      this.zoomAt(sx, sy, Math.exp(-e.deltaY * 0.0015));
    }, { passive: false });
  }

  /** The id of the source drawn nearest to a screen point, within PICK_RADIUS; or null. */
  nearest(sx, sy) {
    if (!this.showSources) return null;
    const s = this.sources;
    let best = null;
    let bestD = PICK_RADIUS * PICK_RADIUS;
    for (let i = 0; i < s.id.length; i++) {
      const [px, py] = this.toScreen(s.x[i], s.y[i]);
      const d = (px - sx) ** 2 + (py - sy) ** 2;
      if (d < bestD) { bestD = d; best = s.id[i]; }
    }
    return best;
  }

  // --- drawing -------------------------------------------------------------------------
  draw() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.render();
    });
  }

  render() {
    const { ctx, canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const { k, ox, oy } = this.view;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * ox, dpr * oy);
    if (this.bitmap) {
      ctx.imageSmoothingEnabled = k < 1;
      ctx.drawImage(this.bitmap, 0, 0);
    } else {
      ctx.strokeStyle = "#444";
      ctx.lineWidth = 1 / k;
      ctx.strokeRect(0, 0, this.pngWidth, this.pngHeight);
    }
    const fp = this.selected && this.selected.footprint;
    if (fp && fp.spans) {
      // footprint spans (y, x0, x1 inclusive), in PNG pixels
      ctx.fillStyle = COLORS.footprint;
      const b = this.frame.binning;
      for (const [y, x0, x1] of fp.spans) {
        const [u, v] = this.toPng(x0 - 0.5, y + 0.5); // top-left corner of the span
        ctx.fillRect(u, v, (x1 - x0 + 1) / b, 1 / b);
      }
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const w = canvas.width / dpr;
    const h = canvas.height / dpr;
    const s = this.sources;
    const r = Math.max(3, Math.min(10, 2.5 * k));
    if (this.showSources) {
      ctx.lineWidth = 1.3;
      for (let kind = 0; kind < KINDS.length; kind++) {
        // a parent shares its position with one of its children: a larger ring shows both
        const rk = KINDS[kind] === "parent" ? r * 1.9 : r;
        ctx.strokeStyle = COLORS[KINDS[kind]];
        ctx.beginPath();
        for (let i = 0; i < s.id.length; i++) {
          if (s.kind[i] !== kind) continue;
          const [px, py] = this.toScreen(s.x[i], s.y[i]);
          if (px < -rk || py < -rk || px > w + rk || py > h + rk) continue;
          ctx.moveTo(px + rk, py);
          ctx.arc(px, py, rk, 0, 2 * Math.PI);
        }
        ctx.stroke();
      }
    }
    if (this.marks) {
      ctx.strokeStyle = COLORS.forced;
      ctx.lineWidth = 1.3;
      ctx.beginPath();
      const m = this.marks;
      for (let i = 0; i < m.x.length; i++) {
        const [px, py] = this.toScreen(m.x[i], m.y[i]);
        if (px < -r || py < -r || px > w + r || py > h + r) continue;
        ctx.moveTo(px - r, py - r); ctx.lineTo(px + r, py + r);
        ctx.moveTo(px - r, py + r); ctx.lineTo(px + r, py - r);
      }
      ctx.stroke();
    }
    if (this.selected) {
      const pos = this.screenPosition(this.selected.id);
      if (pos) {
        ctx.strokeStyle = COLORS.selected;
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(pos.x, pos.y, r + 5, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
  }
}
