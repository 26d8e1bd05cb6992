#!/bin/bash
# Replication: rct-backup replicate of a 1% diff against copying the whole
# disk, between two rctd on one machine, in alternating rounds.
#
# Usage: bench/replicate.sh [--quick] [--size 4G] [--rounds 5]
#   --quick   a 512M disk, 3 rounds
# Environment: RCTD, RCTCTL, RCT_BACKUP (default: the build tree's);
#   RCT_BENCH_DIR for the work directory (default /var/tmp).
# Logic: tests/rcttest/bench/replicate.py; results: docs/performance.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}
size=4G
rounds=5
while (($#)); do
    case $1 in
        --quick) size=512M; rounds=3; shift ;;
        --size) size=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -h | --help) sed -n '/^# Usage:/,/^# Logic/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "replicate: unknown argument $1" >&2; exit 2 ;;
    esac
done
command -v nbdcopy >/dev/null || { echo "replicate: nbdcopy is needed" >&2; exit 2; }
W=$(mktemp -d "${RCT_BENCH_DIR:-/var/tmp}/rct-replbench.XXXXXX")
trap 'rm -rf "$W"' EXIT
/usr/bin/python3 -m rcttest.bench.replicate run "${RCTD:-$ROOT/build/daemon/rctd}" \
    "${RCTCTL:-$ROOT/build/tools/rctctl}" "${RCT_BACKUP:-$ROOT/build/tools/rct-backup}" "$W" "$size" "$rounds"
