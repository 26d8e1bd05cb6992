#!/bin/bash
# Guest scenario: the kernel's nbd client against rctd.
source /rct/lib.sh
load_module nbd nbds_max=4
start_rctd
step "rctd started"
rctctl create d --size 256M
nbd_connect /dev/nbd0 d
step "nbd0 connected"
pass
