/**
 * `serve --store postgres` (issue 19): the app on a PostgreSQL database, two replicas (each with its own data
 * directory) on one database, and the migrations applied once when replicas start at once. Needs a server:
 * HIE_TEST_POSTGRES_URL (skipped with its reason otherwise; .ci/run starts one).
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { runMigrate } from '../../src/commands/migrate.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { PG_MIGRATIONS } from '../../src/fhir/store/postgres/schema.js';
import { NewerStoreSchemaError } from '../../src/fhir/store/schema-version.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { bootApp, FHIR_JSON, send, type BootedApp } from '../support/app-harness.js';

const url = POSTGRES_URL;
const skip = postgresSkipReason('PostgreSQL serve tests');

const LATEST = PG_MIGRATIONS[PG_MIGRATIONS.length - 1]!.version;
const schemas: string[] = [];
function freshSchema(): string {
  const schema = `hie_test_${randomBytes(6).toString('hex')}`;
  schemas.push(schema);
  return schema;
}
const withSchema = (schema: string) => `${url}${url!.includes('?') ? '&' : '?'}schema=${schema}`;

function sink(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return Object.assign(stream, { text: () => chunks.join('') });
}

describe.skipIf(skip !== undefined)(
  'serve --store postgres (skipped unless HIE_TEST_POSTGRES_URL is set)',
  () => {
    afterAll(async () => {
      if (!url) return;
      const pool = new pg.Pool({ connectionString: url, max: 1 });
      for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    });

    it('reads --store and --database-url (HIE_DATABASE_URL); postgres without a URL is refused, a bad URL not echoed', () => {
      expect(loadConfig({}, {}).store).toBe('sqlite');
      const config = loadConfig(
        {},
        { HIE_STORE: 'postgres', HIE_DATABASE_URL: 'postgres://u:pw@db.example/hie' },
      );
      expect(config).toMatchObject({ store: 'postgres', databaseUrl: 'postgres://u:pw@db.example/hie' });
      expect(() => loadConfig({ store: 'postgres' }, {})).toThrow(/--store postgres needs --database-url/);
      expect(() => loadConfig({ store: 'mysql' }, {})).toThrow(/not one of sqlite, postgres/);
      expect(() => loadConfig({ databaseUrl: 'mysql://u:secret@h/d' }, {})).toThrow(/--database-url/);
      expect(() => loadConfig({ databaseUrl: 'mysql://u:secret@h/d' }, {})).not.toThrow(/secret/);
    });

    it('serves from the database: a second replica (its own data directory) reads what the first wrote', async () => {
      const databaseUrl = withSchema(freshSchema());
      const flags = {
        auth: 'dev-open',
        logLevel: 'warn',
        validation: 'schema',
        store: 'postgres',
        databaseUrl,
        anchoring: 'off',
      };
      const replicas: BootedApp[] = [];
      try {
        // Both start at once on an empty schema: the migrations are applied once, under the migration lock.
        replicas.push(...(await Promise.all([bootApp(flags), bootApp(flags)])));
        const [a, b] = replicas as [BootedApp, BootedApp];
        expect(a.app.store).toBeInstanceOf(PostgresResourceStore);
        const created = await send(
          a.app,
          {
            method: 'POST',
            url: '/fhir/Patient',
            headers: FHIR_JSON,
            body: { resourceType: 'Patient', gender: 'female' },
          },
          201,
        );
        const location = new URL(created.headers.location as string, 'http://x').pathname.replace(
          /\/_history\/.*/,
          '',
        );
        const read = await send(b.app, { method: 'GET', url: location }, 200);
        expect(JSON.parse(read.body)).toMatchObject({ resourceType: 'Patient', gender: 'female' });
        const pool = (a.app.store as PostgresResourceStore).pool;
        const versions = await pool.query(
          `SELECT version FROM "${(a.app.store as PostgresResourceStore).schema}".schema_version ORDER BY version`,
        );
        expect(versions.rows.map((r: { version: number }) => r.version)).toEqual(
          PG_MIGRATIONS.map((m) => m.version),
        );
      } finally {
        for (const replica of replicas) await replica.stop();
      }
    });

    it('$export on the database: each line the stored text (decimals as written, text outside ASCII), as a read returns it', async () => {
      const booted = await bootApp({
        auth: 'dev-open',
        logLevel: 'warn',
        validation: 'schema',
        store: 'postgres',
        databaseUrl: withSchema(freshSchema()),
        anchoring: 'off',
      });
      try {
        const texts = [
          '{"resourceType":"Patient","id":"pe","gender":"female","name":[{"family":"Zoë","given":["Ångström 😀"]}]}',
          '{"resourceType":"Observation","id":"oe","status":"final","code":{"text":"weight ≥ 1"},' +
            '"subject":{"reference":"Patient/pe"},"valueQuantity":{"value":1.50,"unit":"kg"}}',
        ];
        for (const text of texts) {
          const { resourceType, id } = JSON.parse(text) as { resourceType: string; id: string };
          await send(booted.app, { method: 'PUT', url: `/fhir/${resourceType}/${id}`, body: text }, 201);
        }
        const kick = await send(
          booted.app,
          {
            method: 'GET',
            url: '/fhir/$export?_type=Patient,Observation',
            headers: { prefer: 'respond-async' },
          },
          202,
        );
        await booted.app.bulk!.exports.settled();
        const status = new URL(kick.headers['content-location'] as string).pathname;
        const manifest = JSON.parse((await send(booted.app, { method: 'GET', url: status }, 200)).body) as {
          output: { type: string; url: string; count: number }[];
        };
        expect(manifest.output.map((o) => [o.type, o.count]).sort()).toEqual([
          ['Observation', 1],
          ['Patient', 1],
        ]);
        for (const output of manifest.output) {
          const file = await send(booted.app, { method: 'GET', url: new URL(output.url).pathname }, 200);
          const [line] = file.body.split('\n');
          const { resourceType, id } = JSON.parse(line!) as { resourceType: string; id: string };
          const read = await send(booted.app, { method: 'GET', url: `/fhir/${resourceType}/${id}` }, 200);
          expect(line).toBe(read.body);
          if (resourceType === 'Observation') expect(line).toContain('"value":1.50');
          else expect(line).toContain('Ångström 😀');
        }
      } finally {
        await booted.stop();
      }
    });

    it('hie-ledger migrate applies the migrations once, also when run twice at once, and says so', async () => {
      const databaseUrl = withSchema(freshSchema());
      const runs = [sink(), sink(), sink()];
      const codes = await Promise.all(runs.map((out) => runMigrate({ databaseUrl, out, err: out })));
      expect(codes).toEqual([0, 0, 0]);
      const texts = runs.map((out) => out.text()).sort();
      expect(texts.filter((t) => new RegExp(`migrated from version 0 to ${LATEST}\\b`).test(t))).toHaveLength(
        1,
      );
      expect(
        texts.filter((t) => new RegExp(`is at version ${LATEST}: nothing to apply`).test(t)),
      ).toHaveLength(2);
    });

    it('a schema a newer hie-ledger wrote is refused at open, saying so, its pools closed; migrate exits 2', async () => {
      const schema = freshSchema();
      const databaseUrl = withSchema(schema);
      expect(await runMigrate({ databaseUrl, out: sink(), err: sink() })).toBe(0);
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        await admin.query(
          `INSERT INTO "${schema}".schema_version (version, description, applied_at) VALUES ($1, 'a newer release', $2)`,
          [LATEST + 1, new Date().toISOString()],
        );
      } finally {
        await admin.end();
      }
      const newer = `this store was written by a newer hie-ledger: schema ${LATEST + 1}, this build knows up to ${LATEST}`;

      const store = new PostgresResourceStore({ connectionString: url!, schema });
      const refused = await store.init().catch((err: unknown) => err);
      expect(refused).toBeInstanceOf(NewerStoreSchemaError);
      expect((refused as Error).message).toContain(newer);
      // Nothing left open to keep the process running on.
      expect(store.pool.ended).toBe(true);

      const err = sink();
      expect(await runMigrate({ databaseUrl, out: sink(), err })).toBe(2);
      expect(err.text()).toContain(newer);
    });
  },
);
