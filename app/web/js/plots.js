// Plots on a <canvas>: histograms (with an optional reference Gaussian) and scatter plots
// (with error bars and an optional y = x line). No plotting library: a few axes and paths.

const INK = "#e6e9f0";
const MUTED = "#9aa3b5";

function tick(v) {
  const a = Math.abs(v);
  return a >= 1e5 || (a > 0 && a < 1e-3) ? v.toExponential(1) : String(+v.toPrecision(8));
}

function niceStep(span, target) {
  const raw = span / target;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
}

/** A crisp 2-d context at the canvas's logical size (its width/height attributes at first). */
function setup(canvas) {
  canvas.dataset.w ??= String(canvas.width);
  canvas.dataset.h ??= String(canvas.height);
  const w = Number(canvas.dataset.w);
  const h = Number(canvas.dataset.h);
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${w}px`;
  canvas.style.aspectRatio = `${w} / ${h}`;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "12px system-ui, sans-serif";
  return { ctx, w, h };
}

function extent(values, pad = 0.05) {
  const v = values.filter(Number.isFinite);
  if (!v.length) return [0, 1];
  let lo = Math.min(...v);
  let hi = Math.max(...v);
  if (hi <= lo) { lo -= 0.5; hi += 0.5; }
  const d = (hi - lo) * pad;
  return [lo - d, hi + d];
}

/** Axes with ticks and labels; returns the data → canvas mappings. */
function axes(ctx, w, h, { xr, yr, xlabel = "", ylabel = "", title = "", integerY = false }) {
  const pad = { l: 62, r: 24, t: title ? 24 : 10, b: 38 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  const X = (x) => pad.l + ((x - xr[0]) / (xr[1] - xr[0])) * pw;
  const Y = (y) => pad.t + ph - ((y - yr[0]) / (yr[1] - yr[0])) * ph;
  ctx.fillStyle = INK;
  ctx.textAlign = "left";
  if (title) ctx.fillText(title, pad.l, 16);
  ctx.strokeStyle = MUTED;
  ctx.fillStyle = MUTED;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(pad.l, pad.t); ctx.lineTo(pad.l, pad.t + ph); ctx.lineTo(pad.l + pw, pad.t + ph);
  ctx.stroke();
  ctx.textAlign = "center";
  const xs = niceStep(xr[1] - xr[0], 7);
  for (let x = Math.ceil(xr[0] / xs) * xs; x <= xr[1] + 1e-9 * xs; x += xs) {
    ctx.fillText(tick(x), X(x), pad.t + ph + 14);
    ctx.beginPath(); ctx.moveTo(X(x), pad.t + ph); ctx.lineTo(X(x), pad.t + ph + 4); ctx.stroke();
  }
  ctx.fillText(xlabel, pad.l + pw / 2, pad.t + ph + 32);
  ctx.textAlign = "right";
  const ys = integerY ? Math.max(1, niceStep(yr[1] - yr[0], 5)) : niceStep(yr[1] - yr[0], 5);
  for (let y = Math.ceil(yr[0] / ys) * ys; y <= yr[1] + 1e-9 * ys; y += ys) {
    ctx.fillText(tick(y), pad.l - 6, Y(y) + 4);
  }
  ctx.save();
  ctx.translate(12, pad.t + ph / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(ylabel, 0, 0);
  ctx.restore();
  return { X, Y, pad, pw, ph };
}

/**
 * A histogram of `values`. Options: bins, range [lo, hi], xlabel, title,
 * gaussian {mu, sigma} (drawn scaled to the counts).
 */
export function histogram(canvas, values, { bins = 30, range, xlabel = "", gaussian = null,
                                            title = "" } = {}) {
  const { ctx, w, h } = setup(canvas);
  const finite = values.filter(Number.isFinite);
  if (!finite.length) {
    ctx.fillStyle = INK;
    ctx.fillText("no finite values", 60, 40);
    return { counts: [] };
  }
  const [lo, hi] = range || extent(finite, 0);
  const width = (hi - lo) / bins;
  const counts = new Array(bins).fill(0);
  for (const v of finite) {
    if (v < lo || v > hi) continue;
    counts[Math.min(bins - 1, Math.floor((v - lo) / width))] += 1;
  }
  const gaussAt = (x) => (gaussian
    ? (finite.length * width) / (gaussian.sigma * Math.sqrt(2 * Math.PI))
      * Math.exp(-0.5 * ((x - gaussian.mu) / gaussian.sigma) ** 2) : 0);
  const top = Math.max(...counts, gaussian ? gaussAt(gaussian.mu) : 0) * 1.1 || 1;
  const { X, Y, pad, ph } = axes(ctx, w, h, { xr: [lo, hi], yr: [0, top], xlabel,
    ylabel: "count", title, integerY: true });
  ctx.fillStyle = "rgba(108,182,255,0.75)";
  counts.forEach((c, i) => {
    if (!c) return;
    const x0 = X(lo + i * width);
    ctx.fillRect(x0 + 0.5, Y(c), Math.max(1, X(lo + (i + 1) * width) - x0 - 1), Y(0) - Y(c));
  });
  if (gaussian) {
    ctx.strokeStyle = "#ff4fd8";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    for (let i = 0; i <= 200; i++) {
      const x = lo + ((hi - lo) * i) / 200;
      if (i) ctx.lineTo(X(x), Y(gaussAt(x))); else ctx.moveTo(X(x), Y(gaussAt(x)));
    }
    ctx.stroke();
  }
  if (lo < 0 && hi > 0) { // the zero line: blank sky should centre on it
    ctx.strokeStyle = "rgba(255,255,255,0.35)";
    ctx.setLineDash([4, 4]);
    ctx.beginPath(); ctx.moveTo(X(0), pad.t); ctx.lineTo(X(0), pad.t + ph); ctx.stroke();
    ctx.setLineDash([]);
  }
  return { counts };
}

/**
 * A scatter plot of (xs, ys). Options: xerr, yerr (arrays), xlabel, ylabel, title,
 * identity (draw y = x), zero (draw y = 0), color.
 */
export function scatter(canvas, xs, ys, { xerr = null, yerr = null, xlabel = "", ylabel = "",
                                         title = "", identity = false, zero = false,
                                         color = "#6cb6ff" } = {}) {
  const { ctx, w, h } = setup(canvas);
  const idx = xs.map((_, i) => i).filter((i) => Number.isFinite(xs[i]) && Number.isFinite(ys[i]));
  if (!idx.length) {
    ctx.fillStyle = INK;
    ctx.fillText("no finite points", 60, 40);
    return 0;
  }
  const lo = (v, e) => idx.map((i) => v[i] - (e && Number.isFinite(e[i]) ? e[i] : 0));
  const hi = (v, e) => idx.map((i) => v[i] + (e && Number.isFinite(e[i]) ? e[i] : 0));
  let xr = extent([...lo(xs, xerr), ...hi(xs, xerr)]);
  let yr = extent([...lo(ys, yerr), ...hi(ys, yerr), ...(zero ? [0] : [])]);
  if (identity) {
    const r = [Math.min(xr[0], yr[0]), Math.max(xr[1], yr[1])];
    xr = r;
    yr = r;
  }
  const { X, Y } = axes(ctx, w, h, { xr, yr, xlabel, ylabel, title });
  ctx.strokeStyle = "rgba(255,255,255,0.35)";
  ctx.setLineDash([4, 4]);
  if (identity) {
    ctx.beginPath(); ctx.moveTo(X(xr[0]), Y(xr[0])); ctx.lineTo(X(xr[1]), Y(xr[1])); ctx.stroke();
  }
  if (zero && yr[0] < 0 && yr[1] > 0) {
    ctx.beginPath(); ctx.moveTo(X(xr[0]), Y(0)); ctx.lineTo(X(xr[1]), Y(0)); ctx.stroke();
  }
  ctx.setLineDash([]);
  ctx.strokeStyle = "rgba(154,163,181,0.8)";
  ctx.beginPath();
  for (const i of idx) {
    if (yerr && Number.isFinite(yerr[i])) {
      ctx.moveTo(X(xs[i]), Y(ys[i] - yerr[i])); ctx.lineTo(X(xs[i]), Y(ys[i] + yerr[i]));
    }
    if (xerr && Number.isFinite(xerr[i])) {
      ctx.moveTo(X(xs[i] - xerr[i]), Y(ys[i])); ctx.lineTo(X(xs[i] + xerr[i]), Y(ys[i]));
    }
  }
  ctx.stroke();
  ctx.fillStyle = color;
  ctx.beginPath();
  for (const i of idx) {
    ctx.moveTo(X(xs[i]) + 3, Y(ys[i]));
    ctx.arc(X(xs[i]), Y(ys[i]), 3, 0, 2 * Math.PI);
  }
  ctx.fill();
  return idx.length;
}

export function meanStd(values) {
  const v = values.filter(Number.isFinite);
  if (!v.length) return { n: 0, mean: NaN, std: NaN };
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, v.length - 1));
  return { n: v.length, mean, std };
}
