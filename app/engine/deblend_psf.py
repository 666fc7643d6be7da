"""meas_deblender's point-source test (plugins.py ``fitPsfs`` / ``_fitPsf``), one peak at a time.

Around each peak c, on the parent footprint's pixels within R1 = ⌈1.5 FWHM⌉, weighted by
1/variance times a ramp from 1 inside R0 = ⌈FWHM⌉ down to 0 at R1, a linear least-squares fit
of: the PSF's flux at c, a sky (constant and x, y slopes), the fluxes of the PSFs at the other
peaks within R1 + half the PSF stamp, and (second fit) the PSF's x and y derivatives. Each fit's
χ² per degree of freedom (the sum of the ramp weights less the number of terms) is compared
with ``psfChisq1`` (no derivatives) and ``psfChisq2``; when the second fits and its derivative
terms move the PSF by less than a pixel, the PSF is moved there and fitted again
(``psfChisq2b``). A peak passing either test is a point source ("deblendedAsPsf"): its template
is the fitted PSF (flux × PSF at the kept centre) on the parent footprint.

Departures from meas_deblender, each for a reason:

* The shift: the derivative columns are (P(x+1) − P(x−1))/2, so ``f·P + g·∂P/∂x`` is the PSF
  moved by −g/f; ``_fitPsf`` moves it by +g/f, so its refit (``psfChisq2b``) tests the wrong
  place. Here the PSF moves by −g/f.
* The moved PSF is tried whenever the derivative fit moves it by less than a pixel, not only
  when that fit's χ² already passes ``psfChisq2``: the derivatives are a first-order Taylor
  term, and for a bright star half a pixel off its peak pixel their own error fails the
  test, though the PSF moved there fits (a star is then deblendedAsPsf when the moved PSF
  passes ``psfChisq2b``; when the derivative fit passes, the rules are LSST's).
* The other peaks' PSFs are placed where their own derivative fit moves them (when by less
  than a pixel; `first_centres`), not at their integer peak pixels: a bright neighbour half a
  pixel off its true centre leaves a residual of its own gradient that fails the point-source
  test of the star next to it (on simulated pairs 2 FWHM apart, 70 % rather than 50 % of the
  children pass as point sources).
* ``psfModelError`` (2 % by default; 0 is LSST's test): each pixel's variance is widened by
  (psfModelError × its value)², so a bright star is judged by its shape, not by the PSF
  model's and the Lanczos shift's small errors. At S/N of a few hundred those errors alone
  fail ``psfChisq``: on simulated pairs 2 FWHM apart 98 % rather than 77 % of the children
  are then point sources (Kolmogorov PSF, FWHM 3.75 px), 95 % rather than 6 % (Moffat β 2.5,
  FWHM 3 px, exact model), and the extended children's symmetric templates, median-smoothed,
  take 2–4 % of each star's flux to its neighbour.
* A peak far inside the image always has the PSF at its position; the CoaddPsf "no PSF here"
  checks (outOfBounds) have no meaning for one exposure's PSF model and are not made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.engine.psf import PsfModel, shift_stamp


@dataclass
class PsfFit:
    """One peak's point-source fit."""

    is_psf: bool
    flux: float  # the PSF flux of the kept fit (counts); nan when no fit was made
    x: float  # the kept fit's centre, exposure pixels
    y: float
    chisq_dof: float  # χ²/dof of the kept fit (inf when none)
    skip: bool = False  # tinyFootprint / noValidPixels: the peak makes no child
    model: np.ndarray | None = None  # flux × PSF on the stamp box of ``model_box``
    model_box: tuple[int, int] = (0, 0)  # (x0, y0) of ``model``, exposure pixels


class PsfCache:
    """The PSF stamp at each peak, computed once per deblend (meas_deblender's CachingPsf)."""

    def __init__(self, psf: PsfModel) -> None:
        self.psf = psf
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._shifted: dict[tuple[int, int, float, float], np.ndarray] = {}

    def at(self, x: int, y: int) -> np.ndarray:
        """The PSF stamp centred on pixel (x, y)."""
        key = (int(x), int(y))
        if key not in self._cache:
            self._cache[key] = np.asarray(self.psf.kernel(float(x), float(y)), dtype=np.float64)
        return self._cache[key]

    def shifted(self, x: int, y: int, dx: float, dy: float) -> np.ndarray:
        """The stamp of pixel (x, y) moved by (dx, dy) pixels (Lanczos; |d| < 1)."""
        if dx == 0 and dy == 0:
            return self.at(x, y)
        key = (int(x), int(y), float(dx), float(dy))
        if key not in self._shifted:
            self._shifted[key] = shift_stamp(self.at(x, y), dx, dy)
        return self._shifted[key]


