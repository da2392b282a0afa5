/**
 * The integer key of a (resource type, search parameter) pair (schema migration 11, table `search_param_key`): index
 * rows and their index entries carry it instead of the two texts. A key is assigned once, when a pair is first
 * indexed, and never changes or goes away; each connection keeps the keys it knows in memory.
 *
 * A key can be assigned inside a write transaction that later rolls back (a group-commit batch retried with
 * savepoints, a failing transaction(work)): its row is then gone, and SQLite may give its number to another pair. So
 * only a key read outside any transaction (committed, since rows are never deleted) is kept in memory; one assigned or
 * read inside a transaction is looked up again (one probe of the table's unique index) until `settle()`, called
 * outside a transaction (before a write or a search), finds it committed.
 */
import type Database from 'better-sqlite3';

type Statement = Database.Statement;

const pairOf = (resourceType: string, param: string): string => `${resourceType}\u0000${param}`;

export class SearchParamKeys {
  /** Committed keys by pairOf. */
  private readonly known = new Map<string, number>();
  /** Pairs whose key was assigned or read inside a transaction: not yet known to be committed. */
  private readonly unsettled = new Map<string, [string, string]>();
  private readonly find: Statement;
  private readonly insert: Statement;

  constructor(private readonly db: Database.Database) {
    this.find = db.prepare('SELECT id FROM search_param_key WHERE resource_type = ? AND param = ?').pluck();
    this.insert = db.prepare('INSERT INTO search_param_key (resource_type, param) VALUES (?, ?)');
    if (!db.inTransaction)
      for (const row of db
        .prepare('SELECT id, resource_type, param FROM search_param_key')
        .iterate() as Iterable<{
        id: number;
        resource_type: string;
        param: string;
      }>)
        this.known.set(pairOf(row.resource_type, row.param), row.id);
  }

  /** The key of the pair, assigned now (in the caller's transaction) when the pair has none. */
  keyOf(resourceType: string, param: string): number {
    const pair = pairOf(resourceType, param);
    const known = this.known.get(pair);
    if (known !== undefined) return known;
    let id = this.find.get(resourceType, param) as number | undefined;
    if (id === undefined) id = Number(this.insert.run(resourceType, param).lastInsertRowid);
    this.remember(pair, resourceType, param, id);
    return id;
  }

  /** The key of the pair, undefined when no row was ever indexed under it (a search then matches nothing of it). */
  existingKey(resourceType: string, param: string): number | undefined {
    const pair = pairOf(resourceType, param);
    const known = this.known.get(pair);
    if (known !== undefined) return known;
    const id = this.find.get(resourceType, param) as number | undefined;
    if (id !== undefined) this.remember(pair, resourceType, param, id);
    return id;
  }

  /** Keeps in memory the keys found inside a transaction that are committed now (call outside a transaction). */
  settle(): void {
    if (this.unsettled.size === 0 || this.db.inTransaction) return;
    for (const [pair, [resourceType, param]] of this.unsettled) {
      const id = this.find.get(resourceType, param) as number | undefined;
      if (id !== undefined) this.known.set(pair, id);
    }
    this.unsettled.clear();
  }

  private remember(pair: string, resourceType: string, param: string, id: number): void {
    if (this.db.inTransaction) this.unsettled.set(pair, [resourceType, param]);
    else this.known.set(pair, id);
  }
}

const byDatabase = new WeakMap<Database.Database, SearchParamKeys>();

/** The connection's keys (one instance per connection: the store, its search and a bulk writer share it). */
export function searchParamKeys(db: Database.Database): SearchParamKeys {
  let keys = byDatabase.get(db);
  if (!keys) {
    keys = new SearchParamKeys(db);
    byDatabase.set(db, keys);
  }
  return keys;
}
