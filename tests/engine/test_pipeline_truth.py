"""The detect pipeline against simulated truth: the numbers the engine must reach.

5σ (stdev) detection on 0.2″/px calexps with a Kolmogorov PSF of FWHM 0.75″, sky-limited.
"""

from __future__ import annotations

import numpy as np

from app.engine.truth import completeness_by_snr, leaf_rows, match_positions, purity


def _matched(sim, result, radius=3.0):
    cat = result.catalog[leaf_rows(result.catalog)]
    m = match_positions(np.asarray(cat["base_SdssCentroid_x"]),
                        np.asarray(cat["base_SdssCentroid_y"]),
                        np.asarray(sim.truth["x"]), np.asarray(sim.truth["y"]), radius)
    return cat, m


def _isolated_stars(truth):
    return ((np.asarray(truth["kind"]) == "star") & ~np.asarray(truth["saturated"])
            & ~np.asarray(truth["is_pair"]))


def test_point_source_completeness(survey):
    sim, result = survey
    _, m = _matched(sim, result)
    rows = completeness_by_snr(sim.truth, m, [(7, 10), (20, 1e9)], _isolated_stars(sim.truth))
    (_, _, n_faint, c_faint), (_, _, n_bright, c_bright) = rows
    assert n_faint >= 50 and n_bright >= 200
    assert c_faint >= 0.90, rows
    assert c_bright >= 0.99, rows


def test_purity(survey):
    sim, result = survey
    cat = result.catalog[leaf_rows(result.catalog)]
    p, _ = purity(np.asarray(cat["base_SdssCentroid_x"]), np.asarray(cat["base_SdssCentroid_y"]),
                  sim.truth)
    assert len(cat) > 800
    assert p >= 0.99


def test_psf_flux_is_the_calib_aperture_flux_for_bright_stars(bright_stars):
    sim, result = bright_stars
    cat, m = _matched(sim, result)
    sel = _isolated_stars(sim.truth) & (m.det_index >= 0) & (np.asarray(sim.truth["psf_sn"]) > 50)
    assert sel.sum() >= 300
    flux = np.asarray(cat["base_PsfFlux_instFlux"])[m.det_index[sel]]
    # fluxes are tied to slot_CalibFlux, the 12-px aperture: a star's is its light within it
    x, y = np.asarray(sim.truth["x"])[sel], np.asarray(sim.truth["y"])[sel]
    ee12 = np.array([sim.psf.encircled_energy(a, b, 12.0) for a, b in zip(x, y, strict=True)])
    assert 0.97 < ee12.min() and ee12.max() < 0.995
    ratio = flux / (np.asarray(sim.truth["flux"])[sel] * ee12)
    assert abs(np.median(ratio) - 1) < 0.005
    # calibrated flux follows the calibration exactly
    njy = np.asarray(cat["base_PsfFlux_flux"])[m.det_index[sel]]
    np.testing.assert_allclose(njy, flux * sim.exposure.photo_calib.njy_per_count, rtol=1e-12)


def test_psf_flux_errors_describe_the_scatter(survey):
    sim, result = survey
    cat, m = _matched(sim, result)
    sn = np.asarray(sim.truth["psf_sn"])
    sel = _isolated_stars(sim.truth) & (m.det_index >= 0) & (sn > 5) & (sn < 30)
    assert sel.sum() >= 150
    d = m.det_index[sel]
    pull = ((np.asarray(cat["base_PsfFlux_instFlux"])[d] - np.asarray(sim.truth["flux"])[sel])
            / np.asarray(cat["base_PsfFlux_instFluxErr"])[d])
    robust_std = 1.4826 * np.median(np.abs(pull - np.median(pull)))
    assert 0.9 <= robust_std <= 1.1


