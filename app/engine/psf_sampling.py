"""PSF images at many sub-pixel positions, fast: the kernel shifted onto each position's grid.

For the measured :class:`~app.engine.psf_model.PixelPsf` the model is linear in its basis
images, and so is shifting: each basis image is shifted once to a grid of sub-pixel phases
(by Lanczos-5, or for an oversampled model resampled from its fine grid at each phase),
and a position's PSF is its polynomial terms times the (bilinearly interpolated) shifted
basis. The basis has far fewer independent images than polynomial terms (a mean image and
two components with polynomial amplitudes span it), so it is first factored into those
few images and the terms' mix of them: only they are shifted and summed, which halves the
work. That costs a few hundred multiply-adds per position, so 10⁵ positions take a
fraction of a second. Other models are evaluated per position and shifted with Lanczos.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from app.engine.psf import PsfModel
from app.engine.psf_model import PixelPsf, poly_terms
from app.engine.psf_oversampled import phase_weights

N_PHASES = 16  # sub-pixel phases per axis in the pre-shifted basis
LANCZOS_ORDER = 5  # of the shifts of the basis images
RANK_TOLERANCE = 1e-13  # singular values below this fraction of the largest are rounding
DENSE_MAX = 64  # positions up to which their basis rows are gathered, not multiplied sparse
_CORNERS = np.array([0, 1, N_PHASES + 1, N_PHASES + 2])  # phase offsets of a cell's corners


class PsfSampler:
    """PSF values on a disk of pixels about the pixel nearest each position.

    The disk (offsets ``dx``, ``dy`` from that pixel) holds every pixel within ``radius`` of
    any position rounding to its centre: what a fixed-position PSF fit of that radius needs,
    and nothing more; ``half`` is the half-size of the square that holds it. Its pixels are
    ordered row by row, those of the outer ``ring`` (a slice: the ones a position's fit disk
    may leave out) last.
    """

    def __init__(self, psf: PsfModel, radius: float) -> None:
        self.psf = psf
        self.radius = radius
        # a position lies within √½ of its nearest pixel's centre
        reach = radius + np.sqrt(0.5)
        half = self.half = int(np.floor(reach))
        off = np.arange(-half, half + 1)
        gy, gx = np.meshgrid(off, off, indexing="ij")
        r2 = (gx * gx + gy * gy).ravel()
        # pixels a position's fit disk may leave out; every other disk pixel is always in it
        inner = max(radius - np.sqrt(0.5), 0.0)
        always = np.flatnonzero(r2 <= inner**2)
        maybe = np.flatnonzero((r2 > inner**2) & (r2 <= reach**2))
        self._disk = np.concatenate([always, maybe])
        self.dx, self.dy = gx.ravel()[self._disk], gy.ravel()[self._disk]
        self.centre = int(np.flatnonzero((self.dx == 0) & (self.dy == 0))[0])
        self.ring = slice(len(always), None)
        self._grid: np.ndarray | None = None
        if isinstance(psf, PixelPsf):
            cache = psf.__dict__.setdefault("_shifted_basis", {})
            if radius not in cache:  # built once per model and fit radius, reused by every call
                mix, images = factor_basis(psf.basis)
                grid = _shifted_images(images, half, psf.step)[:, self._disk]
                cache[radius] = (mix, np.ascontiguousarray(grid))
            self._mix, self._grid = cache[radius]

    def images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N, P) PSF values at the disk pixels, the full (unshifted) kernel summing to 1.

        Value k of row n is the PSF at array pixel (round(x[n]) + dx[k], round(y[n]) + dy[k]).
        """
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        dx, dy = x - np.round(x), y - np.round(y)
        if self._grid is not None:
            return self._from_grid(x, y, dx, dy)
        from app.engine.measure.context import _resize, psf_kernels, shift_cube

        kern = _resize(psf_kernels(self.psf, x, y), 2 * self.half + 1)
        return shift_cube(kern, dx, dy).reshape(len(x), -1)[:, self._disk]

    def _from_grid(self, x: np.ndarray, y: np.ndarray, dx: np.ndarray, dy: np.ndarray
                   ) -> np.ndarray:
        """Each position's PSF: its 4 phase corners × R image amplitudes, weighted, summed
        over the pre-shifted image rows: gathered and summed directly for a few positions,
        one sparse product for many (where gathering the rows would cost more memory
        traffic than the product itself)."""
        psf = self.psf
        assert isinstance(psf, PixelPsf) and self._grid is not None
        n = len(x)
        n_images = self._mix.shape[1]
        u = 2 * x / max(psf.width - 1, 1) - 1
        v = 2 * y / max(psf.height - 1, 1) - 1
        terms = poly_terms(u, v, psf.order)  # (N, T)
        amps = terms @ self._mix  # (N, R)
        # phase coordinates in [0, N_PHASES]: dx = -0.5 → 0, +0.5 → N_PHASES
        fx = (dx + 0.5) * N_PHASES
        fy = (dy + 0.5) * N_PHASES
        # fx, fy lie in [0, N_PHASES]: only the upper end needs pulling into the last cell
        ix = np.minimum(fx.astype(np.int64), N_PHASES - 1)
        iy = np.minimum(fy.astype(np.int64), N_PHASES - 1)
        tx, ty = fx - ix, fy - iy
        first = iy * (N_PHASES + 1) + ix
        phases = first[:, None] + _CORNERS  # (N, 4): (y, x) corners 00, 01, 10, 11
        corner = np.stack([(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx], 1)
        cols = (phases[:, :, None] * n_images + np.arange(n_images)).reshape(n, -1)
        vals = (corner[:, :, None] * amps[:, None, :]).reshape(n, -1)
        if n <= DENSE_MAX:
            out = np.einsum("nk,nkp->np", vals, self._grid[cols])
        else:
            weights = sparse.csr_matrix(
                (vals.ravel(), cols.ravel(), np.arange(0, n * 4 * n_images + 1, 4 * n_images)),
                shape=(n, self._grid.shape[0]))
            out = np.asarray(weights @ self._grid)
        norm = terms @ psf.basis_sums  # each kernel sums to this before shifting
        return out / np.where(norm != 0, norm, 1)[:, None]


def factor_basis(basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``basis`` (T, K, K) as ``mix`` (T, R) times ``images`` (R, K, K), R its numerical
    rank: ``basis[t] = Σ_r mix[t, r] · images[r]`` to rounding error."""
    flat = basis.reshape(len(basis), -1)
    u, s, vt = np.linalg.svd(flat, full_matrices=False)
    rank = max(1, int((s > s[0] * RANK_TOLERANCE).sum())) if s[0] > 0 else 1
    return u[:, :rank] * s[:rank], vt[:rank].reshape(rank, *basis.shape[1:])


def _shifted_images(images: np.ndarray, half: int, step: float = 1.0) -> np.ndarray:
    """((P+1)²·R, S²): every image shifted by each phase pair, cropped, flattened; images
    sampled every ``step`` < 1 pixels are resampled to the pixels at each phase instead."""
    from app.engine.measure.context import shift_axis

    size = 2 * half + 1
    n_images = len(images)
    if step < 1:
        phases = np.linspace(-0.5, 0.5, N_PHASES + 1)
        w = phase_weights(images.shape[-1], size, step, phases)  # (P+1, S, M)
        # (y phase, x phase, image, S, S)
        shifted = np.einsum("ayi,rij,bxj->abryx", w, images, w, optimize=True)
        return shifted.reshape(len(phases) ** 2 * n_images, size * size)
    k = images.shape[-1] // 2
    pad = max(0, half - k)
    # the kept pixels read at most LANCZOS_ORDER + 1 pixels beyond the crop: shift no more
    keep = min(k, half + LANCZOS_ORDER + 1)
    padded = np.pad(images[:, k - keep : k + keep + 1, k - keep : k + keep + 1],
                    ((0, 0), (pad, pad), (pad, pad)))
    c = padded.shape[-1] // 2
    phases = np.linspace(-0.5, 0.5, N_PHASES + 1)
    # ordered (y phase, x phase, image); the x shift depends on the x phase only, so each
    # image is shifted along x once per x phase, not once per phase pair
    along_x = shift_axis(_repeat_cube(padded.astype(np.float64), len(phases)),
                         np.repeat(phases, n_images), 2, LANCZOS_ORDER)
    shifted = shift_axis(_repeat_cube(along_x, len(phases)),
                         np.repeat(phases, len(phases) * n_images), 1, LANCZOS_ORDER)
    cropped = shifted[:, c - half: c + half + 1, c - half: c + half + 1]
    return cropped.reshape(len(phases) ** 2 * n_images, size * size)


def _repeat_cube(cube: np.ndarray, times: int) -> np.ndarray:
    """The stamps of ``cube`` repeated ``times`` over, one full run after another."""
    return np.broadcast_to(cube, (times,) + cube.shape).reshape(-1, *cube.shape[1:])
