#!/bin/bash
# What a live upgrade (`rctctl upgrade`) costs rctd's NBD clients, and how
# long it takes: the longest any request waited across an upgrade (the
# pause) against the normal tail, and the daemon's held_ms and took_ms, over
# N upgrades under load, for a small disk (nbd), a 1 TiB disk with many
# checkpoints and a large change map (big) and many idle connections beside
# the busy ones (conns), in alternating rounds; on request also with
# unflushed writes in the page cache (dirty); with --peer, the same on a
# second build, alternating. A default run takes 2-4 minutes.
# Every upgrade must succeed and move every connection; the load must see
# no error, no wrong data and no reconnect. Bar (issue): NBD pause <= 100 ms
# at the 99th percentile of upgrades. Details: tests/rcttest/bench/upgrade.py.
#
# Usage: bench/upgrade.sh [--quick] [--variants nbd,big,conns[,dirty]]
#                         [--peer RCTD] [--out FILE]
# Environment: RCT_UPGRADE_COUNT (upgrades per variant, 30), _ROUNDS (3),
#   _GAP_MS (300), _BUSY (4), _QD (8), _RATE (1000 requests/s per busy
#   connection, 0 = unlimited), _WRITE_PCT (50), _REGION (32M), _SIZE (1G),
#   _IDLE (64), _DIRTY (128M), _BIG_SIZE (1T), _GRANULARITY (64K),
#   _CHECKPOINTS (200), _SEAL_WRITES (250), _LIVE_WRITES (100000);
#   RCT_BENCH_DIR (default /var/tmp), RCTD, RCTCTL.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}
export RCT_SOURCE_ROOT=$ROOT
case ${1:-} in
    -h | --help) sed -n '/^# Usage:/,/^#   RCT_BENCH_DIR/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
# The system Python has the nbd module (docs: environment.md).
exec /usr/bin/python3 -m rcttest.bench.upgrade "$@"
