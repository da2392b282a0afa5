/**
 * A participant's side of SMART Backend Services (docs/access.md): an RFC 7523 client assertion signed with an
 * enrolled key (the PEM of its key.pem), the token request made with it, and that request at the app's token
 * endpoint. Light on purpose (jose, no src/ module loaded): unit tests of the token service use it too.
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { SignJWT } from 'jose';
import type { App } from '../../src/app/app.js';

/** A client assertion (RFC 7523: iss = sub = the client id, aud = the token URL) signed with `keyPem`. */
export async function signedAssertion(
  keyPem: string,
  clientId: string,
  tokenUrl: string,
  alg = 'ES384',
): Promise<string> {
  return new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(tokenUrl)
    .setExpirationTime('2m')
    .sign(createPrivateKey(keyPem));
}

/** The fields of a client_credentials token request with this assertion (SMART Backend Services). */
export function clientCredentials(clientAssertion: string): Record<string, string> {
  return {
    grant_type: 'client_credentials',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: clientAssertion,
  };
}

/** The same, form-encoded (the token endpoint's body), with any extra fields (a scope ...). */
export function tokenForm(clientAssertion: string, extra: Record<string, string> = {}): string {
  return new URLSearchParams({ ...clientCredentials(clientAssertion), ...extra }).toString();
}

/** The app's answer to a token request by `clientId`, signed with its key (POST /auth/token, injected). */
export async function requestTokenAt(
  app: App,
  clientId: string,
  keyPem: string,
  tokenUrl: string,
): Promise<LightMyRequestResponse> {
  return app.fastify.inject({
    method: 'POST',
    url: '/auth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: tokenForm(await signedAssertion(keyPem, clientId, tokenUrl)),
  });
}
