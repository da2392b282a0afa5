/**
 * The PseudonymResolver and NetworkIdIndex contracts on both adapters: two views of one data directory's SQLite
 * files (participants.sqlite's pseudonyms, network-ids.sqlite), and two of one PostgreSQL schema (two pools, as two
 * replicas; needs HIE_TEST_POSTGRES_URL).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ParticipantDirectory } from '../../src/access/participants.js';
import { NetworkIds } from '../../src/consent/network-ids.js';
import { PostgresNetworkIds, PostgresPseudonyms } from '../../src/consent/postgres-network-ids.js';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { describeSharedIdsContract } from './network-ids-contract.js';

describeSharedIdsContract('SQLite (the data directory)', {
  async open() {
    const dir = mkdtempSync(join(tmpdir(), 'hie-network-ids-'));
    const file = join(dir, 'identity', 'network-ids.sqlite');
    const pseudonyms = [ParticipantDirectory.open(dir), ParticipantDirectory.open(dir)] as const;
    const ids = [new NetworkIds(file), new NetworkIds(file)] as const;
    return {
      pseudonyms: [...pseudonyms],
      ids: [...ids],
      async close() {
        for (const view of [...pseudonyms, ...ids]) view.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
});

if (postgresSkipReason('network ids on PostgreSQL') === undefined)
  describeSharedIdsContract('PostgreSQL (migration 12)', {
    async open() {
      const schema = `hie_ids_${randomBytes(6).toString('hex')}`;
      const stores = [0, 1].map(
        () => new PostgresResourceStore({ connectionString: POSTGRES_URL!, schema, maxConnections: 3 }),
      );
      await stores[0]!.migrate();
      const pseudonyms = await Promise.all(
        stores.map((store) => PostgresPseudonyms.open({ pool: store.pool, schema })),
      );
      const ids = await Promise.all(
        stores.map((store) => PostgresNetworkIds.open({ pool: store.pool, schema })),
      );
      return {
        pseudonyms: [pseudonyms[0]!, pseudonyms[1]!],
        ids: [ids[0]!, ids[1]!],
        async close() {
          for (const view of [...pseudonyms, ...ids]) await view.close();
          for (const store of stores) await store.close();
          const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
          await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
          await pool.end();
        },
      };
    },
  });
