import { readFileSync } from 'node:fs';
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { ConfigError } from './config-error.js';

/**
 * TLS to MariaDB or Redis. The PEM texts are read once at start, so a missing or unreadable
 * file stops the service with a message naming its variable; rotating a certificate is a restart.
 */
export interface TlsConfig {
  /** CA certificate(s) the server's certificate must chain to; undefined = the system's CAs. */
  ca?: string | undefined;
  /** Client certificate and key for mutual TLS: both or neither. */
  cert?: string | undefined;
  key?: string | undefined;
}

/** The paths given in the variables (undefined = not set). */
export interface TlsFilePaths {
  ca?: { variable: string; path: string | undefined };
  cert: { variable: string; path: string | undefined };
  key: { variable: string; path: string | undefined };
}

function readText(variable: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(variable, `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** PEM certificates: at least one, each of which parses. Messages never quote the file. */
function readCertificates(variable: string, file: string): string {
  const text = readText(variable, file);
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new ConfigError(variable, 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch {
      throw new ConfigError(variable, 'holds a certificate that does not parse');
    }
  }
  return text;
}

/** A PEM private key, unencrypted (nothing could type its passphrase). Never echoed. */
function readPrivateKey(variable: string, file: string): { text: string; key: KeyObject } {
  const text = readText(variable, file);
  try {
    return { text, key: createPrivateKey(text) };
  } catch {
    throw new ConfigError(variable, 'holds no unencrypted PEM private key');
  }
}

/** Reads and checks the files of one TLS connection; a client certificate must match its key. */
export function readTlsFiles(paths: TlsFilePaths): TlsConfig {
  const { ca, cert, key } = paths;
  if ((cert.path === undefined) !== (key.path === undefined)) {
    const missing = cert.path === undefined ? cert.variable : key.variable;
    const present = cert.path === undefined ? key.variable : cert.variable;
    throw new ConfigError(missing, `is required when ${present} is set (a client certificate needs its key)`);
  }
  const tls: TlsConfig = {};
  if (ca?.path !== undefined) tls.ca = readCertificates(ca.variable, ca.path);
  if (cert.path !== undefined && key.path !== undefined) {
    tls.cert = readCertificates(cert.variable, cert.path);
    const privateKey = readPrivateKey(key.variable, key.path);
    const first = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(tls.cert)![0];
    if (!new X509Certificate(first).checkPrivateKey(privateKey.key)) {
      throw new ConfigError(key.variable, `is not the key of the certificate in ${cert.variable}`);
    }
    tls.key = privateKey.text;
  }
  return tls;
}
