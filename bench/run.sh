#!/usr/bin/env bash
# npm run bench: installs dependencies when needed, builds dist/, then runs bench/bench.mjs
# (its own MariaDB, Redis and sessiond processes; load over loopback with autocannon).
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
exec node --import tsx bench/bench.mjs "$@"
