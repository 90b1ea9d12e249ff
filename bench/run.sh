#!/usr/bin/env bash
# npm run bench: installs dependencies when needed, builds dist/, then runs bench/bench.mjs
# (its own MariaDB, Redis and sessiond processes; load over loopback with autocannon), and draws
# the results as docs/bench-chart.svg (bench/chart.mjs; BENCH_CHART names another file, '' none).
# Settings are BENCH_* environment variables (see docs/benchmarks.md), e.g.
#   BENCH_SECONDS=10 BENCH_ROWS=200000 npm run bench
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Same rule as scripts/test.sh: install when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci
fi

npm run build
npm run build:clients   # the Express-on-sessiond app uses clients/node
node --import tsx bench/bench.mjs "$@"

# Only a whole run writes its results file (BENCH_ONLY runs print theirs).
results="${BENCH_OUT:-bench/results/latest.json}"
chart="${BENCH_CHART-docs/bench-chart.svg}"
if [ -z "${BENCH_ONLY:-}" ] && [ -n "$chart" ]; then
  node bench/chart.mjs "$results" "$chart"
fi
