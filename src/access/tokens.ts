/**
 * SMART Backend Services authentication (client credentials with a signed JWT, RFC 7523) and the service's
 * own access tokens.
 *
 * Client assertions are checked with `jose` against the public key of the participant's enrolled certificate.
 * Access tokens are HMAC-SHA-256 signed compact tokens (`hat1.<payload>.<mac>`): a check costs one HMAC (and
 * usually not even that: verified tokens are memoised) plus a revocation lookup, so it fits the per-request budget,
 * and they survive a restart because the key lives in the data directory.
 */
import { createHmac, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { Caller, NetworkCaller } from '../fhir/interactions/access-policy.js';
import { grantScopes, PARTICIPANT_ROLES, type ParticipantRole } from './scopes.js';
import type { ReplayGuard } from './shared-state.js';

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** RFC 7523 via SMART: an assertion may live at most five minutes. */
export const MAX_ASSERTION_LIFETIME_SECONDS = 300;
export const CLOCK_TOLERANCE_SECONDS = 5;
/**
 * How far ahead of this server's clock an assertion's `iat` may be (a client whose clock runs fast). An assertion
 * issued further in the future is refused: it would be a token made now for later use. (`nbf` ahead by more than
 * CLOCK_TOLERANCE_SECONDS is refused by jose.)
 */
export const MAX_CLOCK_SKEW_SECONDS = 60;
const ROLES: ReadonlySet<string> = new Set<string>(PARTICIPANT_ROLES);

/** What the token service needs to know about a client (a participant with an enrolled certificate). */
export interface ClientRecord {
  clientId: string;
  /** The participant's pseudonym (`hie.id`): the only name the ledger and audit records use. */
  pseudonym: string;
  role: ParticipantRole;
  /** Linked FHIR resource (`Patient/1`, `Practitioner/2`, `Organization/3`). */
  resource?: string;
  /** The organisation the participant acts for (custodian of what it writes). */
  organization?: string;
  /** Public key of the enrolled certificate. */
  publicKey: KeyObject;
}

/** The participants' directory (src/access/participants.ts implements it over its table). */
export interface ClientDirectory {
  /** The active (enrolled, not revoked) client with this id, or undefined (at once, or from a database). */
  findClient(clientId: string): ClientRecord | undefined | Promise<ClientRecord | undefined>;
  /** Is the client still enrolled and not revoked? Asked on every request, so must be cheap. */
  isActive(clientId: string): boolean;
}

/** An RFC 6749 §5.2 error response. */
export class OAuthError extends Error {
  constructor(
    readonly error:
      | 'invalid_request'
      | 'invalid_client'
      | 'invalid_grant'
      | 'unsupported_grant_type'
      | 'invalid_scope'
      | 'temporarily_unavailable',
    readonly description: string,
    readonly status = error === 'invalid_client' ? 401 : error === 'temporarily_unavailable' ? 429 : 400,
    /** Seconds to wait before trying again (sent as Retry-After). */
    readonly retryAfterSeconds?: number,
  ) {
    super(`${error}: ${description}`);
    this.name = 'OAuthError';
  }
  toJSON(): { error: string; error_description: string } {
    return { error: this.error, error_description: this.description };
  }
}

/** A refused access token (RFC 6750 `invalid_token`). The reason never contains the token. */
export class InvalidTokenError extends Error {
  /** The catalogue code of the refusal: an expired token is worth a new one, any other is not. */
  constructor(
    readonly reason: string,
    readonly code: 'token-invalid' | 'token-expired' = 'token-invalid',
  ) {
    super(reason);
    this.name = 'InvalidTokenError';
  }
}

/**
 * The JSON payload of a token signed by this service (`<prefix><base64url payload>.<base64url MAC>`, the prefix
 * already checked by the caller), its MAC compared in constant time. Throws InvalidTokenError naming `what`
 * ('access token', 'network token') when it is malformed or the MAC differs; the caller checks the claims.
 */
export function openMacToken(
  token: string,
  prefixLength: number,
  mac: (payload: string) => string,
  what: string,
): unknown {
  const dot = token.indexOf('.', prefixLength);
  if (dot < 0) throw new InvalidTokenError(`malformed ${what}`);
  const payload = token.slice(prefixLength, dot);
  const given = Buffer.from(token.slice(dot + 1), 'base64url');
  const expected = Buffer.from(mac(payload), 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    throw new InvalidTokenError(`invalid ${what} signature`);
  try {
    return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    throw new InvalidTokenError(`malformed ${what}`);
  }
}

export interface TokenRequest {
  grant_type?: string;
  client_assertion_type?: string;
  client_assertion?: string;
  scope?: string;
}

export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  scope: string;
  /** SMART launch context: the patient in context (patients). */
  patient?: string;
  /** The FHIR resource of the user (clinicians, labs). */
  fhirUser?: string;
}

/**
 * The token endpoint's second kind of client: other members' services (src/exchange/network-tokens.ts), whose
 * assertions name `member:<mspId>` as issuer. Their tokens open only network operations, never this API's rules.
 */
export interface NetworkTokenEndpoint {
  /** Is this (not yet verified) client assertion a member's? */
  accepts(assertion: string): boolean;
  /** Verifies the member's assertion and issues a network token, or throws OAuthError. */
  exchange(request: TokenRequest, tokenUrl: TokenUrl): Promise<TokenResponse>;
  /**
   * The caller behind a network token (`hnt1.`), or InvalidTokenError; a directory failure rejects otherwise.
   * Absent: network tokens open nothing on /fhir.
   */
  verify?(token: string): Promise<NetworkCaller>;
}

/** The claims of the service's access token (short names: it travels on every request). */
interface AccessClaims {
  /** client id */
  sub: string;
  /** pseudonym */
  pid: string;
  role: ParticipantRole;
  org?: string;
  res?: string;
  scp: string;
  /** expiry, epoch seconds */
  exp: number;
}

export interface TokenServiceOptions {
  directory: ClientDirectory;
  /** HMAC key for access tokens (32 bytes or more). */
  secret: Buffer;
  /** Access token lifetime; SMART recommends at most five minutes. */
  accessTokenSeconds?: number;
  now?: () => number;
  /** Where used assertions are kept: shared by the replicas (src/access/shared-state.ts); absent: this process's memory. */
  replay?: ReplayGuard;
}

const ALGORITHM_BY_CURVE: Record<string, 'ES256' | 'ES384'> = { prime256v1: 'ES256', secp384r1: 'ES384' };
const TOKEN_PREFIX = 'hat1.';
const MEMO_LIMIT = 10_000;
/** 22 base64url characters: 132 bits of the token's MAC. */
const MEMO_KEY_CHARS = 22;

function memoKey(token: string): string {
  return token.length > MEMO_KEY_CHARS ? token.slice(-MEMO_KEY_CHARS) : token;
}

export class TokenService {
  private readonly directory: ClientDirectory;
  private readonly secret: Buffer;
  readonly accessTokenSeconds: number;
  private readonly now: () => number;
  /** `iss jti` -> expiry (ms): assertions already used, kept until they would have expired anyway. */
  private readonly usedAssertions = new Map<string, number>();
  private nextSweep = 0;
  private readonly replay?: ReplayGuard;
  /** Verified access tokens -> caller, so a request costs a Map lookup instead of an HMAC and a JSON parse. */
  /**
   * Verified tokens by the last MEMO_KEY_CHARS characters of their MAC (hashing a 300-character token string on
   * every request cost more than the rest of the lookup); an entry counts only if its whole token is equal.
   */
  private readonly verified = new Map<
    string,
    { token: string; caller: Caller; clientId: string; expiresAt: number }
  >();

  constructor(options: TokenServiceOptions) {
    if (options.secret.length < 32) throw new Error('access token secret must be at least 32 bytes');
    this.directory = options.directory;
    this.secret = options.secret;
    this.accessTokenSeconds = options.accessTokenSeconds ?? 300;
    this.now = options.now ?? Date.now;
    this.replay = options.replay;
  }

  /** `POST /auth/token`: checks the client assertion and issues an access token, or throws OAuthError. */
  async exchange(
    request: TokenRequest,
    tokenUrl: TokenUrl,
    /** Called with the client once its assertion verified, before a token is issued; may throw OAuthError. */
    admit?: (client: ClientRecord) => void | Promise<void>,
  ): Promise<TokenResponse> {
    if (request.grant_type === undefined || request.grant_type === '')
      throw new OAuthError('invalid_request', 'grant_type is required');
    if (request.grant_type !== 'client_credentials') {
      throw new OAuthError('unsupported_grant_type', 'only client_credentials is supported');
    }
    if (request.client_assertion_type !== CLIENT_ASSERTION_TYPE) {
      throw new OAuthError('invalid_request', `client_assertion_type must be ${CLIENT_ASSERTION_TYPE}`);
    }
    const assertion = request.client_assertion;
    if (typeof assertion !== 'string' || assertion === '')
      throw new OAuthError('invalid_request', 'client_assertion is required');

    const client = await this.verifyAssertion(assertion, tokenUrl);
    await admit?.(client);
    const scopes = grantScopes(client.role, request.scope);
    if (scopes.length === 0)
      throw new OAuthError('invalid_scope', 'none of the requested scopes may be granted to this client');

    const exp = Math.floor(this.now() / 1000) + this.accessTokenSeconds;
    const claims: AccessClaims = {
      sub: client.clientId,
      pid: client.pseudonym,
      role: client.role,
      scp: scopes.join(' '),
      exp,
    };
    if (client.organization) claims.org = client.organization;
    if (client.resource) claims.res = client.resource;
    const response: TokenResponse = {
      access_token: this.sign(claims),
      token_type: 'Bearer',
      expires_in: this.accessTokenSeconds,
      scope: claims.scp,
    };
    if (client.role === 'patient' && client.resource?.startsWith('Patient/'))
      response.patient = client.resource.slice('Patient/'.length);
    else if (client.resource && (client.role === 'clinician' || client.role === 'lab'))
      response.fhirUser = client.resource;
    return response;
  }

  private async verifyAssertion(assertion: string, tokenUrl: TokenUrl): Promise<ClientRecord> {
    const { alg, iss, sub } = readClientAssertion(assertion);
    if (typeof iss !== 'string' || iss === '' || iss !== sub)
      throw new OAuthError('invalid_client', 'iss and sub must both be the client id');

    const client = await this.directory.findClient(iss);
    if (!client) throw new OAuthError('invalid_client', 'unknown or revoked client');
    const payload = await verifyClientAssertion(assertion, {
      alg,
      key: client.publicKey,
      keyOwner: 'client',
      issuer: client.clientId,
      tokenUrl,
      now: this.now(),
    });
    if (typeof payload.jti !== 'string' || payload.jti === '')
      throw new OAuthError('invalid_client', 'client_assertion jti is required');

    const replayKey = `${client.clientId} ${payload.jti}`;
    const expiresAt = (payload.exp + CLOCK_TOLERANCE_SECONDS) * 1000;
    if (this.replay) {
      const verdict = await this.replay.admit(replayKey, expiresAt);
      if (verdict === 'replayed')
        throw new OAuthError('invalid_client', 'client_assertion jti was already used');
      if (verdict === 'full')
        throw new OAuthError(
          'temporarily_unavailable',
          'too many assertions in flight; retry later',
          429,
          60,
        );
      return client;
    }
    this.sweepUsedAssertions();
    if (this.usedAssertions.has(replayKey))
      throw new OAuthError('invalid_client', 'client_assertion jti was already used');
    this.usedAssertions.set(replayKey, expiresAt);
    return client;
  }

  private sweepUsedAssertions(): void {
    const now = this.now();
    if (now < this.nextSweep) return;
    this.nextSweep = now + 10_000;
    for (const [key, expiresAt] of this.usedAssertions) if (expiresAt < now) this.usedAssertions.delete(key);
  }

  private mac(payload: string): string {
    return createHmac('sha256', this.secret).update(payload).digest('base64url');
  }

  private sign(claims: AccessClaims): string {
    // A random nonce keeps two tokens issued in the same second distinct.
    const payload = Buffer.from(
      JSON.stringify({ ...claims, n: randomBytes(9).toString('base64url') }),
    ).toString('base64url');
    return `${TOKEN_PREFIX}${payload}.${this.mac(payload)}`;
  }

  /**
   * Checks a bearer token on a FHIR request: signature, expiry, and that the client is still active (a revoked
   * participant is refused at once, even with an unexpired token). Returns the caller or throws InvalidTokenError.
   */
  verifyAccessToken(token: string): Caller {
    const known = this.verifiedCaller(token);
    if (known) return known;
    const now = this.now();
    if (!token.startsWith(TOKEN_PREFIX)) throw new InvalidTokenError('malformed access token');
    const parsed = openMacToken(token, TOKEN_PREFIX.length, (payload) => this.mac(payload), 'access token');
    // Signed by this service, but perhaps by an older version or with a leaked key: every claim is checked.
    if (!isAccessClaims(parsed)) throw new InvalidTokenError('malformed access token');
    const claims = parsed;
    const expiresAt = claims.exp * 1000;
    if (!(expiresAt > now)) throw new InvalidTokenError('the access token has expired', 'token-expired');
    if (!this.directory.isActive(claims.sub)) throw new InvalidTokenError('the client was revoked');
    const caller: Caller = { participant: claims.pid, role: claims.role, scopes: claims.scp.split(' ') };
    if (claims.org) caller.organization = claims.org;
    if (claims.res) caller.fhirUser = claims.res;
    // Organisations act for themselves: a system or lab linked to an Organization is its custodian.
    if (!caller.organization && claims.res?.startsWith('Organization/')) caller.organization = claims.res;
    Object.freeze(caller.scopes);
    Object.freeze(caller);
    if (this.verified.size >= MEMO_LIMIT) this.verified.clear();
    this.verified.set(memoKey(token), { token, caller, clientId: claims.sub, expiresAt });
    return caller;
  }

  /**
   * The caller of a token this service has verified before (its signature and syntax checked then), with its
   * expiry and the client's revocation checked now; undefined for a token not seen before.
   */
  verifiedCaller(token: string): Caller | undefined {
    const memo = this.verified.get(memoKey(token));
    if (memo === undefined || memo.token !== token) return undefined;
    if (memo.expiresAt <= this.now()) {
      this.verified.delete(memoKey(token));
      throw new InvalidTokenError('the access token has expired', 'token-expired');
    }
    if (!this.directory.isActive(memo.clientId)) throw new InvalidTokenError('the client was revoked');
    return memo.caller;
  }

  /** The client id behind a verified access token (for audit), without re-verifying. */
  clientIdOf(token: string): string | undefined {
    const memo = this.verified.get(memoKey(token));
    return memo?.token === token ? memo.clientId : undefined;
  }
}

/** The claims this service puts in its access tokens, with their types. */
function isAccessClaims(value: unknown): value is AccessClaims {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const claims = value as Record<string, unknown>;
  return (
    typeof claims.sub === 'string' &&
    typeof claims.pid === 'string' &&
    typeof claims.role === 'string' &&
    ROLES.has(claims.role) &&
    typeof claims.scp === 'string' &&
    typeof claims.exp === 'number' &&
    Number.isFinite(claims.exp) &&
    (claims.org === undefined || typeof claims.org === 'string') &&
    (claims.res === undefined || typeof claims.res === 'string')
  );
}

/**
 * The token URL(s) a client assertion may name as its audience: the one the base URL setting gives, or, without it,
 * the URL of the request (with every spelling of a loopback host, so `localhost` and `127.0.0.1` both work).
 */
export type TokenUrl = string | readonly string[];

/**
 * The header algorithm and the issuer and subject, not yet verified, of a client assertion: what finds its key.
 * Asymmetric signatures only: `none` and HMAC (which would turn a public key into a shared secret) are refused.
 */
export function readClientAssertion(assertion: string): {
  alg: 'ES256' | 'ES384';
  iss: unknown;
  sub: unknown;
} {
  let alg: unknown;
  let iss: unknown;
  let sub: unknown;
  try {
    alg = decodeProtectedHeader(assertion).alg;
    ({ iss, sub } = decodeJwt(assertion));
  } catch {
    throw new OAuthError('invalid_client', 'client_assertion is not a signed JWT');
  }
  if (alg !== 'ES384' && alg !== 'ES256')
    throw new OAuthError('invalid_client', 'client_assertion must be signed with ES384 or ES256');
  return { alg, iss, sub };
}

const KEY_NAME = { client: 'the client key', member: "the member's service key" } as const;

/**
 * Verifies a client assertion (RFC 7523, as SMART Backend Services profiles it) with its issuer's key: the one
 * algorithm of the key's curve; the signature; iss = sub = `issuer`; aud one of the token URLs; `exp` required and
 * at most MAX_ASSERTION_LIFETIME_SECONDS ahead; `iat` at most MAX_CLOCK_SKEW_SECONDS ahead; `nbf`; all with
 * CLOCK_TOLERANCE_SECONDS. The `jti` is required present; its checks (replay) are the caller's. Throws OAuthError
 * (`invalid_client`).
 */
export async function verifyClientAssertion(
  assertion: string,
  check: {
    /** The header's algorithm (readClientAssertion). */
    alg: 'ES256' | 'ES384';
    key: KeyObject;
    /** Whose key it is, for the refusals. */
    keyOwner: keyof typeof KEY_NAME;
    issuer: string;
    tokenUrl: TokenUrl;
    /** This server's clock, ms. */
    now: number;
  },
): Promise<JWTPayload & { exp: number }> {
  const expected = ALGORITHM_BY_CURVE[check.key.asymmetricKeyDetails?.namedCurve ?? ''];
  if (!expected)
    throw new OAuthError('invalid_client', `${KEY_NAME[check.keyOwner]} is not an ECDSA P-256 or P-384 key`);
  if (check.alg !== expected)
    throw new OAuthError('invalid_client', `this ${check.keyOwner}'s key signs with ${expected}`);

  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(assertion, check.key, {
      algorithms: [expected],
      issuer: check.issuer,
      subject: check.issuer,
      audience: audiences(check.tokenUrl),
      requiredClaims: ['exp', 'jti'],
      clockTolerance: CLOCK_TOLERANCE_SECONDS,
      currentDate: new Date(check.now),
    }));
  } catch (err) {
    throw new OAuthError('invalid_client', assertionFailure(err, check.tokenUrl));
  }
  const exp = payload.exp!;
  const nowSeconds = check.now / 1000;
  if (exp > nowSeconds + MAX_ASSERTION_LIFETIME_SECONDS + CLOCK_TOLERANCE_SECONDS)
    throw new OAuthError('invalid_client', 'client_assertion exp is more than five minutes ahead');
  if (payload.iat !== undefined && payload.iat > nowSeconds + MAX_CLOCK_SKEW_SECONDS)
    throw new OAuthError(
      'invalid_client',
      `client_assertion iat is in the future (more than ${MAX_CLOCK_SKEW_SECONDS} s ahead of this server's clock)`,
    );
  return { ...payload, exp };
}

function audiences(tokenUrl: TokenUrl): string[] {
  return typeof tokenUrl === 'string' ? [tokenUrl] : [...tokenUrl];
}

function assertionFailure(err: unknown, tokenUrl?: TokenUrl): string {
  if (err instanceof joseErrors.JWTExpired) return 'client_assertion has expired';
  // The audience a client must name, said outright: the commonest mistake (another spelling of the host, a path).
  if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud' && tokenUrl !== undefined)
    return `client_assertion aud must be this service's token URL: ${audiences(tokenUrl).join(' or ')}`;
  if (err instanceof joseErrors.JWTClaimValidationFailed)
    return `client_assertion claim check failed: ${err.claim} ${err.reason}`;
  if (err instanceof joseErrors.JWSSignatureVerificationFailed)
    return 'client_assertion signature does not verify';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'client_assertion algorithm not allowed';
  return 'client_assertion is invalid';
}
