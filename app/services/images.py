"""Image products of a characterized exposure: planes and cutouts (FITS, PNG), the PSF at a
point, overlays of a detect job's sources and footprints, and DS9 region files.

Everything starts from the exposure a detect job left (:class:`CalexpService`), so the image
is background-subtracted with a DETECTED mask, as the tutorial's calexp is. Boxes and source
positions are in the parent pixel frame (array coordinates + ``xy0``), as catalogs report them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, Sip
from sqlalchemy.orm import Session

from app.db.filters import PixelBox, SourceFilter
from app.db.jobs import JobRepository
from app.db.models import JobRecord, SourceRecord
from app.db.sources import SourceRepository
from app.engine.exposure import Exposure
from app.engine.footprints import SPAN_DTYPE, Footprint
from app.engine.psf import psf_fwhm
from app.engine.sky_frame import named_frame
from app.io import png
from app.io.frames import xy0_cards
from app.io.regions import PixelCircles, SkyCircles, ds9_regions
from app.jobs.calexp_jobs import DetectCalexp
from app.services.calexps import CalexpService
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.storage.blobs import BlobStore

Plane = Literal["image", "mask", "variance", "background"]
FootprintMode = Literal["outline", "fill", "none"]
T = TypeVar("T")
FITS_MEDIA_TYPE = "application/fits"
PNG_MEDIA_TYPE = "image/png"
OVERLAY_MIN_SIDE = 512  # small cutouts are enlarged to at least this many PNG pixels
MAX_SOURCES = 1_000_000

# Parents, children and isolated sources, told apart as in the tutorial's plots.
KIND_COLORS: dict[str, tuple[tuple[int, int, int], str]] = {
    "isolated": ((255, 215, 0), "yellow"),
    "parent": ((255, 60, 60), "red"),
    "child": ((0, 220, 255), "cyan"),
}
MARK_COLOR = ((255, 0, 255), "magenta")


@dataclass(frozen=True)
class Box:
    """A pixel box in the parent frame: lower-left pixel and size."""

    x0: int
    y0: int
    width: int
    height: int


@dataclass(frozen=True)
class SkyBox:
    """A square centred on RA, Dec (degrees), ``size`` pixels or arcseconds on a side."""

    ra: float
    dec: float
    size: float
    unit: Literal["pix", "arcsec"] = "pix"


@dataclass(frozen=True)
class Marks:
    """Extra positions to draw (forced photometry's, say): per row RA/Dec in degrees or
    parent-frame pixels x/y, NaN in the pair not given."""

    label: str
    ra: np.ndarray
    dec: np.ndarray
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Look:
    """How a PNG is drawn: stretch, colormap, and the longest side before block-averaging."""

    stretch: png.Stretch = "asinh"
    cmap: str = "gray"
    max_size: int = 2048


@dataclass(frozen=True)
class Product:
    """Bytes to send back, their media type and the headers describing them."""

    content: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PsfPoint:
    x: float
    y: float
    ra: float | None
    dec: float | None
    sigma_pixels: float
    fwhm_pixels: float
    fwhm_arcsec: float | None


@dataclass(frozen=True)
class Cutout:
    """Pixels of one plane in a box, the box's WCS, and whether it ran off the image."""

    data: np.ndarray
    box: Box
    wcs: WCS | None
    padded: bool


# ---------------------------------------------------------------------------------------------
# Pure helpers


def plane_array(exposure: Exposure, plane: Plane, add_background: bool = False) -> np.ndarray:
    """One plane of the exposure; the image with the subtracted background added back if asked
    (the tutorial's section 2.2)."""
    needs_background = plane == "background" or (plane == "image" and add_background)
    if needs_background and exposure.background is None:
        raise NotFoundError("this exposure carries no subtracted background",
                            code="no_background")
    if plane == "image":
        return exposure.image + exposure.background if add_background else exposure.image
    if plane == "background":
        return exposure.background  # type: ignore[return-value]
    return exposure.mask if plane == "mask" else exposure.variance


def resolve_box(exposure: Exposure, spec: Box | SkyBox | None) -> Box:
    """The parent-frame pixel box a cutout spec asks for (the whole image for None)."""
    if spec is None:
        return Box(exposure.xy0[0], exposure.xy0[1], exposure.width, exposure.height)
    if isinstance(spec, Box):
        return spec
    if exposure.wcs is None:
        raise InvalidInputError("this exposure has no WCS; give the cutout as a pixel box")
    size = spec.size
    if spec.unit == "arcsec":
        size = spec.size / (exposure.pixel_scale_arcsec() or 1.0)
    side = max(1, int(round(size)))
    xc, yc = (float(v) for v in exposure.sky_to_pixel(spec.ra, spec.dec))
    if not (math.isfinite(xc) and math.isfinite(yc)):
        raise InvalidInputError(f"RA, Dec ({spec.ra}, {spec.dec}) has no pixel position")
    # the box's centre, x0 + (side − 1)/2, is the pixel nearest the position
    half = (side - 1) / 2
    return Box(math.floor(xc - half + 0.5), math.floor(yc - half + 0.5), side, side)


def shifted_wcs(wcs: WCS | None, dx: int, dy: int) -> WCS | None:
    """The WCS of a cutout starting at array pixel (dx, dy); negative offsets (a cutout that
    runs off the low edge) are allowed, which ``WCS.slice`` refuses."""
    if wcs is None:
        return None
    out = wcs.deepcopy()
    out.wcs.crpix = out.wcs.crpix - np.array([dx, dy], dtype=float)
    if out.sip is not None:
        out.sip = Sip(out.sip.a, out.sip.b, out.sip.ap, out.sip.bp, out.wcs.crpix)
    return out


def cut(exposure: Exposure, data: np.ndarray, box: Box, fill: float | int) -> Cutout:
    """``box`` of ``data`` (a plane of ``exposure``), padded with ``fill`` where it runs off
    the image; a box wholly off the image is a 422."""
    ax0, ay0 = box.x0 - exposure.xy0[0], box.y0 - exposure.xy0[1]
    h, w = data.shape
    xs = slice(max(ax0, 0), min(ax0 + box.width, w))
    ys = slice(max(ay0, 0), min(ay0 + box.height, h))
    if xs.start >= xs.stop or ys.start >= ys.stop:
        x0, y0 = exposure.xy0
        raise InvalidInputError(
            f"the cutout x {box.x0}..{box.x0 + box.width - 1}, y {box.y0}.."
            f"{box.y0 + box.height - 1} lies wholly off the image (x {x0}..{x0 + w - 1}, "
            f"y {y0}..{y0 + h - 1})", code="cutout_off_image")
    padded = (xs.stop - xs.start, ys.stop - ys.start) != (box.width, box.height)
    if padded:
        out = np.full((box.height, box.width), fill, dtype=data.dtype)
        out[ys.start - ay0:ys.stop - ay0, xs.start - ax0:xs.stop - ax0] = data[ys, xs]
    else:
        out = data[ys, xs]
    return Cutout(out, box, shifted_wcs(exposure.wcs, ax0, ay0), padded)


def cutout_fits(cutout: Cutout, cards: list[tuple[str, object, str]]) -> bytes:
    """A single-HDU FITS image with the cutout's WCS (in the exposure's own celestial
    frame), its parent-frame origin as afw's A WCS and LTV1/LTV2 (so reading it back gives
    the exposure's x, y), and ``cards``."""
    header = fits.Header() if cutout.wcs is None else cutout.wcs.to_header(relax=True)
    header.extend(xy0_cards(cutout.box.x0, cutout.box.y0))
    header["PADDED"] = (cutout.padded, "cutout runs off the image; padded")
    for key, value, comment in cards:
        header[f"HIERARCH {key}" if len(key) > 8 else key] = (value, comment)
    buffer = io.BytesIO()
    fits.PrimaryHDU(cutout.data, header=header).writeto(buffer)
    return buffer.getvalue()


def binning_for(box: Box, max_size: int) -> int:
    """Block size that brings the long side to at most ``max_size``."""
    return max(1, math.ceil(max(box.width, box.height) / max_size))


def footprint_labels(archive: str, parent_ids: np.ndarray, exposure: Exposure,
                     box: Box) -> np.ndarray:
    """A label image of ``box`` (0 = no footprint, else the source id) from a job's footprint
    archive (app.storage.footprints layout), parents only: one vectorized pass over spans."""
    ax0, ay0 = box.x0 - exposure.xy0[0], box.y0 - exposure.xy0[1]
    with np.load(archive) as data:
        ids, offsets, spans = data["ids"], data["span_offsets"], data["spans"]
    owner = np.repeat(ids, np.diff(offsets))
    keep = (np.isin(owner, parent_ids) & (spans["y"] >= ay0) & (spans["y"] < ay0 + box.height)
            & (spans["x1"] >= ax0) & (spans["x0"] < ax0 + box.width))
    spans, owner = spans[keep], owner[keep]
    clipped = np.zeros(len(spans), SPAN_DTYPE)
    clipped["y"] = spans["y"] - ay0
    clipped["x0"] = np.maximum(spans["x0"] - ax0, 0)
    clipped["x1"] = np.minimum(spans["x1"] - ax0, box.width - 1)
    labels = np.zeros((box.height, box.width), dtype=np.int64)
    ys, xs = Footprint(spans=clipped).indices()
    labels[ys, xs] = np.repeat(owner, clipped["x1"] - clipped["x0"] + 1)
    return labels


def locate(exposure: Exposure, marks: Marks) -> tuple[np.ndarray, ...]:
    """(x, y, ra, dec) of every mark: parent-frame pixels from the sky and back via the WCS."""
    x, y, ra, dec = (np.array(v, dtype=float) for v in (marks.x, marks.y, marks.ra, marks.dec))
    sky = np.isfinite(ra) & np.isfinite(dec)
    if exposure.wcs is None:
        if sky.any():
            raise InvalidInputError("this exposure has no WCS; give the marks as x, y")
        return x, y, ra, dec
    if sky.any():
        x[sky], y[sky] = exposure.sky_to_pixel(ra[sky], dec[sky])
    if (~sky).any():
        ra[~sky], dec[~sky] = exposure.pixel_to_sky(x[~sky], y[~sky])
    return x, y, ra, dec


def source_kinds(sources: list[SourceRecord]) -> dict[str, np.ndarray]:
    """Boolean selections: isolated (no deblending), parent (deblended), child."""
    parent = np.array([s.parent for s in sources], dtype=np.int64)
    nchild = np.array([s.deblend_nchild for s in sources], dtype=np.int64)
    return {"isolated": (parent == 0) & (nchild == 0), "parent": (parent == 0) & (nchild > 0),
            "child": parent != 0}


# ---------------------------------------------------------------------------------------------
# The service


class ImageService:
    """Image products of one owner's characterized exposures and detect jobs."""

    def __init__(self, session: Session, store: BlobStore, calexps: CalexpService,
                 owner: str) -> None:
        self._session = session
        self._store = store
        self._calexps = calexps
        self._owner = owner

    def cutout(self, exposure_id: str, *, plane: Plane = "image", add_background: bool = False,
               spec: Box | SkyBox | None = None, job_id: str | None = None
               ) -> tuple[Cutout, Exposure, DetectCalexp]:
        """A plane (or a box of it) of the characterized exposure."""
        exposure, job = self._characterized(exposure_id, job_id)
        data = plane_array(exposure, plane, add_background)
        fill: float = np.nan
        if plane == "mask":  # NO_DATA where padded; planes.bit() would add it to the cache's copy
            no_data = exposure.planes.as_dict().get("NO_DATA")
            fill = 0 if no_data is None else 1 << no_data
        return cut(exposure, data, resolve_box(exposure, spec), fill), exposure, job

    def image(self, exposure_id: str, *, plane: Plane = "image", add_background: bool = False,
              spec: Box | SkyBox | None = None, job_id: str | None = None,
              format: Literal["png", "fits"] = "png", look: Look = Look(),
              mask_over_image: bool = False) -> Product:
        """The plane or cutout as FITS (with its WCS) or PNG (block-averaged to fit
        ``look.max_size``; the mask in colours with a legend, over the image if asked)."""
        cutout, exposure, calexp = self.cutout(exposure_id, plane=plane,
                                               add_background=add_background, spec=spec,
                                               job_id=job_id)
        b = cutout.box
        headers = {"X-Skyphot-Job": calexp.job_id, "X-Skyphot-Padded": str(cutout.padded).lower(),
                   "X-Skyphot-Box": f"{b.x0},{b.y0},{b.width},{b.height}"}
        if format == "fits":
            cards: list[tuple[str, object, str]] = [
                ("PLANE", plane, "calexp plane"),
                ("BKGADDED", add_background and plane == "image", "background added back"),
                ("EXPID", exposure_id, "skyphot exposure id"),
                ("JOBID", calexp.job_id, "detect job"),
            ]
            if plane == "mask":
                cards += [(f"MP_{n}", bit, "mask plane bit")
                          for n, bit in exposure.planes.as_dict().items()]
            headers["Content-Disposition"] = f'attachment; filename="{exposure_id}-{plane}.fits"'
            return Product(cutout_fits(cutout, cards), FITS_MEDIA_TYPE, headers)
        binning = binning_for(b, look.max_size)
        headers["X-Skyphot-Binning"] = str(binning)
        data = png.block_reduce(cutout.data, binning)
        if plane != "mask":
            content = self._render(png.render_image, data, stretch=look.stretch, cmap=look.cmap)
            return Product(content, PNG_MEDIA_TYPE, headers)
        under = None
        if mask_over_image:
            pixels = png.block_reduce(cut(exposure, exposure.image, b, np.nan).data, binning)
            under = self._render(png.colorize, pixels, stretch=look.stretch, cmap=look.cmap)
        content, headers["X-Skyphot-Legend"] = png.render_mask(
            data, exposure.planes.as_dict(), background=under)
        return Product(content, PNG_MEDIA_TYPE, headers)

    def psf(self, exposure_id: str, *, x: float | None = None, y: float | None = None,
            ra: float | None = None, dec: float | None = None, job_id: str | None = None
            ) -> tuple[PsfPoint, Exposure]:
        """Sigma (determinant radius) and FWHM = 2.355 σ of the PSF at a point (default: the
        centre), as the tutorial prints them."""
        exposure, _ = self._characterized(exposure_id, job_id)
        if exposure.psf is None:
            raise ConflictError("this exposure has no PSF model", code="no_psf")
        if ra is not None and dec is not None:
            if exposure.wcs is None:
                raise InvalidInputError("this exposure has no WCS; give the point as x, y")
            x, y = (float(v) for v in exposure.sky_to_pixel(ra, dec))
        ox, oy = exposure.xy0
        x = ox + (exposure.width - 1) / 2 if x is None else x
        y = oy + (exposure.height - 1) / 2 if y is None else y
        if not (ox - 0.5 <= x <= ox + exposure.width - 0.5
                and oy - 0.5 <= y <= oy + exposure.height - 0.5):
            raise InvalidInputError(f"({x:.1f}, {y:.1f}) is off the image", code="off_image")
        if exposure.wcs is not None and ra is None:
            ra, dec = (float(v) for v in exposure.pixel_to_sky(x, y))
        sigma = float(exposure.psf.sigma(x - ox, y - oy))
        fwhm = psf_fwhm(exposure.psf, x - ox, y - oy)
        scale = exposure.pixel_scale_arcsec()
        return PsfPoint(x, y, ra, dec, sigma, fwhm, None if scale is None else fwhm * scale), \
            exposure

    def psf_stamp(self, exposure_id: str, *, format: Literal["png", "fits"],
                  look: Look = Look(stretch="minmax"), **point: float | None) -> Product:
        """The PSF image at a point, normalized to sum 1 (PNG enlarged to be seen)."""
        where, exposure = self.psf(exposure_id, **point)  # type: ignore[arg-type]
        assert exposure.psf is not None
        stamp = exposure.psf.kernel(where.x - exposure.xy0[0], where.y - exposure.xy0[1])
        if format == "fits":
            header = fits.Header()
            for key, value in (("PSFX", where.x), ("PSFY", where.y),
                               ("SIGMA", where.sigma_pixels), ("FWHM", where.fwhm_pixels)):
                header[key] = value
            buffer = io.BytesIO()
            fits.PrimaryHDU(stamp.astype(np.float32), header=header).writeto(buffer)
            return Product(buffer.getvalue(), FITS_MEDIA_TYPE)
        scale = max(1, OVERLAY_MIN_SIDE // max(stamp.shape))
        return Product(self._render(png.render_image, stamp, stretch=look.stretch,
                                    cmap=look.cmap, scale=scale), PNG_MEDIA_TYPE)

    def overlay(self, job_id: str, *, spec: Box | SkyBox | None = None,
                footprints: FootprintMode = "outline", look: Look = Look(),
                marks: Marks | None = None) -> Product:
        """The (cut-out) image with the job's sources and footprints drawn, ``marks`` as
        crosses, and a legend."""
        job = self._detect_job(job_id)
        cutout, exposure, _ = self.cutout(job.exposure_id or "", spec=spec, job_id=job.id)
        b = cutout.box
        with self._session.begin():
            repository = SourceRepository(self._session, self._owner)
            sources = repository.page(
                job.id, SourceFilter(box=PixelBox(b.x0 - 0.5, b.x0 + b.width - 0.5,
                                                  b.y0 - 0.5, b.y0 + b.height - 0.5)),
                after=None, limit=MAX_SOURCES)
            archive = repository.artifact(job.id, "footprints")
            parents = repository.ids(job.id, SourceFilter(parents_only=True))
        labels = None
        if footprints != "none" and archive is not None:
            labels = footprint_labels(self._store.path(archive.storage_key),
                                      np.asarray(parents, dtype=np.int64), exposure, b)
        x = np.array([s.x for s in sources], dtype=float) - b.x0
        y = np.array([s.y for s in sources], dtype=float) - b.y0
        fwhm = self.psf(job.exposure_id or "", job_id=job.id)[0].fwhm_pixels
        # parents drawn larger, so a blend's parent circle encloses its children's
        markers = [png.Markers(kind, KIND_COLORS[kind][0], x[sel], y[sel],
                               fwhm * (1.6 if kind == "parent" else 1.0))
                   for kind, sel in source_kinds(sources).items()]
        if marks is not None:
            mx, my, _, _ = locate(exposure, marks)
            mx, my = mx - b.x0, my - b.y0
            inside = (mx > -0.5) & (mx < b.width - 0.5) & (my > -0.5) & (my < b.height - 0.5)
            markers.append(png.Markers(marks.label, MARK_COLOR[0], mx[inside], my[inside],
                                       fwhm, shape="cross"))
        binning = binning_for(b, look.max_size)
        scale = 1 if binning > 1 else max(1, min(8, OVERLAY_MIN_SIDE // max(b.width, b.height)))
        content = self._render(png.render_overlay, cutout.data, markers, labels=labels,
                               footprints=footprints, stretch=look.stretch, cmap=look.cmap,
                               binning=binning, scale=scale)
        return Product(content, PNG_MEDIA_TYPE, {
            "X-Skyphot-Binning": str(binning), "X-Skyphot-Scale": str(scale),
            "X-Skyphot-Padded": str(cutout.padded).lower(),
            "X-Skyphot-Box": f"{b.x0},{b.y0},{b.width},{b.height}",
            "X-Skyphot-Sources": str(len(sources))})

    def regions(self, job_id: str, *, system: Literal["icrs", "fk5", "image"] = "icrs",
                radius: float | None = None, marks: Marks | None = None) -> Product:
        """The job's sources as a DS9 region file, tagged isolated/parent/child, and ``marks``
        tagged by their label; on the sky in ICRS (``icrs``) or FK5 J2000 (``fk5``, converted
        from the catalog's ICRS), or on the pixels (``image``); ``radius`` in arcsec or
        pixels, default the PSF FWHM."""
        job = self._detect_job(job_id)
        point, exposure = self.psf(job.exposure_id or "", job_id=job.id)
        with self._session.begin():
            sources = SourceRepository(self._session, self._owner).page(
                job.id, SourceFilter(), after=None, limit=MAX_SOURCES)
        x, y, ra, dec = (_column(sources, n) for n in ("x", "y", "coord_ra", "coord_dec"))
        ids = np.array([str(s.id) for s in sources])
        sets = [(kind, KIND_COLORS[kind][1], x[sel], y[sel], ra[sel], dec[sel], ids[sel].tolist())
                for kind, sel in source_kinds(sources).items()]
        if marks is not None:
            sets.append((marks.label, MARK_COLOR[1], *locate(exposure, marks), None))
        ox, oy = exposure.xy0
        fk5 = named_frame("fk5", 2000.0)
        groups = [
            SkyCircles(tag, color, *(fk5.from_icrs(r, d) if system == "fk5" else (r, d)),
                       radius or point.fwhm_arcsec or 1.0, text)
            if system != "image"
            else PixelCircles(tag, color, px - ox, py - oy, radius or point.fwhm_pixels, text)
            for tag, color, px, py, r, d, text in sets
        ]
        text = ds9_regions(groups, "fk5" if system == "fk5" else "icrs")
        return Product(text.encode(), "text/plain; charset=utf-8", {
            "Content-Disposition": f'attachment; filename="{job.id}.reg"'})

    # -----------------------------------------------------------------------------------------

    def _characterized(self, exposure_id: str, job_id: str | None
                       ) -> tuple[Exposure, DetectCalexp]:
        with self._session.begin():
            return self._calexps.characterized(exposure_id, job_id)

    def _detect_job(self, job_id: str) -> JobRecord:
        with self._session.begin():
            job = JobRepository(self._session).get(self._owner, job_id)
        if job is None or job.kind != "detect":
            raise NotFoundError(f"no detect job {job_id!r}", code="job_not_found")
        return job

    @staticmethod
    def _render(render: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Rendering errors that are the caller's (unknown colormap or stretch) become 422."""
        try:
            return render(*args, **kwargs)
        except ValueError as error:
            raise InvalidInputError(str(error), code="invalid_render") from error


def _column(sources: list[SourceRecord], name: str) -> np.ndarray:
    return np.array([getattr(s, name) for s in sources], dtype=float)
