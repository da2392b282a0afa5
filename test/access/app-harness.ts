/**
 * The real app (buildApp: SQLite store, embedded ledger, SMART auth on) with enrolled participants of two
 * hospitals, a lab, patients and an admin, for the access matrix and the revocation tests.
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SignJWT } from 'jose';
import { buildApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { openParticipantDirectory } from '../../src/commands/participant.js';
import type { ParticipantDirectory } from '../../src/access/participants.js';
import type { ParticipantRole } from '../../src/access/scopes.js';
import type { Ledger } from '../../src/ledger/ledger.js';

export const BASE = 'http://hie.test';
export const TOKEN_URL = `${BASE}/auth/token`;

export interface Harness {
  app: App;
  dataDir: string;
  participants: ParticipantDirectory;
  logs: string[];
  /** Enrols a participant and returns a fresh access token for it. */
  enrol(clientId: string, role: ParticipantRole, resource?: string, organization?: string): Promise<string>;
  token(clientId: string): Promise<string>;
  request(
    token: string | undefined,
    method: string,
    url: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: any; headers: Record<string, unknown>; text: string }>;
  /**
   * Closes the app and builds it again over the same data directory (and `ledger`, when given), running
   * `whileStopped` in between (e.g. to lose a file).
   */
  restart(options?: { ledger?: Ledger; whileStopped?: () => void | Promise<void> }): Promise<void>;
  stop(): Promise<void>;
}

export interface HarnessOptions {
  /** A ledger of the test's (e.g. a Fabric adapter to the test Gateway server); default the embedded one. */
  ledger?: Ledger;
  /** Configuration flags over the harness's own (commander's camelCase names). */
  flags?: Record<string, unknown>;
  /** The audit's aggregation window; a test comparing counts sets it past its own length (no AuditEvent stored). */
  auditFlushMs?: number;
}

/** This service's own organisation in the harness (`--organization`): its systems create with chosen ids. */
export const HOME_ORGANIZATION = 'Organization/hosp-a';

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const flags = options.flags ?? {};
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-access-'));
  const logs: string[] = [];
  const logStream = new Writable({
    write(chunk, _e, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const config = loadConfig(
    {
      dataDir,
      port: 0,
      host: '127.0.0.1',
      logLevel: 'warn',
      auth: 'smart',
      baseUrl: `${BASE}/fhir`,
      organization: HOME_ORGANIZATION,
      ...flags,
    },
    {},
  );
  let app = await buildApp(config, {
    logStream,
    ledger: options.ledger,
    auditFlushMs: options.auditFlushMs,
  });
  const participants = await openParticipantDirectory(dataDir);
  const keys = new Map<string, string>();

  const token = async (clientId: string): Promise<string> => {
    const assertion = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES384' })
      .setIssuer(clientId)
      .setSubject(clientId)
      .setAudience(TOKEN_URL)
      .setExpirationTime('2m')
      .sign(createPrivateKey(keys.get(clientId)!));
    const res = await app.fastify.inject({
      method: 'POST',
      url: '/auth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      }).toString(),
    });
    if (res.statusCode !== 200) throw new Error(`token for ${clientId}: ${res.statusCode} ${res.body}`);
    return res.json().access_token;
  };

  const harness: Harness = {
    app,
    dataDir,
    participants,
    logs,
    token,
    async enrol(clientId, role, resource, organization) {
      const { enrollment } = await participants.enroll({ clientId, role, resource, organization });
      keys.set(clientId, enrollment.privateKey);
      return token(clientId);
    },
    async request(token, method, url, body, headers = {}) {
      const res = await app.fastify.inject({
        method: method as 'GET',
        url: `/fhir${url}`,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}),
          ...headers,
        },
        payload: body === undefined ? undefined : JSON.stringify(body),
      });
      let parsed: unknown;
      try {
        parsed = res.body ? JSON.parse(res.body) : undefined;
      } catch {
        parsed = undefined;
      }
      return { status: res.statusCode, body: parsed, headers: res.headers, text: res.body };
    },
    async restart(restartOptions = {}) {
      await app.close();
      await restartOptions.whileStopped?.();
      app = await buildApp(config, { logStream, ledger: restartOptions.ledger });
      harness.app = app;
    },
    async stop() {
      participants.close();
      await app.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return harness;
}

const consentScope = {
  coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }],
};
const consentCategory = [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }];

export function privacyConsent(
  patient: string,
  provision: object,
  status = 'active',
  id?: string,
): Record<string, unknown> {
  return {
    resourceType: 'Consent',
    ...(id ? { id } : {}),
    status,
    scope: consentScope,
    category: consentCategory,
    patient: { reference: patient },
    dateTime: '2026-01-01T00:00:00Z',
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    provision,
  };
}

export const actor = (reference: string) => ({
  role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] },
  reference: { reference },
});
