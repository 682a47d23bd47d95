"""The GalSim mock of GalaxiesML: determinism, schema, physical trends, photometry, noise, files, CLI."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

pytest.importorskip("galsim")

from galaxy_pipeline.cli import main  # noqa: E402
from galaxy_pipeline.data import mock_population  # noqa: E402
from galaxy_pipeline.data.mock import (  # noqa: E402
    COLUMNS,
    NOISE_NEIGHBOUR_CORRELATION,
    pixel_noise_sigma,
    render_galaxy,
    simulate_galaxies,
    split_sizes,
    write_mock,
    write_mock_splits,
)
from galaxy_pipeline.data.schema import IMAGE_KEY, IMAGE_SHAPE, REDSHIFT_KEY, SPLIT_FILE_NAMES  # noqa: E402
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC, PSF_FWHM_ARCSEC, PSF_MOFFAT_BETA  # noqa: E402


def read_all(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as file:
        return {name: file[name][()] for name in file}


def test_same_seed_same_bytes_whatever_the_number_of_workers(tmp_path):
    one = read_all(write_mock(tmp_path / "one.hdf5", 24, seed=7, workers=1, progress=False))
    two = read_all(write_mock(tmp_path / "two.hdf5", 24, seed=7, workers=2, progress=False))
    other = read_all(write_mock(tmp_path / "other.hdf5", 24, seed=8, workers=2, progress=False))
    assert one.keys() == two.keys()
    for name in one:
        assert one[name].tobytes() == two[name].tobytes(), name
    assert one[IMAGE_KEY].tobytes() != other[IMAGE_KEY].tobytes()
    assert not np.array_equal(one[REDSHIFT_KEY], other[REDSHIFT_KEY])


def test_file_follows_the_galaxiesml_schema(tmp_path):
    n = 12
    columns = read_all(write_mock(tmp_path / "mock.hdf5", n, seed=1, workers=1, progress=False))
    assert set(columns) == {IMAGE_KEY, *COLUMNS}
    assert columns[IMAGE_KEY].shape == (n, *IMAGE_SHAPE) and columns[IMAGE_KEY].dtype == np.float32
    assert columns["object_id"].dtype == np.int64 and len(set(columns["object_id"])) == n
    for band in BANDS:
        assert columns[f"{band}_cmodel_mag"].shape == (n,) and columns[f"{band}_cmodel_mag"].dtype == np.float32
    assert columns[REDSHIFT_KEY].dtype == np.float32
    np.testing.assert_allclose(columns[REDSHIFT_KEY], columns["true_redshift"], rtol=1e-6)
    for name in ("true_galaxy_type", "true_bulge_sed", "true_disk_sed"):
        assert columns[name].shape == (n, 1) and columns[name].dtype.kind == "S"
    assert set(columns["true_galaxy_type"].ravel()) <= {b"early", b"late"}
    assert set(columns["true_bulge_sed"].ravel()) == {b"E"}
    assert set(columns["true_disk_sed"].ravel()) <= {b"Sbc", b"Scd", b"Im"}
    assert np.all((columns["true_bulge_fraction"] >= 0) & (columns["true_bulge_fraction"] <= 1))
    assert np.all((columns["true_sersic_index"] >= 1) & (columns["true_sersic_index"] <= 4))
    assert np.all(np.isfinite(columns[IMAGE_KEY]))
    with h5py.File(tmp_path / "mock.hdf5", "r") as file:
        assert file.attrs["seed"] == 1
        np.testing.assert_allclose(file.attrs["pixel_noise_sigma"], [pixel_noise_sigma()[b] for b in BANDS])


def test_redshift_distribution_follows_the_recipe():
    rng = np.random.default_rng(0)
    z = np.array([mock_population.draw_redshift(rng) for _ in range(4000)])
    assert z.min() >= 0.01 and z.max() <= 4.0
    # p(z) ~ z^1.5 exp(-z / 0.294): mean 2.5 x 0.294 = 0.735 (truncation is negligible), 93% below 1.5.
    assert abs(z.mean() - 0.735) < 0.03
    assert 0.91 < np.mean(z < 1.5) < 0.96


def test_truth_trends_with_redshift():
    """Sizes shrink and early types thin out with redshift; g-i reddens from z = 0.1 to 0.6 as the 4000 A
    break moves from g into r (beyond z ~ 0.8 it enters i and g-i turns bluer again, as in real surveys)."""
    per_redshift = 300
    samples = {}
    for seed, z in enumerate((0.1, 0.6, 1.2)):
        galaxies = [
            mock_population.draw_galaxy(np.random.default_rng([seed, k]), redshift=z) for k in range(per_redshift)
        ]
        size = [b * g.bulge_hlr_arcsec + (1 - b) * g.disk_hlr_arcsec for g in galaxies for b in [g.bulge_fraction_i]]
        samples[z] = {
            "size": np.median(size),
            "early": np.mean([g.early_type for g in galaxies]),
            "g_i": np.median([g.magnitudes[0] - g.magnitudes[2] for g in galaxies]),
        }
    assert samples[0.6]["size"] < 0.5 * samples[0.1]["size"]
    assert samples[1.2]["size"] < 0.8 * samples[0.6]["size"]
    assert samples[0.6]["early"] < samples[0.1]["early"] - 0.07
    assert samples[1.2]["early"] < samples[0.6]["early"] - 0.03
    assert abs(samples[0.1]["early"] - 0.45 / 1.1) < 0.08
    assert samples[0.6]["g_i"] > samples[0.1]["g_i"] + 0.4


def test_noiseless_pixels_hold_the_catalog_flux():
    n = 24
    images, catalog = simulate_galaxies(n, seed=3, noise=False)
    pixel_mag = MAG_ZERO_POINT - 2.5 * np.log10(images.sum(axis=(2, 3), dtype=np.float64))
    cmodel = np.stack([catalog[f"{band}_cmodel_mag"] for band in BANDS], axis=1)
    # Light can only be lost beyond the 10.75" stamp, never gained.
    assert np.all(pixel_mag >= cmodel - 1e-3)
    compact = np.maximum(catalog["true_bulge_hlr_arcsec"], catalog["true_disk_hlr_arcsec"]) < 0.8
    assert compact.sum() >= n // 2
    np.testing.assert_allclose(pixel_mag[compact], cmodel[compact], atol=0.03)


def test_rendering_matches_galsim_convolve_and_draw_image():
    """The Fourier-space shortcut of render_galaxy equals GalSim drawing each band the usual way."""
    galsim = pytest.importorskip("galsim")
    for index in range(3):
        galaxy = mock_population.draw_galaxy(np.random.default_rng([5, index]), redshift=0.3 + 0.4 * index)
        image = render_galaxy(galaxy)
        angle = galaxy.position_angle_deg * galsim.degrees
        for b, band in enumerate(BANDS):
            bulge = galsim.DeVaucouleurs(
                half_light_radius=galaxy.bulge_hlr_arcsec, trunc=8 * galaxy.bulge_hlr_arcsec, flux=galaxy.bulge_flux[b]
            ).shear(q=galaxy.bulge_axis_ratio, beta=angle)
            disk = galsim.Exponential(half_light_radius=galaxy.disk_hlr_arcsec, flux=galaxy.disk_flux[b])
            disk = disk.shear(q=galaxy.disk_axis_ratio, beta=angle)
            psf = galsim.Moffat(beta=PSF_MOFFAT_BETA, fwhm=PSF_FWHM_ARCSEC[band])
            reference = galsim.Convolve(bulge + disk, psf).drawImage(
                nx=64, ny=64, scale=PIXEL_SCALE_ARCSEC, offset=galaxy.offset_pix, use_true_center=False
            )
            np.testing.assert_allclose(image[b], reference.array, atol=1e-4 * reference.array.max())


def test_sky_noise_has_the_designed_sigma_and_correlation():
    n = 8
    noiseless, _ = simulate_galaxies(n, seed=4, noise=False)
    noisy, _ = simulate_galaxies(n, seed=4, noise=True)
    noise = (noisy - noiseless).astype(np.float64)
    for b, band in enumerate(BANDS):
        assert noise[:, b].std() == pytest.approx(pixel_noise_sigma()[band], rel=0.05)
        rho = np.corrcoef(noise[:, b, :, :-1].ravel(), noise[:, b, :, 1:].ravel())[0, 1]
        assert rho == pytest.approx(NOISE_NEIGHBOUR_CORRELATION, abs=0.04)
    # Deeper bands have quieter pixels: g (26.5 mag) is quieter than y (24.4 mag).
    assert pixel_noise_sigma()["g"] < pixel_noise_sigma()["i"] < pixel_noise_sigma()["y"]


def test_refuses_to_overwrite_and_leaves_no_temporary_file(tmp_path):
    path = write_mock(tmp_path / "mock.hdf5", 4, seed=0, workers=1, progress=False)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_mock(path, 4, seed=1, workers=1, progress=False)
    assert path.read_bytes() == before
    write_mock(path, 4, seed=1, workers=1, progress=False, overwrite=True)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mock.hdf5"]


def test_splits_hold_consecutive_disjoint_galaxies(tmp_path):
    paths = write_mock_splits(tmp_path, 30, seed=2, fractions=(0.6, 0.2, 0.2), workers=2, progress=False)
    assert {split: path.name for split, path in paths.items()} == SPLIT_FILE_NAMES
    ids = {split: read_all(path)["object_id"] for split, path in paths.items()}
    assert [len(ids[split]) for split in ("train", "validation", "test")] == [18, 6, 6]
    np.testing.assert_array_equal(np.concatenate([ids["train"], ids["validation"], ids["test"]]), np.arange(30))
    test_images, _ = simulate_galaxies(6, seed=2, first_index=24)
    np.testing.assert_array_equal(read_all(paths["test"])[IMAGE_KEY], test_images)


def test_bad_requests_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="redshifts must lie"):
        write_mock(tmp_path / "a.hdf5", 2, seed=0, redshifts=[0.5, 7.0], progress=False)
    with pytest.raises(ValueError, match="one value per galaxy"):
        simulate_galaxies(3, seed=0, redshifts=[0.5])
    with pytest.raises(ValueError, match="summing to 1"):
        split_sizes(10, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="too small"):
        split_sizes(3, (0.8, 0.1, 0.1))
    assert not list(tmp_path.iterdir())
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="a_file is a file"):
        write_mock(tmp_path / "a_file" / "mock.hdf5", 2, seed=0, progress=False)


def test_missing_galsim_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "galsim", None)
    with pytest.raises(ImportError, match=r"pip install 'galaxy-pipeline\[mock\]'"):
        mock_population.import_galsim()


def test_cli_writes_a_file_then_refuses_to_overwrite_it(tmp_path, capsys):
    out = tmp_path / "mock_train.hdf5"
    arguments = ["data", "mock", "--n", "5", "--seed", "0", "--out", str(out), "--workers", "1", "--quiet"]
    assert main(arguments) == 0
    assert read_all(out)[IMAGE_KEY].shape == (5, *IMAGE_SHAPE)
    assert main(arguments) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "mock", "--n", "10", "--out", str(tmp_path / "splits"), "--splits", "--quiet"]) == 0
    sizes = [len(read_all(tmp_path / "splits" / name)["object_id"]) for name in SPLIT_FILE_NAMES.values()]
    assert sizes == [8, 1, 1]


def _population_summary(population: str, z: float, n: int = 300) -> dict[str, float]:
    galaxies = [
        mock_population.draw_galaxy(np.random.default_rng([9, k]), redshift=z, population=population) for k in range(n)
    ]
    return {
        "size": float(
            np.median(
                [
                    g.bulge_fraction_i * g.bulge_hlr_arcsec + (1 - g.bulge_fraction_i) * g.disk_hlr_arcsec
                    for g in galaxies
                ]
            )
        ),
        "early": float(np.mean([g.early_type for g in galaxies])),
        "bulge_fraction": float(np.median([g.bulge_fraction_i for g in galaxies])),
        "g_i": float(np.median([g.magnitudes[0] - g.magnitudes[2] for g in galaxies])),
    }


def test_the_held_out_population_differs_in_types_colours_and_sizes():
    """blue_compact: fewer and weaker bulges, bluer disks, smaller galaxies, at the same redshift and seeds."""
    for z, bluer_by in ((0.2, 0.1), (0.8, 0.02)):
        fiducial, held_out = _population_summary("fiducial", z), _population_summary("blue_compact", z)
        assert held_out["early"] < 0.7 * fiducial["early"]
        assert held_out["bulge_fraction"] < fiducial["bulge_fraction"]
        assert held_out["g_i"] < fiducial["g_i"] - bluer_by
        assert held_out["size"] < 0.9 * fiducial["size"]


def test_population_is_recorded_and_checked(tmp_path, capsys):
    out = tmp_path / "held_out.hdf5"
    arguments = ["data", "mock", "--n", "4", "--out", str(out), "--workers", "1", "--quiet"]
    assert main([*arguments, "--population", "blue_compact"]) == 0
    with h5py.File(out, "r") as file:
        assert file.attrs["population"] == "blue_compact"
    held_out = read_all(out)
    fiducial = read_all(write_mock(tmp_path / "fiducial.hdf5", 4, seed=0, workers=1, progress=False))
    assert not np.array_equal(held_out[IMAGE_KEY], fiducial[IMAGE_KEY])
    with pytest.raises(ValueError, match="population must be one of"):
        simulate_galaxies(2, seed=0, population="spirals")
    with pytest.raises(SystemExit):
        main([*arguments, "--overwrite", "--population", "spirals"])
    assert "invalid choice" in capsys.readouterr().err


def test_mock_cache_folders_name_their_population():
    from galaxy_pipeline.data.mock_dataset import mock_dataset_name

    assert mock_dataset_name(4000, 0) == "mock-n4000-seed0"
    assert mock_dataset_name(20000, 1, "blue_compact") == "mock-n20000-seed1-blue_compact"
    with pytest.raises(ValueError, match="population must be one of"):
        mock_dataset_name(10, 0, "spirals")
