#!/usr/bin/env bash
# Runs sessiond locally: throwaway MariaDB + Redis under .local/dev/ (unless DATABASE_URL and
# REDIS_URL are set), migrations, a dev API key, then the server. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Install dependencies when node_modules is missing or older than package-lock.json
# (npm writes node_modules/.package-lock.json at the end of every install).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci
fi

npm run build
exec node --import tsx devstack/dev.ts
