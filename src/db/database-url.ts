/**
 * DATABASE_URL: mysql://user:pass@host[:port][,host[:port]...]/database
 *
 * Several hosts, comma-separated, are the nodes of one Galera cluster, the first preferred
 * (database.ts fails over between them). WHATWG URL takes one host only, so the authority is
 * split here and each host parsed on its own. Errors never quote the value: it holds the
 * password.
 */
export interface DatabaseHost {
  host: string;
  port: number;
}

export interface DatabaseUrl {
  hosts: DatabaseHost[];
  user: string;
  password: string;
  database: string;
}

export class DatabaseUrlError extends Error {}

const SHAPE = /^(mysql|mariadb):\/\/(?:([^@/?#]*)@)?([^/?#]*)(\/[^?#]*)?(\?[^#]*)?(#.*)?$/i;

function parseHost(text: string): DatabaseHost {
  let url: URL;
  try {
    url = new URL(`mysql://${text}`);
  } catch {
    throw new DatabaseUrlError('has a host that is not valid');
  }
  if (url.hostname === '' || url.username !== '' || url.pathname !== '') throw new DatabaseUrlError('has an empty or malformed host');
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: url.port === '' ? 3306 : Number(url.port) };
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new DatabaseUrlError('has a user or password that is not valid percent-encoding');
  }
}

export function parseDatabaseUrl(value: string): DatabaseUrl {
  const m = SHAPE.exec(value.trim());
  if (!m) {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value) && !/^(mysql|mariadb):/i.test(value)) {
      throw new DatabaseUrlError(`must use the mysql:// scheme, got "${/^[^:]*/.exec(value)![0]}://"`);
    }
    throw new DatabaseUrlError('is not a valid URL (expected mysql://user:pass@host:port/database)');
  }
  const [, , userinfo = '', authority = '', pathname = '', search = ''] = m;
  if (search !== '') {
    const keys = [...new URLSearchParams(search).keys()].join('&');
    // Nothing reads them: an ignored ?ssl=true would mean plain TCP where TLS was asked for.
    throw new DatabaseUrlError(`takes no query parameters (TLS is set with DATABASE_TLS and DATABASE_TLS_CA_FILE), got "?${keys}"`);
  }
  if (authority === '') throw new DatabaseUrlError('has no host');
  const hosts = authority.split(',').map((h) => parseHost(h.trim()));
  const database = decode(pathname.replace(/^\//, ''));
  if (database === '') throw new DatabaseUrlError('names no database (mysql://…/database)');
  const colon = userinfo.indexOf(':');
  return {
    hosts,
    user: decode(colon < 0 ? userinfo : userinfo.slice(0, colon)),
    password: colon < 0 ? '' : decode(userinfo.slice(colon + 1)),
    database,
  };
}
