/**
 * The SQLite store's schema, as numbered migrations. `schema_version` records which ones ran;
 * a migration runs once, in its own transaction. Never edit a released migration: append a new one.
 */
export interface Migration {
  version: number;
  description: string;
  sql: string;
}

/**
 * SQL of the stored form of a hex text (migration 7): the bytes as a BLOB when `column` is non-empty lowercase hex of
 * even length, else the text as it is. `hexText` reads either back as the text; sqlite-store.ts packHex is the same
 * rule for writes.
 */
function packHex(column: string): string {
  return (
    `CASE WHEN ${column} <> '' AND length(${column}) % 2 = 0 AND ${column} NOT GLOB '*[^0-9a-f]*' ` +
    `THEN unhex(${column}) ELSE ${column} END`
  );
}

/** SQL reading a column packHex wrote: lowercase hex of a BLOB, a text as it is. */
export function hexText(column: string): string {
  return `CASE WHEN typeof(${column}) = 'blob' THEN lower(hex(${column})) ELSE ${column} END`;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'resource versions, current pointer, search index, anchor outbox',
    sql: `
      -- Every version of every resource. seq is the store order: assigned under the write lock together with
      -- last_updated, so seq order = last_updated order (history and paging rely on it).
      CREATE TABLE resource_version (
        seq           INTEGER PRIMARY KEY,
        resource_type TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version_id    INTEGER NOT NULL,
        last_updated  TEXT    NOT NULL,  -- ISO instant, always YYYY-MM-DDTHH:MM:SS.mmmZ (sorts as text)
        deleted       INTEGER NOT NULL DEFAULT 0,
        method        TEXT    NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
        json          TEXT,              -- the resource exactly as served; NULL for deletions
        custodian     TEXT,
        patients      TEXT               -- JSON array of Patient/{id}, or NULL
      );
      CREATE UNIQUE INDEX resource_version_key ON resource_version (resource_type, id, version_id);
      CREATE INDEX resource_version_type_seq ON resource_version (resource_type, seq);
      CREATE INDEX resource_version_last_updated ON resource_version (last_updated);
      -- Versions are never deleted: history relies on seq being dense (1..n), and the audit on every version existing.
      CREATE TRIGGER resource_version_keep BEFORE DELETE ON resource_version
      BEGIN
        SELECT RAISE(ABORT, 'resource versions are never deleted');
      END;

      -- The current version of each resource (deleted or not): fast read, and the list searches start from.
      CREATE TABLE resource_current (
        resource_type TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version_id    INTEGER NOT NULL,
        seq           INTEGER NOT NULL REFERENCES resource_version (seq),
        deleted       INTEGER NOT NULL,
        PRIMARY KEY (resource_type, id)
      ) WITHOUT ROWID;

      -- Search index rows of current, non-deleted versions only (replaced on each write, removed on delete).
      -- Meaning of the columns per parameter type: src/fhir/search/index-entries.ts.
      CREATE TABLE search_index (
        resource_type TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        ord           INTEGER NOT NULL,  -- position of the entry in the version's list
        param         TEXT    NOT NULL,
        type          TEXT    NOT NULL,
        system        TEXT,
        value         TEXT,
        low           REAL,
        high          REAL,
        reference     TEXT,
        PRIMARY KEY (resource_type, id, ord)
      ) WITHOUT ROWID;
      -- Partial indexes: each row goes only into the index its type uses (about one per row instead of three),
      -- which halves the pages a write touches. A query uses one when it constrains that column (=, <, >, LIKE ...).
      CREATE INDEX search_index_value ON search_index (resource_type, param, value) WHERE value IS NOT NULL;
      CREATE INDEX search_index_reference ON search_index (resource_type, param, reference) WHERE reference IS NOT NULL;
      CREATE INDEX search_index_range ON search_index (resource_type, param, low, high) WHERE low IS NOT NULL;

      -- The integrity outbox and each version's anchor state (one row per anchored version, keyed by its seq).
      CREATE TABLE anchor (
        seq            INTEGER PRIMARY KEY REFERENCES resource_version (seq),
        resource_type  TEXT    NOT NULL,
        id             TEXT    NOT NULL,
        version_id     INTEGER NOT NULL,
        salt           TEXT,             -- NULL once erased
        leaf_hash      TEXT    NOT NULL,
        ledger_key     TEXT    NOT NULL,
        status         TEXT    NOT NULL CHECK (status IN ('pending', 'anchored', 'erased')),
        transaction_id TEXT,
        block_number   INTEGER,
        batch_id       TEXT,
        batch_root     TEXT,
        leaf_index     INTEGER,
        leaf_count     INTEGER,
        erased_at      TEXT              -- the erasure marker
      );
      CREATE INDEX anchor_pending ON anchor (seq) WHERE status = 'pending';
    `,
  },
  {
    version: 2,
    description: 'the leaf format of each anchor (1: salt + canonical text; 2: also the custodian)',
    sql: `ALTER TABLE anchor ADD COLUMN leaf_version INTEGER NOT NULL DEFAULT 1;`,
  },
  {
    version: 3,
    description:
      'access keys of current versions (custodian, patients): searches narrowed to what a caller may see',
    sql: `
      -- Who may see each current, non-deleted version, as keys a caller's read scope names (AccessPolicy.readScope):
      -- 'custodian|Organization/x' for its custodian and 'Patient/x' for each patient compartment it is in. A search
      -- of a caller with a narrow scope starts from these rows (sqlite-search.ts), so rows it may not see are never
      -- visited. Replaced on each write, removed on delete, like search_index.
      CREATE TABLE access_key (
        resource_type TEXT NOT NULL,
        key           TEXT NOT NULL,
        id            TEXT NOT NULL,
        PRIMARY KEY (resource_type, key, id)
      ) WITHOUT ROWID;
      CREATE INDEX access_key_resource ON access_key (resource_type, id);
      INSERT OR IGNORE INTO access_key (resource_type, key, id)
        SELECT v.resource_type, 'custodian|' || v.custodian, v.id
        FROM resource_current c JOIN resource_version v ON v.seq = c.seq
        WHERE c.deleted = 0 AND v.custodian IS NOT NULL;
      INSERT OR IGNORE INTO access_key (resource_type, key, id)
        SELECT v.resource_type, p.value, v.id
        FROM resource_current c JOIN resource_version v ON v.seq = c.seq, json_each(v.patients) p
        WHERE c.deleted = 0 AND v.patients IS NOT NULL;
    `,
  },
  {
    version: 4,
    description: 'full-text index of the _text and _content search index rows (FTS5)',
    sql: `
      -- The full-text rows of search_index (type 'special', param _text or _content, system = the resource's words,
      -- src/fhir/search/full-text.ts) are indexed by FTS5, kept in step by triggers: whatever writes or removes
      -- search_index rows (writes, deletions, erasure, reindexing) keeps the text index right. FTS5 keys documents by
      -- an integer: search_text_doc gives each (type, id, field) one; the FTS table keeps no copy of the text.
      CREATE TABLE search_text_doc (
        docid         INTEGER PRIMARY KEY,
        resource_type TEXT NOT NULL,
        id            TEXT NOT NULL,
        field         TEXT NOT NULL,
        UNIQUE (resource_type, id, field)
      );
      CREATE VIRTUAL TABLE search_text USING fts5(body, content = '', contentless_delete = 1, tokenize = 'ascii');
      CREATE TRIGGER search_index_text_insert AFTER INSERT ON search_index WHEN new.type = 'special' BEGIN
        INSERT OR IGNORE INTO search_text_doc (resource_type, id, field) VALUES (new.resource_type, new.id, new.param);
        INSERT INTO search_text (rowid, body)
          SELECT docid, new.system FROM search_text_doc
          WHERE resource_type = new.resource_type AND id = new.id AND field = new.param;
      END;
      CREATE TRIGGER search_index_text_delete AFTER DELETE ON search_index WHEN old.type = 'special' BEGIN
        DELETE FROM search_text WHERE rowid IN (
          SELECT docid FROM search_text_doc WHERE resource_type = old.resource_type AND id = old.id AND field = old.param);
        DELETE FROM search_text_doc WHERE resource_type = old.resource_type AND id = old.id AND field = old.param;
      END;
      INSERT OR IGNORE INTO search_text_doc (resource_type, id, field)
        SELECT resource_type, id, param FROM search_index WHERE type = 'special';
      INSERT INTO search_text (rowid, body)
        SELECT d.docid, si.system FROM search_index si
        JOIN search_text_doc d ON d.resource_type = si.resource_type AND d.id = si.id AND d.field = si.param
        WHERE si.type = 'special';
    `,
  },
  {
    version: 5,
    description:
      'quantities indexed by unit, in UCUM canonical units (rows rebuilt on open: index_rebuild); current versions by seq',
    sql: `
      -- A page in the default order walks the current versions in store order (search-sql.ts seqOrderCandidates).
      CREATE INDEX resource_current_type_seq ON resource_current (resource_type, seq);
      -- Quantity searches bound \`high\` (gt, ge, eb, ap) as often as \`low\` (search_index_range): an index of its own,
      -- for quantity rows only (their unit is part of \`param\`, src/fhir/search/index-entries.ts quantityEntries).
      CREATE INDEX search_index_quantity_high ON search_index (resource_type, param, high) WHERE type = 'quantity';
      -- Index rebuilds a migration asks for and SQL cannot do (UCUM conversion): the store re-extracts the rows of the
      -- current versions that have index rows of \`row_type\` (all when NULL), in seq order after \`after_seq\`
      -- (ResourceStore.rebuildIndex, run by the service at start-up; a row is removed when its rebuild is done).
      CREATE TABLE index_rebuild (
        name      TEXT    PRIMARY KEY,
        row_type  TEXT,
        after_seq INTEGER NOT NULL
      );
      -- Stores written before this version lack the UCUM quantity rows, and the full-text and :of-type rows of the
      -- version before (search rows of type 'special'): every current version is re-extracted once.
      INSERT INTO index_rebuild (name, row_type, after_seq)
        SELECT 'search-rows-2026-12', NULL, 0 WHERE EXISTS (SELECT 1 FROM resource_current);
    `,
  },
  {
    version: 6,
    description:
      'search index rows keyed by the current version (seq, ord): a page walks them in store order; less disk',
    sql: `
      -- Index rows name their version by its seq (the current version's: rows exist for current, non-deleted versions
      -- only) instead of repeating (type, id) in every row and in every secondary index entry:
      -- - a search's matches are seqs, so a page in store order reads them from an index in seq order
      --   (search-sql.ts seqOrderCandidates) and joins resource_version by its rowid;
      -- - rows are appended in seq order (pages filled, not split at random keys), and each secondary index entry
      --   ends in (seq, ord), two small integers, instead of (type, 36-character id, ord).
      -- The rows are copied as they are (no re-extraction needed).
      CREATE TABLE search_index_by_seq (
        seq           INTEGER NOT NULL,  -- resource_version.seq of the current version
        ord           INTEGER NOT NULL,  -- position of the entry in the version's list
        resource_type TEXT    NOT NULL,
        param         TEXT    NOT NULL,
        type          TEXT    NOT NULL,
        system        TEXT,
        value         TEXT,
        low           REAL,
        high          REAL,
        reference     TEXT,
        PRIMARY KEY (seq, ord)
      ) WITHOUT ROWID;
      INSERT INTO search_index_by_seq (seq, ord, resource_type, param, type, system, value, low, high, reference)
        SELECT c.seq, si.ord, si.resource_type, si.param, si.type, si.system, si.value, si.low, si.high, si.reference
        FROM resource_current c JOIN search_index si ON si.resource_type = c.resource_type AND si.id = c.id
        ORDER BY c.seq, si.ord;
      DROP TABLE search_index;
      ALTER TABLE search_index_by_seq RENAME TO search_index;
      -- Equal values (tokens, uris, exact strings) and references: their matches in seq order, read from the index.
      CREATE INDEX search_index_value ON search_index (resource_type, param, value, seq) WHERE value IS NOT NULL;
      CREATE INDEX search_index_reference ON search_index (resource_type, param, reference, seq) WHERE reference IS NOT NULL;
      CREATE INDEX search_index_range ON search_index (resource_type, param, low, high) WHERE low IS NOT NULL;
      CREATE INDEX search_index_quantity_high ON search_index (resource_type, param, high) WHERE type = 'quantity';
      -- Dates searched by their upper bound (gt, ge, eb): the matches only, not every date row of the param.
      CREATE INDEX search_index_date_high ON search_index (resource_type, param, high) WHERE type = 'date';
      -- Full text: FTS5 keys a document by an integer, here the row's seq and field (2 seq + 1 for _content), so no
      -- table of document keys is needed. The words are kept by the full-text index only: the row's \`system\` (its
      -- words, as written) is emptied once they are indexed, so the resource's text is not stored a second time
      -- (it was the largest part of the index rows); indexEntries gives these rows without words, and the integrity
      -- audit compares them by parameter (src/integrity/verification.ts indexRowKey).
      DROP TABLE search_text_doc;
      DROP TABLE search_text;
      CREATE VIRTUAL TABLE search_text USING fts5(body, content = '', contentless_delete = 1, tokenize = 'ascii');
      CREATE TRIGGER search_index_text_insert AFTER INSERT ON search_index
        WHEN new.type = 'special' AND new.system IS NOT NULL BEGIN
        INSERT INTO search_text (rowid, body) VALUES (new.seq * 2 + (new.param = '_content'), new.system);
        UPDATE search_index SET system = NULL WHERE seq = new.seq AND ord = new.ord;
      END;
      CREATE TRIGGER search_index_text_delete AFTER DELETE ON search_index WHEN old.type = 'special' BEGIN
        DELETE FROM search_text WHERE rowid = old.seq * 2 + (old.param = '_content');
      END;
      INSERT INTO search_text (rowid, body)
        SELECT seq * 2 + (param = '_content'), system FROM search_index WHERE type = 'special' AND system IS NOT NULL;
      UPDATE search_index SET system = NULL WHERE type = 'special';
    `,
  },
  {
    version: 7,
    description:
      'less disk per version: resource JSON deflated, anchor hashes as BLOBs, anchor batches in a table of their own',
    sql: `
      -- Resource JSON deflated with a preset dictionary (src/fhir/store/json-codec.ts: a BLOB, format byte first; text
      -- when deflating would not make it smaller). Reads accept both forms. hie_encode_json is that function,
      -- registered on the connection before migrations run (sqlite-store.ts).
      UPDATE resource_version SET json = hie_encode_json(json) WHERE typeof(json) = 'text';

      -- Anchors: the salt and hashes (64 hex characters each) as 32-byte BLOBs (text kept as it is when it is not
      -- lowercase hex: read back with hexText, so every value reads back the same); no copy of the version's key
      -- (resource_version has it, by seq); the Merkle batch's columns, the same for thousands of versions, in
      -- anchor_batch, one row per markAnchored call.
      CREATE TABLE anchor_batch (
        id             INTEGER PRIMARY KEY,
        transaction_id BLOB,
        block_number   INTEGER,
        batch_id       BLOB,
        batch_root     BLOB,
        leaf_count     INTEGER
      );
      INSERT INTO anchor_batch (transaction_id, block_number, batch_id, batch_root, leaf_count)
        SELECT DISTINCT transaction_id, block_number, batch_id, batch_root, leaf_count FROM anchor
        WHERE transaction_id IS NOT NULL OR block_number IS NOT NULL OR batch_id IS NOT NULL
          OR batch_root IS NOT NULL OR leaf_count IS NOT NULL;
      CREATE INDEX anchor_batch_migration ON anchor_batch (batch_root, transaction_id, batch_id, block_number, leaf_count);
      CREATE TABLE anchor_v7 (
        seq          INTEGER PRIMARY KEY REFERENCES resource_version (seq),
        salt         BLOB,             -- NULL once erased
        leaf_hash    BLOB    NOT NULL,
        ledger_key   BLOB    NOT NULL,
        status       TEXT    NOT NULL CHECK (status IN ('pending', 'anchored', 'erased')),
        leaf_version INTEGER NOT NULL DEFAULT 1,
        batch        INTEGER REFERENCES anchor_batch (id),
        leaf_index   INTEGER,
        erased_at    TEXT              -- the erasure marker
      );
      INSERT INTO anchor_v7 (seq, salt, leaf_hash, ledger_key, status, leaf_version, batch, leaf_index, erased_at)
        SELECT a.seq, ${packHex('a.salt')}, ${packHex('a.leaf_hash')}, ${packHex('a.ledger_key')}, a.status,
          a.leaf_version, b.id, a.leaf_index, a.erased_at
        FROM anchor a LEFT JOIN anchor_batch b ON b.batch_root IS a.batch_root AND b.transaction_id IS a.transaction_id
          AND b.batch_id IS a.batch_id AND b.block_number IS a.block_number AND b.leaf_count IS a.leaf_count
          AND (a.transaction_id IS NOT NULL OR a.block_number IS NOT NULL OR a.batch_id IS NOT NULL
            OR a.batch_root IS NOT NULL OR a.leaf_count IS NOT NULL)
        ORDER BY a.seq;
      DROP INDEX anchor_batch_migration;
      UPDATE anchor_batch SET transaction_id = ${packHex('transaction_id')}, batch_id = ${packHex('batch_id')},
        batch_root = ${packHex('batch_root')};
      -- The outbox: the key of each pending anchor, kept with it until it is anchored or erased (the anchor row no
      -- longer repeats the key, and a pending version that vanished from resource_version must still be anchored and
      -- named missing by the audit). Rows leave it when their anchor's status changes, so it stays small.
      CREATE TABLE anchor_outbox (
        seq           INTEGER PRIMARY KEY,
        resource_type TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version_id    INTEGER NOT NULL
      );
      INSERT INTO anchor_outbox (seq, resource_type, id, version_id)
        SELECT seq, resource_type, id, version_id FROM anchor WHERE status = 'pending' ORDER BY seq;
      DROP TABLE anchor;
      ALTER TABLE anchor_v7 RENAME TO anchor;
      CREATE TRIGGER anchor_leaves_outbox AFTER UPDATE OF status ON anchor WHEN new.status <> 'pending' BEGIN
        DELETE FROM anchor_outbox WHERE seq = new.seq;
      END;

      -- A write removes the previous version's access keys by their primary key (type, key, id), named by that
      -- version's custodian and patients, so the index by (type, id), as large as the table itself, is not needed.
      DROP INDEX access_key_resource;
    `,
  },
  {
    version: 10,
    description: "range index entries in seq order with their bounds: a range's page walks them index-only",
    sql: `
      -- A range's matches in store order (search-sql.ts rangeSeqRows): its entries walked by seq, low and high read
      -- from the index itself, up to the page; and a second range filter (the other side of a one-day range) checked
      -- on a candidate's seq from the same index (rangeSeqCheck), not by reading its row. Range rows only.
      CREATE INDEX search_index_range_seq ON search_index (resource_type, param, seq, low, high) WHERE low IS NOT NULL;
    `,
  },
  {
    version: 11,
    description:
      'less disk per version: index rows name their (resource type, parameter) by an integer key (search_param_key)',
    sql: `
      -- Every index row and every entry of its indexes repeated the resource type and the parameter's name (about 20
      -- bytes each time, 11 rows a version). Now a small table gives each pair an integer key, assigned when the pair is
      -- first indexed and never changed (src/fhir/store/sqlite/param-keys.ts keeps them in memory); rows carry the key.
      -- A search turns the (types, params) it names into their keys (search-sql.ts rowKeys).
      CREATE TABLE search_param_key (
        id            INTEGER PRIMARY KEY,
        resource_type TEXT    NOT NULL,
        param         TEXT    NOT NULL,
        UNIQUE (resource_type, param)
      );
      INSERT INTO search_param_key (resource_type, param)
        SELECT DISTINCT resource_type, param FROM search_index ORDER BY resource_type, param;
      CREATE TABLE search_index_v11 (
        seq       INTEGER NOT NULL,  -- resource_version.seq of the current version
        ord       INTEGER NOT NULL,  -- position of the entry in the version's list
        param_key INTEGER NOT NULL,  -- search_param_key.id: the resource type and the parameter
        type      TEXT    NOT NULL,
        system    TEXT,
        value     TEXT,
        low       REAL,
        high      REAL,
        reference TEXT,
        PRIMARY KEY (seq, ord)
      ) WITHOUT ROWID;
      INSERT INTO search_index_v11 (seq, ord, param_key, type, system, value, low, high, reference)
        SELECT si.seq, si.ord, k.id, si.type, si.system, si.value, si.low, si.high, si.reference
        FROM search_index si JOIN search_param_key k ON k.resource_type = si.resource_type AND k.param = si.param
        ORDER BY si.seq, si.ord;
      -- Dropping the table drops its indexes and full-text triggers (the full-text index keeps its documents: they are
      -- numbered by seq, which does not change).
      DROP TABLE search_index;
      ALTER TABLE search_index_v11 RENAME TO search_index;
      CREATE INDEX search_index_value ON search_index (param_key, value, seq) WHERE value IS NOT NULL;
      CREATE INDEX search_index_reference ON search_index (param_key, reference, seq) WHERE reference IS NOT NULL;
      CREATE INDEX search_index_range ON search_index (param_key, low, high) WHERE low IS NOT NULL;
      CREATE INDEX search_index_quantity_high ON search_index (param_key, high) WHERE type = 'quantity';
      CREATE INDEX search_index_date_high ON search_index (param_key, high) WHERE type = 'date';
      CREATE INDEX search_index_range_seq ON search_index (param_key, seq, low, high) WHERE low IS NOT NULL;
      -- The full-text triggers of migration 6, the parameter read from its key (_text or _content).
      CREATE TRIGGER search_index_text_insert AFTER INSERT ON search_index
        WHEN new.type = 'special' AND new.system IS NOT NULL BEGIN
        INSERT INTO search_text (rowid, body) VALUES (new.seq * 2 + (
          (SELECT param FROM search_param_key WHERE id = new.param_key) = '_content'), new.system);
        UPDATE search_index SET system = NULL WHERE seq = new.seq AND ord = new.ord;
      END;
      CREATE TRIGGER search_index_text_delete AFTER DELETE ON search_index WHEN old.type = 'special' BEGIN
        DELETE FROM search_text WHERE rowid = old.seq * 2 + (
          (SELECT param FROM search_param_key WHERE id = old.param_key) = '_content');
      END;
    `,
  },
  {
    version: 12,
    description:
      'full-text documents written by the store, once per commit: no triggers, no _text/_content index rows',
    sql: `
      -- The triggers inserted each version's document as its row was written: FTS5 turns its pending data into a new
      -- level-0 segment at every statement savepoint, so every write paid a segment flush, whatever the group commit
      -- did. The store now queues a transaction's documents and inserts them in one statement just before it commits
      -- (src/fhir/store/sqlite/text-documents.ts), and deletes a version's documents by rowid (2 seq, 2 seq + 1) with
      -- its rows. The full-text rows of search_index (type 'special', their words already emptied by migration 6) were
      -- only the triggers' carriers: no search reads them (search-sql.ts asks search_text), so they go. The documents
      -- stay as they are, numbered by seq.
      DROP TRIGGER search_index_text_insert;
      DROP TRIGGER search_index_text_delete;
      DELETE FROM search_index WHERE type = 'special';
    `,
  },
  {
    version: 13,
    description:
      'fewer index entries per range row: three indexes of the range rows, each of the types it serves',
    sql: `
      -- Every index row pays an insert into each index whose WHERE it meets. A date or quantity row paid three
      -- (search_index_range, search_index_range_seq and its type's search_index_{date,quantity}_high), a composite row
      -- with a range three (search_index_value, search_index_range, search_index_range_seq). Now each range index
      -- holds the types whose searches read it, and each query that reads one names the row's type (search-sql.ts
      -- rangeRows, compositeCondition: SQLite uses a partial index only when the query's terms imply its WHERE), type
      -- being its last column so that the query reads the index alone:
      -- - search_index_range_low, dates and numbers by (type, param), low, high: their conditions other than a date's
      --   gt, ge, eb (a bound on low is a seek);
      -- - search_index_range_high, dates and quantities by (type, param), high, low: a date's gt, ge, eb (what
      --   search_index_date_high was for), and every quantity condition (a bound on high a seek, a bound on low reads
      --   the unit's entries there: its unit rows split the param, search-sql.ts quantityRowsCondition);
      -- - search_index_range_seq, dates, numbers and composites by (type, param), seq, low, high: a range's entries in
      --   store order (rangeSeqRows, an unselective range's page), one candidate's (rangeSeqCheck), and a composite
      --   with a range walked in store order (no value is bound, so search_index_value cannot give that order).
      --   A quantity's walk never read it by design (its unit is not in it).
      -- Entries per row: date 3, number 2, quantity 1 (was 3), composite 2 (was 3 with a range).
      -- Idempotent (IF EXISTS, IF NOT EXISTS): a store rolled back to an earlier version by a test helper may already
      -- have the new indexes; search_index_range_seq is dropped whatever its definition.
      DROP INDEX IF EXISTS search_index_range;
      DROP INDEX IF EXISTS search_index_quantity_high;
      DROP INDEX IF EXISTS search_index_date_high;
      DROP INDEX IF EXISTS search_index_range_seq;
      CREATE INDEX IF NOT EXISTS search_index_range_low ON search_index (param_key, low, high, type)
        WHERE type = 'date' OR type = 'number';
      CREATE INDEX IF NOT EXISTS search_index_range_high ON search_index (param_key, high, low, type)
        WHERE type = 'date' OR type = 'quantity';
      CREATE INDEX search_index_range_seq ON search_index (param_key, seq, low, high, type)
        WHERE type = 'date' OR type = 'number' OR type = 'composite';
    `,
  },
];
