"""Morphology measurement: GalSim galaxies of known truth, flags, and real HSC cutouts with neighbours."""

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from galaxy_pipeline.evaluation.morphology import MORPHOLOGY_METRICS, measure_morphology
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC, PSF_FWHM_ARCSEC, PSF_MOFFAT_BETA

galsim = pytest.importorskip("galsim")

NOISE_SIGMA = np.array([0.029, 0.040, 0.045, 0.106, 0.223])
"""Per-band pixel noise of an HSC Wide cutout (shared/realdata/scarlet2, HSC units)."""
COLOURS = {"g_r": 0.8, "r_i": 0.4, "i_z": 0.2, "z_y": 0.1}
BAND_OFFSET = np.array([1.2, 0.4, 0.0, -0.2, -0.3])
"""AB magnitude of each band minus the i-band magnitude, matching COLOURS."""


def draw_galaxies(n, radius_arcsec, q, mag_i, seed=0, offsets=None, size=64):
    """5-band GalSim Sersic galaxies (semi-major half-light radius) through the HSC Moffat PSFs, with Wide noise."""
    rng = np.random.default_rng(seed)
    images = np.zeros((len(n), len(BANDS), size, size), np.float32)
    for k in range(len(n)):
        angle = rng.uniform(0, np.pi) * galsim.radians
        offset = (0.5, 0.5) if offsets is None else (0.5 + offsets[k][0], 0.5 + offsets[k][1])
        for b, band in enumerate(BANDS):
            flux = 10 ** (-0.4 * (mag_i[k] + BAND_OFFSET[b] - MAG_ZERO_POINT))
            galaxy = galsim.Sersic(n=n[k], half_light_radius=radius_arcsec[k] * np.sqrt(q[k]), flux=flux)
            psf = galsim.Moffat(beta=PSF_MOFFAT_BETA, fwhm=PSF_FWHM_ARCSEC[band])
            image = galsim.Convolve(galaxy.shear(q=q[k], beta=angle), psf)
            images[k, b] = image.drawImage(nx=size, ny=size, scale=PIXEL_SCALE_ARCSEC, offset=offset).array
    return images + rng.normal(0.0, 1.0, images.shape) * NOISE_SIGMA[None, :, None, None]


@pytest.fixture(scope="module")
def galaxies():
    rng = np.random.default_rng(1)
    truth = {
        "n": np.tile([1.0, 4.0], 10),
        "radius": rng.uniform(0.3, 1.2, 20),
        "q": rng.uniform(0.35, 0.95, 20),
        "mag_i": rng.uniform(19.5, 21.5, 20),
    }
    images = draw_galaxies(truth["n"], truth["radius"], truth["q"], truth["mag_i"], seed=2)
    return truth, images, measure_morphology(images)


def test_every_galaxy_is_detected_and_fitted(galaxies):
    truth, images, table = galaxies
    assert len(table) == len(images)
    assert table["detected"].all() and table["sersic_ok"].all()
    assert set(table["flags"]) == {""}
    assert table.meta["detection_rate"] == 1.0
    assert set(MORPHOLOGY_METRICS) <= set(table.colnames)
    np.testing.assert_allclose(table["x_centroid"], 31.5, atol=1.0)
    np.testing.assert_allclose(table["y_centroid"], 31.5, atol=1.0)


def test_ellipticity_follows_the_true_axis_ratio(galaxies):
    truth, _, table = galaxies
    true_ellipticity = 1 - truth["q"]
    assert spearmanr(table["ellipticity"], true_ellipticity).statistic > 0.8
    assert np.all(table["ellipticity"] < true_ellipticity + 0.1)  # the PSF only rounds galaxies


def test_sizes_grow_with_the_true_size(galaxies):
    truth, _, table = galaxies
    for name in ("semimajor_axis_arcsec", "half_light_radius_arcsec"):
        assert spearmanr(table[name], truth["radius"]).statistic > 0.75, name
    sersic_radius = table["sersic_half_light_radius_arcsec"]
    assert spearmanr(sersic_radius, truth["radius"]).statistic > 0.9
    assert np.mean(np.abs(sersic_radius / truth["radius"] - 1) < 0.2) >= 0.85
    assert table["semimajor_axis_arcsec"].unit == "arcsec"


def test_sersic_index_separates_discs_from_bulges(galaxies):
    truth, _, table = galaxies
    n_fit = np.asarray(table["sersic_index"])
    disc, bulge = truth["n"] == 1, truth["n"] == 4
    assert 0.8 < np.median(n_fit[disc]) < 1.25
    assert 3.0 < np.median(n_fit[bulge]) < 5.0
    assert n_fit[bulge].min() > n_fit[disc].max()
    assert np.mean(np.abs(n_fit / truth["n"] - 1) < 0.25) >= 0.85


