"""Torch-ready views of a converted GalaxiesML dataset: checked loading, flux-transform fitting, dataloaders.

    >>> train = load_split("galaxiesml", "train")              # made by `galaxy-pipeline data convert`
    >>> flux_transform = fit_flux_transform(train)
    >>> loader = make_dataloader(train, flux_transform, batch_size=64, seed=0)
    >>> batch = next(iter(loader))      # {"images": (64, 5, 64, 64) model space, "redshifts": (64,)}

Rows are read in batches through ``datasets``' numpy formatting (one Arrow ``take`` per batch),
never pixel by pixel. A split small enough for memory can instead be read and transformed once
(``in_memory=True``): batches are then slices of one tensor, and reading costs nothing per step.

Augmentation is limited to the 8 symmetries of the square (flips and 90-degree rotations): they
move pixels without resampling them, so fluxes, noise and the PSF stay exactly as observed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info
from tqdm.auto import tqdm

from galaxy_pipeline.data.schema import IMAGE_KEY, REDSHIFT_COLUMN
from galaxy_pipeline.hsc import BANDS
from galaxy_pipeline.normalization import FluxTransform

_CONVERT_HINT = "create it with `galaxy-pipeline data convert --train FILE.hdf5 --out DIR`"

_CACHE_CHUNK_ROWS = 256

NUM_DIHEDRAL_TRANSFORMS = 8
"""Flips and 90-degree rotations of a square image: rotations k = 0-3, then the same after a flip."""


def load_converted_dataset(dataset_dir: str | Path) -> datasets.DatasetDict:
    """Load a dataset folder written by :func:`~galaxy_pipeline.data.galaxiesml.convert_galaxiesml`.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file.
        ValueError: the folder is not a saved ``DatasetDict`` or cannot be read.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.exists():
        raise FileNotFoundError(f"Dataset folder {dataset_dir} does not exist; {_CONVERT_HINT}.")
    if not dataset_dir.is_dir():
        raise NotADirectoryError(f"{dataset_dir} is a file, not a dataset folder; {_CONVERT_HINT}.")
    if not (dataset_dir / datasets.config.DATASETDICT_JSON_FILENAME).is_file():
        raise ValueError(f"{dataset_dir} is not a converted dataset (no dataset_dict.json); {_CONVERT_HINT}.")
    try:
        return datasets.load_from_disk(str(dataset_dir))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{dataset_dir}: cannot load the converted dataset ({error}); {_CONVERT_HINT}.") from None


def load_split(dataset_dir: str | Path, split: str) -> datasets.Dataset:
    """One split (``train``, ``validation``, ``test``) of a converted dataset, checked for training.

    Raises:
        FileNotFoundError, NotADirectoryError, ValueError: see :func:`load_converted_dataset`;
            ValueError also for a missing split or missing ``image``/``redshift`` columns.
    """
    dataset = load_converted_dataset(dataset_dir)
    if split not in dataset:
        raise ValueError(f"{dataset_dir} has no split {split!r}; it has {', '.join(dataset) or 'none'}.")
    check_split(dataset[split], f"split {split!r} of {dataset_dir}")
    return dataset[split]


def check_split(split: datasets.Dataset, where: str = "the dataset") -> None:
    """Raise a one-line ValueError unless ``split`` has a 5-band ``image`` array and a ``redshift`` column."""
    missing = [name for name in (IMAGE_KEY, REDSHIFT_COLUMN) if name not in split.column_names]
    if missing:
        raise ValueError(
            f"{where} lacks column(s) {', '.join(map(repr, missing))} (it has {', '.join(split.column_names)}); "
            f"a converted GalaxiesML split has 'image' (5x64x64 fluxes) and 'redshift'; {_CONVERT_HINT}."
        )
    image = split.features[IMAGE_KEY]
    shape = getattr(image, "shape", None)
    if not isinstance(image, datasets.Array3D) or shape[0] != len(BANDS) or shape[1] != shape[2]:
        raise ValueError(
            f"{where}: column 'image' is {image}; expected Array3D of shape ({len(BANDS)}, H, H) "
            f"fluxes in bands {','.join(BANDS)}; {_CONVERT_HINT}."
        )


