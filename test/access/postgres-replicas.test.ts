/**
 * What replicas on one PostgreSQL database share of access (docs/replicas.md), two app instances on one database and
 * one ledger (the embedded ledger, shared in process as a network ledger would be): a participant enrolled once with
 * `hie-ledger participant enroll --store postgres` (here with replica A's data directory, beside the running
 * replicas) gets a token at replica B and reads there; revoked by the CLI, replica B refuses its token from the
 * notification on. A patient's grant made at A is enforced at B, and revoked through B at both. Needs a server:
 * HIE_TEST_POSTGRES_URL.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEmbeddedLedger } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { actor, BASE, privacyConsent, TOKEN_URL } from './app-harness.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { bootApp, send, type BootedApp } from '../support/app-harness.js';
import { requestTokenAt } from '../support/client-assertion.js';
import { participantCli } from '../support/participants.js';

const skip = postgresSkipReason('access shared by PostgreSQL replicas');
const schema = `hie_access_${randomBytes(6).toString('hex')}`;
const databaseUrl = POSTGRES_URL
  ? `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${schema}`
  : '';

const tokenAt = (replica: BootedApp, clientId: string, keyPem: string) =>
  requestTokenAt(replica.app, clientId, keyPem, TOKEN_URL);

/** Polls until `condition` holds (another process's change reaches a replica by notification); 10 s at most. */
async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let waited = 0; !(await condition()); waited += 20) {
    if (waited >= 10_000) throw new Error(`not seen within 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const replicas: BootedApp[] = [];
let ledgerDir: string;
let ledger: Ledger;

/** Enrols a participant with the CLI on the database (replica A's data directory for the CA): what it printed, its key. */
async function enrolled(
  dataDir: string,
  clientId: string,
  role: string,
  ...links: string[]
): Promise<{ printed: Record<string, unknown>; key: string }> {
  const out = join(dataDir, `${clientId}-out`);
  const printed = await participantCli([
    'participant',
    'enroll',
    ...['--store', 'postgres', '--database-url', databaseUrl, '--data-dir', dataDir],
    ...['--role', role, '--id', clientId, '--out', out, ...links],
  ]);
  return {
    printed: JSON.parse(printed) as Record<string, unknown>,
    key: readFileSync(join(out, 'key.pem'), 'utf8'),
  };
}

async function bearer(replica: BootedApp, clientId: string, key: string): Promise<string> {
  const issued = await tokenAt(replica, clientId, key);
  expect(issued.statusCode, issued.body).toBe(200);
  return issued.json().access_token as string;
}

async function request(
  replica: BootedApp,
  token: string,
  method: 'GET' | 'PUT' | 'POST',
  url: string,
  body?: unknown,
) {
  return send(replica.app, {
    method,
    url: `/fhir${url}`,
    headers: { authorization: `Bearer ${token}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

describe.skipIf(skip !== undefined)(
  'access shared by replicas (skipped unless HIE_TEST_POSTGRES_URL is set)',
  () => {
    beforeAll(async () => {
      const flags = {
        auth: 'smart',
        logLevel: 'warn',
        store: 'postgres',
        databaseUrl,
        anchoring: 'off',
        baseUrl: `${BASE}/fhir`,
        organization: 'Organization/hosp-a',
      };
      ledgerDir = mkdtempSync(join(tmpdir(), 'hie-access-ledger-'));
      ledger = await openEmbeddedLedger({ dataDir: ledgerDir, mspId: 'Org1MSP' });
      for (let i = 0; i < 2; i++) replicas.push(await bootApp(flags, { ledger }, 'hie-access-replica-'));
    });

    afterAll(async () => {
      for (const replica of replicas) await replica.stop();
      await ledger?.close();
      if (ledgerDir) rmSync(ledgerDir, { recursive: true, force: true });
      if (!POSTGRES_URL) return;
      const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    });

    it('a participant enrolled once gets a token at another replica; revoked, that replica refuses it', async () => {
      const [a, b] = replicas as [BootedApp, BootedApp];
      const db = ['--store', 'postgres', '--database-url', databaseUrl, '--data-dir', a.dataDir];
      const { printed, key } = await enrolled(
        a.dataDir,
        'ehr-a',
        'system',
        '--resource',
        'Organization/hosp-a',
      );
      expect(printed).toMatchObject({ clientId: 'ehr-a', status: 'enrolled' });
      const listed = JSON.parse(await participantCli(['participant', 'list', ...db, '--json']));
      expect(listed.map((p: { clientId: string }) => p.clientId)).toEqual(['ehr-a']);

      const issued = await tokenAt(b, 'ehr-a', key);
      expect(issued.statusCode, issued.body).toBe(200);
      const token = issued.json().access_token as string;
      const write = await send(b.app, {
        method: 'PUT',
        url: '/fhir/Patient/p1',
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify({ resourceType: 'Patient', id: 'p1' }),
      });
      expect(write.statusCode, write.body).toBe(201);
      const readAt = (replica: BootedApp) =>
        send(replica.app, {
          method: 'GET',
          url: '/fhir/Patient/p1',
          headers: { authorization: `Bearer ${token}` },
        });
      expect((await readAt(b)).statusCode).toBe(200);
      // The same token at replica A (the token key is the mounted secret both share in production; here each
      // data directory has its own, so A refuses B's token as not signed by it): A issues its own.
      const atA = await tokenAt(a, 'ehr-a', key);
      expect(atA.statusCode, atA.body).toBe(200);

      await participantCli(['participant', 'revoke', ...db, '--id', 'ehr-a']);
      await until(async () => (await readAt(b)).statusCode === 401, 'replica B refusing the revoked client');
      expect((await tokenAt(b, 'ehr-a', key)).statusCode).toBe(401);
      expect((await tokenAt(a, 'ehr-a', key)).statusCode).toBe(401);
    });

    it("a patient's grant made at one replica is enforced at the other, and revoked through it at both", async () => {
      const [a, b] = replicas as [BootedApp, BootedApp];
      const { key: sysKey } = await enrolled(
        a.dataDir,
        'sys-a',
        'system',
        '--resource',
        'Organization/hosp-a',
      );
      const { key: patientKey } = await enrolled(a.dataDir, 'pat-g1', 'patient', '--resource', 'Patient/g1');
      const { key: doctorKey } = await enrolled(
        a.dataDir,
        'dr-g',
        'clinician',
        ...['--resource', 'Practitioner/dr-g', '--organization', 'Organization/hosp-b'],
      );
      const sys = await bearer(a, 'sys-a', sysKey);
      expect(
        (await request(a, sys, 'PUT', '/Patient/g1', { resourceType: 'Patient', id: 'g1' })).statusCode,
      ).toBe(201);
      const observation = {
        resourceType: 'Observation',
        id: 'g1-o1',
        status: 'final',
        code: { text: 'x' },
        subject: { reference: 'Patient/g1' },
      };
      expect((await request(a, sys, 'PUT', '/Observation/g1-o1', observation)).statusCode).toBe(201);
      const doctorAt = { a: await bearer(a, 'dr-g', doctorKey), b: await bearer(b, 'dr-g', doctorKey) };
      const readsAt = async (replica: 'a' | 'b') =>
        (await request(replicas[replica === 'a' ? 0 : 1]!, doctorAt[replica], 'GET', '/Observation/g1-o1'))
          .statusCode;
      expect(await readsAt('b')).toBe(404);

      const patientAtA = await bearer(a, 'pat-g1', patientKey);
      const consent = privacyConsent('Patient/g1', { type: 'permit', actor: [actor('Practitioner/dr-g')] });
      const granted = await request(a, patientAtA, 'POST', '/Consent', consent);
      expect(granted.statusCode, granted.body).toBe(201);
      const consentId = (granted.json() as { id: string }).id;
      expect(await readsAt('a')).toBe(200);
      // B learns the grant from the ledger's event and the shared grant index.
      await until(async () => (await readsAt('b')) === 200, 'the grant enforced at replica B');

      const patientAtB = await bearer(b, 'pat-g1', patientKey);
      const withdrawn = await request(b, patientAtB, 'PUT', `/Consent/${consentId}`, {
        ...consent,
        id: consentId,
        status: 'inactive',
      });
      expect(withdrawn.statusCode, withdrawn.body).toBe(200);
      expect(await readsAt('b')).toBe(404);
      await until(async () => (await readsAt('a')) === 404, 'the revocation enforced at replica A');
    });
  },
);