def test_magnitudes_and_colours(galaxies):
    truth, _, table = galaxies
    assert spearmanr(table["mag_i"], truth["mag_i"]).statistic > 0.9
    isophotal_loss = table["mag_i"] - truth["mag_i"]
    assert np.all((isophotal_loss > -0.05) & (isophotal_loss < 1.0))  # segment flux misses the faint wings
    for name, colour in COLOURS.items():
        error = np.abs(table[name] - colour)
        assert np.median(error) < 0.05 and error.max() < 0.3, name


def test_flags_for_blank_corrupt_off_centre_and_empty_images():
    galaxy = draw_galaxies([1.0], [0.6], [0.6], [20.5], seed=5)[0]
    off_centre = draw_galaxies([1.0], [0.3], [0.6], [21.5], seed=5, offsets=[(22.0, -20.0)])[0]
    noise = np.random.default_rng(6).normal(size=galaxy.shape) * NOISE_SIGMA[:, None, None]
    with_nan, with_inf, with_huge = galaxy.copy(), galaxy.copy(), galaxy.copy()
    with_nan[2, 5, 5] = np.nan
    with_inf[0, 40:42, 10] = np.inf
    with_huge[4, 60, 60] = 1e6
    images = np.stack([galaxy, np.zeros_like(galaxy), with_nan, with_inf, with_huge, off_centre, noise])
    table = measure_morphology(images)
    assert list(table["flags"]) == ["", "blank", "saturated", "saturated", "saturated", "off_centre", "not_detected"]
    assert table["detected"].tolist() == [True, False, True, True, True, False, False]
    for name in MORPHOLOGY_METRICS + ("mag_i", "g_r"):
        assert np.isnan(table[name][[1, 5, 6]]).all(), name
    for row in (2, 3, 4):
        assert table["sersic_index"][row] == pytest.approx(table["sersic_index"][0], rel=0.1)


def test_a_fit_at_the_sersic_index_bound_is_flagged_failed_and_its_index_is_nan():
    """A bright star whose PSF has stronger wings (Moffat beta 2) than the model PSF (beta 3) fits n = 8."""
    galaxy = draw_galaxies([1.0], [0.6], [0.6], [20.5], seed=5)[0]
    star = np.zeros_like(galaxy)
    for b, band in enumerate(BANDS):
        flux = 10 ** (-0.4 * (19.0 + BAND_OFFSET[b] - MAG_ZERO_POINT))
        psf = galsim.Moffat(beta=2.0, fwhm=PSF_FWHM_ARCSEC[band]).withFlux(flux)
        star[b] = psf.drawImage(nx=64, ny=64, scale=PIXEL_SCALE_ARCSEC, offset=(0.5, 0.5)).array
    star += np.random.default_rng(3).normal(size=star.shape) * NOISE_SIGMA[:, None, None]
    table = measure_morphology(np.stack([galaxy, star]))
    assert table["flags"].tolist() == ["", "fit_failed|fit_at_bound"]
    assert table["detected"].all()
    assert table["sersic_ok"].tolist() == [True, False]
    assert np.isfinite(table["sersic_index"][0]) and np.isnan(table["sersic_index"][1])
    assert np.isnan(table["sersic_half_light_radius_arcsec"][1])


def test_a_mask_over_the_galaxy_flags_it_saturated():
    images = draw_galaxies([4.0, 4.0], [0.5, 0.5], [0.8, 0.8], [20.0, 20.0], seed=7)
    mask = np.zeros(images.shape, bool)
    mask[0, 1, 31:34, 31:34] = True
    mask[1, :, 2:4, 2:4] = True  # away from the galaxy: no flag
    table = measure_morphology(images, mask=mask)
    assert table["flags"].tolist() == ["saturated", ""]
    assert table["detected"].all()


def test_batches_and_worker_processes_do_not_change_results():
    rng = np.random.default_rng(8)
    n = np.tile([1.0, 4.0], 5)
    images = draw_galaxies(n, rng.uniform(0.3, 0.9, 10), rng.uniform(0.4, 0.9, 10), rng.uniform(20, 22, 10), seed=9)
    reference = measure_morphology(images, batch_size=16)
    for kwargs in ({"batch_size": 3}, {"batch_size": 4, "n_workers": 2}):
        other = measure_morphology(images, **kwargs)
        assert other["flags"].tolist() == reference["flags"].tolist()
        for name in ("ellipticity", "isophotal_area_arcsec2", "mag_r", "sersic_index"):
            np.testing.assert_allclose(other[name], reference[name], rtol=1e-4, err_msg=f"{name} {kwargs}")


def test_measure_morphology_rejects_bad_inputs():
    with pytest.raises(ValueError, match="fluxes must have shape"):
        measure_morphology(np.zeros((2, 3, 64, 64)))
    with pytest.raises(ValueError, match="mask must have shape"):
        measure_morphology(np.zeros((2, 5, 64, 64)), mask=np.zeros((2, 32, 32), bool))
    with pytest.raises(ValueError, match="psf"):
        measure_morphology(np.zeros((1, 5, 64, 64)), psf=np.ones((5, 8)))