def dihedral_transform(images: torch.Tensor, k: int) -> torch.Tensor:
    """Apply symmetry ``k`` (0-7) of the square to images (..., H, W): rotate by k x 90 deg, flip if k >= 4."""
    if not 0 <= k < NUM_DIHEDRAL_TRANSFORMS:
        raise ValueError(f"k must be in 0-{NUM_DIHEDRAL_TRANSFORMS - 1}; got {k}.")
    rotated = torch.rot90(images, k % 4, dims=(-2, -1))
    return rotated.flip(-1) if k >= 4 else rotated


def random_dihedral(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply to each image of a batch (N, ..., H, W) one of the 8 symmetries of the square, drawn per image.

    The choices come from ``generator`` (a CPU generator), or from torch's global RNG when it is ``None``
    (whose state accelerate checkpoints, so a resumed run draws the same choices).
    """
    choices = torch.randint(0, NUM_DIHEDRAL_TRANSFORMS, (images.shape[0],), generator=generator)
    augmented = images.clone()
    for k in choices.unique().tolist():
        selected = (choices == k).to(images.device)
        augmented[selected] = dihedral_transform(images[selected], k)
    return augmented


class GalaxyImageDataset(torch.utils.data.Dataset):
    """A converted split as a torch Dataset of ``{"images": (5, H, W) model space, "redshifts": ()}``.

    Args:
        split: a converted split (see :func:`load_split`).
        flux_transform: the flux -> model-space transform applied to every image.
        augment: apply a random flip / 90-degree rotation (one of the 8 dihedral transforms) to each image.
        seed: seed of the augmentation draws. In DataLoader workers the draws are reseeded from the
            worker seed, which the DataLoader's own generator makes reproducible.
        in_memory: read and transform the whole split once, now, into one float32 tensor of
            ``len(split) x bands x H x W x 4`` bytes (see :func:`transformed_split_gigabytes`).
    """

    def __init__(
        self,
        split: datasets.Dataset,
        flux_transform: FluxTransform,
        augment: bool = False,
        seed: int = 0,
        in_memory: bool = False,
    ) -> None:
        check_split(split)
        if flux_transform.num_bands != split.features[IMAGE_KEY].shape[0]:
            raise ValueError(
                f"flux_transform has {flux_transform.num_bands} bands but the images have "
                f"{split.features[IMAGE_KEY].shape[0]}."
            )
        self.split = split
        self.flux_transform = flux_transform
        self.augment = augment
        self.seed = seed
        self._rows = split.select_columns([IMAGE_KEY, REDSHIFT_COLUMN]).with_format("numpy")
        self._rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        if in_memory:
            self._cache = self._read_all()

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Read ``indices`` (one batched Arrow read, or the memory cache); transform and (optionally) augment them."""
        if self._cache is None:
            images, redshifts = self._read(indices)
        else:
            selected = torch.as_tensor(list(indices), dtype=torch.long)
            images, redshifts = self._cache[0][selected], self._cache[1][selected]
        if self.augment:
            ks = self._augmentation_rng().integers(0, NUM_DIHEDRAL_TRANSFORMS, size=len(images))
            images = torch.stack([dihedral_transform(image, int(k)) for image, k in zip(images, ks, strict=True)])
        return [{"images": image, "redshifts": z} for image, z in zip(images, redshifts, strict=True)]

    def _read(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-space images (N, bands, H, W) and redshifts (N,) of ``indices``, read from the split."""
        rows = self._rows[list(indices)]
        images = torch.from_numpy(self.flux_transform.forward(np.asarray(rows[IMAGE_KEY], dtype=np.float32)))
        return images, torch.from_numpy(np.asarray(rows[REDSHIFT_COLUMN], dtype=np.float32))

    def _read_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split in model space, read in chunks into preallocated tensors."""
        images = torch.empty((len(self), *self.split.features[IMAGE_KEY].shape), dtype=torch.float32)
        redshifts = torch.empty(len(self), dtype=torch.float32)
        for start in tqdm(range(0, len(self), _CACHE_CHUNK_ROWS), desc="Reading split into memory", leave=False):
            stop = min(start + _CACHE_CHUNK_ROWS, len(self))
            images[start:stop], redshifts[start:stop] = self._read(range(start, stop))
        return images, redshifts

    def _augmentation_rng(self) -> np.random.Generator:
        worker = get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self._rng = np.random.default_rng([self.seed, worker.seed])
        return self._rng


def transformed_split_gigabytes(split: datasets.Dataset) -> float:
    """Memory (GB, 1e9 bytes) that ``split``'s images take as float32 tensors: the size of an in-memory cache."""
    check_split(split)
    return len(split) * int(np.prod(split.features[IMAGE_KEY].shape)) * 4 / 1e9


def fit_flux_transform(
    split: datasets.Dataset,
    max_images: int = 2048,
    batch_size: int = 256,
    seed: int = 0,
    channel_mixing: Sequence[Sequence[float]] | None = None,
    softening_in_noise_sigmas: float = 1.0,
) -> FluxTransform:
    """Fit a :class:`FluxTransform` on a random subset of at most ``max_images`` images of ``split``.

    The subset is read ``batch_size`` images at a time (in file order) and streamed through
    :meth:`FluxTransform.fit`, so memory stays at one batch. ``channel_mixing`` (e.g.
    ``colour_basis_mixing()``) is stored in the transform and mixes the stretched bands per pixel;
    ``softening_in_noise_sigmas`` is the stretch's softening in units of each band's sky noise sigma.
    """
    check_split(split)
    if len(split) == 0:
        raise ValueError("Cannot fit a flux transform on an empty split.")
    if max_images < 1 or batch_size < 1:
        raise ValueError(f"max_images and batch_size must be >= 1; got {max_images} and {batch_size}.")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(split), size=min(max_images, len(split)), replace=False))
    images = split.select_columns([IMAGE_KEY]).with_format("numpy")

    def batches() -> Iterator[np.ndarray]:
        for start in range(0, len(chosen), batch_size):
            yield images[chosen[start : start + batch_size].tolist()][IMAGE_KEY]

    return FluxTransform.fit(
        batches(), softening_in_noise_sigmas=softening_in_noise_sigmas, channel_mixing=channel_mixing
    )


