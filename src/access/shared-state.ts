/**
 * Security state that every replica of one service must share, so that a limit holds for the service and not per
 * process: the client assertions already used (an assertion admitted by one replica is a replay at the others) and
 * the token endpoint's rate buckets. In memory (ReplayCache, RateLimiter) for a service of one process; in the
 * PostgreSQL store's database (migration 6, src/fhir/store/postgres/schema.ts) when the store is PostgreSQL
 * (docs/store.md, "Several replicas"). No keys here: only assertion ids (`iss jti`) and counters.
 */
import type pg from 'pg';
import { PostgresSharedRevocations } from '../consent/shared-revocations.js';
import type { IdentityProvider } from '../ledger/identity/identity-provider.js';
import { PostgresParticipants } from './postgres-participants.js';
import { PostgresNetworkIds, PostgresPseudonyms } from '../consent/postgres-network-ids.js';

export type ReplayVerdict = 'fresh' | 'replayed' | 'full';

/** Admits a used assertion id once until it expires (epoch ms). */
export interface ReplayGuard {
  admit(key: string, expiresAt: number): ReplayVerdict | Promise<ReplayVerdict>;
}

/** Spends one request of `key`: 0 when allowed, otherwise the whole seconds until the next one is (>= 1). */
export interface RequestLimiter {
  take(key: string): number | Promise<number>;
}

/** Expired assertion ids are removed at most this often (per process), in one statement. */
const SWEEP_INTERVAL_MS = 10_000;

/** The shared state in a PostgreSQL store's schema, on the store's pool. */
export class PostgresSharedState {
  private readonly S: string;
  private nextSweep = 0;

  constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
    private readonly now: () => number = Date.now,
  ) {
    this.S = `"${schema.replace(/"/g, '""')}"`;
  }

  /** The pending consent revocations every replica enforces (src/consent/shared-revocations.ts). */
  revocations(log?: { warn(obj: object, msg: string): void }): PostgresSharedRevocations {
    return new PostgresSharedRevocations(this.pool, this.schema, log);
  }

  /** The participants, in the database (migration 12), followed as other replicas and the CLI change them. */
  participants(
    identity: IdentityProvider,
    log?: { warn(obj: object, msg: string): void },
  ): Promise<PostgresParticipants> {
    return PostgresParticipants.open({ pool: this.pool, schema: this.schema, identity, log });
  }

  /** The pseudonyms of FHIR references (migration 12), followed as other replicas make them. */
  pseudonyms(log?: { warn(obj: object, msg: string): void }): Promise<PostgresPseudonyms> {
    return PostgresPseudonyms.open({ pool: this.pool, schema: this.schema, log });
  }

  /** The network patient ids and the grant index (migration 12), followed as other replicas make them. */
  networkIds(log?: { warn(obj: object, msg: string): void }): Promise<PostgresNetworkIds> {
    return PostgresNetworkIds.open({ pool: this.pool, schema: this.schema, log });
  }

  /** The replay guard of one kind of assertion (`namespace`: the participants' or the members'). */
  replayGuard(namespace: string): ReplayGuard {
    return { admit: (key, expiresAt) => this.admit(`${namespace} ${key}`, expiresAt) };
  }

  /** A token bucket per key, `perMinute` requests a minute (also the burst), shared by every replica. */
  rateLimiter(namespace: string, perMinute: number): RequestLimiter {
    if (!(perMinute > 0)) throw new Error('a rate limit needs a positive number of requests a minute');
    const rate = perMinute / 60_000;
    return {
      take: async (key) => {
        const now = this.now();
        // One statement per request: the bucket brought up to date and spent from, under its row lock.
        const { rows } = await this.pool.query<{ tokens: number; spent: boolean }>(
          `INSERT INTO ${this.S}.rate_bucket AS b (key, tokens, at, spent)
             VALUES ($1, CASE WHEN $2::float8 >= 1 THEN $2::float8 - 1 ELSE $2::float8 END, $3, $2::float8 >= 1)
           ON CONFLICT (key) DO UPDATE SET
             tokens = least($2::float8, b.tokens + greatest(0, $3::bigint - b.at) * $4::float8)
                      - CASE WHEN least($2::float8, b.tokens + greatest(0, $3::bigint - b.at) * $4::float8) >= 1 THEN 1 ELSE 0 END,
             spent = least($2::float8, b.tokens + greatest(0, $3::bigint - b.at) * $4::float8) >= 1,
             at = greatest(b.at, $3::bigint)
           RETURNING tokens, spent`,
          [`${namespace} ${key}`, perMinute, now, rate],
        );
        const { tokens, spent } = rows[0]!;
        return spent ? 0 : Math.max(1, Math.ceil((1 - tokens) / rate / 1000));
      },
    };
  }

  private async admit(key: string, expiresAt: number): Promise<ReplayVerdict> {
    const now = this.now();
    if (now >= this.nextSweep) {
      this.nextSweep = now + SWEEP_INTERVAL_MS;
      await this.pool.query(`DELETE FROM ${this.S}.assertion_replay WHERE expires_at < $1`, [now]);
    }
    // Inserted, or taking the place of an expired entry: fresh. A live entry (another replica's too): replayed.
    const { rowCount } = await this.pool.query(
      `INSERT INTO ${this.S}.assertion_replay AS r (key, expires_at) VALUES ($1, $2)
       ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE r.expires_at < $3`,
      [key, expiresAt, now],
    );
    return rowCount === 1 ? 'fresh' : 'replayed';
  }
}
