/**
 * The PostgreSQL store's schema, as numbered migrations over one schema (namespace) `S`. The tables mirror
 * the SQLite store's (src/fhir/store/sqlite/schema.ts); text that is compared by order uses COLLATE "C".
 * Never edit a released migration: append a new one.
 */
export interface PgMigration {
  version: number;
  description: string;
  /** SQL with `S.` standing for the quoted schema name. */
  sql: (schema: string) => string;
}

export const PG_MIGRATIONS: readonly PgMigration[] = [
  {
    version: 1,
    description: 'resource versions, current pointer, search index, anchor outbox',
    sql: (S) => `
      -- seq is assigned under the store's write lock (an advisory lock), so seq order = commit order
      -- = lastUpdated order. Rolled-back writes leave gaps in seq (sequences are not transactional).
      CREATE TABLE ${S}.resource_version (
        seq           bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        resource_type text    NOT NULL,
        id            text    NOT NULL,
        version_id    integer NOT NULL,
        last_updated  text    COLLATE "C" NOT NULL,
        deleted       boolean NOT NULL DEFAULT false,
        method        text    NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
        json          text,
        custodian     text,
        patients      text
      );
      CREATE UNIQUE INDEX resource_version_key ON ${S}.resource_version (resource_type, id, version_id);
      CREATE INDEX resource_version_type_seq ON ${S}.resource_version (resource_type, seq);
      CREATE INDEX resource_version_last_updated ON ${S}.resource_version (last_updated);

      CREATE TABLE ${S}.resource_current (
        resource_type text    NOT NULL,
        id            text    NOT NULL,
        version_id    integer NOT NULL,
        seq           bigint  NOT NULL REFERENCES ${S}.resource_version (seq),
        deleted       boolean NOT NULL,
        PRIMARY KEY (resource_type, id)
      );

      -- No unique key: a write deletes the old rows and inserts the new ones in one statement.
      CREATE TABLE ${S}.search_index (
        resource_type text    NOT NULL,
        id            text    NOT NULL,
        ord           integer NOT NULL,
        param         text    NOT NULL,
        type          text    NOT NULL,
        system        text,
        value         text    COLLATE "C",
        low           double precision,
        high          double precision,
        reference     text
      );
      CREATE INDEX search_index_resource ON ${S}.search_index (resource_type, id);
      CREATE INDEX search_index_value ON ${S}.search_index (resource_type, param, value) WHERE value IS NOT NULL;
      CREATE INDEX search_index_reference ON ${S}.search_index (resource_type, param, reference)
        WHERE reference IS NOT NULL;
      CREATE INDEX search_index_range ON ${S}.search_index (resource_type, param, low, high) WHERE low IS NOT NULL;

      CREATE TABLE ${S}.anchor (
        seq            bigint  PRIMARY KEY REFERENCES ${S}.resource_version (seq),
        resource_type  text    NOT NULL,
        id             text    NOT NULL,
        version_id     integer NOT NULL,
        salt           text,
        leaf_hash      text    NOT NULL,
        ledger_key     text    NOT NULL,
        status         text    NOT NULL CHECK (status IN ('pending', 'anchored', 'erased')),
        transaction_id text,
        block_number   bigint,
        batch_id       text,
        batch_root     text,
        leaf_index     integer,
        leaf_count     integer,
        erased_at      text
      );
      CREATE INDEX anchor_pending ON ${S}.anchor (seq) WHERE status = 'pending';

      CREATE FUNCTION ${S}.resource_version_keep() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'resource versions are never deleted';
      END $$;
      CREATE TRIGGER resource_version_keep BEFORE DELETE ON ${S}.resource_version
        FOR EACH ROW EXECUTE FUNCTION ${S}.resource_version_keep();
    `,
  },
  {
    version: 2,
    description: 'the leaf format of each anchor (1: salt + canonical text; 2: also the custodian)',
    sql: (S) => `ALTER TABLE ${S}.anchor ADD COLUMN leaf_version integer NOT NULL DEFAULT 1;`,
  },
  {
    version: 3,
    description:
      'access keys of current versions (custodian, patients): searches narrowed to what a caller may see',
    sql: (S) => `
      -- As SQLite's access_key (sqlite/schema.ts, migration 3): 'custodian|Organization/x' and one 'Patient/x' per
      -- compartment of each current, non-deleted version; the search (../search-sql.ts) starts from a caller's keys.
      -- No unique key: a write deletes the old rows and inserts the new ones in one statement (as search_index).
      CREATE TABLE ${S}.access_key (
        resource_type text NOT NULL,
        key           text NOT NULL,
        id            text NOT NULL
      );
      CREATE INDEX access_key_key ON ${S}.access_key (resource_type, key, id);
      CREATE INDEX access_key_resource ON ${S}.access_key (resource_type, id);
      INSERT INTO ${S}.access_key (resource_type, key, id)
        SELECT DISTINCT v.resource_type, k.key, v.id
        FROM ${S}.resource_current c JOIN ${S}.resource_version v ON v.seq = c.seq,
          LATERAL (
            SELECT 'custodian|' || v.custodian AS key WHERE v.custodian IS NOT NULL
            UNION SELECT jsonb_array_elements_text(v.patients::jsonb)
          ) k
        WHERE NOT c.deleted;
    `,
  },
  {
    version: 4,
    description:
      'quantities indexed by unit, in UCUM canonical units (rows rebuilt on open: index_rebuild); current versions by seq',
    sql: (S) => `
      -- A page in the default order walks the current versions in store order (search-sql.ts seqOrderCandidates).
      CREATE INDEX resource_current_type_seq ON ${S}.resource_current (resource_type, seq);
      -- As SQLite's migration 4 (sqlite/schema.ts): quantity searches bound \`high\` as often as \`low\`.
      CREATE INDEX search_index_quantity_high ON ${S}.search_index (resource_type, param, high) WHERE type = 'quantity';
      CREATE TABLE ${S}.index_rebuild (
        name      text   PRIMARY KEY,
        row_type  text,
        after_seq bigint NOT NULL
      );
      INSERT INTO ${S}.index_rebuild (name, row_type, after_seq)
        SELECT 'quantity-ucum', 'quantity', 0 WHERE EXISTS (SELECT 1 FROM ${S}.search_index WHERE type = 'quantity');
    `,
  },
];
