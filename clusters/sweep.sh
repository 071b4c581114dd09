#!/usr/bin/env bash
# One scheduled sweep on the head of a launcher cluster (aws.yaml, gcp.yaml): the scenario, run on the cluster,
# then judged against the same scenario's previous run in the history; a regression (or a failed cell) makes the
# script exit 1, which cron mails and a log-based alert sees. The schedule, on the head (`ray attach clusters/aws.yaml`):
#   crontab -e      0 2 * * * $HOME/harness/clusters/sweep.sh cloud-vs-edge >> $HOME/results/sweep.log 2>&1
# Usage: sweep.sh [SCENARIO]   (a shipped scenario name or a file; default cloud-vs-edge)
set -euo pipefail

scenario="${1:-cloud-vs-edge}"
token_file="$HOME/.ray/harness_token"   # every node's token (the launcher's file_mounts)
results="${HARNESS_RESULTS:-$HOME/results}"
if [ ! -s "$token_file" ]; then
  echo "sweep.sh: no token at $token_file: this runs on the head of a cluster made from clusters/aws.yaml or gcp.yaml" >&2
  exit 2
fi
RAY_AUTH_TOKEN="$(cat "$token_file")"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN RAY_USAGE_STATS_ENABLED=0
export HARNESS_HISTORY="${HARNESS_HISTORY:-$results/history.sqlite}"   # the history every sweep is judged against

out="$results/${scenario%.yaml}-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results"
harness run "$scenario" --address auto --serve-host 0.0.0.0 --serve-token-file "$token_file" --out "$out"
harness compare previous "$out" --skip seconds   # exit 1 on a regression; the first sweep has nothing to compare
