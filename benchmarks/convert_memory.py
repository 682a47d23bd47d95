"""Peak memory and throughput of `convert_galaxiesml` on a GalaxiesML-schema file of several GB.

    OMP_NUM_THREADS=1 python benchmarks/convert_memory.py [--gigabytes 2.0] [--chunk-size 512] [--num-proc N]
                                                          [--folder DIR]

Writes a file of ``--gigabytes`` of images (chunked writes, in a child process so that its memory
is not counted) into a temporary folder, converts it in this process and prints:

- peak RSS of this process (``resource.getrusage``: ``ru_maxrss``), and the peak summed RSS of
  the conversion's child processes (sampled with psutil; there are some with ``--num-proc``),
  and their summed USS: forked children share the imported libraries' pages with this process,
  which their RSS counts again;
- the peak of the anonymous (heap) and of the file-backed part of the RSS, sampled every 20 ms
  from ``/proc/self/status``. File-backed pages are the shared libraries and the memory-mapped
  Arrow files that ``datasets`` reads while saving: one piece of ``PIECE_BYTES`` at a time,
  released before the next (the kernel could also drop them under memory pressure, as page cache);
- throughput in MB/s of input HDF5.
Target: peak RSS < 1.5 GB.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import datasets
import h5py
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from galaxiesml_files import write_galaxiesml_file  # noqa: E402

from galaxy_pipeline.data.galaxiesml import PIECE_BYTES, convert_galaxiesml  # noqa: E402
from galaxy_pipeline.data.schema import IMAGE_SHAPE  # noqa: E402

TARGET_PEAK_RSS_GB = 1.5


def _status_megabytes() -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of this process in MB (Linux)."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0]) / 1024
    return values


def _children_megabytes() -> tuple[float, float]:
    """Summed RSS and USS (pages no other process shares) of this process's living descendants, MB."""
    rss = uss = 0
    for child in psutil.Process().children(recursive=True):
        try:
            memory = child.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += memory.rss
        uss += memory.uss
    return rss / 2**20, uss / 2**20


class MemorySampler(threading.Thread):
    """Samples this process's RSS parts and its children's summed RSS every ``interval`` s; keeps peaks (MB)."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peaks = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0, "children": 0.0, "children_uss": 0.0}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for key, value in _status_megabytes().items():
                self.peaks[key] = max(self.peaks[key], value)
            rss, uss = _children_megabytes()
            self.peaks["children"] = max(self.peaks["children"], rss)
            self.peaks["children_uss"] = max(self.peaks["children_uss"], uss)
            time.sleep(self.interval)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return self.peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="image data to write, GB (default 2.0)")
    parser.add_argument("--chunk-size", type=int, default=512, help="conversion chunk, rows (default 512)")
    parser.add_argument("--num-proc", type=int, default=None, help="conversion reader processes (default one)")
    parser.add_argument("--folder", default=None, help="where to put the temporary files (default: system temp)")
    args = parser.parse_args()

    rows = math.ceil(args.gigabytes * 1e9 / (4 * math.prod(IMAGE_SHAPE)))
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        source = Path(folder) / "5x64x64_training_with_morphology.hdf5"
        start = time.perf_counter()
        writer = multiprocessing.get_context("spawn").Process(target=write_galaxiesml_file, args=(source, rows))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise SystemExit(f"writing {source} failed (exit code {writer.exitcode})")
        print(f"wrote {rows} rows, {source.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s")
        print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sampler = MemorySampler()
        sampler.start()
        summary = convert_galaxiesml(
            {"train": source}, Path(folder) / "converted", chunk_size=args.chunk_size, num_proc=args.num_proc
        )
        peaks = sampler.stop()
        peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        reloaded = datasets.load_from_disk(str(Path(folder) / "converted"))["train"]
        with h5py.File(source, "r") as file:
            same = len(reloaded) == rows and reloaded[-1]["object_id"] == file["object_id"][-1]
        print(f"reloaded: {len(reloaded)} rows; row count and last object_id match the file: {same}")
        del reloaded

    print(summary)
    print(f"pieces of {PIECE_BYTES / 2**20:.0f} MiB; RSS before converting (imports): {before:.0f} MB")
    print(f"peak RSS, this process (ru_maxrss):     {peak_self:.0f} MB")
    print(f"peak summed RSS of conversion children: {peaks['children']:.0f} MB (sampled)")
    print(f"peak summed USS of conversion children: {peaks['children_uss']:.0f} MB (sampled; unshared pages)")
    print(f"peak anonymous RSS (sampled):           {peaks['RssAnon']:.0f} MB")
    print(f"peak file-backed RSS (sampled, mmap):   {peaks['RssFile']:.0f} MB")
    print(f"throughput: {summary.megabytes_per_second:.1f} MB/s of input HDF5")
    total = peak_self + peaks["children"]
    verdict = "met" if total < TARGET_PEAK_RSS_GB * 1024 else "NOT met"
    print(f"target peak RSS (this process + children) < {TARGET_PEAK_RSS_GB} GB: {verdict} ({total / 1024:.2f} GB)")


if __name__ == "__main__":
    main()
