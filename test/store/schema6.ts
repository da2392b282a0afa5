/** Test helper: a store file as an older release left it (for the migration tests). */
import type Database from 'better-sqlite3';
import { decodeJson } from '../../src/fhir/store/json-codec.js';
import { hexText } from '../../src/fhir/store/sqlite/schema.js';

/** The full-text triggers of migration 11 (dropped by migration 12). */
const TRIGGERS_11 =
  'CREATE TRIGGER search_index_text_insert AFTER INSERT ON search_index ' +
  "WHEN new.type = 'special' AND new.system IS NOT NULL BEGIN " +
  'INSERT INTO search_text (rowid, body) VALUES (new.seq * 2 + (' +
  "(SELECT param FROM search_param_key WHERE id = new.param_key) = '_content'), new.system); " +
  'UPDATE search_index SET system = NULL WHERE seq = new.seq AND ord = new.ord; END; ' +
  "CREATE TRIGGER search_index_text_delete AFTER DELETE ON search_index WHEN old.type = 'special' BEGIN " +
  'DELETE FROM search_text WHERE rowid = old.seq * 2 + (' +
  "(SELECT param FROM search_param_key WHERE id = old.param_key) = '_content'); END; ";

/**
 * Turns a store back into the layout of schema version 11 (before migration 12): a full-text row (type special,
 * without its words) after the other rows of each current version for each FTS5 document it has, and the triggers
 * that kept the documents in step with those rows.
 */
export function asSchema11(db: Database.Database): void {
  db.exec(
    "CREATE TEMP TABLE text_field AS SELECT '_text' AS param, 0 AS bit UNION ALL SELECT '_content', 1; " +
      'CREATE TEMP TABLE text_document AS SELECT c.seq, c.resource_type, f.param, f.bit FROM resource_current c ' +
      'JOIN temp.text_field f WHERE c.deleted = 0 AND EXISTS (SELECT 1 FROM search_text t WHERE t.rowid = c.seq * 2 + f.bit); ' +
      'INSERT OR IGNORE INTO search_param_key (resource_type, param) SELECT DISTINCT resource_type, param FROM temp.text_document; ' +
      "INSERT INTO search_index (seq, ord, param_key, type) SELECT d.seq, d.bit + (SELECT count(*) FROM search_index si WHERE si.seq = d.seq), k.id, 'special' " +
      'FROM temp.text_document d JOIN search_param_key k ON k.resource_type = d.resource_type AND k.param = d.param ORDER BY d.seq, d.bit; ' +
      'DROP TABLE temp.text_document; DROP TABLE temp.text_field; ' +
      TRIGGERS_11 +
      'DELETE FROM schema_version WHERE version >= 12;',
  );
}

/**
 * Turns a store back into the layout of schema version 10 (before migration 11): index rows with their resource type
 * and parameter as text, indexes and full-text triggers as migrations 6 and 10 made them, no search_param_key.
 */
export function asSchema10(db: Database.Database): void {
  asSchema11(db);
  db.exec(
    'CREATE TABLE search_index_v10 (seq INTEGER NOT NULL, ord INTEGER NOT NULL, resource_type TEXT NOT NULL, ' +
      'param TEXT NOT NULL, type TEXT NOT NULL, system TEXT, value TEXT, low REAL, high REAL, reference TEXT, ' +
      'PRIMARY KEY (seq, ord)) WITHOUT ROWID; ' +
      'INSERT INTO search_index_v10 SELECT si.seq, si.ord, k.resource_type, k.param, si.type, si.system, si.value, ' +
      'si.low, si.high, si.reference FROM search_index si JOIN search_param_key k ON k.id = si.param_key; ' +
      'DROP TABLE search_index; DROP TABLE search_param_key; ALTER TABLE search_index_v10 RENAME TO search_index; ' +
      'CREATE INDEX search_index_value ON search_index (resource_type, param, value, seq) WHERE value IS NOT NULL; ' +
      'CREATE INDEX search_index_reference ON search_index (resource_type, param, reference, seq) WHERE reference IS NOT NULL; ' +
      'CREATE INDEX search_index_range ON search_index (resource_type, param, low, high) WHERE low IS NOT NULL; ' +
      "CREATE INDEX search_index_quantity_high ON search_index (resource_type, param, high) WHERE type = 'quantity'; " +
      "CREATE INDEX search_index_date_high ON search_index (resource_type, param, high) WHERE type = 'date'; " +
      'CREATE INDEX search_index_range_seq ON search_index (resource_type, param, seq, low, high) WHERE low IS NOT NULL; ' +
      'CREATE TRIGGER search_index_text_insert AFTER INSERT ON search_index ' +
      "WHEN new.type = 'special' AND new.system IS NOT NULL BEGIN " +
      "INSERT INTO search_text (rowid, body) VALUES (new.seq * 2 + (new.param = '_content'), new.system); " +
      'UPDATE search_index SET system = NULL WHERE seq = new.seq AND ord = new.ord; END; ' +
      "CREATE TRIGGER search_index_text_delete AFTER DELETE ON search_index WHEN old.type = 'special' BEGIN " +
      "DELETE FROM search_text WHERE rowid = old.seq * 2 + (old.param = '_content'); END; " +
      'DELETE FROM schema_version WHERE version >= 11;',
  );
}

