#!/usr/bin/env bash
# The project's one test command (README.md, .ci/run): installs what the
# tests need when it is missing, then runs the whole suite.
#
#   scripts/test.sh [extra cargo test arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need, as "command:package" pairs (python3 runs
# the README's Python client); tests that talk to other servers add theirs.
NEEDED=("python3:python3")
# The status page test of the admin endpoint (bins/tests/admin_browser.rs).
NEEDED+=("chromium:chromium")
# The cluster and accounts tests start their own Redis.
NEEDED+=("redis-server:redis-server")
# scripts/two-hosts.sh (run by .ci/run after the tests) needs ip netns,
# and openssl for its Redis's TLS certificate.
NEEDED+=("ip:iproute2")
NEEDED+=("openssl:openssl")
# PROXY protocol tests: a real HAProxy in front of the server.
NEEDED+=("haproxy:haproxy")

# Installs the Debian packages behind any missing command: with apt-get as
# root, otherwise prints exactly what to install and fails.
ensure_packages() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd="${pair%%:*}"
        pkg="${pair#*:}"
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing: ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "the tests need: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}

if [ ${#NEEDED[@]} -gt 0 ]; then
    ensure_packages "${NEEDED[@]}"
fi
exec cargo test --workspace "$@"
