"""Throughput of the GalSim mock writer: galaxies per second with 1 and with 2 worker processes.

    OMP_NUM_THREADS=1 python benchmarks/mock_throughput.py [--n 400] [--seed 0]

Writes ``n`` galaxies to a temporary HDF5 file per run (the full path: parameters, rendering,
noise, chunked writing). The one-off set-up (K-correction tables, PSF noise) is timed apart.
The machine's load average is printed, as other jobs sharing the cores lower the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from galaxy_pipeline.data.mock import pixel_noise_sigma, write_mock
from galaxy_pipeline.data.mock_population import photometry_tables


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes), seconds."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="galaxies per run (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    photometry_tables()
    pixel_noise_sigma()
    print(f"set-up (K-correction tables, noise): {time.perf_counter() - start:.2f} s")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for workers in (1, 2):
            start, cpu_start = time.perf_counter(), cpu_seconds()
            write_mock(Path(folder) / f"mock_{workers}.hdf5", args.n, args.seed, workers=workers, progress=False)
            rates[workers] = args.n / (time.perf_counter() - start)
            cpu_ms = 1000 * (cpu_seconds() - cpu_start) / args.n
            print(
                f"{workers} worker(s): {rates[workers]:7.1f} galaxies/s ({args.n} galaxies; "
                f"{cpu_ms:.1f} CPU ms per galaxy, i.e. {1000 / cpu_ms:.0f} galaxies/s per idle core)"
            )
    print(f"speed-up 2 vs 1 worker: {rates[2] / rates[1]:.2f}x; target >= 100 galaxies/s with 2 workers")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
