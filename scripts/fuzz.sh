#!/usr/bin/env bash
# Fuzzes every decoder and parser target under fuzz/ for SECONDS_PER_TARGET
# (default 60) each, then prints a summary: runs, new corpus entries and
# crashes per target. Exit status 1 if any target crashed.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Needs only the stable toolchain: cargo-fuzz's nightly flags
# (-Zsanitizer=address, sanitizer coverage) are unlocked with
# RUSTC_BOOTSTRAP=1. Set FUZZ_SANITIZER=none to fuzz without AddressSanitizer
# (faster; the code under test has no unsafe).
#
# A crash leaves its input in fuzz/artifacts/TARGET/; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# and turn it into a test in tests/regressions.rs.
set -euo pipefail

secs="${1:-60}"
shift || true
case "$secs" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets found in fuzz/" >&2; exit 1; }

echo "building ${#targets[@]} targets (sanitizer: $sanitizer)" >&2
cargo fuzz build --sanitizer "$sanitizer"

count() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }
logdir="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-fuzz.XXXXXX")"
summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    corpus0=$(count "corpus/$t")
    crashes0=$(count "artifacts/$t")
    log="$logdir/$t.log"
    echo "fuzzing $t for ${secs}s (log: $log)" >&2
    set +e
    cargo fuzz run --sanitizer "$sanitizer" "$t" -- -max_total_time="$secs" -rss_limit_mb=1024 >"$log" 2>&1
    status=$?
    set -e
    runs=$(grep -oE '^Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+' || true)
    if [ -z "$runs" ]; then
        # Stopped by a crash: the last status line has the run count.
        runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    fi
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
    new=$(($(count "corpus/$t") - corpus0))
    crashes=$(($(count "artifacts/$t") - crashes0))
    result="ok"
    if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        result="FAILED (exit $status)"
        input=$(grep -A2 'Output of `std::fmt::Debug`' "$log" | tail -1 | sed 's/^[[:space:]]*//' || true)
        artifact=$(grep -oE 'artifacts/[^ ]+/(crash|leak|oom|timeout|slow-unit)-[0-9a-f]+' "$log" | tail -1 || true)
        msg=$(grep -m1 -A1 -E 'panicked at|ERROR: ' "$log" | tr '\n' ' ' || true)
        echo "  $t: $msg" >&2
        [ -n "$input" ] && echo "  $t: input $input" >&2
        [ -n "$artifact" ] && echo "  $t: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/$artifact" >&2
    fi
    summary+=("$(printf '%-18s %12s %6s %8s %8s  %s' "$t" "${runs:-?}" "${cov:-?}" "$new" "$crashes" "$result")")
done

echo
printf '%-18s %12s %6s %8s %8s  %s\n' target runs cov new-corp crashes result
printf '%s\n' "${summary[@]}"
echo "(${secs}s per target; logs in $logdir)"
exit "$failed"
