/**
 * Installs what the throwaway servers and the browser tests need with apt-get when it is missing
 * (clean CI machines): MariaDB and Redis, Chromium, and Debian's Python with Django.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { findBinary } from './binaries.js';
import { describeExit, runToCompletion } from './children.js';

export const APT_TIMEOUT_MS = 15 * 60_000;
/** Limit for one local install step (mariadb-install-db, unpacking a .deb). */
export const INSTALL_TIMEOUT_MS = 60_000;

type Log = (msg: string) => void;
const stderrLog: Log = (m) => process.stderr.write(`${m}\n`);

/**
 * `apt-get update` then `apt-get install -y --no-install-recommends <packages>`, through `sudo -n`
 * when not root. `what` names the missing thing in errors. Other processes' installs are waited
 * for (the dpkg lock, up to 5 minutes).
 */
async function aptInstall(packages: readonly string[], what: string): Promise<void> {
  const aptGet = findBinary('apt-get');
  if (!aptGet) throw new Error(`${what} and apt-get is not available: install ${packages.join(', ')} yourself`);
  let prefix: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    const sudo = findBinary('sudo');
    if (!sudo) throw new Error(`${what}; not root and no sudo: run "apt-get install -y --no-install-recommends ${packages.join(' ')}" as root`);
    prefix = [sudo, '-n'];
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = async (args: string[]) => {
    const [bin, ...rest] = [...prefix, aptGet, '-o', 'DPkg::Lock::Timeout=300', ...args] as [string, ...string[]];
    const result = await runToCompletion(bin, rest, { env, timeoutMs: APT_TIMEOUT_MS, stdio: ['ignore', 2, 2] });
    if (result.code !== 0) throw new Error(`apt-get ${args.join(' ')} failed (${describeExit(result)})`);
  };
  await run(['update']);
  await run(['install', '-y', '--no-install-recommends', ...packages]);
}

const SERVER_BINARIES = ['mariadbd', 'mariadb-install-db', 'redis-server'] as const;

/**
 * Installs MariaDB and Redis with apt-get when `mariadbd`, `mariadb-install-db` or `redis-server`
 * is missing. Debian's packages may auto-start system services on 3306/6379; we never use those.
 */
export async function ensureServerBinaries(log: Log = stderrLog): Promise<void> {
  const missing = SERVER_BINARIES.filter((name) => !findBinary(name));
  if (missing.length === 0) return;
  log(`devstack: missing ${missing.join(', ')}; installing mariadb-server and redis-server with apt-get`);
  await aptInstall(['mariadb-server', 'redis-server'], `missing ${missing.join(', ')}`);
  const stillMissing = SERVER_BINARIES.filter((name) => !findBinary(name));
  if (stillMissing.length > 0) throw new Error(`still missing after apt-get install: ${stillMissing.join(', ')}`);
  log('devstack: mariadb-server and redis-server installed');
}

/** Packages for the headless browser tests: the browser and one font family so that text renders on a bare machine. */
const CHROMIUM_PACKAGES = ['chromium', 'fonts-liberation'] as const;
let chromiumInstall: Promise<string> | undefined;

/**
 * Installs Debian's `chromium` with apt-get when it is missing and returns the path of its
 * executable. Recommended packages are skipped: they pull in systemd, udev, avahi-daemon and the
 * printing stack, none of which a headless browser needs. Concurrent callers in one process
 * share one install; other processes wait for the dpkg lock.
 */
export function ensureChromium(log: Log = stderrLog): Promise<string> {
  const found = findBinary('chromium');
  if (found) return Promise.resolve(found);
  chromiumInstall ??= installChromium(log).finally(() => {
    chromiumInstall = undefined;
  });
  return chromiumInstall;
}

async function installChromium(log: Log): Promise<string> {
  log(`devstack: chromium missing; installing ${CHROMIUM_PACKAGES.join(', ')} with apt-get`);
  const started = Date.now();
  await aptInstall(CHROMIUM_PACKAGES, 'chromium is missing');
  const installed = findBinary('chromium');
  if (!installed) throw new Error('still no chromium executable after apt-get install');
  log(`devstack: chromium installed at ${installed} in ${Math.round((Date.now() - started) / 1000)} s`);
  return installed;
}

/**
 * Debian's own interpreter, by path: a python3 earlier in PATH (pyenv, a virtualenv) would not
 * see Debian's python3-django.
 */
export const DEBIAN_PYTHON = '/usr/bin/python3';
const PYTHON_DJANGO_PACKAGES = ['python3', 'python3-django', 'python3-urllib3'] as const;

function imports(modules: readonly string[]): boolean {
  return spawnSync(DEBIAN_PYTHON, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore', timeout: 60_000 }).status === 0;
}

/**
 * For the Django session engine's tests (clients/django): installs Debian's python3-django and
 * python3-urllib3 with apt-get when missing and returns the interpreter that imports them.
 * `mysql` adds python3-mysqldb, for a Django on MariaDB (the Django import's test).
 */
export async function ensurePythonDjango(log: Log = stderrLog, options: { mysql?: boolean } = {}): Promise<string> {
  const modules = ['django', 'urllib3', ...(options.mysql === true ? ['MySQLdb'] : [])];
  if (imports(modules)) return DEBIAN_PYTHON;
  const packages = [...PYTHON_DJANGO_PACKAGES, ...(options.mysql === true ? ['python3-mysqldb'] : [])];
  log(`devstack: python3-django missing; installing ${packages.join(', ')} with apt-get`);
  await aptInstall(packages, 'python3-django is missing');
  if (!imports(modules)) throw new Error(`${DEBIAN_PYTHON} still cannot import ${modules.join(', ')} after apt-get install`);
  return DEBIAN_PYTHON;
}

const GALERA_PROVIDER = ['/usr/lib/galera/libgalera_smm.so', '/usr/lib/libgalera_smm.so'] as const;

/**
 * For the Galera cluster of the devstack (devstack/galera.ts): installs galera-4 (the
 * replication provider) and rsync (its state transfer) with apt-get when missing, after
 * MariaDB itself.
 */
export async function ensureGalera(log: Log = stderrLog): Promise<void> {
  await ensureServerBinaries(log);
  const haveProvider = GALERA_PROVIDER.some((p) => existsSync(p));
  if (haveProvider && findBinary('rsync') && findBinary('wsrep_sst_rsync')) return;
  log('devstack: Galera missing; installing galera-4 and rsync with apt-get');
  await aptInstall(['galera-4', 'rsync'], 'galera-4 or rsync is missing');
  if (!GALERA_PROVIDER.some((p) => existsSync(p))) throw new Error('still no libgalera_smm.so after apt-get install galera-4');
}
