#!/usr/bin/env bash
# Every GPU figure in one table, from a bare machine, within DEVICE_LIMIT_S (480 s).
#
#   bash benchmarks/device.sh [--dry-run] [benchmarks/device.py's options]
#
# Makes .venv and installs the package with its dev and bench extras when .venv cannot
# import avvp, then runs benchmarks/device.py with whatever time is left. The table goes
# to stdout and to ${OUT:-/tmp/avvp-device}/device-table.md, this script's whole output
# to device-log.txt there, each step's output to device-STEP.log. Every step runs under a
# timeout, so a slow install or a hung step still ends in the table, its rows saying why.
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

{
    if ! .venv/bin/python -c "import avvp" 2>/dev/null; then
        echo "installing into .venv (python3 is $(python3 --version 2>&1))"
        # The measured steps need about 3 minutes; the install gets the rest.
        if ! { python3 -m venv .venv &&
            timeout "$(left 200)" .venv/bin/pip install -q --progress-bar off \
                -e ".[dev,bench]"; }; then
            # device.py needs only the standard library to print the table.
            python3 benchmarks/device.py --out "$out" \
                --not-run "not run: the install failed or timed out (device-log.txt)"
            exit 1
        fi
        echo "installed in $((SECONDS - started)) s"
    fi
    # device.py shares out its budget among the steps; the outer timeout is a backstop.
    budget=$(left 15)
    timeout -k 5 "$(left 5)" .venv/bin/python benchmarks/device.py \
        --budget "$budget" --out "$out" "$@"
} 2>&1 | tee "$out/device-log.txt"
