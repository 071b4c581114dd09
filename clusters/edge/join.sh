#!/usr/bin/env bash
# Join this host (a Jetson, a Raspberry Pi, a small x86 box) to a harness Ray cluster as an edge node.
#   HEAD=10.0.0.5 RAY_AUTH_TOKEN_PATH=~/.ray/harness_token ./join.sh [CPUS] [MEMORY_BYTES]
# The token file is the cluster's (see clusters/README.md); nothing here listens beyond what Ray needs between
# nodes, and this node runs no dashboard.
set -euo pipefail
: "${HEAD:?set HEAD to the address of the head node}"
: "${RAY_AUTH_TOKEN_PATH:=$HOME/.ray/harness_token}"
[ -s "$RAY_AUTH_TOKEN_PATH" ] || { echo "join.sh: no token at $RAY_AUTH_TOKEN_PATH (copy the cluster's)" >&2; exit 2; }
CPUS="${1:-$(nproc)}"
ram_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
MEMORY="${2:-$(( ram_kb * 1024 * 8 / 10 ))}"   # default: 80% of RAM
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH RAY_USAGE_STATS_ENABLED=0
export RAY_memory_usage_threshold="${RAY_memory_usage_threshold:-0.8}"   # small hosts: Ray's monitor before the kernel's OOM killer
exec ray start --address="$HEAD:6379" --labels="tier=edge,arch=$(uname -m)" \
    --num-cpus="$CPUS" --memory="$MEMORY" --block
