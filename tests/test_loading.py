"""Torch-side loading of a converted GalaxiesML dataset: checked loading, transform fitting, dataloaders."""

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from galaxiesml_files import SKY_NOISE_SIGMA, write_galaxiesml_splits

from galaxy_pipeline.data.galaxiesml import convert_galaxiesml
from galaxy_pipeline.data.loading import (
    GalaxyImageDataset,
    dihedral_transform,
    fit_flux_transform,
    load_split,
    make_dataloader,
    random_dihedral,
    redshift_balanced_indices,
    transformed_split_gigabytes,
)
from galaxy_pipeline.normalization import FluxTransform


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """A converted dataset with train (48 rows) and validation (8 rows) splits."""
    folder = tmp_path_factory.mktemp("loading")
    files = write_galaxiesml_splits(folder / "hdf5", sizes=(48, 8, 4), seed=3)
    del files["test"]
    convert_galaxiesml(files, folder / "converted", progress=False)
    return folder / "converted"


@pytest.fixture(scope="module")
def train(dataset_dir) -> datasets.Dataset:
    return load_split(dataset_dir, "train")


@pytest.fixture(scope="module")
def flux_transform(train) -> FluxTransform:
    return fit_flux_transform(train, max_images=32, batch_size=8)


def test_load_split_errors_name_the_problem(dataset_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*galaxy-pipeline data convert"):
        load_split(tmp_path / "missing", "train")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_split(a_file, "train")
    with pytest.raises(ValueError, match="not a converted dataset"):
        load_split(tmp_path, "train")
    with pytest.raises(ValueError, match="no split 'test'; it has train, validation"):
        load_split(dataset_dir, "test")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"redshift": [0.1, 0.2]})}).save_to_disk(
        str(tmp_path / "no_images")
    )
    with pytest.raises(ValueError, match="lacks column\\(s\\) 'image'"):
        load_split(tmp_path / "no_images", "train")


def test_redshift_balanced_indices_repeat_rare_bins_equally_within_each_bin():
    redshifts = np.array([0.1] * 40 + [0.3] * 10 + [0.6] * 1)
    counts = np.bincount(redshift_balanced_indices(redshifts, 1.0), minlength=len(redshifts))
    assert set(counts[:40]) == {1} and set(counts[40:50]) == {4} and counts[50] == 4  # 40 / 1 capped at 4
    half = np.bincount(redshift_balanced_indices(redshifts, 0.5), minlength=len(redshifts))
    assert set(half[:40]) == {1} and set(half[40:50]) == {2} and half[50] == 4  # sqrt(4) = 2, sqrt(40) capped
    np.testing.assert_array_equal(redshift_balanced_indices(redshifts, 0.0), np.arange(len(redshifts)))
    with pytest.raises(ValueError, match="exponent must be in"):
        redshift_balanced_indices(redshifts, 1.5)


def test_loader_with_indices_draws_each_row_as_often_as_listed(train, flux_transform):
    indices = [0, 0, 0, 1]
    loader = make_dataloader(train, flux_transform, batch_size=4, seed=0, indices=indices)
    (batch,) = list(loader)
    expected = np.asarray(train.with_format("numpy")["redshift"], dtype=np.float32)[indices]
    np.testing.assert_allclose(np.sort(batch["redshifts"].numpy()), np.sort(expected))


