#!/bin/bash
# One fuzz test: run HARNESS over its seed corpus, then fuzz for
# FUZZ_SECONDS (default 10) more. libFuzzer adds the inputs it finds to a
# temporary copy of the corpus, so the repository is never modified. A
# crash, leak, sanitizer report or timeout fails the test; the input is
# kept in ARTIFACT_DIR as crash-*, leak-*, timeout-* or oom-*.
#   run.sh HARNESS CORPUS_DIR ARTIFACT_DIR
set -euo pipefail
harness=$1 corpus=$2 artifacts=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$artifacts"
cp -r "$corpus/." "$work/corpus/"
"$harness" -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=1024 -timeout=10 -error_exitcode=1 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$(basename "$harness")-" "$work/corpus"
