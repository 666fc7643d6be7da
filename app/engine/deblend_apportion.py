"""meas_deblender's apportionFlux (``BaselineUtils::apportionFlux`` and ``_find_stray_flux``).

Each pixel of the parent is shared among the templates in proportion to max(0, template).
Pixels no template claims and that hold positive flux are "stray": under ``strayFluxRule``
'trim' (SourceDeblendTask's default) they are dropped and the parent shrinks to the pixels the
children share; otherwise each goes to the children in proportion to 1/(1 + r²), r the
distance to the peak ('r-to-peak') or to the nearest pixel of the child's template
('r-to-footprint'), or all of it to the template nearest in Manhattan distance
('nearest-footprint'). ``strayFluxToPointSources``: point-source children share it 'always',
'never', or when 'necessary' (only where no extended child takes it); shares below
``clipStrayFluxFraction`` of the total are dropped.

Departures: templates share only the parent footprint's pixels (meas_deblender lets a ramped
template take pixels of its box outside the parent, then grows the parent to match: a child
here never takes pixels another footprint may hold); under 'trim' the parent keeps exactly the
pixels some template claims (LSST: the union of the templates' footprints, whose spans may
hold pixels no template claims), so its pixels are the sum of its children's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from app.engine.config import DeblendConfig
from app.engine.deblend_templates import Template

STRAY_CHUNK = 1 << 22  # stray pixels × templates weighed at a time


@dataclass
class Portion:
    """One child's pixels (flat indices into the parent box, ascending) and their flux."""

    index: np.ndarray
    flux: np.ndarray
    has_stray: bool


def _window(t: Template, origin: tuple[int, int], shape: tuple[int, int]
            ) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """(parent-box slices, template slices) of the overlap of a template and the parent box."""
    ox, oy = origin
    h, w = shape
    x0, y0, x1, y1 = t.box
    ya, yb = max(y0, oy), min(y1, oy + h - 1)
    xa, xb = max(x0, ox), min(x1, ox + w - 1)
    if ya > yb or xa > xb:
        return None
    return ((slice(ya - oy, yb - oy + 1), slice(xa - ox, xb - ox + 1)),
            (slice(ya - y0, yb - y0 + 1), slice(xa - x0, xb - x0 + 1)))


def _contributions(config: DeblendConfig, ys: np.ndarray, xs: np.ndarray,
                   peaks: np.ndarray, distance: list[np.ndarray] | None,
                   nearest: np.ndarray | None) -> np.ndarray:
    """Unnormalized weight of each template (columns) for stray pixels (rows)."""
    if config.strayFluxRule == "nearest-footprint":
        assert nearest is not None
        out = np.zeros((len(ys), len(peaks)))
        out[np.arange(len(ys)), nearest[ys, xs]] = 1.0
        return out
    if config.strayFluxRule == "r-to-footprint":
        assert distance is not None
        return np.stack([1.0 / (1.0 + d[ys, xs]) for d in distance], axis=1)
    r2 = (peaks[None, :, 0] - xs[:, None]) ** 2 + (peaks[None, :, 1] - ys[:, None]) ** 2
    return 1.0 / (1.0 + r2)


def _stray_shares(config: DeblendConfig, contrib: np.ndarray, is_psf: np.ndarray
                  ) -> np.ndarray:
    """The fraction of each stray pixel's flux each template gets (rows sum to 1 or 0)."""
    use = np.ones(len(is_psf), bool) if config.strayFluxToPointSources == "always" else ~is_psf
    c = contrib * use[None, :]
    if config.strayFluxToPointSources == "necessary":
        none = c.sum(axis=1) == 0
        c[none] = contrib[none]
    c[c < config.clipStrayFluxFraction * c.sum(axis=1, keepdims=True)] = 0.0
    total = c.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, c / total, 0.0)


