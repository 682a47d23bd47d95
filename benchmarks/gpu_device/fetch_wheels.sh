#!/usr/bin/env bash
# Download the cp312 wheels that the GPU machine lacks into .whl/ (ignored by git), at constraints.txt's
# versions, and shrink GalSim's to fit the device tool's 64 MiB limit (its extension stripped of symbols,
# the Roman and sensor data dropped). Run here, with the package registries in reach:
#   bash benchmarks/gpu_device/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
pin() { grep -i "^$1==" constraints.txt | head -n 1; }
packages=(diffusers importlib_metadata datasets dill multiprocess GalSim LSSTDESC.Coord photutils astropy pyerfa astropy-iers-data)
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
for name in "${packages[@]}"; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "$(pin "$name")"
done
# GalSim: strip the extension's symbols (about 199 MB -> 5 MB; it still works) and drop share/roman, share/sensors.
galsim_wheel=$(ls .whl/[Gg]al[Ss]im-*.whl)
work=$(mktemp -d)
python3 -m zipfile -e "$galsim_wheel" "$work"
find "$work" -name '*.so' -exec strip --strip-unneeded {} +
rm -rf "$work"/galsim/share/roman "$work"/galsim/share/sensors
rm "$galsim_wheel"
(cd "$work" && python3 -m zipfile -c "$OLDPWD/$galsim_wheel" ./*)
rm -rf "$work"
du -ch .whl/*.whl | tail -n 1
