#!/usr/bin/env bash
# The long mode (FUZZING.md): each target under libFuzzer for RUNS inputs
# (default 1 000 000), one after another, niced. Needs `cargo install
# cargo-fuzz`; stable Rust works with RUSTC_BOOTSTRAP=1 (cargo fuzz passes
# -Z flags) and no sanitizer (-s none).
#
#   fuzz/run-long.sh [TARGET...]        # default: cli config proxy env
#   RUNS=50000 fuzz/run-long.sh proxy
#
# New inputs go to fuzz/work/TARGET/ (not kept), crashes to
# fuzz/artifacts/TARGET/; the seeds in fuzz/corpus/TARGET/ are only read.
set -euo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-1000000}
max_time=${MAX_TIME:-5400}
export RUSTC_BOOTSTRAP=1
targets=("$@")
((${#targets[@]})) || targets=(cli config proxy env)
for t in "${targets[@]}"; do
    mkdir -p "work/$t"
    echo "== $t: $runs runs" >&2
    start=$(date +%s)
    nice -n 15 cargo fuzz run -s none "$t" "work/$t" "corpus/$t" -- \
        -dict="dicts/$t.dict" -runs="$runs" -max_total_time="$max_time" \
        -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=2 -max_len=4096 \
        -print_final_stats=1
    echo "== $t: done in $(($(date +%s) - start)) s" >&2
done
