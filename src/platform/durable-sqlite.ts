/**
 * A SQLite file of the data directory whose commits must survive a crash or a power cut before the service acts on
 * them (a grant id before its grant is on the ledger, a spent link token): private (0600, its directory 0700), WAL,
 * `synchronous = FULL` (each commit fsynced), and waiting up to 5 s for another connection's write.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { ensurePrivateFile, PRIVATE_DIR_MODE } from './private-files.js';

/** Opens (creating) `file`; absent, a database in memory (tests). */
export function openDurableSqlite(file?: string): Database.Database {
  if (file) {
    mkdirSync(dirname(file), { recursive: true, mode: PRIVATE_DIR_MODE });
    ensurePrivateFile(file);
  }
  const db = new Database(file ?? ':memory:');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  return db;
}
