/**
 * Throwaway TLS material and TLS-only servers for tests: a private CA made with the openssl CLI,
 * a server certificate for 127.0.0.1/localhost, a client certificate (mutual TLS), and a second
 * CA that signed nothing here (a client trusting it must refuse the servers).
 *
 * The servers themselves are startMariaDb / startRedis / startRedisCluster with their `tls` and
 * `user` options; this file only makes the files and the MariaDB login.
 */
import { openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import * as mariadb from 'mariadb';
import { findBinary } from './binaries.js';
import { describeExit, runToCompletion, tailFile } from './children.js';
import type { MariaDbProcess, MariaDbServerTls } from './mariadb.js';
import type { RedisServerTls } from './redis.js';

const OPENSSL_TIMEOUT_MS = 20_000;

export interface TestPki {
  dir: string;
  /** The CA that signed the server and client certificates. */
  caFile: string;
  /** A certificate (CN localhost, SAN IP:127.0.0.1, DNS:localhost) for servers and cluster buses. */
  serverCertFile: string;
  serverKeyFile: string;
  /** A client certificate for mutual TLS. */
  clientCertFile: string;
  clientKeyFile: string;
  /** Another CA: signed none of the above. */
  otherCaFile: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const bin = findBinary('openssl');
  if (!bin) throw new Error('openssl not found (apt-get install openssl)');
  const log = path.join(dir, 'openssl.log');
  const fd = openSync(log, 'a');
  try {
    const result = await runToCompletion(bin, args, { cwd: dir, timeoutMs: OPENSSL_TIMEOUT_MS, stdio: ['ignore', fd, fd] });
    if (result.code !== 0) throw new Error(`openssl ${args[0]} failed (${describeExit(result)}). Log ${log}:\n${await tailFile(log)}`);
  } finally {
    closeSync(fd);
  }
}

/** A self-signed CA (P-256 keys: quick to make). */
async function makeCa(dir: string, name: string): Promise<string> {
  await openssl(dir, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=sessiond test ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return path.join(dir, `${name}.crt`);
}

/** A key and a certificate for `name`, signed by the CA `ca`. */
async function issue(dir: string, ca: string, name: string, extensions: string): Promise<{ cert: string; key: string }> {
  writeFileSync(path.join(dir, `${name}.ext`), extensions);
  await openssl(dir, [
    'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'server' ? 'localhost' : `sessiond test ${name}`}`,
  ]);
  await openssl(dir, [
    'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`,
  ]);
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

/** Makes the CA, the server and client certificates and the other CA under `dir` (~0.2 s). */
export async function makeTestPki(dir: string): Promise<TestPki> {
  await mkdir(dir, { recursive: true });
  const [caFile, otherCaFile] = await Promise.all([makeCa(dir, 'ca'), makeCa(dir, 'other-ca')]);
  // The server certificate also serves as the client side of a Redis Cluster's TLS bus.
  const server = await issue(dir, 'ca', 'server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  const client = await issue(dir, 'ca', 'client', 'extendedKeyUsage=clientAuth\n');
  return {
    dir,
    caFile,
    serverCertFile: server.cert,
    serverKeyFile: server.key,
    clientCertFile: client.cert,
    clientKeyFile: client.key,
    otherCaFile,
  };
}

/** startMariaDb's `tls` from a PKI. */
export function mariaDbTls(pki: TestPki): MariaDbServerTls {
  return { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, caFile: pki.caFile };
}

/** startRedis' `tls` from a PKI; with requireClientCerts the probe presents the client certificate. */
export function redisTls(pki: TestPki, requireClientCerts = false): RedisServerTls {
  const ca = readFileSync(pki.caFile, 'utf8');
  const clientCert = requireClientCerts ? { cert: readFileSync(pki.clientCertFile, 'utf8'), key: readFileSync(pki.clientKeyFile, 'utf8') } : {};
  return {
    certFile: pki.serverCertFile,
    keyFile: pki.serverKeyFile,
    caFile: pki.caFile,
    requireClientCerts,
    client: { ca, ...clientCert },
  };
}

/**
 * On a TLS MariaDB (reached as root over its Unix socket): creates `database` and a user who may
 * log in over TCP with a password and TLS only (REQUIRE SSL) and use that database. Returns the
 * user's mysql:// URL.
 */
export async function createTlsDatabaseUser(
  server: MariaDbProcess,
  login: { database: string; user: string; password: string },
): Promise<string> {
  const { database, user, password } = login;
  if (!/^[A-Za-z0-9_]{1,64}$/.test(database) || !/^[A-Za-z0-9_]{1,32}$/.test(user)) throw new Error('invalid database or user name');
  const conn = await mariadb.createConnection({ socketPath: server.socketPath, user: 'root', password: '', connectTimeout: 5_000 });
  try {
    await conn.query(`CREATE DATABASE IF NOT EXISTS \`${database}\``);
    await conn.query(`CREATE USER IF NOT EXISTS '${user}'@'127.0.0.1' IDENTIFIED BY ? REQUIRE SSL`, [password]);
    await conn.query(`GRANT ALL PRIVILEGES ON \`${database}\`.* TO '${user}'@'127.0.0.1'`);
  } finally {
    await conn.end().catch(() => conn.destroy());
  }
  return `mysql://${user}:${encodeURIComponent(password)}@127.0.0.1:${server.port}/${database}`;
}
