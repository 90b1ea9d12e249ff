/** Finding executables on PATH and in the usual sbin/bin folders. */
import { accessSync, constants as fsConstants } from 'node:fs';
import path from 'node:path';

const EXTRA_BIN_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/bin', '/usr/local/bin', '/bin'];

/** Absolute path of an executable found on PATH or in the usual sbin/bin folders, or undefined. */
export function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...EXTRA_BIN_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

export function requireBinary(name: string): string {
  const found = findBinary(name);
  if (!found) {
    throw new Error(`${name} not found (install mariadb-server and redis-server, or call ensureServerBinaries())`);
  }
  return found;
}

