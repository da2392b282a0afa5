/**
 * `hie-ledger token --id ID --key KEY.pem [--scope ...] [--url ...]`: an access token for a participant, as a
 * SMART Backend Services client gets one (docs/access.md "Getting a token"). It signs a client assertion with the
 * participant's OWN private key (the one `participant enroll` wrote) and exchanges it at the service's token
 * endpoint, found in the service's SMART configuration. It never reads the service's data directory or its token
 * key: it is a client, and works against any hie-ledger service it can reach.
 */
import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { SignJWT } from 'jose';

/** What the assertion's signature algorithm is for each curve the service accepts (src/access/tokens.ts). */
const ALGORITHM_BY_CURVE: Record<string, 'ES256' | 'ES384'> = { prime256v1: 'ES256', secp384r1: 'ES384' };
/** The assertion lives one minute: long enough for a slow network, far under the service's five-minute cap. */
const ASSERTION_SECONDS = 60;
export const DEFAULT_SERVICE_URL = 'http://localhost:8080/fhir';

export interface TokenOptions {
  /** The participant's client id (iss and sub of the assertion). */
  id: string;
  /** PEM private key of the participant (P-256 or P-384). */
  key: string;
  /** The service's FHIR base URL. */
  url: string;
  /** Space-separated scopes to ask for; absent: the role's default scopes. */
  scope?: string;
  /** Injected for tests; global fetch otherwise. */
  fetch?: typeof fetch;
}

/** A token request that failed, with the one line the command prints. */
export class TokenCommandError extends Error {
  override readonly name = 'TokenCommandError';
}

function signingKey(file: string): { key: KeyObject; alg: 'ES256' | 'ES384' } {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TokenCommandError(
      `cannot read the key ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new TokenCommandError(`${file} is not a PEM private key`);
  }
  const alg = ALGORITHM_BY_CURVE[key.asymmetricKeyDetails?.namedCurve ?? ''];
  if (key.asymmetricKeyType !== 'ec' || !alg)
    throw new TokenCommandError(
      `${file} is not an ECDSA P-256 or P-384 key (what participant enroll writes)`,
    );
  return { key, alg };
}

async function readJson(response: Response, what: string): Promise<Record<string, unknown>> {
  const text = await response.text();
  try {
    const json: unknown = JSON.parse(text);
    if (json !== null && typeof json === 'object' && !Array.isArray(json))
      return json as Record<string, unknown>;
  } catch {
    // fall through: not JSON
  }
  throw new TokenCommandError(`${what} answered ${response.status} without a JSON object`);
}

/** The token endpoint the service announces (its SMART configuration), so the audience is the service's own. */
export async function tokenEndpointOf(fhirBaseUrl: string, fetchImpl: typeof fetch = fetch): Promise<string> {
  const base = fhirBaseUrl.replace(/\/+$/, '');
  const url = `${base}/.well-known/smart-configuration`;
  let response: Response;
  try {
    response = await fetchImpl(url, { headers: { accept: 'application/json' } });
  } catch (err) {
    throw new TokenCommandError(`cannot reach ${url}: ${(err as Error).message}`);
  }
  if (!response.ok)
    throw new TokenCommandError(`${url} answered ${response.status}: is --url the FHIR base URL?`);
  const configuration = await readJson(response, url);
  const endpoint = configuration.token_endpoint;
  if (typeof endpoint !== 'string' || endpoint === '')
    throw new TokenCommandError(`${url} names no token_endpoint (is the service running with --auth smart?)`);
  return endpoint;
}

/** Signs the client assertion and exchanges it; the token response as the service sent it. */
export async function requestToken(options: TokenOptions): Promise<Record<string, unknown>> {
  const fetchImpl = options.fetch ?? fetch;
  const { key, alg } = signingKey(options.key);
  const tokenUrl = await tokenEndpointOf(options.url, fetchImpl);
  const now = Math.floor(Date.now() / 1000);
  const assertion = await new SignJWT({})
    .setProtectedHeader({ alg })
    .setIssuer(options.id)
    .setSubject(options.id)
    .setAudience(tokenUrl)
    .setJti(randomUUID())
    .setIssuedAt(now)
    .setExpirationTime(now + ASSERTION_SECONDS)
    .sign(key);
  const form = new URLSearchParams({
    grant_type: 'client_credentials',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
  });
  if (options.scope) form.set('scope', options.scope);
  let response: Response;
  try {
    response = await fetchImpl(tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: form.toString(),
    });
  } catch (err) {
    throw new TokenCommandError(`cannot reach ${tokenUrl}: ${(err as Error).message}`);
  }
  const body = await readJson(response, tokenUrl);
  if (!response.ok || typeof body.access_token !== 'string') {
    const error = typeof body.error === 'string' ? body.error : `HTTP ${response.status}`;
    const description = typeof body.error_description === 'string' ? `: ${body.error_description}` : '';
    throw new TokenCommandError(`the token request was refused (${error}${description})`);
  }
  return body;
}

export function registerTokenCommand(program: Command): void {
  program
    .command('token')
    .description(
      "get an access token for a participant: signs a client assertion with the participant's own key and " +
        'exchanges it at the service (prints the token; --json: the whole token response)',
    )
    .requiredOption('--id <clientId>', "the participant's client id (participant enroll --id)")
    .requiredOption('--key <file>', "the participant's private key (key.pem written by participant enroll)")
    .option('--url <fhirBaseUrl>', "the service's FHIR base URL", DEFAULT_SERVICE_URL)
    .option('--scope <scopes>', "scopes to ask for, space-separated (default: the role's scopes)")
    .option('--json', 'print the whole token response as JSON')
    .action(async (options: { id: string; key: string; url: string; scope?: string; json?: boolean }) => {
      try {
        const response = await requestToken(options);
        process.stdout.write(
          options.json ? `${JSON.stringify(response, null, 2)}\n` : `${String(response.access_token)}\n`,
        );
      } catch (err) {
        if (!(err instanceof TokenCommandError)) throw err;
        process.stderr.write(`hie-ledger token: ${err.message}\n`);
        process.exitCode = 1;
      }
    });
}
