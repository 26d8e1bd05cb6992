"""Python helpers of rct's tests.

The library modules (cli, control, extents, nbdio, patterns, rctctl) hold what
several tests share: talking to rctd (NBD through libnbd, the control API,
rctctl), the data patterns the workloads write and read back, and extent
arithmetic. rcttest.interop holds one entry module per interop test script
(tests/interop/NAME.sh runs `python3 -m rcttest.interop.NAME ...`), and
rcttest.bench the benchmarks' helpers.

Only the standard library and libnbd's binding (python3-libnbd, module nbd)
are used; tests/interop/lib.sh runs them with /usr/bin/python3 and
PYTHONPATH=tests.
"""
