/**
 * Revocations shared by replicas on PostgreSQL (src/consent/shared-revocations.ts): the pending revocation is a row
 * committed in the Consent version's own transaction, and another replica refuses the grant once notified
 * (LISTEN/NOTIFY), though the ledger has not heard of the revocation yet; a rolled-back Consent leaves no row and
 * lifts nothing at the other replica. Two consent services (replicas) on one embedded chain and one database schema.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { ConsentService } from '../../src/consent/consent-service.js';
import { consentToGrants } from '../../src/consent/consent-resource.js';
import { NetworkIds } from '../../src/consent/network-ids.js';
import { PostgresSharedRevocations } from '../../src/consent/shared-revocations.js';
import type { PendingRevocation } from '../../src/consent/revocation-outbox.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { actor, privacyConsent, startHarness, storePatientWithObservation } from '../access/app-harness.js';
import { TestPseudonyms } from '../ledger/helpers.js';
import { until } from '../support/cli-process.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';

const skip = postgresSkipReason('Shared consent revocations');

describe.skipIf(skip !== undefined)('revocations shared by replicas (PostgreSQL, LISTEN/NOTIFY)', () => {
  let dir: string;
  let ledger: Ledger;
  let release: () => Promise<void>;
  let store: PostgresResourceStore;
  const pseudonyms = new TestPseudonyms();
  const networkIds = new NetworkIds();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hie-shared-revocations-'));
    const ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: 'Org1MSP' });
    const acquired = await acquireChain({
      file: join(dir, 'chain.sqlite'),
      msps: [{ mspId: 'Org1MSP', rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
    });
    release = acquired.release;
    ledger = acquired.chain.connect(await serviceIdentity(ca, join(dir, 'svc')));
    store = new PostgresResourceStore({
      connectionString: POSTGRES_URL!,
      schema: `hie_test_${randomBytes(6).toString('hex')}`,
      maxConnections: 4,
    });
    await store.init();
  });
  afterAll(async () => {
    await store?.pool.query(`DROP SCHEMA IF EXISTS "${store.schema}" CASCADE`);
    await store?.close();
    networkIds.close();
    await release?.();
    rmSync(dir, { recursive: true, force: true });
  });

  const replica = () =>
    ConsentService.open({
      ledger,
      pseudonyms,
      networkIds,
      mspId: 'Org1MSP',
      sharedRevocations: new PostgresSharedRevocations(store.pool, store.schema),
    });
  const reader = ['Practitioner/d'];
  const actorOf = { pseudonym: 'actor-pseudonym', inPerson: true };

  it('a revocation committed with its Consent at one replica is refused by the other before the ledger has it; a rolled-back one is not', async () => {
    const a = await replica();
    const b = await replica();
    try {
      const granting = privacyConsent('Patient/p1', { type: 'permit', actor: [actor('Practitioner/d')] });
      await a.prepareConsent('Consent/c1', consentToGrants(granting), actorOf).commit();
      await until(
        async () => b.allows('Patient/p1', reader, 'Observation'),
        'replica b has the grant',
        10_000,
      );

      // A revocation whose Consent version rolls back: no row, and b goes on allowing.
      const undone = a.prepareConsent('Consent/c1', undefined, actorOf);
      expect(undone.revocations).toHaveLength(1);
      await expect(
        store.transaction(async (tx) => {
          await new PostgresSharedRevocations(store.pool, store.schema).record(tx, undone.revocations);
          throw new Error('the Consent version was not stored');
        }),
      ).rejects.toThrow(/not stored/);
      undone.rollback();
      const rows = await store.pool.query(`SELECT key FROM "${store.schema}".consent_revocation`);
      expect(rows.rowCount).toBe(0);
      expect(a.allows('Patient/p1', reader, 'Observation')).toBe(true);

      // The revocation committed with its Consent version, the ledger not told (its phase not run): refused at a
      // at once, and at b from the notification on.
      const revoking = a.prepareConsent('Consent/c1', undefined, actorOf);
      expect(a.allows('Patient/p1', reader, 'Observation')).toBe(false);
      await store.transaction(async (tx) => {
        await new PostgresSharedRevocations(store.pool, store.schema).record(tx, revoking.revocations);
        await tx.write({
          resourceType: 'Consent',
          id: 'c1',
          method: 'PUT',
          resource: { resourceType: 'Consent', id: 'c1', status: 'inactive' },
        });
      });
      await until(async () => !b.allows('Patient/p1', reader, 'Observation'), 'replica b refuses', 10_000);
      // A replica starting now loads it.
      const c = await replica();
      expect(c.allows('Patient/p1', reader, 'Observation')).toBe(false);
      await c.close();
      // The ledger phase: once the ledger holds the revocation, the row is gone.
      await revoking.commit();
      await until(
        async () =>
          (await store.pool.query(`SELECT key FROM "${store.schema}".consent_revocation`)).rowCount === 0,
        'the confirmed revocation leaves the table',
        10_000,
      );
      expect(b.allows('Patient/p1', reader, 'Observation')).toBe(false);
    } finally {
      await b.close();
      await a.close();
    }
  });

  it('after its listening connection is dropped, a replica listens again: it reloads, then hears the next revocation', async () => {
    const shared = new PostgresSharedRevocations(store.pool, store.schema);
    const heard: PendingRevocation[] = [];
    let reloads = 0;
    const stop = await shared.listen(
      (entry) => heard.push(entry),
      () => reloads++,
    );
    try {
      // The listening connection is the one whose last statement was its LISTEN; the server drops it.
      const listening = async () =>
        (
          await store.pool.query<{ pid: number }>(
            `SELECT pid FROM pg_stat_activity WHERE query = $1 AND datname = current_database()`,
            [`LISTEN ${shared.channel}`],
          )
        ).rows.map((row) => row.pid);
      const [dropped] = await listening();
      expect(dropped).toBeDefined();
      await store.pool.query('SELECT pg_terminate_backend($1)', [dropped]);
      await until(async () => reloads === 1, 'the replica listens again and reloads', 10_000);
      expect(await listening()).not.toContain(dropped);

      const entry: PendingRevocation = {
        patient: 'patient-pseudonym',
        grantee: 'grantee-pseudonym',
        consent: 'consent-pseudonym',
        actor: 'actor-pseudonym',
        inPerson: false,
        grantBlock: -1,
      };
      await store.transaction((tx) => shared.record(tx, [entry]));
      await until(async () => heard.length === 1, 'the revocation is heard on the new connection', 10_000);
      expect(heard).toEqual([entry]);
    } finally {
      await stop();
      await shared.remove(await shared.all());
    }
  });
});

describe.skipIf(skip !== undefined)('revocations through the FHIR API on PostgreSQL', () => {
  it('a Consent update that withdraws a grant records and notifies its revocation with the Consent version, and the read is refused', async () => {
    const schema = `hie_test_${randomBytes(6).toString('hex')}`;
    const url = new URL(POSTGRES_URL!);
    url.searchParams.set('schema', schema);
    const h = await startHarness({ flags: { store: 'postgres', databaseUrl: url.toString() } });
    const listener = new pg.Client({ connectionString: POSTGRES_URL });
    await listener.connect();
    try {
      const sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
      const doctor = await h.enrol('dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
      const patient = await h.enrol('pat-9', 'patient', 'Patient/p9');
      await storePatientWithObservation(h, sys, 'p9', 'o9');
      const granted = await h.request(
        patient,
        'POST',
        '/Consent',
        privacyConsent('Patient/p9', { type: 'permit', actor: [actor('Practitioner/dr-b')] }),
      );
      expect(granted.status, granted.text).toBe(201);
      expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(200);

      const notified: string[] = [];
      listener.on('notification', (message) => notified.push(message.payload ?? ''));
      await listener.query(`LISTEN ${new PostgresSharedRevocations(listener as never, schema).channel}`);
      const revoked = await h.request(patient, 'PUT', `/Consent/${granted.body.id}`, {
        ...granted.body,
        status: 'inactive',
      });
      expect(revoked.status, revoked.text).toBe(200);
      expect((await h.request(doctor, 'GET', '/Observation/o9')).status).toBe(404);
      await until(async () => notified.length === 1, 'the revocation is notified', 10_000);
    } finally {
      await listener.end();
      await h.stop();
      const admin = new pg.Client({ connectionString: POSTGRES_URL });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    }
  });
});
