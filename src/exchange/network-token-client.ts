/**
 * The initiating member's side of service-to-service authentication (docs/exchange.md, "Service-to-service
 * calls"): the client assertion (SMART Backend Services `private_key_jwt`, signed with this member's service key,
 * carrying the acting user in the HL7 UDAP B2B extension) and a cache of the network tokens custodians issue for
 * it, one per (custodian, actor, role, purposes, grant ids), reused until shortly before it expires.
 */
import { randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import { CLIENT_ASSERTION_TYPE } from '../access/tokens.js';
import { B2B_EXTENSION_KEY, type B2bAuthorization } from './b2b.js';
import { memberClientId, tokenUrlOf, type MemberEntry } from './members.js';
import { MemberCallError, type MemberHttpClient, type MemberResponse } from './member-http.js';
import { NETWORK_SCOPE } from './network-tokens.js';

/** This member's service identity: its MSP id and the private key of its directory service certificate. */
export interface ServiceIdentity {
  mspId: string;
  privateKey: KeyObject;
}

/** Who acts behind a network call, and why. */
export interface NetworkActor {
  /** The acting participant's pseudonym (never a name). */
  subjectId: string;
  subjectRole: string;
  /** PurposeOfUse codes, e.g. ['TREAT']. */
  purposes: readonly string[];
  /** Grant ids the call relies on. */
  consentReferences: readonly string[];
}

/** Assertions live one minute: long enough for one token request, short for a stolen one. */
const ASSERTION_SECONDS = 60;
const ALGORITHM_BY_CURVE: Record<string, 'ES256' | 'ES384'> = { prime256v1: 'ES256', secp384r1: 'ES384' };

/** A client assertion for one token request at `tokenUrl`, signed with the service key. */
export async function clientAssertion(
  identity: ServiceIdentity,
  tokenUrl: string,
  actor: NetworkActor,
  now: number = Date.now(),
): Promise<string> {
  const alg = ALGORITHM_BY_CURVE[identity.privateKey.asymmetricKeyDetails?.namedCurve ?? ''];
  if (!alg) throw new Error('the service key must be an ECDSA P-256 (or P-384) private key');
  const clientId = memberClientId(identity.mspId);
  const b2b: B2bAuthorization = {
    version: '1',
    subject_id: actor.subjectId,
    subject_role: actor.subjectRole,
    organization_id: identity.mspId,
    purpose_of_use: [...actor.purposes],
    consent_reference: [...actor.consentReferences],
  };
  const issuedAt = Math.floor(now / 1000);
  return new SignJWT({ extensions: { [B2B_EXTENSION_KEY]: b2b } })
    .setProtectedHeader({ alg, typ: 'JWT' })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(tokenUrl)
    .setJti(randomUUID())
    .setIssuedAt(issuedAt)
    .setExpirationTime(issuedAt + ASSERTION_SECONDS)
    .sign(identity.privateKey);
}

/** A custodian refused the token request (its OAuth error code, never its description). */
export class NetworkTokenRefused extends Error {
  constructor(
    readonly member: string,
    readonly status: number,
    readonly error: string,
  ) {
    super(`member ${member} refused the token request (${status} ${error})`);
    this.name = 'NetworkTokenRefused';
  }
}

export interface NetworkTokenClientOptions {
  identity: ServiceIdentity;
  http: MemberHttpClient;
  /** A token is fetched anew this long before it expires (default 30 s). */
  refreshMarginSeconds?: number;
  now?: () => number;
}

interface CachedToken {
  token: string;
  /** epoch ms after which it is not used any more (its expiry less the margin) */
  useUntil: number;
}

const CACHE_LIMIT = 10_000;
/** A custodian's token is reused at most this long, whatever lifetime it announces. */
const MAX_TOKEN_SECONDS = 3600;

export class NetworkTokenClient {
  private readonly identity: ServiceIdentity;
  private readonly http: MemberHttpClient;
  private readonly marginMs: number;
  private readonly now: () => number;
  private readonly cache = new Map<string, CachedToken>();
  /** Token requests in flight, so concurrent calls for one key share one request. */
  private readonly pending = new Map<string, Promise<string>>();

  constructor(options: NetworkTokenClientOptions) {
    this.identity = options.identity;
    this.http = options.http;
    this.marginMs = (options.refreshMarginSeconds ?? 30) * 1000;
    this.now = options.now ?? Date.now;
  }

  /**
   * A network token of this custodian for this actor: the cached one while it has more than the margin to live,
   * else a new one. Rejects with MemberCallError (the call failed) or NetworkTokenRefused (the custodian said no).
   */
  token(custodian: MemberEntry, actor: NetworkActor, signal?: AbortSignal): Promise<string> {
    const key = cacheKey(custodian.mspId, actor);
    const cached = this.cache.get(key);
    if (cached && this.now() < cached.useUntil) return Promise.resolve(cached.token);
    let pending = this.pending.get(key);
    if (!pending) {
      pending = this.fetch(custodian, actor, key, signal).finally(() => this.pending.delete(key));
      this.pending.set(key, pending);
    }
    return pending;
  }

  /**
   * POSTs `body` to a member's network operation (`[base]/$operation`) with this actor's network token; a token the
   * member no longer takes (401) is forgotten and fetched anew once. Rejects as `token` and MemberHttpClient do.
   */
  async postOperation(
    member: MemberEntry,
    actor: NetworkActor,
    operation: string,
    body: string,
    signal: AbortSignal,
  ): Promise<MemberResponse> {
    for (let attempt = 0; ; attempt++) {
      const token = await this.token(member, actor, signal);
      const response = await this.http.request(member, {
        method: 'POST',
        url: `${member.fhirBaseUrl}/$${operation}`,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/fhir+json',
          accept: 'application/fhir+json',
        },
        body,
        signal,
      });
      if (response.status !== 401 || attempt > 0) return response;
      this.forget(member, actor);
    }
  }

  /** Forgets a custodian's token for this actor (e.g. after the custodian answered 401 to it). */
  forget(custodian: MemberEntry, actor: NetworkActor): void {
    this.cache.delete(cacheKey(custodian.mspId, actor));
  }

  private async fetch(
    custodian: MemberEntry,
    actor: NetworkActor,
    key: string,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const tokenUrl = tokenUrlOf(custodian);
    const requestedAt = this.now();
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_assertion_type: CLIENT_ASSERTION_TYPE,
      client_assertion: await clientAssertion(this.identity, tokenUrl, actor, requestedAt),
      scope: NETWORK_SCOPE,
    });
    const response = await this.http.request(custodian, {
      method: 'POST',
      url: tokenUrl,
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: form.toString(),
      signal,
    });
    let answer: unknown;
    try {
      answer = JSON.parse(response.body.toString('utf8'));
    } catch {
      answer = undefined;
    }
    const fields = (answer !== null && typeof answer === 'object' ? answer : {}) as Record<string, unknown>;
    if (response.status !== 200)
      throw new NetworkTokenRefused(
        custodian.mspId,
        response.status,
        typeof fields.error === 'string' && /^[a-z_]{1,64}$/.test(fields.error) ? fields.error : 'error',
      );
    const token = fields.access_token;
    const expiresIn = fields.expires_in;
    if (
      typeof token !== 'string' ||
      token === '' ||
      typeof fields.token_type !== 'string' ||
      fields.token_type.toLowerCase() !== 'bearer' ||
      typeof expiresIn !== 'number' ||
      !(expiresIn > 0)
    )
      throw new MemberCallError('network', custodian.mspId, 'the token response is not a bearer token');
    // Counted from when the request was made: the token may have been issued just after.
    const useUntil = requestedAt + Math.min(expiresIn, MAX_TOKEN_SECONDS) * 1000 - this.marginMs;
    if (useUntil > this.now()) {
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(key, { token, useUntil });
    }
    return token;
  }
}

function cacheKey(mspId: string, actor: NetworkActor): string {
  // A token is bound to the grant ids and purposes it was issued for: another set needs another token.
  return JSON.stringify([
    mspId,
    actor.subjectId,
    actor.subjectRole,
    [...actor.purposes].sort(),
    [...actor.consentReferences].sort(),
  ]);
}
