/**
 * Calls out to other members, safe against a hostile or broken member (docs/exchange.md, "Service-to-service
 * calls"; docs/threat-model.md, SSRF):
 * - only active members, and only the member's own origin (the directory's FHIR base URL), and only https outside local-network mode;
 * - only public unicast addresses outside local-network mode, checked on the addresses the connection actually
 *   uses (the resolver runs at connect time inside the socket's lookup), so a name that resolves to a private
 *   address, now or after a DNS change (rebinding), is refused;
 * - the server certificate must chain to the directory entry's `tlsCa` when the entry has one (the system roots
 *   otherwise), with the usual host name check;
 * - no redirects: a 3xx answer is an error;
 * - the response body is streamed and the call aborted past a size cap;
 * - at most N connections per member, a per-member timeout covering the wait for a connection, the headers and
 *   the body, and the caller's overall deadline (an AbortSignal).
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import {
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { issue, type OperationOutcomeIssue } from '../fhir/outcome.js';
import type { MemberEntry } from './members.js';

/** Why a call to a member failed; the pull names the member and this in an OperationOutcome. */
export type MemberCallErrorKind =
  /** the member's directory entry is revoked: it is not called (not even told who asks) */
  | 'revoked'
  /** http:// outside local-network mode, or not http(s) at all */
  | 'scheme'
  /** a URL outside the member's origin */
  | 'origin'
  /** a private, loopback, link-local, multicast or reserved address outside local-network mode */
  | 'address'
  /** the server certificate does not verify against the member's TLS CA (or the system roots) */
  | 'tls'
  /** the member answered with a redirect: never followed */
  | 'redirect'
  /** the response is larger than the cap */
  | 'too-large'
  /** the member did not answer completely within the per-member timeout */
  | 'timeout'
  /** the caller's overall deadline passed */
  | 'deadline'
  /** the connection failed (refused, reset, name not found...) */
  | 'network';

const ISSUE_CODE: Record<MemberCallErrorKind, OperationOutcomeIssue['code']> = {
  revoked: 'security',
  scheme: 'security',
  origin: 'security',
  address: 'security',
  tls: 'security',
  redirect: 'not-supported',
  'too-large': 'too-costly',
  timeout: 'timeout',
  deadline: 'timeout',
  network: 'transient',
};

export class MemberCallError extends Error {
  constructor(
    readonly kind: MemberCallErrorKind,
    /** The member's MSP id. */
    readonly member: string,
    message: string,
  ) {
    super(message);
    this.name = 'MemberCallError';
  }

  /** The error as an OperationOutcome issue naming the member (no response content, no health data). */
  toIssue(): OperationOutcomeIssue {
    return issue('error', ISSUE_CODE[this.kind], `member ${this.member}: ${this.message}`);
  }
}

/** Resolves a host name to its addresses (default: the system resolver, as `dns.lookup` with `all`). */
export type Resolve = (hostname: string) => Promise<LookupAddress[]>;

export interface MemberHttpOptions {
  /** Local-network mode (development, demos, CI): http and private/loopback addresses allowed. */
  localNetwork: boolean;
  /** Largest response body accepted, bytes. */
  maxResponseBytes: number;
  /** Most simultaneous connections to one member. */
  connectionsPerMember: number;
  /** Per call: connection, headers and body within this time (ms). */
  memberTimeoutMs: number;
  resolve?: Resolve;
}

export interface MemberRequest {
  method: 'GET' | 'POST';
  /** Absolute URL on the member's origin. */
  url: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** The caller's overall deadline. */
  signal?: AbortSignal;
}

export interface MemberResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const systemResolve: Resolve = (hostname) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) =>
      err ? reject(err) : resolve(addresses),
    );
  });

/** Is this address one the exchange may call outside local-network mode (public unicast only)? */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  // process() turns an IPv4-mapped IPv6 address (::ffff:127.0.0.1) into the IPv4 address it stands for.
  return ipaddr.process(address).range() === 'unicast';
}

