#!/usr/bin/env bash
# Runs every libFuzzer target of every crates/*/fuzz project for a fixed time each and prints
# a summary: project, target, seconds, inputs run, crashes (goal: 0). Nightly-style: not part
# of scripts/test.sh.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Only a stable toolchain is installed here, and
# cargo-fuzz passes nightly flags (-Zsanitizer=address, -Zunstable-options): RUSTC_BOOTSTRAP=1
# makes stable rustc accept them. The sanitizer runtimes ship with the stable std.
#
# Each target starts from its committed seeds (corpus/TARGET/seed-*) plus whatever earlier runs
# added to its corpus folder (git-ignored). A crash, leak, timeout or out-of-memory input is
# written to crates/NAME/fuzz/artifacts/TARGET/ and counted; libFuzzer stops a target at its
# first one. The summary goes to stdout and to target/fuzz/summary.tsv, the logs beside it.
set -euo pipefail

budget=${1:-60}
if ! [[ $budget =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]  (a positive whole number, default 60)" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: run \`cargo install cargo-fuzz\`" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=1

out=$root/target/fuzz
mkdir -p "$out"
summary=$out/summary.tsv
printf 'project\ttarget\tseconds\tinputs\tcrashes\n' >"$summary"
failed=0

for proj in "$root"/crates/*/fuzz; do
    [ -f "$proj/Cargo.toml" ] || continue
    name=$(basename "$(dirname "$proj")")
    echo "== building the fuzz targets of $name" >&2
    (cd "$proj" && cargo fuzz build -O) >"$out/$name-build.log" 2>&1 || {
        echo "cannot build the fuzz targets of $name: see $out/$name-build.log" >&2
        printf '%s\t%s\t%s\t%s\t%s\n' "$name" "(build)" 0 0 "build failed" >>"$summary"
        failed=1
        continue
    }
    for target in $(cd "$proj" && cargo fuzz list); do
        artifacts=$proj/artifacts/$target
        mkdir -p "$artifacts" "$proj/corpus/$target"
        before=$(find "$artifacts" -type f | wc -l)
        log=$out/$name-$target.log
        echo "== $name/$target for $budget s" >&2
        # -rss_limit_mb and -malloc_limit_mb: an input that makes the code under test hold
        # or ask for more than 512 MiB is a finding. -timeout: one input taking 20 s is a hang.
        set +e
        (cd "$proj" && cargo fuzz run -O "$target" -- \
            -max_total_time="$budget" -print_final_stats=1 \
            -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=20) >"$log" 2>&1
        rc=$?
        set -e
        inputs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        crashes=$(($(find "$artifacts" -type f | wc -l) - before))
        if [ -z "$inputs" ]; then
            echo "$name/$target printed no statistics (exit $rc): see $log" >&2
            inputs=0
            failed=1
        fi
        if [ "$crashes" -ne 0 ] || [ "$rc" -ne 0 ]; then
            echo "$name/$target: $crashes finding(s), exit $rc: see $log and $artifacts" >&2
            failed=1
        fi
        printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$target" "$budget" "$inputs" "$crashes" >>"$summary"
    done
done

column -t -s $'\t' "$summary"
echo "summary: $summary" >&2
exit "$failed"