/**
 * Turns a store back into the layout of schema version 12 (before migration 13): the six indexes of search_index
 * that migration 11 made, instead of migration 13's three range indexes (the full-text parts of
 * migration 12, if any, untouched).
 */
export function asSchema12(db: Database.Database): void {
  db.exec(
    'DROP INDEX search_index_range_low; DROP INDEX search_index_range_high; DROP INDEX search_index_range_seq; ' +
      'CREATE INDEX search_index_range ON search_index (param_key, low, high) WHERE low IS NOT NULL; ' +
      "CREATE INDEX search_index_quantity_high ON search_index (param_key, high) WHERE type = 'quantity'; " +
      "CREATE INDEX search_index_date_high ON search_index (param_key, high) WHERE type = 'date'; " +
      'CREATE INDEX search_index_range_seq ON search_index (param_key, seq, low, high) WHERE low IS NOT NULL; ' +
      'DELETE FROM schema_version WHERE version >= 13;',
  );
}

/**
 * Turns a store back into the layout of schema version 6 (before migration 7): resource JSON as text, the anchor's
 * hashes as hex text with the version's key and its batch's columns in every row, and no index of later migrations
 * (10: the range entries in seq order).
 */
export function asSchema6(db: Database.Database): void {
  asSchema10(db);
  db.function('test_decode_json', (json: unknown) =>
    json === null ? null : decodeJson(json as string | Uint8Array),
  );
  db.exec(
    'UPDATE resource_version SET json = test_decode_json(json) WHERE json IS NOT NULL; ' +
      'CREATE TABLE anchor_v6 (seq INTEGER PRIMARY KEY REFERENCES resource_version (seq), ' +
      'resource_type TEXT NOT NULL, id TEXT NOT NULL, version_id INTEGER NOT NULL, salt TEXT, leaf_hash TEXT NOT NULL, ' +
      "ledger_key TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending', 'anchored', 'erased')), " +
      'transaction_id TEXT, block_number INTEGER, batch_id TEXT, batch_root TEXT, leaf_index INTEGER, ' +
      'leaf_count INTEGER, erased_at TEXT, leaf_version INTEGER NOT NULL DEFAULT 1); ' +
      'INSERT INTO anchor_v6 SELECT a.seq, v.resource_type, v.id, v.version_id, ' +
      `${hexText('a.salt')}, ${hexText('a.leaf_hash')}, ${hexText('a.ledger_key')}, a.status, ` +
      `${hexText('b.transaction_id')}, b.block_number, ${hexText('b.batch_id')}, ${hexText('b.batch_root')}, ` +
      'a.leaf_index, b.leaf_count, a.erased_at, a.leaf_version ' +
      'FROM anchor a JOIN resource_version v ON v.seq = a.seq LEFT JOIN anchor_batch b ON b.id = a.batch; ' +
      'DROP TABLE anchor; DROP TABLE anchor_batch; DROP TABLE anchor_outbox; ALTER TABLE anchor_v6 RENAME TO anchor; ' +
      "CREATE INDEX anchor_pending ON anchor (seq) WHERE status = 'pending'; " +
      'CREATE INDEX access_key_resource ON access_key (resource_type, id); ' +
      'DROP INDEX IF EXISTS search_index_range_seq; ' +
      'DELETE FROM schema_version WHERE version >= 7;',
  );
}
