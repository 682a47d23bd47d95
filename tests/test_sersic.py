"""PSF images and the batched PSF-convolved Sersic fit, checked against GalSim drawings with known truth."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from galaxy_pipeline.evaluation.psf import hsc_psf_model, moffat_psf_image, prepare_psf
from galaxy_pipeline.evaluation.sersic import (
    BOUND_TOLERANCE,
    SERSIC_INDEX_RANGE,
    _shape_scalars,
    fit_sersic,
    near_bound,
)
from galaxy_pipeline.hsc import PIXEL_SCALE_ARCSEC, PSF_FWHM_ARCSEC, PSF_MOFFAT_BETA

galsim = pytest.importorskip("galsim")

FWHM = PSF_FWHM_ARCSEC["i"]
STAMP = 48


def draw(n, radius_pix, q, angle, flux=1000.0, offset=(0.0, 0.0), size=STAMP, fwhm=FWHM):
    """A GalSim Sersic (semi-major half-light radius ``radius_pix``) convolved with the HSC Moffat PSF.

    GalSim puts the profile centre at pixel (size / 2, size / 2) for offset (0.5, 0.5), i.e. on the pixel
    ``size // 2`` that the fit's supersampled box is centred on.
    """
    galaxy = galsim.Sersic(n=n, half_light_radius=radius_pix * np.sqrt(q) * PIXEL_SCALE_ARCSEC, flux=flux)
    galaxy = galaxy.shear(q=q, beta=angle * galsim.radians)
    psf = galsim.Moffat(beta=PSF_MOFFAT_BETA, fwhm=fwhm)
    image = galsim.Convolve(galaxy, psf).drawImage(
        nx=size, ny=size, scale=PIXEL_SCALE_ARCSEC, offset=(0.5 + offset[0], 0.5 + offset[1])
    )
    return image.array.astype(np.float64)


def test_moffat_psf_sums_to_one_is_centred_and_has_the_requested_width():
    psf = moffat_psf_image(0.7, size=31)
    assert psf.shape == (31, 31)
    assert psf.sum() == pytest.approx(1.0)
    assert np.unravel_index(psf.argmax(), psf.shape) == (15, 15)
    np.testing.assert_allclose(psf, psf.T, atol=1e-12)
    above_half = psf[15] >= psf.max() / 2
    width_pixels = above_half.sum()
    assert width_pixels * PIXEL_SCALE_ARCSEC == pytest.approx(0.7, abs=PIXEL_SCALE_ARCSEC)
    model = hsc_psf_model()
    assert model.shape == (5, 25, 25)
    assert model[2].max() > model[0].max()  # i-band seeing (0.58") is sharper than g (0.77")


def test_prepare_psf_centres_crops_and_normalises_user_psfs():
    user = np.zeros((5, 40, 44))
    user[:, 21, 19] = 3.0
    user[:, 21, 20] = 1.0
    prepared = prepare_psf(user, size=11)
    assert prepared.shape == (5, 11, 11)
    np.testing.assert_allclose(prepared.sum(axis=(1, 2)), 1.0)
    assert prepared[0, 5, 5] == pytest.approx(0.75)
    assert prepared[0, 5, 6] == pytest.approx(0.25)
    np.testing.assert_allclose(prepare_psf(None), hsc_psf_model())


@pytest.mark.parametrize(
    "psf, message",
    [(np.ones((4, 9, 9)), "shape"), (np.full((5, 9, 9), np.nan), "NaN"), (-np.ones((5, 9, 9)), "positive")],
)
def test_prepare_psf_rejects_unusable_psfs(psf, message):
    with pytest.raises(ValueError, match=message):
        prepare_psf(psf)


def test_noise_free_fits_recover_index_size_shape_and_centre():
    truth = [(n, r) for n in (0.5, 1.0, 2.0, 4.0) for r in (2.0, 5.0)]
    offsets = [(0.3, -0.4), (-0.5, 0.5)] * 4
    images = np.stack([draw(n, r, 0.6, 0.4, offset=o) for (n, r), o in zip(truth, offsets, strict=True)])
    fit = fit_sersic(images, np.full_like(images, 1e4), moffat_psf_image(FWHM), half_light_radius_pix=np.full(8, 3.0))
    n_true, r_true = np.array(truth).T
    assert fit.ok.all() and fit.converged.all() and not fit.at_bound.any()
    np.testing.assert_allclose(fit.sersic_index, n_true, rtol=0.12)
    np.testing.assert_allclose(fit.half_light_radius_pix, r_true, rtol=0.06)
    np.testing.assert_allclose(fit.axis_ratio, 0.6, atol=0.03)
    np.testing.assert_allclose(np.cos(2 * (fit.position_angle - 0.4)), 1.0, atol=0.01)
    np.testing.assert_allclose(fit.x_centre, STAMP // 2 + np.array(offsets)[:, 0], atol=0.05)
    np.testing.assert_allclose(fit.y_centre, STAMP // 2 + np.array(offsets)[:, 1], atol=0.05)


def test_noisy_fits_separate_exponential_from_de_vaucouleurs():
    rng = np.random.default_rng(4)
    n_true = np.repeat([1.0, 4.0], 12)
    r_true = rng.uniform(1.5, 6.0, n_true.size)
    q_true = rng.uniform(0.4, 1.0, n_true.size)
    sigma = 0.05
    images = np.stack(
        [draw(n, r, q, rng.uniform(0, np.pi), flux=150.0) for n, r, q in zip(n_true, r_true, q_true, strict=True)]
    )
    images += rng.normal(0.0, sigma, images.shape)
    fit = fit_sersic(
        images, np.full_like(images, sigma**-2), moffat_psf_image(FWHM), half_light_radius_pix=np.full(24, 3.0)
    )
    assert fit.ok.mean() >= 0.9
    n_fit = fit.sersic_index
    assert 0.8 < np.median(n_fit[:12]) < 1.25
    assert 3.2 < np.median(n_fit[12:]) < 5.0
    assert np.mean(np.abs(n_fit / n_true - 1) < 0.25) >= 0.8
    assert spearmanr(fit.half_light_radius_pix, r_true).statistic > 0.9
    assert np.median(np.abs(fit.half_light_radius_pix / r_true - 1)) < 0.1
    assert np.median(np.abs(fit.axis_ratio - q_true)) < 0.05


def test_the_psf_is_needed_to_recover_a_bulge():
    image = draw(4.0, 3.0, 0.8, 0.0)[None]
    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    with_psf = fit_sersic(image, np.full_like(image, 1e4), moffat_psf_image(FWHM), half_light_radius_pix=[3.0])
    without_psf = fit_sersic(image, np.full_like(image, 1e4), delta, half_light_radius_pix=[3.0])
    assert with_psf.sersic_index[0] == pytest.approx(4.0, rel=0.12)
    assert without_psf.sersic_index[0] < 0.7 * with_psf.sersic_index[0]


def test_a_constant_sky_is_fitted_not_absorbed_by_the_profile():
    image = draw(4.0, 4.0, 0.7, 1.0)
    sky = 0.05 * image.max()
    fit = fit_sersic((image + sky)[None], np.full((1, STAMP, STAMP), 1e4), moffat_psf_image(FWHM), [3.0])
    assert fit.sky[0] == pytest.approx(sky, rel=0.05)
    assert fit.sersic_index[0] == pytest.approx(4.0, rel=0.12)
    prior = fit_sersic(
        image[None], np.full((1, STAMP, STAMP), 1e4), moffat_psf_image(FWHM), [3.0], sky_prior_pixels=1e9
    )
    assert abs(prior.sky[0]) < 1e-3 * sky


def test_zero_weight_pixels_do_not_influence_the_fit():
    clean = draw(1.0, 3.0, 0.5, 0.3)
    neighbour = draw(1.0, 2.0, 1.0, 0.0, flux=300.0, offset=(14.0, 10.0))
    weights = np.full((2, STAMP, STAMP), 1e4)
    y, x = np.mgrid[:STAMP, :STAMP]
    weights[1][np.hypot(x - STAMP // 2 - 14, y - STAMP // 2 - 10) < 10] = 0.0
    images = np.stack([clean, clean + neighbour])
    fit = fit_sersic(images, weights, moffat_psf_image(FWHM), half_light_radius_pix=[3.0, 3.0])
    assert fit.ok.all()
    assert fit.sersic_index[1] == pytest.approx(fit.sersic_index[0], rel=0.02)
    assert fit.half_light_radius_pix[1] == pytest.approx(fit.half_light_radius_pix[0], rel=0.02)
    unmasked = fit_sersic(images[1:], np.full((1, STAMP, STAMP), 1e4), moffat_psf_image(FWHM), [3.0])
    assert abs(unmasked.sersic_index[0] - 1.0) > abs(fit.sersic_index[1] - 1.0)


def test_a_ring_and_a_pair_are_not_acceptable_sersic_fits():
    ring = draw(0.5, 8.0, 1.0, 0.0) - draw(0.5, 5.0, 1.0, 0.0)
    pair = draw(1.0, 2.0, 1.0, 0.0, offset=(-5.0, 0.0)) + draw(1.0, 2.0, 1.0, 0.0, offset=(5.0, 0.0))
    smooth = draw(1.0, 4.0, 0.8, 0.0)
    images = np.stack([ring, pair, smooth])
    fit = fit_sersic(images, np.full_like(images, 1e4), moffat_psf_image(FWHM), half_light_radius_pix=[4.0] * 3)
    assert fit.amplitude[0] < 0
    assert fit.unexplained_fraction[1] > 0.15 > 0.01 > fit.unexplained_fraction[2]
    assert fit.ok.tolist() == [False, False, True]
    assert SERSIC_INDEX_RANGE[0] <= fit.sersic_index.min() and fit.sersic_index.max() <= SERSIC_INDEX_RANGE[1]


def test_fit_sersic_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="stamps"):
        fit_sersic(np.zeros((2, 16, 16)), np.zeros((2, 16, 15)), moffat_psf_image(FWHM), [2.0, 2.0])
    with pytest.raises(ValueError, match="odd"):
        fit_sersic(np.zeros((1, 16, 16)), np.ones((1, 16, 16)), np.ones((4, 4)) / 16, [2.0])


def test_nan_trial_parameters_do_not_crash_the_profile_table():
    """Extreme pixels can make a Levenberg-Marquardt trial NaN; it must give NaN scalars, not an IndexError."""
    params = torch.full((2, 6), float("nan"))
    params[1] = 0.0
    scalars = _shape_scalars(params)
    assert torch.isnan(scalars[0, 5])
    assert torch.isfinite(scalars[1]).all()


def test_near_bound_uses_a_share_of_the_log_range():
    low, high = SERSIC_INDEX_RANGE
    edge = np.exp(BOUND_TOLERANCE * np.log(high / low))
    values = np.array([low, low * edge * 0.99, low * edge * 1.01, 1.0, high / edge * 0.99, high / edge * 1.01, high])
    assert near_bound(values, low, high).tolist() == [True, True, False, False, False, True, True]
    assert not near_bound(values[1:-1], low, high, tolerance=0.0).any()
    assert not near_bound(np.array([np.nan]), low, high).any()


def test_a_point_source_with_wings_beyond_the_psf_model_is_flagged_at_the_bound():
    """A star whose PSF has stronger wings (Moffat beta 2) than the fit's PSF (beta 3) runs to n = 8."""
    star = galsim.Moffat(beta=2.0, fwhm=FWHM).withFlux(1000.0)
    image = star.drawImage(nx=STAMP, ny=STAMP, scale=PIXEL_SCALE_ARCSEC, offset=(0.5, 0.5)).array[None]
    galaxy = draw(1.0, 3.0, 0.7, 0.2)[None]
    images = np.concatenate([image, galaxy])
    weights = np.full_like(images, 1e4)
    fit = fit_sersic(images, weights, moffat_psf_image(FWHM), half_light_radius_pix=[2.0, 3.0])
    assert fit.sersic_index[0] > 0.95 * SERSIC_INDEX_RANGE[1]
    assert fit.at_bound.tolist() == [True, False]
    assert fit.ok.tolist() == [False, True]
    radii = [2.0, 3.0]
    unchecked = fit_sersic(images, weights, moffat_psf_image(FWHM), half_light_radius_pix=radii, bound_tolerance=0.0)
    assert not unchecked.at_bound.any() and unchecked.ok[0]
