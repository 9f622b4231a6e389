#!/usr/bin/env bash
# The fuzzing campaign of docs/fuzzing.md: every target (or those named), one
# at a time, for SECONDS each (default 120), with cargo-fuzz on nightly, at
# low priority; then one Markdown table row per target.
#
#   bash fuzz/campaign.sh [SECONDS] [TARGET...]
#
# Needs `rustup toolchain install nightly` and `cargo install cargo-fuzz`.
# Seeds are read from fuzz/corpus/TARGET; what the run adds goes to
# $CAMPAIGN_DIR/corpus/TARGET (default fuzz/target/campaign), so the corpora
# in the repository stay small. Failing inputs land in fuzz/artifacts/TARGET/.
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:-120}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^path = "fuzz_targets\/\(.*\)\.rs"$/\1/p' fuzz/Cargo.toml)
fi
out=${CAMPAIGN_DIR:-fuzz/target/campaign}
mkdir -p "$out"

# Build once (every target), then run the binaries themselves: the time limit
# is spent fuzzing, and a source change during the campaign rebuilds nothing.
nice cargo +nightly fuzz build --features libfuzzer || exit 1
bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release

rows=()
for t in "${targets[@]}"; do
    mkdir -p "$out/corpus/$t"
    log="$out/$t.log"
    mkdir -p "fuzz/artifacts/$t"
    timeout $((secs + 300)) nice "$bin/$t" "$out/corpus/$t" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    seeds=$(ls "fuzz/corpus/$t" | wc -l)
    if [ $rc -eq 0 ]; then
        found="none"
    else
        found="exit $rc: $(grep -m1 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | cut -c1-120)"
    fi
    row="| $t | $secs | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $seeds | ${corp:-?} | $found |"
    echo "$row"
    rows+=("$row")
done

echo
echo "| target | seconds | executions | exec/s | coverage (edges) | features | seeds | corpus at end (files/bytes) | findings |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