def redshift_balanced_indices(
    redshifts: np.ndarray, exponent: float, bin_width: float = 0.25, max_repeats: int = 4
) -> np.ndarray:
    """Row indices of one epoch in which rare redshifts repeat: galaxy i appears ``r_i`` times, where
    ``r_i = min(max_repeats, round((n_max / n_i) ** exponent))``, ``n_i`` the count of its redshift bin.

    Within a bin every galaxy repeats equally, so what a conditional model learns at each redshift is
    unchanged; only how often each redshift is seen changes. ``exponent`` 0 gives every row once.

    Args:
        redshifts: (N,) spectroscopic redshifts of the split's rows.
        exponent: 0 (uniform draws) to 1 (every bin equally, up to ``max_repeats``).
        bin_width: width of the redshift bins, in z.
        max_repeats: most repeats of one galaxy (the rarest galaxies are not memorised).
    """
    if not 0 <= exponent <= 1:
        raise ValueError(f"exponent must be in [0, 1]; got {exponent}.")
    bins = np.floor(np.asarray(redshifts, dtype=np.float64) / bin_width).astype(np.int64)
    _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    repeats = np.minimum(max_repeats, np.rint((counts.max() / counts[inverse]) ** exponent)).astype(np.int64)
    return np.repeat(np.arange(len(bins)), np.maximum(repeats, 1))


def make_dataloader(
    split: datasets.Dataset,
    flux_transform: FluxTransform,
    batch_size: int,
    shuffle: bool = True,
    augment: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = True,
    in_memory: bool = False,
    indices: Sequence[int] | None = None,
) -> DataLoader:
    """A plain, seeded ``DataLoader`` of ``{"images": (B, 5, H, W), "redshifts": (B,)}`` batches.

    The order (and the augmentation draws) depend only on ``seed``, so ``accelerator.prepare``
    can shard it and ``accelerator.skip_first_batches`` can resume it.

    Args:
        split: a converted split (see :func:`load_split`).
        flux_transform: flux -> model-space transform.
        batch_size: images per batch.
        shuffle: reshuffle every epoch.
        augment: random dihedral (flip / 90-degree rotation) augmentation.
        num_workers: DataLoader worker processes (0: read in the main process).
        seed: seed of the shuffle order and the augmentation.
        drop_last: drop the last incomplete batch.
        in_memory: read and transform the split once into memory (see :class:`GalaxyImageDataset`).
        indices: the rows of one epoch, repeats allowed (e.g. :func:`redshift_balanced_indices`);
            None: every row once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if drop_last and len(split) < batch_size:
        raise ValueError(
            f"The split has {len(split)} rows, fewer than batch_size={batch_size} with drop_last=True: "
            "no batch would be produced; lower the batch size."
        )
    dataset = GalaxyImageDataset(split, flux_transform, augment=augment, seed=seed, in_memory=in_memory)
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, [int(i) for i in indices])
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )
