#!/usr/bin/env bash
# Two hosts, one chat: two network namespaces joined by a veth pair, a chat
# server in each, Redis on host A speaking only TLS and asking for a
# password. A member on host A and a member on host B talk, a user
# registered through A logs in through B, and neither server's log holds
# the password. Needs root (ip netns), iproute2, redis-server, openssl and
# python3; run by .ci/run.
#
#   scripts/two-hosts.sh        # builds switchboard-server first
#
# Exits non-zero on any failure; the namespaces and every process it
# started are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "two-hosts: needs root for ip netns (try: sudo $0)" >&2
    exit 1
fi
for cmd in ip redis-server redis-cli openssl python3; do
    command -v "$cmd" >/dev/null || { echo "two-hosts: $cmd is missing (scripts/test.sh installs it)" >&2; exit 1; }
done

cargo build -q -p switchboard-bins --bin switchboard-server
server="$PWD/target/debug/switchboard-server"

# Unique names (veth names are at most 15 characters).
tag="$$"
ns_a="sb-a-$tag"
ns_b="sb-b-$tag"
veth_a="sbva$tag"
veth_b="sbvb$tag"
# Addresses that exist only inside these two namespaces.
addr_a="10.231.12.1"
addr_b="10.231.12.2"
work="$(mktemp -d -t switchboard-two-hosts-XXXXXX)"
pids=()

cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    if [ "$status" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -f "$log" ] && { echo "--- $log"; tail -n 30 "$log"; } >&2
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT INT TERM

echo "== two hosts: namespaces $ns_a ($addr_a) and $ns_b ($addr_b)"
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add "$veth_a" type veth peer name "$veth_b"
ip link set "$veth_a" netns "$ns_a"
ip link set "$veth_b" netns "$ns_b"
ip -n "$ns_a" addr add "$addr_a/24" dev "$veth_a"
ip -n "$ns_b" addr add "$addr_b/24" dev "$veth_b"
for ns in "$ns_a" "$ns_b"; do
    ip -n "$ns" link set lo up
done
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up

# Waits (at most 20 s) until COMMAND succeeds.
wait_for() {
    local what="$1"
    shift
    for _ in $(seq 200); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "two-hosts: timed out waiting for $what" >&2
    return 1
}

# A CA and a certificate for Redis on host A (its address as the name),
# and a password; the servers get the URL in a file and trust only the CA.
password="two-hosts-$(openssl rand -hex 12)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=two-hosts CA" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$addr_a" \
    -keyout "$work/redis.key" -out "$work/redis.csr" 2>/dev/null
printf 'subjectAltName=IP:%s\n' "$addr_a" >"$work/san.ext"
openssl x509 -req -in "$work/redis.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 1 -extfile "$work/san.ext" -out "$work/redis.pem" 2>/dev/null
(umask 077 && echo "rediss://:$password@$addr_a:6380" >"$work/redis-url")

ip netns exec "$ns_a" redis-server --bind "$addr_a" --port 0 --tls-port 6380 \
    --tls-cert-file "$work/redis.pem" --tls-key-file "$work/redis.key" \
    --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no --requirepass "$password" \
    --save '' --appendonly no --protected-mode no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "Redis on host A" ip netns exec "$ns_b" redis-cli -h "$addr_a" -p 6380 \
    --tls --cacert "$work/ca.pem" --no-auth-warning -a "$password" ping

start_chat() {
    local ns="$1" addr="$2" name="$3"
    ip netns exec "$ns" env RUST_LOG=debug "$server" --handler chat --listen "$addr:7878" \
        --redis-url-file "$work/redis-url" --redis-ca "$work/ca.pem" \
        >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
    wait_for "the chat server on $name" grep -q "cluster: link up" "$work/$name.log"
}
start_chat "$ns_a" "$addr_a" host-a
start_chat "$ns_b" "$addr_b" host-b

# A scripted member: `send LINE`, `expect LINE` (read until that exact
# line), `who LIST` (ask /who until it answers that list); 20 s in all.
cat >"$work/member.py" <<'PY'
import socket, sys, time
host, port, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.time() + 20
s = socket.create_connection((host, port), timeout=20)
f = s.makefile("rwb")
def line():
    s.settimeout(max(0.1, deadline - time.time()))
    got = f.readline()
    if not got:
        sys.exit("connection closed")
    return got.decode().rstrip("\n")
def send(text):
    f.write((text + "\n").encode()); f.flush()
def expect(want):
    while True:
        got = line()
        print(f"  {host}: {got}")
        if got == want:
            return
print(f"  {host}: {line()}")
for step in open(script).read().splitlines():
    verb, _, arg = step.partition(" ")
    if verb == "send":
        send(arg)
    elif verb == "expect":
        expect(arg)
    elif verb == "who":
        while True:
            send("/who")
            got = line()
            while not got.startswith("* online: "):
                got = line()
            if got == "* online: " + arg:
                print(f"  {host}: {got}")
                break
            if time.time() > deadline:
                sys.exit(f"/who never listed {arg}")
            time.sleep(0.1)
PY

cat >"$work/bob.steps" <<'STEPS'
send /nick bob
expect * you are now bob
expect <alice> hello from host A
send hello from host B
expect *alice* see you
STEPS
cat >"$work/alice.steps" <<'STEPS'
send /nick alice
expect * you are now alice
who alice, bob
send hello from host A
expect <bob> hello from host B
send /msg bob see you
send /register carol carol-password
expect * registered carol
STEPS
cat >"$work/carol.steps" <<'STEPS'
send /login carol carol-password
expect * you are now carol
STEPS

echo "== a member on host A and one on host B talk"
ip netns exec "$ns_b" python3 "$work/member.py" "$addr_b" 7878 "$work/bob.steps" &
bob=$!
ip netns exec "$ns_a" python3 "$work/member.py" "$addr_a" 7878 "$work/alice.steps"
wait "$bob"

echo "== registered through host A, logged in through host B"
ip netns exec "$ns_b" python3 "$work/member.py" "$addr_b" 7878 "$work/carol.steps"

echo "== the password is in no log line"
for name in host-a host-b; do
    if grep -qF "$password" "$work/$name.log"; then
        echo "two-hosts: $name logged the Redis password" >&2
        exit 1
    fi
    grep -q "on Redis rediss://:\*\*\*@$addr_a:6380" "$work/$name.log"
done

echo "two-hosts: ok"
