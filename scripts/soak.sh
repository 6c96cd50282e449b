#!/usr/bin/env bash
# Soak: runs switchboard-server (release build) with each handler under a
# steady load of connections that open, talk and close, for DURATION seconds
# per handler (default 60), sampling the server's resident memory, open
# descriptors (/proc/PID/fd) and threads (/proc/PID/task) every few seconds.
# Fails (exit 1) if any of them grows without bound: the average of the last
# third of the samples above the first third's by more than SOAK_GROWTH
# percent (default 25) and an absolute slack (8 MiB, 32 descriptors,
# 2 threads). Also fails if the server does not shut down cleanly (exit 0,
# its report) on SIGTERM at the end.
#
#   scripts/soak.sh [DURATION_SECONDS] [HANDLER...]     (handlers: echo upper chat file)
#
# The load is two clients at once: a small built-in Python client (python3)
# whose connections keep opening, talking and closing, and switchboard-load
# holding a few hundred steady connections in the handler's mode (echo,
# chat, file; upper has none). SOAK_LOAD=builtin runs the Python client
# alone, SOAK_CONNS sets its concurrent clients (default 64), SOAK_INTERVAL
# the sampling period (default 3 s).
set -euo pipefail

duration="${1:-60}"
shift || true
case "$duration" in
    '' | *[!0-9]*) echo "usage: $0 [DURATION_SECONDS] [HANDLER...]" >&2; exit 2 ;;
esac
[ "$duration" -ge 9 ] || { echo "$0: DURATION must be at least 9 seconds (three samples per third)" >&2; exit 2; }
handlers=("$@")
[ ${#handlers[@]} -gt 0 ] || handlers=(echo upper chat file)
conns="${SOAK_CONNS:-64}"
interval="${SOAK_INTERVAL:-3}"
growth="${SOAK_GROWTH:-25}"

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
echo "building release binaries" >&2
cargo build --release -q -p switchboard-bins
bin="$root/target/release"
work="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-soak.XXXXXX")"
server_pid=""
load_pid=""
cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
    rm -rf "$work/files"
}
trap cleanup EXIT

# Files for the file handler: small, medium and one of 8 MiB.
mkdir -p "$work/files"
head -c 1000 /dev/urandom >"$work/files/small.bin"
head -c 300000 /dev/urandom >"$work/files/medium.bin"
head -c 8388608 /dev/urandom >"$work/files/large.bin"

builtin_load() { # HANDLER HOST PORT SECONDS
    python3 - "$@" "$conns" "$work/files" <<'PY'
import os, socket, struct, sys, threading, time, json
handler, host, port, secs, conns, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
deadline = time.time() + secs
names = sorted(os.listdir(files))
counts = {"sessions": 0, "errors": 0}
lock = threading.Lock()

def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(min(1 << 16, n - len(buf)))
        if not b:
            raise EOFError("server closed")
        buf += b
    return bytes(buf)

def session(i, k):
    with socket.create_connection((host, port), timeout=10) as s:
        if handler in ("echo", "upper"):
            for j in range(20):
                msg = b"soak %d %d hello\n" % (i, j)
                s.sendall(msg)
                got = recv_exact(s, len(msg))
                want = msg.upper() if handler == "upper" else msg
                assert got == want, (got, want)
        elif handler == "chat":
            f = s.makefile("rb")
            welcome = f.readline().decode().split()  # * welcome NICK
            me = welcome[-1] if welcome else "nobody"
            # Joins, renames, private lines and leaves, but no room-wide
            # text: switchboard-load's members check that every line of
            # the room is one of theirs.
            for j in range(10):
                s.sendall(b"/msg %s line %d from %d\n" % (me.encode(), j, i))
            s.sendall(b"/nick soak%d_%d\n/who\n" % (i, k))
            while not f.readline().startswith(b"* online:"):
                pass
            s.sendall(b"/quit\n")
            while f.readline() not in (b"* bye\n", b""):
                pass
        elif handler == "file":
            name = names[k % len(names)] if k % 5 else "missing.bin"
            s.sendall(b"get " + name.encode() + b"\nlist\n")
            for _ in range(2):
                (hlen,) = struct.unpack("<i", recv_exact(s, 4))
                header = json.loads(recv_exact(s, hlen))
                recv_exact(s, int(header.get("file_size", 0)))
            # Every tenth download is abandoned half-way with a reset.
            if k % 10 == 3:
                s.sendall(b"get large.bin\n")
                recv_exact(s, 4)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

def worker(i):
    k = 0
    while time.time() < deadline:
        try:
            session(i, k)
            with lock:
                counts["sessions"] += 1
        except Exception as e:
            with lock:
                counts["errors"] += 1
                if counts["errors"] <= 3:
                    print("load: client %d: %r" % (i, e), file=sys.stderr)
        k += 1

threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join(secs + 30)
print("load: %d sessions, %d errors" % (counts["sessions"], counts["errors"]))
sys.exit(1 if counts["errors"] > counts["sessions"] // 100 else 0)
PY
}

# switchboard-load's mode for each handler (upper has none: its replies
# are not the bytes sent), with a few hundred steady connections.
load_bin_args() { # HANDLER ADDR SECONDS
    case "$1" in
        echo) echo "echo -t $2 -c 200 --size 256 -d ${3}s -q" ;;
        chat) echo "chat -t $2 -c 100 -d ${3}s -q" ;;
        file) echo "file -t $2 medium.bin -c 4 -d ${3}s -q" ;;
        *) return 1 ;;
    esac
}