def test_centroids_reach_the_photon_noise_limit(bright_stars):
    """At S/N 50 the Cramér–Rao limit of a 3.75-px-FWHM PSF is √2·σ/SNR ≈ 0.045 px per axis.

    So the RMS of a sample near S/N 50 cannot be 0.02 px; the centroider must reach the
    limit (no extra error) and be within 0.02 px where the limit allows (S/N > 100).
    """
    sim, result = bright_stars
    cat, m = _matched(sim, result)
    sn = np.asarray(sim.truth["psf_sn"])
    found = m.det_index >= 0
    unflagged = np.zeros(len(sn), dtype=bool)
    unflagged[found] = ~np.asarray(cat["base_SdssCentroid_flag"])[m.det_index[found]] & ~np.asarray(
        cat["base_SdssCentroid_flag_edge"])[m.det_index[found]]
    sel = _isolated_stars(sim.truth) & found & unflagged & (sn > 50)
    d = m.det_index[sel]
    dx = np.asarray(cat["base_SdssCentroid_x"])[d] - np.asarray(sim.truth["x"])[sel]
    dy = np.asarray(cat["base_SdssCentroid_y"])[d] - np.asarray(sim.truth["y"])[sel]
    sigma = np.asarray(sim.truth["fwhm_px"])[sel] / 2.3548
    bound = np.sqrt(np.mean((np.sqrt(2) * sigma / sn[sel]) ** 2))
    rms = np.sqrt(np.mean((dx**2 + dy**2) / 2))
    assert rms <= 1.15 * bound
    bright = sn[sel] > 100
    assert bright.sum() >= 100
    assert np.sqrt(np.mean((dx[bright] ** 2 + dy[bright] ** 2) / 2)) <= 0.02
    # and no systematic offset
    assert abs(np.mean(dx)) < 0.01 and abs(np.mean(dy)) < 0.01


def test_psf_fwhm_recovered(bright_stars):
    sim, result = bright_stars
    psf = result.exposure.psf
    for x, y in [(1024, 1024), (400, 400), (1650, 1650), (400, 1650), (1650, 400)]:
        assert abs(psf.sigma(x, y) / sim.psf.sigma(x, y) - 1) < 0.02, (x, y)
    assert abs(result.summary["psf_fwhm_arcsec"] / 0.75 - 1) < 0.02


def test_pairs_are_deblended(pairs):
    """Pairs 2 FWHM apart, flux ratio ≤ 5: two children in ≥ 90 % of them, and in ≥ 90 % of
    those both children's PSF fluxes within 10 % of truth. The deblender's own PSF fit
    (deblend_psf_instFlux, deblend_psfCenter_x/y, set on children deblended as point sources)
    is held to the same 10 % and to a tenth of a pixel."""
    sim, result = pairs
    cat, m = _matched(sim, result)
    pid = np.asarray(sim.truth["pair_id"])
    ids = np.unique(pid[pid >= 0])
    two = good = 0
    as_psf = []
    for p in ids:
        members = np.nonzero(pid == p)[0]
        d = m.det_index[members]
        if (d >= 0).all() and (np.asarray(cat["parent"])[d] > 0).all() and d[0] != d[1]:
            two += 1
            ratio = (np.asarray(cat["base_PsfFlux_instFlux"])[d]
                     / np.asarray(sim.truth["flux"])[members])
            good += bool(np.all(np.abs(ratio - 1) < 0.10))
            as_psf += [(i, t) for i, t in zip(d, members, strict=True)
                       if cat["deblend_deblendedAsPsf"][i]]
    assert len(ids) == 100
    assert two >= 90
    assert good >= 0.9 * two
    i, t = np.array(as_psf).T
    assert len(i) >= 100  # most pair members are point sources to the deblender
    deb = np.asarray(cat["deblend_psf_instFlux"])[i] / np.asarray(sim.truth["flux"])[t]
    assert (np.abs(deb - 1) < 0.10).mean() >= 0.9
    dx = np.asarray(cat["deblend_psfCenter_x"])[i] - np.asarray(sim.truth["x"])[t]
    dy = np.asarray(cat["deblend_psfCenter_y"])[i] - np.asarray(sim.truth["y"])[t]
    assert np.median(np.hypot(dx, dy)) < 0.1
    not_psf = ~np.asarray(cat["deblend_deblendedAsPsf"])
    assert np.isnan(np.asarray(cat["deblend_psf_instFlux"])[not_psf]).all()


def test_children_sum_to_their_parent(pairs):
    _, result = pairs
    cat = result.catalog
    parents = np.asarray(cat["id"])[np.asarray(cat["deblend_nChild"]) > 0]
    assert len(parents) >= 90
    for pid in parents[:50]:
        kids = np.asarray(cat["id"])[np.asarray(cat["parent"]) == pid]
        parent_sum = result.footprints[int(pid)].image.astype(float).sum()
        kid_sum = sum(result.footprints[int(k)].image.astype(float).sum() for k in kids)
        assert kid_sum == np.float64(kid_sum)
        np.testing.assert_allclose(kid_sum, parent_sum, rtol=1e-5, atol=1e-3)


def test_detected_mask_values(survey):
    _, result = survey
    ex = result.exposure
    detected = ex.planes.bitmask("DETECTED")
    edge = ex.planes.bitmask("EDGE")
    assert detected == 32 and edge | detected == 48
    values = set(np.unique(ex.mask[(ex.mask & detected) != 0]).tolist())
    assert 32 in values and 48 in values
