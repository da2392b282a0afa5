/**
 * Where an `$import` source may come from, and fetching it (docs/bulk.md, "$import sources"):
 *
 * - a server-local file: `file:` URL (or an absolute path) inside the import root (`--import-root`); its real
 *   path (symbolic links resolved) must stay inside the root's real path;
 * - an http(s) URL whose origin (scheme, host and port, after URL normalisation: default ports, case, IDN) is on the
 *   allow-list (`--import-allow`). The host is resolved once and the connection made to that address (no second
 *   lookup a DNS answer could change); redirects are refused; the body is cut at `--import-max-bytes`, and a
 *   gzip body (Content-Encoding or a `.gz` path) is inflated to at most the same number of bytes.
 */
import { createWriteStream, realpathSync, statSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isAbsolute, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGunzip } from 'node:zlib';
import { fhirError } from '../fhir/outcome.js';

export interface ImportSourcePolicy {
  /** Folder server-local sources must be in; absent: none accepted. */
  root?: string;
  /** Allowed origins (`https://host:port` as `new URL(x).origin` spells them). */
  allow: readonly string[];
  /** Most bytes fetched, and most bytes after decompression, per source. */
  maxBytes: number;
}

export type CheckedSource = { kind: 'file'; path: string } | { kind: 'url'; url: string };

/** Checks a source at kick-off: a 400 naming it when it is not allowed (the same text for every refusal kind). */
export function checkSource(text: string, policy: ImportSourcePolicy): CheckedSource {
  const refused = (why: string): never => {
    throw fhirError('parameter-invalid', `input url '${text}' ${why}`, { expression: 'input.url' });
  };
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (!url && isAbsolute(text)) url = new URL(`file://${text}`);
  if (!url) return refused('is not an absolute URL');
  if (url.protocol === 'file:') {
    if (!policy.root)
      return refused('is a server-local file, and no import root is configured (--import-root)');
    let path: string;
    let root: string;
    try {
      path = realpathSync(fileURLToPath(url));
      root = realpathSync(policy.root);
    } catch {
      return refused('is not a readable file inside the import root');
    }
    const inside = relative(root, path);
    if (inside === '' || inside.startsWith(`..${sep}`) || inside === '..' || isAbsolute(inside))
      return refused('is not inside the import root');
    if (!statSync(path).isFile()) return refused('is not a file');
    return { kind: 'file', path };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return refused('is neither file: nor http(s):');
  if (url.username || url.password) return refused('carries credentials');
  if (!policy.allow.includes(url.origin)) return refused(`is not of an allowed origin (--import-allow)`);
  return { kind: 'url', url: url.href };
}

/** Fetches an allowed URL into `file` (inflated when gzip), within the byte caps. Throws an Error saying why. */
export async function fetchSource(url: string, file: string, policy: ImportSourcePolicy): Promise<void> {
  const parsed = new URL(url);
  if (!policy.allow.includes(parsed.origin)) throw new Error('the origin is no longer allowed');
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  // Resolved once; the connection goes to this address whatever the name resolves to later.
  const { address, family } = await lookup(host);
  const request = parsed.protocol === 'https:' ? httpsRequest : httpRequest;
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = request(
      parsed,
      {
        method: 'GET',
        headers: { accept: 'application/fhir+ndjson', 'accept-encoding': 'gzip' },
        // Node asks for every address (autoSelectFamily) or one: either way the one resolved above.
        lookup: ((_name: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) =>
          options.all ? callback(null, [{ address, family }]) : callback(null, address, family)) as never,
        servername: parsed.protocol === 'https:' ? host : undefined,
        timeout: 30_000,
      },
      resolve,
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    req.end();
  });
  if (response.statusCode !== 200) {
    response.resume();
    const redirect =
      response.statusCode !== undefined && response.statusCode >= 300 && response.statusCode < 400;
    throw new Error(
      redirect
        ? `answered a redirect (${response.statusCode}): not followed`
        : `answered ${response.statusCode}`,
    );
  }
  const gzip = response.headers['content-encoding'] === 'gzip' || parsed.pathname.endsWith('.gz');
  await new Promise<void>((resolve, reject) => {
    let fetched = 0;
    let inflated = 0;
    const out = createWriteStream(file, { mode: 0o600 });
    const fail = (err: Error) => {
      response.destroy();
      out.destroy();
      reject(err);
    };
    response.on('data', (chunk: Buffer) => {
      fetched += chunk.length;
      if (fetched > policy.maxBytes)
        fail(new Error(`is larger than ${policy.maxBytes} bytes (--import-max-bytes)`));
    });
    response.on('error', fail);
    let body: NodeJS.ReadableStream = response;
    if (gzip) {
      const gunzip = createGunzip();
      gunzip.on('data', (chunk: Buffer) => {
        inflated += chunk.length;
        if (inflated > policy.maxBytes)
          fail(new Error(`inflates to more than ${policy.maxBytes} bytes (--import-max-bytes)`));
      });
      gunzip.on('error', fail);
      body = response.pipe(gunzip);
    }
    body.pipe(out);
    out.on('error', fail);
    out.on('finish', () => resolve());
  });
}
