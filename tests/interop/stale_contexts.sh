#!/bin/bash
# Answers bound to their history, with real clients: a qemu:dirty-bitmap:
# context negotiated by libnbd keeps answering while other checkpoints are
# deleted and fails once tracking is reset (a forced shrink); a changes
# cursor fails once its checkpoint is deleted and made again under the same
# name. Logic: tests/rcttest/interop/stale_contexts.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
CTL=$STATE/control.sock

start_rctd
rctctl create d --size 16M >/dev/null
say "dirty-bitmap contexts"
py -m rcttest.interop.stale_contexts context "$(uri d)" "$CTL" d
rctctl create e --size 16M >/dev/null
say "changes cursors"
py -m rcttest.interop.stale_contexts cursor "$CTL" e "$(uri e)"
say "PASS"