run_load() { # HANDLER ADDR SECONDS
    local handler="$1" addr="$2" secs="$3" pid status=0 args
    # Connections opening and closing all along: the built-in client.
    echo "load: built-in python client, $conns clients opening and closing connections" >&2
    builtin_load "$handler" "${addr%:*}" "${addr##*:}" "$secs" &
    pid=$!
    # Steady protocol load beside it: switchboard-load.
    if [ "${SOAK_LOAD:-}" != builtin ] && [ -x "$bin/switchboard-load" ] && args=$(load_bin_args "$@"); then
        echo "load: switchboard-load $args" >&2
        # shellcheck disable=SC2086
        "$bin/switchboard-load" $args || status=$?
    fi
    wait "$pid" || status=$?
    return "$status"
}

sample() { # PID -> "rss_kib fds threads"
    local rss
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
    echo "${rss:-0} $(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) $(find "/proc/$1/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
}

# Compares first and last thirds of column COL in FILE: prints
# "first last verdict"; verdict is "grows" past the threshold.
judge() { # FILE COL SLACK
    awk -v col="$2" -v slack="$3" -v pct="$growth" '
        { v[NR] = $col }
        END {
            n = int(NR / 3); if (n < 1) n = 1
            for (i = 1; i <= n; i++) first += v[i]
            for (i = NR - n + 1; i <= NR; i++) last += v[i]
            first /= n; last /= n
            limit = first * (1 + pct / 100); if (first + slack > limit) limit = first + slack
            printf "%.0f %.0f %s\n", first, last, (last > limit ? "grows" : "steady")
        }' "$1"
}

failed=0
results=()
help="$("$bin/switchboard-server" --help)"
for h in "${handlers[@]}"; do
    if ! grep -qw -- "$h" <<<"$help"; then
        echo "skipping $h: switchboard-server has no such handler" >&2
        results+=("$(printf '%-6s %s' "$h" "skipped (not in switchboard-server --handler)")")
        continue
    fi
    args=(--listen 127.0.0.1:0 --handler "$h" --grace 10s)
    [ "$h" = file ] && args+=(--root "$work/files")
    "$bin/switchboard-server" "${args[@]}" >"$work/$h.out" 2>"$work/$h.err" &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q '^listening on ' "$work/$h.out" 2>/dev/null && break
        sleep 0.1
    done
    addr="$(sed -n 's/^listening on //p' "$work/$h.out" | head -1)"
    [ -n "$addr" ] || { echo "$h: the server did not start: $(cat "$work/$h.err")" >&2; exit 1; }
    echo "soaking $h on $addr for ${duration}s" >&2
    run_load "$h" "$addr" "$duration" >"$work/$h.load" 2>&1 &
    load_pid=$!
    : >"$work/$h.samples"
    while kill -0 "$load_pid" 2>/dev/null; do
        sample "$server_pid" >>"$work/$h.samples"
        sleep "$interval"
    done
    load_status=0
    wait "$load_pid" || load_status=$?
    load_pid=""
    kill -TERM "$server_pid"
    server_status=0
    wait "$server_pid" || server_status=$?
    server_pid=""
    read -r rss0 rss1 rssv < <(judge "$work/$h.samples" 1 8192)
    read -r fd0 fd1 fdv < <(judge "$work/$h.samples" 2 32)
    read -r th0 th1 thv < <(judge "$work/$h.samples" 3 2)
    verdict=ok
    for v in "$rssv" "$fdv" "$thv"; do [ "$v" = steady ] || verdict="FAILED (grows)"; done
    [ "$load_status" -eq 0 ] || verdict="FAILED (load exit $load_status)"
    report="$(grep -m1 'shutdown complete' "$work/$h.err" || true)"
    if [ "$server_status" -ne 0 ] || [ -z "$report" ]; then verdict="FAILED (server exit $server_status, no report)"; fi
    [ "$verdict" = ok ] || failed=1
    results+=("$(printf '%-6s %5d %8s %8s %5s %5s %4s %4s  %-28s %s' "$h" "$(wc -l <"$work/$h.samples")" \
        "$((rss0 / 1024))" "$((rss1 / 1024))" "$fd0" "$fd1" "$th0" "$th1" "$(tail -1 "$work/$h.load")" "$verdict")")
    echo "  $h: $(tail -1 "$work/$h.load"); server: ${report:-no report}" >&2
done

echo
printf '%-6s %5s %8s %8s %5s %5s %4s %4s  %-28s %s\n' handler samp "rss0MiB" "rss1MiB" fd0 fd1 th0 th1 load result
printf '%s\n' "${results[@]}"
echo "(${duration}s per handler, first vs last third of the samples; files in $work)"
exit "$failed"
