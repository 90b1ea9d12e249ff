# sessiond container image.
#
#   docker build -t sessiond .                                   # the service (default target: runtime)
#   docker build --target migrate -t sessiond-migrate .          # the one-shot migration image
#
# Both images are built from the same commit and lockfile; deploy/ runs the migrate image as a
# Job before rolling out the runtime image. Neither writes to its root filesystem at run time.

# Node 24 (the current LTS; Node 20 reached its end of life in April 2026), pinned by the
# multi-arch index digest docker-library/repo-info records for node:24-bookworm-slim (Node 24.18.1,
# built 2026-07-30). A tag alone can change under the same name: bump the digest on purpose.
ARG NODE_IMAGE=node:24-bookworm-slim@sha256:235600a8101ab264e117b1768e925532262668dc9b581ef1dd7d96ced463b8e7

# deps: every dependency, dev ones included, exactly as package-lock.json pins them. Shared by
# `build` and `migrate-deps` so the full install runs once.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

# build: compiles src/ to dist/ with tsc. Only dist/ leaves this stage.
FROM deps AS build
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# migrate-deps: trims the full install to what `drizzle-kit migrate` loads (the production
# dependencies, drizzle-orm among them, plus drizzle-kit and mysql2) at the locked versions.
# A stage of its own so the pruned files are copied out and the migrate image does not carry
# the full install in a lower layer.
FROM deps AS migrate-deps
RUN node -e " \
      const fs = require('node:fs'); \
      const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8')); \
      const keep = ['drizzle-kit', 'mysql2']; \
      pkg.devDependencies = Object.fromEntries(keep.map((name) => { \
        const range = pkg.devDependencies && pkg.devDependencies[name]; \
        if (!range) throw new Error(name + ' is no longer a devDependency'); \
        return [name, range]; \
      })); \
      fs.writeFileSync('package.json', JSON.stringify(pkg, null, 2)); \
    " \
 && npm prune --no-audit --no-fund

# migrate: target of the migration Job (deploy/base/migrate). Applies drizzle/ to DATABASE_URL
# and exits; drizzle.config.ts reads nothing else. drizzle-kit loads the TypeScript config with
# its bundled tsx, whose transform cache would be written under /tmp: TSX_DISABLE_CACHE keeps
# it in memory so the Job runs on a read-only root filesystem.
FROM ${NODE_IMAGE} AS migrate
WORKDIR /app
ENV TSX_DISABLE_CACHE=1
COPY --from=migrate-deps /app/node_modules ./node_modules
COPY package.json drizzle.config.ts ./
COPY drizzle ./drizzle
COPY src/db/schema.ts ./src/db/schema.ts
USER node
CMD ["/app/node_modules/.bin/drizzle-kit", "migrate"]

# runtime (default target, keep it last): production dependencies and the compiled dist/ only,
# owned by root and run as the image's unprivileged `node` user (uid 1000).
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
# A 4 MB young generation: peak RSS under load ~40 MB lower at the same CPU (docs/benchmarks.md).
ENV NODE_OPTIONS=--max-semi-space-size=4
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
USER node
EXPOSE 8080
CMD ["node", "dist/server.js"]