def cut_64(images: np.ndarray, y: int, x: int, size: int = 64) -> np.ndarray:
    """A (bands, size, size) cutout centred on pixel (y, x), zero-padded where it leaves the image."""
    out = np.zeros(images.shape[:-2] + (size, size), np.float32)
    y0, x0 = y - size // 2, x - size // 2
    src_y = slice(max(y0, 0), min(y0 + size, images.shape[-2]))
    src_x = slice(max(x0, 0), min(x0 + size, images.shape[-1]))
    out[..., src_y.start - y0 : src_y.stop - y0, src_x.start - x0 : src_x.stop - x0] = images[..., src_y, src_x]
    return out


def assert_sane(table):
    assert table["detected"].all()
    assert np.isfinite(table["ellipticity"]).all() and ((table["ellipticity"] >= 0) & (table["ellipticity"] < 1)).all()
    for name in ("semimajor_axis_arcsec", "isophotal_area_arcsec2", "half_light_radius_arcsec"):
        assert (table[name] > 0).all(), name
    assert ((table["mag_i"] > 15) & (table["mag_i"] < 30)).all()
    fitted = table["sersic_ok"]
    assert ((table["sersic_index"][fitted] >= 0.3) & (table["sersic_index"][fitted] <= 8)).all()
    assert (table["sersic_half_light_radius_arcsec"][fitted] > 0).all()
    assert all("fit_failed" in flags for flags in table["flags"][~fitted])
    assert np.isnan(table["sersic_index"][~fitted]).all()


def test_real_face_on_spiral_with_its_psf(realdata_dir: Path):
    from astropy.io import fits

    images = fits.getdata(realdata_dir / "scarlet" / "hsc_ra150.24071_dec2.06514.fits").astype(np.float32)
    psf = fits.getdata(realdata_dir / "scarlet" / "psf_hsc_ra150.24071_dec2.06514.fits")
    table = measure_morphology(cut_64(images, 27, 27)[None], psf=psf)
    assert_sane(table)
    assert table["isophotal_area_arcsec2"][0] > 20  # a big galaxy: ~7" across
    assert table["mag_i"][0] < 20


def test_real_cosmos_blends_keep_neighbours_out_of_the_central_segment(realdata_dir: Path):
    from galaxy_pipeline.evaluation.morphology import _detect_one, _prepare_batch
    from galaxy_pipeline.evaluation.psf import prepare_psf

    files = sorted((realdata_dir / "scarlet_test_blends" / "set1").glob("*.npz"))[::5]
    checked = 0
    tables = []
    for path in files:
        data = np.load(path, allow_pickle=False)
        y, x = data["centers"][0]
        cutout = cut_64(data["images"], y, x)[None]
        tables.append(measure_morphology(cutout, psf=data["psfs"]))
        found = _detect_one(_prepare_batch(cutout, prepare_psf(data["psfs"]), None).jobs[0])
        segment_area = found.segment.sum()
        assert segment_area * PIXEL_SCALE_ARCSEC**2 == pytest.approx(tables[-1]["isophotal_area_arcsec2"][0])
        smoothed = _prepare_batch(cutout, prepare_psf(data["psfs"]), None).jobs[0][1]
        for other_y, other_x in data["centers"][1:]:
            py, px = other_y - y + 32, other_x - x + 32
            bright = 0 <= py < 64 and 0 <= px < 64 and smoothed[py, px] > 0.5 * smoothed[32, 32]
            if bright and np.hypot(py - 32, px - 32) >= 8:
                checked += 1
                assert not found.segment[py, px], f"{path.name}: neighbour at ({py}, {px}) swallowed"
                assert found.neighbours[py, px]
                assert segment_area < (found.segment | found.neighbours).sum()
    assert checked >= 3
    for table in tables:
        assert_sane(table)
    # Fits at a bound (n = 8 or 0.3, mostly faint objects) count as failed: 6 of these 20.
    assert np.mean([table["sersic_ok"][0] for table in tables]) >= 0.65


def test_real_bleed_trail_mask_flags_saturated(realdata_dir: Path):
    data = np.load(realdata_dir / "scarlet_test_blends" / "set1" / "43160607393841837.npz", allow_pickle=False)
    y, x = data["centers"][0]
    saturated = (data["mask"] & 2) != 0  # HSC/LSST mask plane bit 1: SAT
    table = measure_morphology(cut_64(data["images"], y, x)[None], psf=data["psfs"], mask=cut_64(saturated, y, x)[None])
    assert "saturated" in table["flags"][0]
    assert table["detected"][0]
    unmasked = measure_morphology(cut_64(data["images"], y, x)[None], psf=data["psfs"])
    assert "saturated" not in unmasked["flags"][0]
