#!/usr/bin/env bash
# Runs the whole test suite N times (default 20) while a CPU hog keeps both
# cores busy, then prints `N passed, M failed` alone on a line, followed by
# the failing tests of each failed run. Exit status 1 if any run failed.
#
#   scripts/stress-tests.sh [N]
#
# Builds once first (not under the hog); each run's full output is kept in
# target/stress/run-K.log.
set -uo pipefail
n="${1:-20}"
case "$n" in
    '' | *[!0-9]*) echo "usage: $0 [RUNS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
logs=target/stress
mkdir -p "$logs"

echo "building the test suite" >&2
cargo test --workspace --no-run >"$logs/build.log" 2>&1 || { cat "$logs/build.log" >&2; exit 1; }

# The hog: one busy process per core, always killed on exit.
hogs=()
stop_hogs() {
    local pid
    for pid in "${hogs[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${hogs[@]}"; do
        wait "$pid" 2>/dev/null
    done
    hogs=()
}
trap stop_hogs EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$(nproc)"); do
    yes >/dev/null &
    hogs+=("$!")
done

passed=0
failed=0
failures=()
for k in $(seq "$n"); do
    log="$logs/run-$k.log"
    if cargo test --workspace --no-fail-fast >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "run $k/$n: passed" >&2
    else
        failed=$((failed + 1))
        names=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | tr '\n' ' ')
        [ -n "$names" ] || names="(no test failed: see $log)"
        failures+=("run $k: $names")
        echo "run $k/$n: FAILED: $names" >&2
    fi
done
stop_hogs

echo "$passed passed, $failed failed"
for f in "${failures[@]}"; do
    echo "$f"
done
[ "$failed" -eq 0 ]
