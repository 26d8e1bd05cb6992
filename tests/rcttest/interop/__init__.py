"""One entry module per interop test script in tests/interop/.

Each is run as `python3 -m rcttest.interop.NAME SUBCOMMAND ARGS...` by
tests/interop/NAME.sh; the shell script keeps the daemon handling and the
narrative, the module the checks.
"""
