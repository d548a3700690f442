#!/usr/bin/env bash
# Build the offline GPU kit on a connected machine (PyPI reachable, the data in ../shared/data or $ILREC_DATA_DIR):
#   bash benchmarks/device/make_kit.sh [--users 6000] [--data_dir DIR]
# Writes .device_kit/a and .device_kit/b (git-ignored), one folder per transfer to the GPU machine, and prints each
# one's size together with the working tree (each must stay within 64 MiB). See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python -m benchmarks.device.kit build "$@"