const TLS_ERRORS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export class MemberHttpClient {
  private readonly agents = new Map<string, HttpAgent>();
  private readonly resolve: Resolve;

  constructor(private readonly options: MemberHttpOptions) {
    this.resolve = options.resolve ?? systemResolve;
  }

  /** Calls a member; resolves with the whole (capped) response, or rejects with a MemberCallError. */
  request(member: MemberEntry, request: MemberRequest): Promise<MemberResponse> {
    const mspId = member.mspId;
    if (member.status !== 'active')
      return Promise.reject(new MemberCallError('revoked', mspId, 'the member is revoked in the directory'));
    let url: URL;
    let origin: URL;
    try {
      url = new URL(request.url);
      origin = new URL(member.fhirBaseUrl);
    } catch {
      return Promise.reject(new MemberCallError('origin', mspId, 'not an absolute URL'));
    }
    const secure = url.protocol === 'https:';
    if (!secure && !(url.protocol === 'http:' && this.options.localNetwork))
      return Promise.reject(
        new MemberCallError('scheme', mspId, 'only https is allowed outside local-network mode'),
      );
    if (url.origin !== origin.origin)
      return Promise.reject(new MemberCallError('origin', mspId, "the URL is not on the member's origin"));
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    // An address literal is connected to without a lookup: check it here.
    if (isIP(host) !== 0 && !this.allowed(host)) return Promise.reject(addressRefused(mspId));
    if (request.signal?.aborted)
      return Promise.reject(new MemberCallError('deadline', mspId, 'the overall deadline passed'));

    const headers: Record<string, string> = {};
    if (request.headers)
      for (const name of Object.keys(request.headers)) headers[name] = request.headers[name];
    if (request.body !== undefined) headers['content-length'] = String(Buffer.byteLength(request.body));

    return new Promise<MemberResponse>((resolve, reject) => {
      const outgoing = (secure ? httpsRequest : httpRequest)(url, {
        method: request.method,
        headers,
        agent: this.agentFor(member, secure),
        lookup: this.lookupFor(mspId),
      });
      let settled = false;
      const fail = (err: MemberCallError) => {
        if (settled) return;
        finish();
        outgoing.destroy();
        reject(err);
      };
      const onDeadline = () => fail(new MemberCallError('deadline', mspId, 'the overall deadline passed'));
      const timeoutMs = this.options.memberTimeoutMs;
      const timer = setTimeout(
        () => fail(new MemberCallError('timeout', mspId, `no complete answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
      request.signal?.addEventListener('abort', onDeadline, { once: true });
      function finish(): void {
        settled = true;
        clearTimeout(timer);
        request.signal?.removeEventListener('abort', onDeadline);
      }

      outgoing.on('error', (err: NodeJS.ErrnoException) => {
        if (err instanceof MemberCallError) return fail(err);
        if (err.code !== undefined && TLS_ERRORS.has(err.code))
          return fail(new MemberCallError('tls', mspId, `the server certificate was refused (${err.code})`));
        fail(new MemberCallError('network', mspId, `connection failed (${err.code ?? err.name})`));
      });
      outgoing.on('response', (response: IncomingMessage) => {
        const status = response.statusCode ?? 0;
        if (status >= 300 && status < 400)
          return fail(
            new MemberCallError('redirect', mspId, `answered ${status}: redirects are not followed`),
          );
        const declared = Number(response.headers['content-length']);
        if (Number.isFinite(declared) && declared > this.options.maxResponseBytes)
          return fail(tooLarge(mspId, this.options.maxResponseBytes));
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.options.maxResponseBytes)
            return fail(tooLarge(mspId, this.options.maxResponseBytes));
          chunks.push(chunk);
        });
        response.on('error', () => fail(new MemberCallError('network', mspId, 'the response was cut off')));
        response.on('aborted', () => fail(new MemberCallError('network', mspId, 'the response was cut off')));
        response.on('end', () => {
          if (settled) return;
          finish();
          resolve({ status, headers: response.headers, body: Buffer.concat(chunks, size) });
        });
      });
      outgoing.end(request.body);
    });
  }

  /** Closes the pooled connections. */
  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
  }

  private allowed(address: string): boolean {
    return this.options.localNetwork || isPublicAddress(address);
  }

  /** One pool per member (and TLS trust): its size is the member's connection cap. */
  private agentFor(member: MemberEntry, secure: boolean): HttpAgent {
    const key = `${secure ? 's' : 'p'} ${member.mspId} ${member.tlsCa ?? ''}`;
    let agent = this.agents.get(key);
    if (!agent) {
      const pool = { keepAlive: true, maxSockets: this.options.connectionsPerMember, maxFreeSockets: 2 };
      agent = secure
        ? new HttpsAgent(member.tlsCa ? { ...pool, ca: member.tlsCa } : pool)
        : new HttpAgent(pool);
      this.agents.set(key, agent);
    }
    return agent;
  }

  /** The socket's resolver: every address it may connect to is checked, on each connection. */
  private lookupFor(mspId: string): LookupFunction {
    return (hostname, options, callback) => {
      this.resolve(hostname).then(
        (addresses) => {
          const family = options.family === 4 || options.family === 6 ? options.family : undefined;
          const usable = addresses.filter((a) => family === undefined || a.family === family);
          // One refused address refuses the name: a name mixing public and private addresses is an attack.
          if (usable.length === 0 || usable.some((a) => !this.allowed(a.address)))
            return callback(usable.length === 0 ? notFound(mspId) : addressRefused(mspId), '', 0);
          if (options.all) callback(null, usable);
          else callback(null, usable[0].address, usable[0].family);
        },
        (err: NodeJS.ErrnoException) => callback(err, '', 0),
      );
    };
  }
}

function addressRefused(mspId: string): MemberCallError {
  return new MemberCallError(
    'address',
    mspId,
    'the address is private, loopback, link-local, multicast or reserved (allowed only in local-network mode)',
  );
}

function notFound(mspId: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`no address for member ${mspId}`);
  err.code = 'ENOTFOUND';
  return err;
}

function tooLarge(mspId: string, cap: number): MemberCallError {
  return new MemberCallError('too-large', mspId, `the response is larger than ${cap} bytes`);
}
