"""The Hub dataset card of a converted GalaxiesML dataset, and its upload with the card.

    >>> url = push_dataset_to_hub("galaxiesml", "user/galaxiesml")   # a folder from convert_galaxiesml

The card lists every split (rows kept and dropped, source file), every column with its physical
unit (:func:`describe_column`), the licence and the citation of GalaxiesML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from galaxy_pipeline.data.galaxiesml import CONVERSION_RECORD
from galaxy_pipeline.data.loading import load_converted_dataset
from galaxy_pipeline.data.schema import (
    IMAGE_KEY,
    OBJECT_ID_KEY,
    PER_BAND_QUANTITIES,
    REDSHIFT_COLUMN,
    REDSHIFT_ERROR_KEY,
)
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC
from galaxy_pipeline.hub_ids import hub_errors
from galaxy_pipeline.version import __version__

ZENODO_URL = "https://zenodo.org/records/11117528"
ARXIV_ID = "2410.00271"
CITATION = """@article{do2024galaxiesml,
  title         = {GalaxiesML: a dataset of galaxy images, photometry, redshifts, and structural parameters
                   for machine learning},
  author        = {Do, Tuan and Boscoe, Bernie and Jones, Evan and Li, Yun Qi and Alfaro, Kevin},
  year          = {2024},
  eprint        = {2410.00271},
  archivePrefix = {arXiv},
  primaryClass  = {astro-ph.IM}
}

