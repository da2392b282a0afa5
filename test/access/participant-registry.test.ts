/**
 * The ParticipantRegistry contract on both adapters: two directories on one data directory's participants.sqlite,
 * and two on one PostgreSQL schema (two pools, as two replicas; needs HIE_TEST_POSTGRES_URL).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ParticipantDirectory } from '../../src/access/participants.js';
import { PostgresParticipants } from '../../src/access/postgres-participants.js';
import { EmbeddedIdentityProvider } from '../../src/ledger/identity/identity-provider.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { describeParticipantRegistryContract } from './participant-registry-contract.js';

const openCa = (dir: string) => EmbeddedIdentityProvider.open(join(dir, 'ca'), { mspId: 'Org1MSP' });

describeParticipantRegistryContract('SQLite (identity/participants.sqlite)', {
  async open() {
    const dir = mkdtempSync(join(tmpdir(), 'hie-participant-registry-'));
    const identity = await openCa(dir);
    const one = ParticipantDirectory.open(dir, identity);
    const other = ParticipantDirectory.open(dir, identity);
    return {
      one,
      other,
      async close() {
        one.close();
        other.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
});

if (postgresSkipReason('participants on PostgreSQL') === undefined)
  describeParticipantRegistryContract('PostgreSQL (participant table)', {
    async open() {
      const dir = mkdtempSync(join(tmpdir(), 'hie-participant-registry-pg-'));
      const identity = await openCa(dir);
      const schema = `hie_part_${randomBytes(6).toString('hex')}`;
      const stores = [0, 1].map(
        () => new PostgresResourceStore({ connectionString: POSTGRES_URL!, schema, maxConnections: 3 }),
      );
      await stores[0]!.migrate();
      const [one, other] = await Promise.all(
        stores.map((store) => PostgresParticipants.open({ pool: store.pool, schema, identity })),
      );
      return {
        one: one!,
        other: other!,
        async close() {
          for (const registry of [one!, other!]) await registry.close();
          for (const store of stores) await store.close();
          const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
          await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
          await pool.end();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  });
