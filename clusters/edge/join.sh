#!/usr/bin/env bash
# Join this host (a Jetson, a Raspberry Pi, a small x86 box) to a harness Ray cluster as an edge node:
#   HEAD=10.8.0.1 NODE_IP=10.8.0.7 ./join.sh [CPUS] [MEMORY_BYTES]
# HEAD: the head's private address (a VPN or a private subnet). NODE_IP: this host's address on that same private
# network; Ray advertises it to the cluster (default: the address the route to HEAD leaves from).
# The token: RAY_AUTH_TOKEN if set, else the file RAY_AUTH_TOKEN_PATH (default ~/.ray/harness_token, the
# cluster's; clusters/README.md). It is never an argument, so it never shows in `ps`.
# Runs in the foreground (--block): stop it with Ctrl-C, or run it under systemd.
set -euo pipefail

: "${HEAD:?set HEAD to the private address of the head node}"
token_path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/harness_token}"
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    [ -s "$token_path" ] || { echo "join.sh: no RAY_AUTH_TOKEN and no token file at $token_path (copy the cluster's)" >&2; exit 2; }
    RAY_AUTH_TOKEN="$(cat "$token_path")"
fi
NODE_IP="${NODE_IP:-$(ip -o route get "$HEAD" 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' || true)}"
[ -n "$NODE_IP" ] || { echo "join.sh: set NODE_IP to this host's private address" >&2; exit 2; }

CPUS="${1:-$(nproc)}"
ram_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
MEMORY="${2:-$(( ram_kb * 1024 * 8 / 10 ))}"   # default: 80% of RAM, in bytes

export RAY_AUTH_MODE=token RAY_AUTH_TOKEN RAY_USAGE_STATS_ENABLED=0
export RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=harness.serving.http_guard:middlewares  # Serve's HTTP front reads bodies whole, bounded
export RAY_SERVE_ENABLE_DIRECT_INGRESS=0  # a cluster with targets: requests go through each node's proxy (docs/targets.md)
# small hosts: Ray's memory monitor kills a task at 80% of RAM, before the kernel's OOM killer takes the node
export RAY_memory_usage_threshold="${RAY_memory_usage_threshold:-0.8}"

exec ray start --block --address="$HEAD:6379" --node-ip-address="$NODE_IP" \
    --labels="tier=edge,arch=$(uname -m)" --num-cpus="$CPUS" --memory="$MEMORY"
