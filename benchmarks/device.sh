#!/usr/bin/env bash
# Every GPU figure in one table, from a bare machine, within DEVICE_LIMIT_S (480 s).
#
#   bash benchmarks/device.sh [--dry-run] [benchmarks/device.py's options]
#   bash benchmarks/device.sh --profile [benchmarks/device_profile.py's options]
#
# The Python it runs on, when .venv cannot import avvp:
# - with .whl/device-site.tar.xz (made here by benchmarks/device_packages.sh, carried to
#   the GPU machine, which reaches no package index): the machine's own python3 and its
#   torch, the packed packages unpacked (into $TMPDIR) before its own, and this
#   repository as the package avvp;
# - else: a new .venv with the package and its dev and bench extras from the index.
# The table goes to stdout and to ${OUT:-/tmp/avvp-device}/device-table.md, this
# script's whole output to device-log.txt there, each step's output to device-STEP.log.
# Every step runs under a timeout, so a slow install or a hung step still ends in the
# table, its rows saying why.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

limit=${DEVICE_LIMIT_S:-480}
out=${OUT:-/tmp/avvp-device}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
started=$SECONDS
# Seconds left of the limit less $1, at least 1 (`timeout 0` would mean no limit at all).
left() {
    local seconds=$((limit - (SECONDS - started) - ${1:-0}))
    echo $((seconds < 1 ? 1 : seconds))
}
# The table with every row saying why nothing ran; device.py needs only the standard
# library for it.
not_run() {
    python3 benchmarks/device.py --out "$out" --not-run "not run: $1 (device-log.txt)"
    exit 1
}

{
    python=.venv/bin/python
    if "$python" -c "import avvp" 2>/dev/null; then
        :
    elif [ -f .whl/device-site.tar.xz ]; then
        python=${AVVP_DEVICE_PYTHON:-python3}
        # Unpacked outside the tree (a carried folder must stay small), once per pack.
        packed=$(sha256sum .whl/device-site.tar.xz | cut -c 1-12)
        site=${TMPDIR:-/tmp}/avvp-device-site-$packed
        if [ ! -d "$site" ] && ! {
            rm -rf "$site.partial" && mkdir -p "$site.partial" &&
                "$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
                    .whl/device-site.tar.xz "$site.partial" &&
                mv "$site.partial" "$site"
        }; then
            not_run ".whl/device-site.tar.xz did not unpack"
        fi
        # The repository is the package's root (pyproject's package-dir): a link named
        # avvp to it, outside the tree, makes it importable without an install.
        source=${TMPDIR:-/tmp}/avvp-device-source
        mkdir -p "$source" && ln -sfn "$PWD" "$source/avvp"
        export PYTHONPATH="$source:$site${PYTHONPATH:+:$PYTHONPATH}"
        echo "$("$python" --version 2>&1) at $(command -v "$python"), packages from $site"
    else
        echo "installing into .venv (python3 is $(python3 --version 2>&1))"
        # The measured steps need about 3 minutes; the install gets the rest.
        if ! { python3 -m venv .venv &&
            timeout "$(left 200)" .venv/bin/pip install -q --progress-bar off \
                -e ".[dev,bench]"; }; then
            not_run "the install failed or timed out"
        fi
        echo "installed in $((SECONDS - started)) s"
    fi
    if [ "${1:-}" = "--profile" ]; then
        # Where the time goes rather than the figures (device_profile.py's options follow).
        shift
        timeout -k 5 "$(left 5)" "$python" benchmarks/device_profile.py --out "$out" "$@"
    else
        # device.py shares out its budget among the steps; the outer timeout is a backstop.
        budget=$(left 15)
        timeout -k 5 "$(left 5)" "$python" benchmarks/device.py \
            --budget "$budget" --out "$out" "$@"
    fi
} 2>&1 | tee "$out/device-log.txt"