def _place(stamp: np.ndarray, x: int, y: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """``stamp`` centred on pixel (x, y), on the box (x0, y0, x1, y1); zero off the stamp."""
    x0, y0, x1, y1 = box
    out = np.zeros((y1 - y0 + 1, x1 - x0 + 1))
    k = stamp.shape[0] // 2
    ya, yb = max(y - k, y0), min(y + k, y1)
    xa, xb = max(x - k, x0), min(x + k, x1)
    if ya <= yb and xa <= xb:
        out[ya - y0: yb - y0 + 1, xa - x0: xb - x0 + 1] = stamp[ya - y + k: yb - y + k + 1,
                                                                xa - x + k: xb - x + k + 1]
    return out


def _derivatives(stamp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences (P(x+1) − P(x−1))/2 along x and y, zero on the stamp's border."""
    gx, gy = np.zeros_like(stamp), np.zeros_like(stamp)
    gx[:, 1:-1] = 0.5 * (stamp[:, 2:] - stamp[:, :-2])
    gy[1:-1, :] = 0.5 * (stamp[2:, :] - stamp[:-2, :])
    return gx, gy


def _solve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted least squares; χ² is infinite when the design is rank-deficient (as
    ``_fitPsf`` takes numpy's missing residual for 1e30)."""
    coef, _, rank, _ = np.linalg.lstsq(a, b, rcond=None)
    if rank < a.shape[1] or a.shape[0] <= a.shape[1]:
        return coef, np.inf
    r = a @ coef - b
    return coef, float(r @ r)


@dataclass
class _Design:
    """The weighted least-squares problem of one peak's fit."""

    base: np.ndarray  # (pixels, terms): PSF, sky constant and slopes, neighbours' PSFs
    deriv: np.ndarray  # (pixels, 2): the PSF's x and y derivatives
    b: np.ndarray  # weighted data
    wgt: np.ndarray  # √(ramp / variance)
    sumr: float  # Σ ramp: the pixels' count for the degrees of freedom
    box: tuple[int, int, int, int]  # the fit's stamp (x0, y0, x1, y1)
    valid: np.ndarray  # the stamp's pixels in the fit


def _design(k: int, peaks: np.ndarray, centres: np.ndarray, image: np.ndarray,
            variance: np.ndarray, inside: np.ndarray, origin: tuple[int, int],
            cache: PsfCache, fwhm: float, tiny: int, model_error: float) -> _Design | None:
    """The fit of peak ``k`` set up, or None when the peak is skipped (tinyFootprint, or
    noValidPixels)."""
    ox, oy = origin
    h, w = inside.shape
    cx, cy = int(peaks[k, 0]), int(peaks[k, 1])
    r0, r1 = int(np.ceil(fwhm)), int(np.ceil(1.5 * fwhm))
    box = (max(cx - r1, ox), max(cy - r1, oy), min(cx + r1, ox + w - 1), min(cy + r1, oy + h - 1))
    x0, y0, x1, y1 = box
    if min(x1 - x0 + 1, y1 - y0 + 1) <= max(tiny, 2):
        return None
    sl = (slice(y0 - oy, y1 - oy + 1), slice(x0 - ox, x1 - ox + 1))
    yy, xx = np.mgrid[y0: y1 + 1, x0: x1 + 1]
    rr = (xx - cx) ** 2 + (yy - cy) ** 2
    var = variance[sl].astype(np.float64)
    valid = inside[sl] & (rr <= r1 * r1) & (var > 0)
    if not valid.any():
        return None
    ramp = np.clip(1.0 - (np.sqrt(rr) - r0) / max(r1 - r0, 1e-9), 0.0, 1.0)
    ramp[rr <= r0 * r0] = 1.0
    data = image[sl][valid].astype(np.float64)
    wgt = np.sqrt(ramp[valid] / (var[valid] + (model_error * np.maximum(data, 0.0)) ** 2))
    stamp = cache.at(cx, cy)
    reach2 = (r1 + min(stamp.shape) / 2.0) ** 2
    others = []
    for j in range(len(peaks)):
        if j == k or (peaks[j, 0] - cx) ** 2 + (peaks[j, 1] - cy) ** 2 > reach2:
            continue
        jx, jy = int(peaks[j, 0]), int(peaks[j, 1])
        col = _place(cache.shifted(jx, jy, centres[j, 0] - jx, centres[j, 1] - jy), jx, jy, box)
        if col.any():
            others.append(col[valid])
    gx, gy = _derivatives(stamp)
    sky = [np.ones(int(valid.sum())), (xx - cx)[valid].astype(float),
           (yy - cy)[valid].astype(float)]
    base = np.stack([_place(stamp, cx, cy, box)[valid], *sky, *others], axis=1)
    deriv = np.stack([_place(gx, cx, cy, box)[valid], _place(gy, cx, cy, box)[valid]], axis=1)
    b = data * wgt
    return _Design(base, deriv, b, wgt, float(ramp[valid].sum()), box, valid)


def _shift(coef: np.ndarray) -> tuple[float, float]:
    """The move −g/f the derivative terms g of a fit with PSF flux f ask for."""
    f0 = coef[0]
    return (-coef[-2] / f0, -coef[-1] / f0) if f0 != 0 else (np.inf, np.inf)


def fit_psf(k: int, peaks: np.ndarray, centres: np.ndarray, image: np.ndarray,
            variance: np.ndarray, inside: np.ndarray, origin: tuple[int, int],
            cache: PsfCache, fwhm: float, cuts: tuple[float, float, float],
            tiny: int, model_error: float = 0.0) -> PsfFit:
    """``_fitPsf`` of peak ``k``.

    ``peaks`` are the integer (x, y) of all the parent's peaks, ``centres`` where their PSFs
    are placed as neighbours (float, exposure pixels); ``image``, ``variance`` and ``inside``
    are the parent's box at ``origin``. ``cuts`` are (psfChisq1, psfChisq2, psfChisq2b);
    ``model_error`` the PSF model's fractional error allowed for in the weights.
    """
    cx, cy = int(peaks[k, 0]), int(peaks[k, 1])
    nan = PsfFit(False, np.nan, float(cx), float(cy), np.inf)
    d = _design(k, peaks, centres, image, variance, inside, origin, cache, fwhm, tiny,
                model_error)
    if d is None:
        nan.skip = True
        return nan
    a1 = d.base * d.wgt[:, None]
    a2 = np.concatenate([d.base, d.deriv], axis=1) * d.wgt[:, None]
    try:
        x1c, chi1 = _solve(a1, d.b)
        x2c, chi2 = _solve(a2, d.b)
    except np.linalg.LinAlgError:  # psfFitFailed: the peak stays, as an extended one
        return nan
    dof1, dof2 = d.sumr - a1.shape[1], d.sumr - a2.shape[1]
    if dof1 <= 0 or dof2 <= 0:  # psfFitBadDof
        return nan
    q1, q2 = chi1 / dof1, chi2 / dof2
    psf1 = q1 < cuts[0]
    sx, sy = _shift(x2c)
    # psfFitBigDecenter: a shift of a pixel or more is not this peak's star
    psf2 = abs(sx) < 1 and abs(sy) < 1
    if psf2 and q2 >= cuts[1]:  # the linearized fit failed: the moved PSF must pass alone
        psf2 = bool(np.isfinite(q2))
    if psf2:
        a2b = d.base.copy()
        a2b[:, 0] = _place(cache.shifted(cx, cy, sx, sy), cx, cy, d.box)[d.valid]
        x2c, chib = _solve(a2b * d.wgt[:, None], d.b)
        q2 = chib / dof1
        psf2 = q2 < cuts[2]
    if (psf1 and psf2 and q2 < q1) or (psf2 and not psf1):
        coef, q, centre, kept = x2c, q2, (cx + sx, cy + sy), cache.shifted(cx, cy, sx, sy)
    else:
        coef, q, centre, kept = x1c, q1, (float(cx), float(cy)), cache.at(cx, cy)
    fit = PsfFit(bool(psf1 or psf2), float(coef[0]), float(centre[0]), float(centre[1]), q)
    if fit.is_psf:
        k_half = kept.shape[0] // 2
        fit.model = coef[0] * kept
        fit.model_box = (cx - k_half, cy - k_half)
    return fit


def first_centres(peaks: np.ndarray, image: np.ndarray, variance: np.ndarray,
                  inside: np.ndarray, origin: tuple[int, int], cache: PsfCache,
                  fwhm: float, tiny: int, model_error: float = 0.0) -> np.ndarray:
    """Where the derivative fit (neighbours at their integer peaks) moves each peak's PSF,
    when by less than a pixel: the centres the point-source test places the neighbours at.
    Peaks no other peak's fit reaches keep their integer position (nothing reads it)."""
    centres = peaks.astype(np.float64)
    r1 = int(np.ceil(1.5 * fwhm))
    for k in range(len(peaks)):
        reach = r1 + min(cache.at(int(peaks[k, 0]), int(peaks[k, 1])).shape) / 2.0
        d2 = ((peaks - peaks[k]) ** 2).sum(axis=1)
        if np.count_nonzero(d2 <= reach * reach) < 2:
            continue
        d = _design(k, peaks, peaks.astype(np.float64), image, variance, inside, origin, cache,
                    fwhm, tiny, model_error)
        if d is None:
            continue
        a2 = np.concatenate([d.base, d.deriv], axis=1) * d.wgt[:, None]
        try:
            sx, sy = _shift(np.linalg.lstsq(a2, d.b, rcond=None)[0])
        except np.linalg.LinAlgError:
            continue
        if abs(sx) < 1 and abs(sy) < 1:
            centres[k] += (sx, sy)
    return centres
