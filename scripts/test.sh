#!/usr/bin/env bash
# Builds, type-checks the tests, then runs tap against a throwaway MariaDB + Redis
# (SESSIOND_TEST_MARIADB_URL, SESSIOND_TEST_REDIS_URL). Arguments are passed to tap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Install dependencies when node_modules is missing or older than package-lock.json
# (npm writes node_modules/.package-lock.json at the end of every install).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci
fi

npm run build
npm run build:clients   # clients/node: the tests use its dist/, as an app would
npx tsc -p tsconfig.test.json
exec node --import tsx devstack/test-stack.ts "$@"
