/**
 * Picks the ResourceStore adapter the configuration names: SQLite in the data directory (default) or a
 * PostgreSQL database (`--store postgres --database-url URL`, docs/store.md). `serve`, `migrate`, `verify` and
 * `erase` open the store through here, so they all reach the same data.
 */
import { join } from 'node:path';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import { PostgresResourceStore } from '../fhir/store/postgres/postgres-store.js';
import { SqliteResourceStore } from '../fhir/store/sqlite/sqlite-store.js';
import type { LoadedCodeSystems } from '../fhir/terminology-port.js';
import { openPostgresCodeSystems } from '../terminology/postgres-code-systems.js';
import { openLoadedCodeSystems } from '../terminology/terminology-store.js';

export interface StoreSelection {
  store?: 'sqlite' | 'postgres';
  /** Required for `postgres`. */
  databaseUrl?: string;
  dataDir: string;
  /** SQLite's read cache (bytes); default the adapter's. */
  readCache?: number;
  /** SQLite's group commit (default on). */
  groupCommit?: boolean;
  /** SQLite opened read-only and not checked at start (`validate --dry-run`, beside a running service). */
  readOnly?: boolean;
}

export function openConfiguredStore(selection: StoreSelection): ResourceStore {
  if (selection.store === 'postgres') {
    if (!selection.databaseUrl) throw new Error('--store postgres needs --database-url URL');
    return new PostgresResourceStore(postgresOptions(selection.databaseUrl));
  }
  return new SqliteResourceStore({
    file: join(selection.dataDir, 'resources.sqlite'),
    readCacheBytes: selection.readCache,
    groupCommit: selection.groupCommit,
    ...(selection.readOnly ? { readOnly: true, integrityCheck: 'off' as const } : {}),
  });
}

/**
 * The store's options from a database URL: its `schema` parameter (not PostgreSQL's own: taken out of the URL)
 * names the schema holding the tables, default `hie`; several services (or tests) may share a database that way.
 */
export function postgresOptions(databaseUrl: string): { connectionString: string; schema?: string } {
  const url = new URL(databaseUrl);
  const schema = url.searchParams.get('schema');
  if (schema === null) return { connectionString: databaseUrl };
  url.searchParams.delete('schema');
  return { connectionString: url.toString(), schema };
}

/**
 * The loaded code systems of the configured store (docs/terminology.md): the database's with `--store postgres`
 * (loaded once, shared by the replicas), else the data directory's terminology.sqlite. Undefined when none loaded.
 */
export async function openConfiguredCodeSystems(
  selection: Pick<StoreSelection, 'store' | 'databaseUrl' | 'dataDir'>,
): Promise<(LoadedCodeSystems & { close(): void | Promise<void> }) | undefined> {
  if (selection.store === 'postgres') {
    if (!selection.databaseUrl) throw new Error('--store postgres needs --database-url URL');
    return openPostgresCodeSystems(postgresOptions(selection.databaseUrl));
  }
  return openLoadedCodeSystems(selection.dataDir);
}
