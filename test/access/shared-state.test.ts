/**
 * The replay cache and the token endpoint's rate limits shared by replicas through the PostgreSQL store's database
 * (src/access/shared-state.ts): two replicas, each with its own pool, one schema. Needs HIE_TEST_POSTGRES_URL.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { PostgresResourceStore } from '../../src/fhir/store/postgres/postgres-store.js';
import { PostgresSharedState } from '../../src/access/shared-state.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';

const skip = postgresSkipReason('PostgreSQL shared security state');

const stores: PostgresResourceStore[] = [];
afterEach(async () => {
  await stores[0]?.pool.query(`DROP SCHEMA IF EXISTS "${stores[0].schema}" CASCADE`);
  for (const store of stores.splice(0)) await store.close();
});

/** Two replicas of one service: their stores (pools) on one schema, one clock the test moves. */
async function twoReplicas(): Promise<{
  a: PostgresSharedState;
  b: PostgresSharedState;
  clock: { now: number };
}> {
  const schema = `hie_test_${randomBytes(6).toString('hex')}`;
  const clock = { now: Date.UTC(2026, 11, 7, 12) };
  const replicas: PostgresSharedState[] = [];
  for (let i = 0; i < 2; i++) {
    const store = new PostgresResourceStore({ connectionString: POSTGRES_URL!, schema, maxConnections: 2 });
    await store.init();
    stores.push(store);
    replicas.push(new PostgresSharedState(store.pool, schema, () => clock.now));
  }
  return { a: replicas[0]!, b: replicas[1]!, clock };
}

describe.skipIf(skip !== undefined)('security state shared by replicas (PostgreSQL)', () => {
  it('admits a client assertion once across replicas, until it expires', async () => {
    const { a, b, clock } = await twoReplicas();
    const expiresAt = clock.now + 60_000;
    expect(await a.replayGuard('participant').admit('client-1 jti-1', expiresAt)).toBe('fresh');
    // The same assertion at the other replica: a replay.
    expect(await b.replayGuard('participant').admit('client-1 jti-1', expiresAt)).toBe('replayed');
    expect(await a.replayGuard('participant').admit('client-1 jti-1', expiresAt)).toBe('replayed');
    // Another kind of assertion with the same id is not the same assertion.
    expect(await b.replayGuard('member').admit('client-1 jti-1', expiresAt)).toBe('fresh');
    // Expired: its signature no longer verifies anyway; the entry makes room.
    clock.now = expiresAt + 1;
    expect(await b.replayGuard('participant').admit('client-1 jti-1', clock.now + 60_000)).toBe('fresh');
  });

  it('spends one token bucket per key across replicas, and refills it at the configured rate', async () => {
    const { a, b, clock } = await twoReplicas();
    const limits = [a.rateLimiter('token-client', 3), b.rateLimiter('token-client', 3)];
    // Three a minute in all, whichever replica answers.
    expect(await limits[0]!.take('c1')).toBe(0);
    expect(await limits[1]!.take('c1')).toBe(0);
    expect(await limits[0]!.take('c1')).toBe(0);
    expect(await limits[1]!.take('c1')).toBe(20); // one request regained every 20 s
    expect(await limits[0]!.take('c1')).toBe(20);
    expect(await limits[1]!.take('c2')).toBe(0); // keys are apart
    clock.now += 20_000;
    expect(await limits[1]!.take('c1')).toBe(0);
    expect(await limits[0]!.take('c1')).toBe(20);
  });
});
