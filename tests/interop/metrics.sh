#!/bin/bash
# GET /metrics in the Prometheus text format (docs/metrics.md), parsed with
# prometheus_client's parser: counters move by exactly what a known NBD
# workload asked (errors included), histograms add up, gauges are current.
# Logic: tests/rcttest/interop/metrics.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null ||
    skip "/usr/bin/python3 has no prometheus_client (python3-prometheus-client)"

start_rctd
rctctl create d --size 16M >/dev/null
say "a known workload against the counters"
py -m rcttest.interop.metrics run "$STATE/control.sock" "$(uri d)" d $((16 << 20)) || fail "metrics"
say "rctctl stats"
out=$(rctctl stats d) || fail "rctctl stats failed"
echo "$out"
grep -q '^d ' <<<"$out" || fail "rctctl stats has no row for d"
say "PASS"
