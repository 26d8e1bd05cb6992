#!/bin/bash
# NBD over TLS: rctd beside nbdkit --tls=require (X.509 server certificate,
# TCP on loopback) through fio's nbd engine, and rctd in the clear on the
# same listener, in alternating rounds; per-round ratios, medians, JSON.
# Details: tests/rcttest/bench/tls.py.
#
# Usage: bench/tls.sh [JSON-OUT]
# Environment: RCT_BENCH_ROUNDS (3), RCT_BENCH_RUNTIME (seconds per run, 5),
#   RCT_BENCH_SIZE (1G), RCT_BENCH_DIR (/var/tmp), RCTD, RCTCTL.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}
case ${1:-} in
    -h | --help) sed -n '/^# Usage:/,/^#   RCT_BENCH_SIZE/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
export PATH=/usr/bin:$PATH
exec /usr/bin/python3 -m rcttest.bench.tls "$@"
