/** Test helpers: clients with real ECDSA keys and RFC 7523 assertions signed with them. */
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import type { ClientDirectory, ClientRecord } from '../../src/access/tokens.js';
import type { ParticipantRole } from '../../src/access/scopes.js';

export interface TestClient extends ClientRecord {
  privateKey: KeyObject;
}

export function makeClient(
  clientId: string,
  role: ParticipantRole,
  extra: Partial<ClientRecord> = {},
  curve: 'P-384' | 'P-256' = 'P-384',
): TestClient {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: curve });
  return { clientId, pseudonym: `ps-${clientId}`, role, publicKey, privateKey, ...extra };
}

export class MapDirectory implements ClientDirectory {
  readonly clients = new Map<string, TestClient>();
  readonly revoked = new Set<string>();
  add(client: TestClient): TestClient {
    this.clients.set(client.clientId, client);
    return client;
  }
  findClient(clientId: string): ClientRecord | undefined {
    return this.revoked.has(clientId) ? undefined : this.clients.get(clientId);
  }
  isActive(clientId: string): boolean {
    return this.clients.has(clientId) && !this.revoked.has(clientId);
  }
}

export interface AssertionOptions {
  alg?: string;
  iss?: string;
  sub?: string;
  aud?: string;
  expSeconds?: number;
  jti?: string;
  key?: KeyObject;
  /** `iat` relative to now (seconds; default 0). */
  iatSeconds?: number;
  /** `nbf` relative to now (seconds); absent by default. */
  nbfSeconds?: number;
}

export async function assertion(
  client: TestClient,
  tokenUrl: string,
  options: AssertionOptions = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const alg =
    options.alg ?? (client.publicKey.asymmetricKeyDetails?.namedCurve === 'prime256v1' ? 'ES256' : 'ES384');
  const jwt = new SignJWT({ jti: options.jti ?? randomUUID() })
    .setProtectedHeader({ alg, typ: 'JWT' })
    .setIssuer(options.iss ?? client.clientId)
    .setSubject(options.sub ?? client.clientId)
    .setAudience(options.aud ?? tokenUrl)
    .setIssuedAt(now + (options.iatSeconds ?? 0))
    .setExpirationTime(now + (options.expSeconds ?? 240));
  if (options.nbfSeconds !== undefined) jwt.setNotBefore(now + options.nbfSeconds);
  return jwt.sign(options.key ?? client.privateKey);
}

/** The form of a token request (one definition for every test: test/support/client-assertion.ts). */
export { tokenForm } from '../support/client-assertion.js';
