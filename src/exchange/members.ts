/**
 * What the exchange needs to know about a member of the network: its directory entry on the ledger (the `member`
 * contract, key `member/<mspId>`). The ledger-backed directory implements MemberLookup; the service-to-service
 * token endpoint and the outbound HTTP client only read through it.
 */

/** One member's directory entry, as written on the ledger by the member's own MSP. */
export interface MemberEntry {
  mspId: string;
  /** Display name of the organisation (never a person). */
  organization: string;
  /** The member's FHIR base URL (its token URL is `<origin>/auth/token`, see tokenUrlOf). */
  fhirBaseUrl: string;
  /** PEM certificate (ECDSA P-256) the member signs service requests (client assertions) with. */
  serviceCertificate: string;
  status: 'active' | 'revoked';
  /**
   * PEM of the certificate authority (or the self-signed certificate) that the member's HTTPS server certificate
   * must chain to. Optional: absent, the system's roots are used (docs/exchange.md, "Service-to-service calls").
   */
  tlsCa?: string;
}

/** The member directory as the exchange reads it. */
export interface MemberLookup {
  /** The entry of this MSP, active or revoked; undefined for an MSP with no entry. */
  member(mspId: string): Promise<MemberEntry | undefined>;
}

/** Client id of a member in a client assertion (`iss` = `sub`): `member:<mspId>`. */
export const MEMBER_CLIENT_PREFIX = 'member:';

export function memberClientId(mspId: string): string {
  return `${MEMBER_CLIENT_PREFIX}${mspId}`;
}

/** The MSP id of a member client id, or undefined when the id is not a member's. */
export function mspOfClientId(clientId: string): string | undefined {
  if (!clientId.startsWith(MEMBER_CLIENT_PREFIX)) return undefined;
  const mspId = clientId.slice(MEMBER_CLIENT_PREFIX.length);
  return mspId === '' ? undefined : mspId;
}

/**
 * The token URL of a member: the origin of its FHIR base URL plus `/auth/token` (where src/access/auth-routes.ts
 * serves it when the FHIR API is mounted at `<origin>/fhir`). Assertions name it as `aud`.
 */
export function tokenUrlOf(member: Pick<MemberEntry, 'fhirBaseUrl'>): string {
  const base = new URL(member.fhirBaseUrl);
  const path = base.pathname.replace(/\/+$/, '');
  const root = path.endsWith('/fhir') ? path.slice(0, -'/fhir'.length) : path;
  return `${base.origin}${root}/auth/token`;
}