def apportion(image: np.ndarray, inside: np.ndarray, origin: tuple[int, int],
              templates: list[Template], peaks: np.ndarray, is_psf: np.ndarray,
              config: DeblendConfig) -> tuple[list[Portion], np.ndarray]:
    """Share the parent's pixels among ``templates`` (one per child, in the order given).

    ``image`` and ``inside`` are the parent's box at ``origin``; ``peaks`` the children's
    integer (x, y). Returns each child's portion and the parent's pixels after the rule (the
    claimed ones under 'trim', all of them otherwise).
    """
    shape = inside.shape
    tsum = np.zeros(shape)
    windows = [_window(t, origin, shape) for t in templates]
    for t, win in zip(templates, windows, strict=True):
        if win is not None:
            tsum[win[0]] += np.where(inside[win[0]], np.maximum(t.image[win[1]], 0.0), 0.0)
    claimed = inside & (tsum > 0)
    index: list[list[np.ndarray]] = [[] for _ in templates]
    flux: list[list[np.ndarray]] = [[] for _ in templates]
    w = shape[1]
    for i, (t, win) in enumerate(zip(templates, windows, strict=True)):
        if win is None:
            continue
        share = np.maximum(t.image[win[1]], 0.0)
        own = claimed[win[0]] & (share > 0)
        ly, lx = np.nonzero(own)
        ly, lx = ly + win[0][0].start, lx + win[0][1].start
        index[i].append(ly * w + lx)
        flux[i].append(image[ly, lx] * share[own] / tsum[ly, lx])
    stray_got = np.zeros(len(templates), bool)
    trim = config.strayFluxRule == "trim" or not config.assignStrayFlux
    if not trim:
        sy, sx = np.nonzero(inside & (tsum <= 0) & (image > 0))
        if len(sy):
            _assign_stray(config, image, sy, sx, origin, templates, windows, peaks, is_psf,
                          shape, index, flux, stray_got)
    portions = []
    for i in range(len(templates)):
        idx = np.concatenate(index[i]) if index[i] else np.zeros(0, np.int64)
        val = np.concatenate(flux[i]) if flux[i] else np.zeros(0)
        order = np.argsort(idx, kind="stable")
        portions.append(Portion(idx[order], val[order], bool(stray_got[i])))
    return portions, claimed if config.strayFluxRule == "trim" else inside


def _assign_stray(config: DeblendConfig, image: np.ndarray, sy: np.ndarray, sx: np.ndarray,
                  origin: tuple[int, int], templates: list[Template], windows: list,
                  peaks: np.ndarray, is_psf: np.ndarray, shape: tuple[int, int],
                  index: list[list[np.ndarray]], flux: list[list[np.ndarray]],
                  stray_got: np.ndarray) -> None:
    """Give the stray pixels (sy, sx) to the templates by ``config``'s rules, in place."""
    ox, oy = origin
    local_peaks = peaks - np.array([ox, oy])
    footprints = []
    for t, win in zip(templates, windows, strict=True):
        fp = np.zeros(shape, bool)
        if win is not None:
            fp[win[0]] = t.footprint[win[1]]
        footprints.append(fp)
    distance = nearest = None
    if config.strayFluxRule == "r-to-footprint":
        distance = [ndimage.distance_transform_edt(~fp) ** 2 if fp.any()
                    else np.full(shape, np.inf) for fp in footprints]
    elif config.strayFluxRule == "nearest-footprint":
        # point sources stand aside unless they always take stray flux (as LSST's list with
        # empty footprints in their place); a pixel no template is nearest to stays stray
        use = np.ones(len(templates), bool)
        if config.strayFluxToPointSources != "always" and (~is_psf).any():
            use = ~is_psf
        labels = np.zeros(shape, np.int64)
        for i in np.nonzero(use)[0]:
            labels[footprints[i] & (labels == 0)] = i + 1
        if not labels.any():
            return
        _, (iy, ix) = ndimage.distance_transform_cdt(labels == 0, metric="taxicab",
                                                     return_indices=True)
        nearest = labels[iy, ix] - 1
    w = shape[1]
    step = max(1, STRAY_CHUNK // max(len(templates), 1))
    for start in range(0, len(sy), step):
        ys, xs = sy[start: start + step], sx[start: start + step]
        share = _stray_shares(config, _contributions(config, ys, xs, local_peaks, distance,
                                                     nearest), is_psf)
        for i in np.nonzero(share.any(axis=0))[0]:
            got = share[:, i] > 0
            index[i].append(ys[got] * w + xs[got])
            flux[i].append(image[ys[got], xs[got]] * share[got, i])
            stray_got[i] = True
