#!/usr/bin/env bash
# Replays every ```console session of README.md and checks that each command
# prints what the README shows. Run by bins/tests/readme.rs; by hand:
#
#   PATH="$PWD/target/debug:$PATH" scripts/readme-sessions.sh [README.md]
#
# The switchboard binaries must be on PATH. Each session runs in a fresh
# temporary folder. In a session:
# - `$ CMD` is a command, and the lines up to the next `$ ` line are what it
#   prints (stdout and stderr). A command with `<<'EOF'` takes the lines up
#   to `EOF` as its input, and prints nothing.
# - `$ switchboard-server ... &` starts a server in the background on a
#   free port (the script adds `--listen 127.0.0.1:0`); `127.0.0.1:7878`
#   in the commands and in what they print stands for its address.
# - `$ kill %1` stops that server.
# Exit status 1 (with the difference) at the first mismatch.
set -euo pipefail
readme="$(cd "$(dirname "${1:-README.md}")" && pwd)/$(basename "${1:-README.md}")"
[ -f "$readme" ] || readme="$(cd "$(dirname "$0")/.." && pwd)/README.md"
command -v switchboard-server >/dev/null || { echo "switchboard-server is not on PATH" >&2; exit 2; }

shown_addr="127.0.0.1:7878"
work=""
server_pid=""
addr=""
sessions=0
commands=0

cleanup() {
    stop_server
    [ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT

stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}

start_server() {
    local cmd="${1% &}"
    : >"$work/.server.out"
    # The command line as the README shows it, on a free port.
    bash -c "cd '$work' && exec $cmd --listen 127.0.0.1:0" >"$work/.server.out" &
    server_pid=$!
    local i
    for i in $(seq 200); do
        addr="$(sed -n 's/^listening on //p' "$work/.server.out")"
        [ -n "$addr" ] && break
        kill -0 "$server_pid" 2>/dev/null || { echo "the server exited: $cmd" >&2; exit 1; }
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "no 'listening on' line from: $cmd" >&2; exit 1; }
}

# Runs one command (with its here-document, if any) and checks its output.
check() {
    local cmd="$1" input="$2" expected="$3" actual
    commands=$((commands + 1))
    case "$cmd" in
        switchboard-server*'&')
            start_server "$cmd"
            actual="$(head -n 1 "$work/.server.out")"
            actual="${actual//$addr/$shown_addr}"
            ;;
        'kill %1') stop_server; actual="" ;;
        *)
            local run="${cmd//$shown_addr/$addr}"
            if [ -n "$input" ]; then
                run="$run"$'\n'"$input"$'\n'"EOF"
            fi
            actual="$(cd "$work" && timeout 60 bash -c "$run" 2>&1 || true)"
            [ -z "$addr" ] || actual="${actual//$addr/$shown_addr}"
            ;;
    esac
    if [ "$actual" != "$expected" ]; then
        echo "README session $sessions, command: \$ $cmd" >&2
        diff <(printf '%s\n' "$expected") <(printf '%s\n' "$actual") | sed 's/^/  /' >&2 || true
        echo "(< shown in README.md, > printed)" >&2
        exit 1
    fi
}

in_block=0
cmd=""
input=""
expected=""
heredoc=0
flush() {
    if [ -n "$cmd" ]; then
        check "$cmd" "$input" "$expected"
    fi
    cmd=""
    input=""
    expected=""
}
while IFS= read -r line || [ -n "$line" ]; do
    if [ $in_block -eq 0 ]; then
        if [ "$line" = '```console' ]; then
            in_block=1
            sessions=$((sessions + 1))
            work="$(mktemp -d)"
            addr=""
        fi
        continue
    fi
    if [ "$line" = '```' ] && [ $heredoc -eq 0 ]; then
        flush
        stop_server
        rm -rf "$work"
        work=""
        in_block=0
        continue
    fi
    if [ $heredoc -eq 1 ]; then
        if [ "$line" = "EOF" ]; then
            heredoc=0
        else
            input="${input:+$input$'\n'}$line"
        fi
    elif [[ "$line" == '$ '* ]]; then
        flush
        cmd="${line#\$ }"
        [[ "$cmd" == *"<<'EOF'" ]] && heredoc=1
    else
        expected="${expected:+$expected$'\n'}$line"
    fi
done <"$readme"

[ "$sessions" -gt 0 ] || { echo "no console session in $readme" >&2; exit 1; }
echo "$sessions README sessions, $commands commands: all as shown"
