/**
 * A kustomize renderer for the deploy/ tests: `kubectl kustomize` or `kustomize build` from
 * PATH when it works, else Debian's kubernetes-client unpacked into a cache folder (never
 * installed over the system's files).
 */
import { execFile } from 'node:child_process';
import { lstat, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { findBinary } from './binaries.js';
import { describeExit, runToCompletion } from './children.js';
import { APT_TIMEOUT_MS, INSTALL_TIMEOUT_MS } from './installers.js';

/** A working kustomize renderer: run `bin ...args <kustomization dir>`. */
export interface KustomizeCommand {
  bin: string;
  args: string[];
  /** Where it came from, for messages: "kubectl on PATH (/usr/bin/kubectl)", "Debian kubernetes-client (…)". */
  description: string;
  /** Renders a kustomization directory to YAML (stdout); rejects with kustomize's stderr on failure. */
  render(dir: string): Promise<string>;
}

export interface EnsureKustomizeOptions {
  /**
   * 'path' (default): `kubectl kustomize` (or `kustomize build`) from PATH when it works, else
   * Debian's kubectl. 'debian': always Debian's `kubernetes-client` (kubectl 1.20 on bookworm,
   * with kustomize v2.0.3 inside), e.g. to check that manifests still render with it.
   */
  source?: 'path' | 'debian';
  /** Where Debian's package is unpacked; default `<os.tmpdir()>/sessiond-kubernetes-client-<uid>`. */
  cacheDir?: string;
  log?: (msg: string) => void;
}

const KUSTOMIZE_RENDER_TIMEOUT_MS = 60_000;
const KUSTOMIZE_DOWNLOAD_TIMEOUT_MS = 5 * 60_000;

function kustomizeCommand(bin: string, args: string[], description: string): KustomizeCommand {
  return {
    bin,
    args,
    description,
    render: (dir) =>
      new Promise((resolve, reject) => {
        execFile(bin, [...args, dir], { timeout: KUSTOMIZE_RENDER_TIMEOUT_MS, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
          if (err) reject(new Error(`${path.basename(bin)} ${[...args, dir].join(' ')} failed: ${String(stderr).trim() || err.message}`));
          else resolve(String(stdout));
        });
      }),
  };
}

/** True when the command renders a one-ConfigMap kustomization (the subcommand exists and works). */
async function kustomizeWorks(cmd: KustomizeCommand): Promise<boolean> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-kustomize-probe-'));
  try {
    await writeFile(
      path.join(dir, 'kustomization.yaml'),
      'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nconfigMapGenerator:\n  - name: probe\n    literals:\n      - A=1\n',
    );
    return /kind: ConfigMap/.test(await cmd.render(dir));
  } catch {
    return false;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Returns a command that renders kustomizations. Clean CI machines have no kubectl, and no
 * kustomize is published on npm, so by default this uses `kubectl kustomize` or `kustomize build`
 * from PATH when it works, and otherwise Debian's `kubernetes-client` package: downloaded with
 * `apt-get download` (after `apt-get update`, as root or with `sudo -n`, when the package lists
 * are missing) and unpacked with `dpkg-deb -x` into a cache folder under os.tmpdir(), so
 * nothing is installed into the system and later calls reuse it.
 */
export async function ensureKustomize(options: EnsureKustomizeOptions = {}): Promise<KustomizeCommand> {
  const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  if ((options.source ?? 'path') === 'path') {
    const kubectl = findBinary('kubectl');
    if (kubectl) {
      const cmd = kustomizeCommand(kubectl, ['kustomize'], `kubectl on PATH (${kubectl})`);
      if (await kustomizeWorks(cmd)) return cmd;
    }
    const kustomize = findBinary('kustomize');
    if (kustomize) {
      const cmd = kustomizeCommand(kustomize, ['build'], `kustomize on PATH (${kustomize})`);
      if (await kustomizeWorks(cmd)) return cmd;
    }
  }

  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  const cacheDir = options.cacheDir ?? path.join(os.tmpdir(), `sessiond-kubernetes-client-${uid ?? 'user'}`);
  const kubectlIn = (root: string) => path.join(root, 'usr', 'bin', 'kubectl');
  const debianCommand = (root: string) => kustomizeCommand(kubectlIn(root), ['kustomize'], `Debian kubernetes-client (${kubectlIn(root)})`);

  // os.tmpdir() is shared: only trust a cache folder that this user owns and nobody else can write.
  const cacheStat = await lstat(cacheDir).catch(() => undefined);
  if (cacheStat) {
    if (!cacheStat.isDirectory() || (uid !== undefined && cacheStat.uid !== uid) || (cacheStat.mode & 0o022) !== 0) {
      throw new Error(`${cacheDir} is not a folder owned by this user and writable only by it; remove it or pass cacheDir`);
    }
    const cached = debianCommand(cacheDir);
    if (await kustomizeWorks(cached)) return cached;
    await rm(cacheDir, { recursive: true, force: true }); // a broken or partial unpack
  }

  const aptGet = findBinary('apt-get');
  const dpkgDeb = findBinary('dpkg-deb');
  if (!aptGet || !dpkgDeb) {
    throw new Error('no working `kubectl kustomize` or `kustomize` on PATH, and no apt-get/dpkg-deb to fetch Debian\'s kubernetes-client: install kubectl (≥ 1.14) or kustomize');
  }
  log(`devstack: fetching Debian's kubernetes-client (kubectl with kustomize) into ${cacheDir}`);
  const started = Date.now();
  const work = await mkdtemp(path.join(os.tmpdir(), 'sessiond-kubernetes-client-download-'));
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const download = () => runToCompletion(aptGet, ['download', 'kubernetes-client'], { env, cwd: work, timeoutMs: KUSTOMIZE_DOWNLOAD_TIMEOUT_MS, stdio: ['ignore', 2, 2] });
    let result = await download();
    if (result.code !== 0) {
      // Typically no package lists yet (a fresh container): refresh them, which needs root.
      let prefix: string[] = [];
      if (uid !== undefined && uid !== 0) {
        const sudo = findBinary('sudo');
        if (!sudo) throw new Error(`apt-get download kubernetes-client failed (${describeExit(result)}); not root and no sudo to run apt-get update`);
        prefix = [sudo, '-n'];
      }
      const command = [...prefix, aptGet, '-o', 'DPkg::Lock::Timeout=300', 'update'];
      const update = await runToCompletion(command[0]!, command.slice(1), { env, timeoutMs: APT_TIMEOUT_MS, stdio: ['ignore', 2, 2] });
      if (update.code !== 0) throw new Error(`apt-get update failed (${describeExit(update)})`);
      result = await download();
      if (result.code !== 0) throw new Error(`apt-get download kubernetes-client failed (${describeExit(result)})`);
    }
    const deb = (await readdir(work)).find((name) => /^kubernetes-client_.*\.deb$/.test(name));
    if (!deb) throw new Error(`apt-get download left no kubernetes-client .deb in ${work}`);
    const root = path.join(work, 'root');
    const unpack = await runToCompletion(dpkgDeb, ['-x', path.join(work, deb), root], { timeoutMs: INSTALL_TIMEOUT_MS, stdio: ['ignore', 2, 2] });
    if (unpack.code !== 0) throw new Error(`dpkg-deb -x ${deb} failed (${describeExit(unpack)})`);
    if (!(await kustomizeWorks(debianCommand(root)))) throw new Error(`${kubectlIn(root)} (from ${deb}) does not render kustomizations`);
    try {
      await rename(root, cacheDir);
    } catch (err) {
      // Another process unpacked it first: use theirs if it works.
      if (!(await kustomizeWorks(debianCommand(cacheDir)))) throw err;
    }
    log(`devstack: ${deb} unpacked in ${Math.round((Date.now() - started) / 1000)} s`);
    return debianCommand(cacheDir);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
