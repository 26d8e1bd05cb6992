"""Helpers of the benchmarks in bench/ (bench/NAME.sh runs
`/usr/bin/python3 -m rcttest.bench.NAME SUBCOMMAND ARGS...` with
PYTHONPATH=tests)."""
