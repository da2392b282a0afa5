/**
 * Search over the PostgreSQL store: the queries defined once for both SQL adapters (../search-sql.ts), in the
 * PostgreSQL dialect (schema-qualified tables, jsonb lists, COLLATE "C" sort keys, SQLite's NULL order), answered
 * asynchronously on one connection. Same results as the SQLite store (test/search runs on both).
 */
import type pg from 'pg';
import { fhirError } from '../../outcome.js';
import type { StoreSearchRequest } from '../search-query.js';
import {
  postgresDialect,
  runPlan,
  SearchRun,
  SMALL_SIDE,
  type SearchDialect,
  type SearchEffect,
  type SearchResult,
} from '../search-sql.js';

type Queryable = Pick<pg.PoolClient, 'query'>;

export class PostgresSearch {
  private readonly dialect: SearchDialect;
  private readonly positional = new Map<string, string>();

  constructor(
    /** The quoted schema name. */
    private readonly schema: string,
    private readonly smallSide = SMALL_SIDE,
  ) {
    this.dialect = postgresDialect(schema);
  }

  /** Runs the search's queries on `q` (one connection: the caller's transaction, or one taken for the search). */
  async search(q: Queryable, request: StoreSearchRequest): Promise<SearchResult> {
    try {
      return await runPlan(new SearchRun(this.dialect, request, this.smallSide).search(), (effect) =>
        this.perform(q, effect),
      );
    } catch (err) {
      // PostgreSQL's own limits (65,535 bound values, stack depth) reached by a large query: the client's to narrow.
      const code = (err as { code?: string }).code;
      const message = err instanceof Error ? err.message : '';
      if (code === '54000' || code === '54001' || /bind message supplies|too many/i.test(message))
        throw fhirError('search-too-costly', `The search is too large for this server: ${message}`);
      throw err;
    }
  }

  private async perform(q: Queryable, effect: SearchEffect): Promise<unknown> {
    switch (effect.op) {
      case 'rows':
        return (await q.query(this.toPositional(effect.sql), effect.binds)).rows;
      case 'count':
      case 'column': {
        const { rows } = await q.query<unknown[]>({
          text: this.toPositional(effect.sql),
          values: effect.binds,
          rowMode: 'array',
        });
        return effect.op === 'count' ? Number(rows[0]![0]) : rows.map((row) => row[0]);
      }
      case 'bodies': {
        const { rows } = await q.query<{ seq: number; json: string }>(
          `SELECT seq, json FROM ${this.schema}.resource_version WHERE seq = ANY($1::bigint[])`,
          [effect.seqs],
        );
        const bySeq = new Map(rows.map((row) => [row.seq, row.json]));
        return effect.seqs.map((seq) => bySeq.get(seq));
      }
    }
  }

  /** `?` placeholders as PostgreSQL's `$1, $2 ...` (the shared SQL has no `?` inside its literals). */
  private toPositional(sql: string): string {
    let text = this.positional.get(sql);
    if (text === undefined) {
      let n = 0;
      text = sql.replace(/\?/g, () => `$${++n}`);
      if (this.positional.size > 500) this.positional.clear();
      this.positional.set(sql, text);
    }
    return text;
  }
}