def test_loader_batches_have_model_shapes_and_dtypes(train, flux_transform):
    loader = make_dataloader(train, flux_transform, batch_size=16, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    for batch in batches:
        assert batch["images"].shape == (16, 5, 64, 64) and batch["images"].dtype == torch.float32
        assert batch["redshifts"].shape == (16,) and batch["redshifts"].dtype == torch.float32
        assert torch.isfinite(batch["images"]).all()
    seen = torch.cat([batch["redshifts"] for batch in batches])
    stored = torch.tensor(train[:]["redshift"], dtype=torch.float32)
    assert torch.equal(torch.sort(seen).values, torch.sort(stored).values)


def test_loader_reads_each_batch_with_one_call(train, flux_transform, monkeypatch):
    calls = []
    read = GalaxyImageDataset.__getitems__
    monkeypatch.setattr(GalaxyImageDataset, "__getitems__", lambda self, idx: calls.append(len(idx)) or read(self, idx))
    list(make_dataloader(train, flux_transform, batch_size=16))
    assert calls == [16, 16, 16]


def test_items_invert_to_the_stored_fluxes(train, flux_transform):
    dataset = GalaxyImageDataset(train, flux_transform, augment=False)
    stored = train.with_format("numpy")[[0, 5, 47]]
    for position, index in enumerate([0, 5, 47]):
        item = dataset[index]
        flux = flux_transform.inverse(item["images"]).numpy()
        np.testing.assert_allclose(flux, stored["image"][position], rtol=2e-6, atol=1e-7)
        assert item["redshifts"].item() == np.float32(train[index]["redshift"])
        assert not np.allclose(item["images"].numpy(), stored["image"][position], rtol=0.01)


def test_augmentation_is_a_dihedral_transform_of_the_original(train, flux_transform):
    plain = GalaxyImageDataset(train, flux_transform, augment=False)
    augmented = GalaxyImageDataset(train, flux_transform, augment=True, seed=1)
    indices = list(range(24))
    used = set()
    for original, item in zip(plain.__getitems__(indices), augmented.__getitems__(indices), strict=True):
        matches = [k for k in range(8) if torch.equal(dihedral_transform(original["images"], k), item["images"])]
        assert matches, "augmented image is not a flip/rotation of the original"
        used.add(matches[0])
        assert item["redshifts"] == original["redshifts"]
    assert len(used) >= 4


def test_dihedral_transforms_are_the_eight_symmetries_of_the_square():
    image = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    results = [dihedral_transform(image, k) for k in range(8)]
    assert len({tuple(result.flatten().tolist()) for result in results}) == 8
    for result in results:
        assert torch.equal(torch.sort(result.flatten()).values, image.flatten())
    assert torch.equal(dihedral_transform(image, 4), image.flip(-1))
    with pytest.raises(ValueError, match="0-7"):
        dihedral_transform(image, 8)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_is_deterministic_given_the_seed(train, flux_transform, num_workers):
    def first_batches(seed):
        loader = make_dataloader(train, flux_transform, batch_size=8, seed=seed, num_workers=num_workers)
        return [batch for _, batch in zip(range(2), loader, strict=False)]

    first, again, other = first_batches(5), first_batches(5), first_batches(6)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["redshifts"], b["redshifts"])
    assert not torch.equal(first[0]["redshifts"], other[0]["redshifts"])


def test_unshuffled_loader_keeps_row_order(train, flux_transform):
    loader = make_dataloader(train, flux_transform, batch_size=8, shuffle=False, augment=False, drop_last=False)
    redshifts = torch.cat([batch["redshifts"] for batch in loader])
    assert torch.equal(redshifts, torch.tensor(train[:]["redshift"], dtype=torch.float32))


def test_batch_larger_than_split_is_a_clear_error(train, flux_transform):
    with pytest.raises(ValueError, match="48 rows, fewer than batch_size=64"):
        make_dataloader(train, flux_transform, batch_size=64)


def test_fit_flux_transform_finds_the_sky_noise(train):
    fitted = fit_flux_transform(train, max_images=48, batch_size=16, seed=0)
    np.testing.assert_allclose(fitted.softening, SKY_NOISE_SIGMA, rtol=0.15)
    assert all(1.0 < scale < 20.0 for scale in fitted.scale)
    again = fit_flux_transform(train, max_images=48, batch_size=16, seed=0)
    assert again.softening == fitted.softening and again.scale == fitted.scale
    subset = fit_flux_transform(train, max_images=8, seed=1)
    assert subset.softening != fitted.softening


@pytest.mark.parametrize("augment", [False, True])
def test_in_memory_loader_gives_the_same_batches_without_reading_the_split(train, flux_transform, monkeypatch, augment):
    def batches(in_memory):
        loader = make_dataloader(train, flux_transform, batch_size=8, seed=2, augment=augment, in_memory=in_memory)
        return list(loader)

    from_split = batches(in_memory=False)
    reads = []
    read = GalaxyImageDataset._read
    monkeypatch.setattr(GalaxyImageDataset, "_read", lambda self, idx: reads.append(len(idx)) or read(self, idx))
    from_memory = batches(in_memory=True)
    assert reads == [len(train)], "the in-memory split must be read once, at construction, and never per batch"
    assert len(from_memory) == len(from_split) == len(train) // 8
    for a, b in zip(from_split, from_memory, strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["redshifts"], b["redshifts"])


def test_transformed_split_gigabytes_is_the_float32_size(train):
    assert transformed_split_gigabytes(train) == pytest.approx(len(train) * 5 * 64 * 64 * 4 / 1e9)


def test_random_dihedral_applies_one_of_the_eight_symmetries_per_image():
    images = torch.randn(64, 5, 6, 6)
    out = random_dihedral(images, torch.Generator().manual_seed(0))
    used = set()
    for image, transformed in zip(images, out, strict=True):
        matches = [k for k in range(8) if torch.equal(dihedral_transform(image, k), transformed)]
        assert matches
        used.add(matches[0])
    assert len(used) == 8
    assert torch.equal(random_dihedral(images, torch.Generator().manual_seed(0)), out)  # the generator decides


def test_random_dihedral_draws_from_the_global_rng_without_a_generator():
    images = torch.randn(16, 5, 6, 6)
    torch.manual_seed(3)
    first = random_dihedral(images)
    torch.manual_seed(3)
    assert torch.equal(random_dihedral(images), first)
    assert not torch.equal(first, images)
