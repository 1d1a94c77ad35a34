#!/usr/bin/env bash
# Packs the Python packages that the device machine's image lacks into
# .whl/device-site.tar.xz, for benchmarks/device.sh to unpack there.
#
#   bash benchmarks/device_packages.sh        (here, where the package index answers)
#
# Why: the lent GPU machine (nvidia-h200) reaches no package index; its image holds
# Python 3.12 with torch 2.11, torchvision, torchaudio, numpy 2, pyarrow, pandas,
# transformers, timm, matplotlib, scikit-learn, pytest and more, but not these. A call
# to it carries at most 64 MiB (the repository, about 31 MB, included), so the packages
# travel installed for CPython 3.12 and compressed with xz (PyAV's wheel alone is 36 MB,
# 25 MB this way). decord (14 MB) stays behind: PyAV is the decoder's fallback.
set -euo pipefail
cd "$(dirname "$0")/.."

# The versions the CI venv runs; each has a CPython 3.12 manylinux wheel.
packages=(
    av==18.1.0                                    # decoding, the synthetic clips
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4  # CLIP
    laion_clap==1.1.7 torchlibrosa==0.1.0 librosa==0.11.0 soundfile==0.14.0 cffi==2.1.1
    pycparser==3.12 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 platformdirs==4.14.9
    decorator==5.3.1                              # CLAP (HTSAT and its audio front end)
)
limit=$((64 * 1024 * 1024))
tree=$(git ls-files -z | du -cb --files0-from=- | tail -n 1 | cut -f 1)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
python3 -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 --target "$stage/site" "${packages[@]}"
mkdir -p .whl
tar -C "$stage/site" -cf - . | xz -9 -T0 > .whl/device-site.tar.xz.partial
mv .whl/device-site.tar.xz.partial .whl/device-site.tar.xz
packed=$(stat -c %s .whl/device-site.tar.xz)
echo "packed ${#packages[@]} packages: $((packed / 1024 / 1024)) MiB; with the repository" \
    "$(((packed + tree) / 1024 / 1024)) MiB of the 64 MiB a device call carries"
if ((packed + tree > limit)); then
    echo "too large for one device call: pack fewer packages" >&2
    exit 1
fi
