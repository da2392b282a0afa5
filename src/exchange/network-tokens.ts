/**
 * The custodian's side of service-to-service authentication (docs/exchange.md, "Service-to-service calls"): a
 * member's service asks `POST /auth/token` for a network token with a SMART Backend Services client assertion
 * (`private_key_jwt`, ES256, `iss` = `sub` = `member:<mspId>`) carrying the acting user in the HL7 UDAP B2B
 * extension. The assertion is checked against the member's directory entry (active, its service certificate's
 * key), the audience, the times (the same rules as src/access/tokens.ts), replay (`jti`), the actor's
 * organisation (must be the calling member) and the purposes of use this service allows.
 *
 * The token issued (`hnt1.<payload>.<mac>`) is bound to (calling member, actor, actor role, purposes, grant ids)
 * and opens only network operations: src/access's TokenService refuses it (other prefix, other key), so it never
 * reaches custodian, system or admin rules whatever role the member claims. Network operations check it with
 * `verify`.
 */
import { createHmac, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import {
  CLIENT_ASSERTION_TYPE,
  CLOCK_TOLERANCE_SECONDS,
  InvalidTokenError,
  openMacToken,
  OAuthError,
  readClientAssertion,
  verifyClientAssertion,
  type NetworkTokenEndpoint,
  type TokenRequest,
  type TokenResponse,
  type TokenUrl,
} from '../access/tokens.js';
import type { NetworkCaller } from '../fhir/interactions/access-policy.js';
import { parseB2bAuthorization } from './b2b.js';
import { MEMBER_CLIENT_PREFIX, mspOfClientId, type MemberLookup } from './members.js';
import { ReplayCache } from './replay-cache.js';
import type { ReplayGuard } from '../access/shared-state.js';

/** The one scope a network token carries. */
export const NETWORK_SCOPE = 'network';
/** Purposes of use allowed when none are configured: treatment only. */
export const DEFAULT_NETWORK_PURPOSES: readonly string[] = ['TREAT'];
const TOKEN_PREFIX = 'hnt1.';

export type { NetworkCaller };

/** The claims of a network token (short names, like src/access's tokens). */
interface NetworkClaims {
  mem: string;
  act: string;
  rol: string;
  pou: string[];
  cr: string[];
  exp: number;
}

export interface NetworkTokenServiceOptions {
  members: MemberLookup;
  /** The service's access token secret (DATA/secrets/access-token.key); the network key is derived from it. */
  secret: Buffer;
  /** PurposeOfUse codes this custodian serves (default: TREAT). */
  allowedPurposes?: readonly string[];
  /** Where used assertion ids are kept across restarts (absent: memory only). */
  replayFile?: string;
  /** Used assertion ids shared by the replicas (src/access/shared-state.ts): replaces replayFile. */
  replay?: ReplayGuard;
  tokenSeconds?: number;
  now?: () => number;
}

/** The replay file in a data directory. */
export function replayFileIn(dataDir: string): string {
  return join(dataDir, 'exchange', 'assertion-replay.json');
}

export class NetworkTokenService implements NetworkTokenEndpoint {
  private readonly members: MemberLookup;
  private readonly key: Buffer;
  private readonly allowedPurposes: ReadonlySet<string>;
  private readonly replay: ReplayGuard;
  readonly tokenSeconds: number;
  private readonly now: () => number;

  constructor(options: NetworkTokenServiceOptions) {
    if (options.secret.length < 32) throw new Error('access token secret must be at least 32 bytes');
    this.members = options.members;
    // A key of its own: a network token's MAC never verifies as a participant token's, nor the reverse.
    this.key = createHmac('sha256', options.secret).update('hie-ledger network token v1').digest();
    this.allowedPurposes = new Set(options.allowedPurposes ?? DEFAULT_NETWORK_PURPOSES);
    this.now = options.now ?? Date.now;
    this.replay = options.replay ?? new ReplayCache(options.replayFile, this.now);
    this.tokenSeconds = options.tokenSeconds ?? 300;
  }

  accepts(assertion: string): boolean {
    try {
      const { iss } = decodeJwt(assertion);
      return typeof iss === 'string' && iss.startsWith(MEMBER_CLIENT_PREFIX);
    } catch {
      return false;
    }
  }

  async exchange(request: TokenRequest, tokenUrl: TokenUrl): Promise<TokenResponse> {
    if (request.grant_type === undefined || request.grant_type === '')
      throw new OAuthError('invalid_request', 'grant_type is required');
    if (request.grant_type !== 'client_credentials')
      throw new OAuthError('unsupported_grant_type', 'only client_credentials is supported');
    if (request.client_assertion_type !== CLIENT_ASSERTION_TYPE)
      throw new OAuthError('invalid_request', `client_assertion_type must be ${CLIENT_ASSERTION_TYPE}`);
    if (request.scope !== undefined && request.scope.split(' ').some((s) => s !== '' && s !== NETWORK_SCOPE))
      throw new OAuthError('invalid_scope', `a member may ask only for the scope ${NETWORK_SCOPE}`);
    const assertion = request.client_assertion ?? '';

    const { alg, iss, sub } = readClientAssertion(assertion);
    const mspId = typeof iss === 'string' && iss === sub ? mspOfClientId(iss) : undefined;
    if (mspId === undefined)
      throw new OAuthError('invalid_client', 'iss and sub must both be the member client id member:<mspId>');

    // Unknown and revoked members get the same answer.
    let member;
    try {
      member = await this.members.member(mspId);
    } catch {
      throw new OAuthError('temporarily_unavailable', 'the member directory is unavailable', 503, 5);
    }
    if (!member || member.status !== 'active' || member.mspId !== mspId)
      throw new OAuthError('invalid_client', 'unknown or revoked member');
    const payload = await verifyClientAssertion(assertion, {
      alg,
      key: this.serviceKey(member.serviceCertificate),
      keyOwner: 'member',
      issuer: iss as string,
      tokenUrl,
      now: this.now(),
    });
    const nowSeconds = this.now() / 1000;
    if (typeof payload.jti !== 'string' || payload.jti === '' || payload.jti.length > 256)
      throw new OAuthError('invalid_client', 'client_assertion jti is required (at most 256 characters)');
    // Spent once its signature verified, whatever comes next.
    const verdict = await this.replay.admit(
      `${iss as string} ${payload.jti}`,
      (payload.exp + CLOCK_TOLERANCE_SECONDS) * 1000,
    );
    if (verdict === 'replayed')
      throw new OAuthError('invalid_client', 'client_assertion jti was already used');
    if (verdict === 'full')
      throw new OAuthError('temporarily_unavailable', 'too many assertions in flight; retry later', 429, 60);

    const b2b = parseB2bAuthorization(payload.extensions);
    if (typeof b2b === 'string') throw new OAuthError('invalid_grant', b2b);
    if (b2b.organization_id !== mspId)
      throw new OAuthError(
        'invalid_grant',
        "the acting user's organization (hl7-b2b.organization_id) is not the calling member",
      );
    const refused = b2b.purpose_of_use.filter((purpose) => !this.allowedPurposes.has(purpose));
    if (refused.length > 0)
      throw new OAuthError('invalid_grant', `purpose of use not allowed here: ${refused.join(', ')}`);

    const claims: NetworkClaims = {
      mem: mspId,
      act: b2b.subject_id,
      rol: b2b.subject_role,
      pou: b2b.purpose_of_use,
      cr: b2b.consent_reference,
      exp: Math.floor(nowSeconds) + this.tokenSeconds,
    };
    return {
      access_token: this.sign(claims),
      token_type: 'Bearer',
      expires_in: this.tokenSeconds,
      scope: NETWORK_SCOPE,
    };
  }

  /**
   * The caller behind a network token: its MAC, syntax and expiry checked, and its member still active in the
   * directory (a revoked member is refused at once). Throws InvalidTokenError; a failure of the directory itself
   * propagates as it is (the operation answers 503, not 401).
   */
  async verify(token: string): Promise<NetworkCaller> {
    if (!token.startsWith(TOKEN_PREFIX)) throw new InvalidTokenError('not a network token');
    const claims = openMacToken(token, TOKEN_PREFIX.length, (payload) => this.mac(payload), 'network token');
    if (!isNetworkClaims(claims)) throw new InvalidTokenError('malformed network token');
    const expiresAt = claims.exp * 1000;
    if (!(expiresAt > this.now())) throw new InvalidTokenError('the network token has expired');
    const member = await this.members.member(claims.mem);
    if (!member || member.status !== 'active') throw new InvalidTokenError('the member was revoked');
    return Object.freeze({
      member: claims.mem,
      actor: claims.act,
      actorRole: claims.rol,
      purposes: Object.freeze(claims.pou),
      consentReferences: Object.freeze(claims.cr),
      expiresAt,
    });
  }

  private serviceKey(pem: string): KeyObject {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(pem);
    } catch {
      throw new OAuthError('invalid_client', "the member's service certificate is unreadable");
    }
    const now = this.now();
    if (now < Date.parse(certificate.validFrom) || now > Date.parse(certificate.validTo))
      throw new OAuthError('invalid_client', "the member's service certificate is not valid now");
    return certificate.publicKey;
  }

  private mac(payload: string): string {
    return createHmac('sha256', this.key).update(TOKEN_PREFIX).update(payload).digest('base64url');
  }

  private sign(claims: NetworkClaims): string {
    // A random nonce keeps two tokens issued in the same second distinct.
    const payload = Buffer.from(
      JSON.stringify({ ...claims, n: randomBytes(9).toString('base64url') }),
    ).toString('base64url');
    return `${TOKEN_PREFIX}${payload}.${this.mac(payload)}`;
  }
}

function strings(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}

function isNetworkClaims(value: unknown): value is NetworkClaims {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const claims = value as Record<string, unknown>;
  return (
    typeof claims.mem === 'string' &&
    typeof claims.act === 'string' &&
    typeof claims.rol === 'string' &&
    strings(claims.pou) &&
    strings(claims.cr) &&
    typeof claims.exp === 'number' &&
    Number.isFinite(claims.exp)
  );
}
