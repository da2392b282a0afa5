/**
 * The real app (the shared harness, test/support/app-harness.ts: SQLite store, embedded ledger) with SMART auth on
 * and enrolled participants of two hospitals, a lab, patients and an admin, for the access matrix and the
 * revocation tests.
 */
import { expect } from 'vitest';
import type { App } from '../../src/app/app.js';
import { openIdentityProvider, openParticipantDirectory } from '../../src/commands/participant.js';
import type { ParticipantDirectory, ParticipantRegistry } from '../../src/access/participants.js';
import { PostgresParticipants } from '../../src/access/postgres-participants.js';
import { postgresOptions } from '../../src/app/open-store.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import type { ParticipantRole } from '../../src/access/scopes.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { bootApp, parsed, send, type ParsedResponse } from '../support/app-harness.js';
import { requestTokenAt } from '../support/client-assertion.js';

export const BASE = 'http://hie.test';
export const TOKEN_URL = `${BASE}/auth/token`;

export interface Harness {
  app: App;
  dataDir: string;
  /** The data directory's participants.sqlite (its pseudonyms of FHIR references). */
  participants: ParticipantDirectory;
  /** Where enrol() registers: `participants`, or with `--store postgres` the database's. */
  registry: ParticipantRegistry;
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
  ): Promise<ParsedResponse>;
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
  const booted = await bootApp(
    {
      logLevel: 'warn',
      auth: 'smart',
      baseUrl: `${BASE}/fhir`,
      organization: HOME_ORGANIZATION,
      ...options.flags,
    },
    { ledger: options.ledger, auditFlushMs: options.auditFlushMs },
    'hie-access-',
  );
  const { dataDir, logs } = booted;
  let app = booted.app;
  const participants = await openParticipantDirectory(dataDir);
  const shared =
    options.flags?.store === 'postgres' ? await databaseParticipants(dataDir, options.flags) : undefined;
  const registry = shared?.registry ?? participants;
  const keys = new Map<string, string>();

  const token = async (clientId: string): Promise<string> => {
    const res = await requestTokenAt(app, clientId, keys.get(clientId)!, TOKEN_URL);
    if (res.statusCode !== 200) throw new Error(`token for ${clientId}: ${res.statusCode} ${res.body}`);
    return res.json().access_token;
  };

  const harness: Harness = {
    app,
    dataDir,
    participants,
    registry,
    logs,
    token,
    async enrol(clientId, role, resource, organization) {
      const { enrollment } = await registry.enroll({ clientId, role, resource, organization });
      keys.set(clientId, enrollment.privateKey);
      return token(clientId);
    },
    async request(token, method, url, body, headers = {}) {
      const res = await send(app, {
        method: method as 'GET',
        url: `/fhir${url}`,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return parsed(res);
    },
    async restart(restartOptions = {}) {
      app = await booted.restart({ ledger: restartOptions.ledger }, restartOptions.whileStopped);
      harness.app = app;
    },
    async stop() {
      participants.close();
      await shared?.close();
      await booted.stop();
    },
  };
  return harness;
}

/** The participants of the app's PostgreSQL database (as `hie-ledger participant --store postgres` opens them). */
async function databaseParticipants(
  dataDir: string,
  flags: Record<string, unknown>,
): Promise<{ registry: ParticipantRegistry; close(): Promise<void> }> {
  const store = new PostgresResourceStore({
    ...postgresOptions(String(flags.databaseUrl)),
    maxConnections: 2,
  });
  const identity = await openIdentityProvider(dataDir, 'Org1MSP', {});
  const registry = await PostgresParticipants.open({
    pool: store.pool,
    schema: store.schema,
    identity,
    listen: false,
  });
  return {
    registry,
    async close() {
      await registry.close();
      await store.close();
    },
  };
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

/** Patient/`patientId` and an Observation of it, `observationId`, stored by the system token `sys` (each 201). */
export async function storePatientWithObservation(
  h: Harness,
  sys: string,
  patientId: string,
  observationId: string,
): Promise<void> {
  const patient = await h.request(sys, 'PUT', `/Patient/${patientId}`, {
    resourceType: 'Patient',
    id: patientId,
  });
  expect(patient.status, patient.text).toBe(201);
  const observation = {
    resourceType: 'Observation',
    id: observationId,
    status: 'final',
    code: { text: 'x' },
    subject: { reference: `Patient/${patientId}` },
  };
  const stored = await h.request(sys, 'PUT', `/Observation/${observationId}`, observation);
  expect(stored.status, stored.text).toBe(201);
}

/**
 * Patient/p{n} with Observation/o{n}, stored by the system token `sys`, and the patient's grant of it to
 * Practitioner/dr-b (enrolled as `dr-b`): checked committed (201) and in force (dr-b reads the Observation).
 * Returns the patient's token and the Consent response.
 */
export async function grantedObservation(
  h: Harness,
  sys: string,
  n: number,
): Promise<{ patient: string; granted: ParsedResponse }> {
  const patient = await h.enrol(`pat-${n}`, 'patient', `Patient/p${n}`);
  await storePatientWithObservation(h, sys, `p${n}`, `o${n}`);
  const granted = await h.request(
    patient,
    'POST',
    '/Consent',
    privacyConsent(`Patient/p${n}`, { type: 'permit', actor: [actor('Practitioner/dr-b')] }),
  );
  expect(granted.status, granted.text).toBe(201);
  expect((await h.request(await h.token('dr-b'), 'GET', `/Observation/o${n}`)).status).toBe(200);
  return { patient, granted };
}