@dataset{galaxiesml_zenodo,
  title     = {GalaxiesML},
  author    = {Do, Tuan and Boscoe, Bernie and Jones, Evan and Li, Yun Qi and Alfaro, Kevin},
  year      = {2024},
  publisher = {Zenodo},
  doi       = {10.5281/zenodo.11117528},
  url       = {https://zenodo.org/records/11117528}
}"""


def describe_column(name: str) -> str:
    """A one-line description of a converted GalaxiesML column, with its physical unit."""
    pixel = f"pixels ({PIXEL_SCALE_ARCSEC} arcsec each)"
    known = {
        IMAGE_KEY: (
            f"float32 (5, 64, 64) fluxes, channels {', '.join(BANDS)}; HSC coadd units with AB zero point "
            f"{MAG_ZERO_POINT:g} (mag = {MAG_ZERO_POINT:g} - 2.5 log10 flux); {PIXEL_SCALE_ARCSEC} arcsec/pixel"
        ),
        REDSHIFT_COLUMN: "spectroscopic redshift z (dimensionless; GalaxiesML `specz_redshift`)",
        REDSHIFT_ERROR_KEY: "uncertainty of the spectroscopic redshift (dimensionless)",
        OBJECT_ID_KEY: "HSC-SSP PDR2 object identifier",
        "ra": "right ascension, degrees (ICRS)",
        "dec": "declination, degrees (ICRS)",
        "specz_ra": "right ascension of the spectroscopic counterpart, degrees",
        "specz_dec": "declination of the spectroscopic counterpart, degrees",
        "specz_name": "name of the spectroscopic counterpart in its survey",
        "skymap_id": "HSC skymap identifier (tract, patch)",
        "coord": "sky position as text",
    }
    per_band = {
        "cmodel_mag": "CModel magnitude, AB mag",
        "cmodel_magsigma": "CModel magnitude uncertainty, AB mag",
        "ellipticity": "ellipticity 1 - b/a (dimensionless)",
        "sersic_index": "Sersic index n (dimensionless)",
        "major_axis": f"semi-major axis, {pixel}",
        "minor_axis": f"semi-minor axis, {pixel}",
        "isophotal_area": "isophotal area, square pixels",
        "half_light_radius": f"half-light radius, {pixel}",
        "petro_rad": f"Petrosian radius, {pixel}",
        "pos_angle": "position angle, degrees",
    }
    if name in known:
        return known[name]
    band, _, quantity = name.partition("_")
    if band in BANDS and quantity in per_band:
        return f"{band} band: {per_band[quantity]}"
    if band in BANDS and quantity in PER_BAND_QUANTITIES:
        return f"{band} band: {quantity.replace('_', ' ')}"
    return "GalaxiesML catalog column (see Do et al. 2024)"


def render_dataset_card(dataset: datasets.DatasetDict, record: Mapping | None = None) -> DatasetCard:
    """A Hub dataset card for a converted GalaxiesML ``DatasetDict``.

    Args:
        dataset: the converted splits.
        record: the conversion record (``galaxiesml_conversion.json``): sources and dropped rows.
    """
    total = sum(len(split) for split in dataset.values())
    size = next(label for limit, label in _SIZE_CATEGORIES if total < limit)
    card_data = DatasetCardData(
        license="cc-by-4.0",
        pretty_name="GalaxiesML (HSC PDR2 5x64x64 cutouts with spectroscopic redshifts)",
        size_categories=[size],
        task_categories=["unconditional-image-generation"],
        tags=["astronomy", "galaxies", "hsc", "redshift", "multi-band"],
    )
    split_records = (record or {}).get("splits", {})
    split_rows = []
    for name, split in dataset.items():
        info = split_records.get(name, {})
        dropped = info.get("rows_read", len(split)) - info.get("rows_written", len(split))
        split_rows.append(f"| {name} | {len(split)} | {dropped} | {info.get('source', 'unknown')} |")
    columns = dict.fromkeys(name for split in dataset.values() for name in split.column_names)
    column_rows = [f"| `{name}` | {describe_column(name)} |" for name in columns]
    body = f"""
# GalaxiesML, as a Hugging Face dataset

Hyper Suprime-Cam (HSC-SSP PDR2) galaxy cutouts in five bands (g, r, i, z, y; 64 x 64 pixels of
{PIXEL_SCALE_ARCSEC} arcsec) with spectroscopic redshifts 0-4 and per-band photometry and structural
parameters, from **GalaxiesML** (Do et al. 2024; [Zenodo 11117528]({ZENODO_URL}),
[arXiv:{ARXIV_ID}](https://arxiv.org/abs/{ARXIV_ID})).

Licence: [CC-BY 4.0](https://creativecommons.org/licenses/by/4.0/), as the original release; cite
GalaxiesML (below) and acknowledge HSC-SSP when you use it. Converted with galaxy_pipeline
{record.get("galaxy_pipeline_version", __version__) if record else __version__}; rows whose image had a
non-finite pixel or whose redshift was non-finite were dropped (counted below). Pixels are
unchanged (bitwise float32 copies of the released fluxes).

## Splits

| split | rows | rows dropped | source file |
|---|---|---|---|
{chr(10).join(split_rows)}

## Columns

| column | description |
|---|---|
{chr(10).join(column_rows)}

## Use

```python
from datasets import load_dataset

galaxies = load_dataset("<this repository>", split="train").with_format("numpy")
images, z = galaxies[:16]["image"], galaxies[:16]["redshift"]   # (16, 5, 64, 64) fluxes, (16,)
```

## Citation

```bibtex
{CITATION}
```
"""
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


_SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (float("inf"), "1M<n<10M"),
)


def push_dataset_to_hub(dataset_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a converted dataset to the Hub as ``repo_id``, with its dataset card; return the repo URL.

    The card is uploaded first, so that ``DatasetDict.push_to_hub`` adds its ``dataset_info`` and
    ``configs`` metadata to it rather than replacing it.
    """
    dataset_dir = Path(dataset_dir)
    dataset = load_converted_dataset(dataset_dir)
    record_path = dataset_dir / CONVERSION_RECORD
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else None
    card = render_dataset_card(dataset, record)
    with hub_errors(repo_id):
        repo_url = HfApi(token=token).create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        card.push_to_hub(repo_id, token=token, repo_type="dataset", commit_message="Add GalaxiesML dataset card")
        dataset.push_to_hub(repo_id, private=private, token=token, commit_message="Upload GalaxiesML splits")
    return str(repo_url)
