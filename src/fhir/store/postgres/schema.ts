/**
 * The PostgreSQL store's schema, as numbered migrations over one schema (namespace) `S`. The tables mirror
 * the SQLite store's (src/fhir/store/sqlite/schema.ts); text that is compared by order uses COLLATE "C".
 * Never edit a released migration: append a new one.
 *
 * Expand/contract (rolling upgrades, docs/replicas.md): replicas of the previous release keep running on a schema
 * a new release migrated, so a migration only adds (tables, nullable columns or columns with a default, indexes,
 * rows). Dropping, renaming or retyping a table or column, SET NOT NULL, or a new constraint on an existing table
 * is a contract step: only in a later release than the one whose code stopped using it, marked `contract`.
 * test/store/postgres-migrations.test.ts enforces this.
 */
export interface PgMigration {
  version: number;
  description: string;
  /**
   * Set only on a contract step: what it removes or tightens and the release whose code no longer uses it, e.g.
   * 'drops resource_version.patients: unused since 1.4'. Without it the migration must be purely additive.
   */
  contract?: string;
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
    description: 'full-text index of the _text and _content search index rows (GIN over tsvector)',
    sql: (S) => `
      -- As SQLite's FTS5 table (sqlite/schema.ts, migration 4): the full-text rows of search_index (type 'special',
      -- system = the resource's words, letters only: src/fhir/search/full-text.ts) indexed by their tsvector. The
      -- search (../search-sql.ts, postgresDialect.fullText) writes this very expression.
      CREATE INDEX search_index_text ON ${S}.search_index USING gin (to_tsvector('simple'::regconfig, system))
        WHERE type = 'special';
    `,
  },
  {
    version: 5,
    description:
      'the anchor batch journal and the drain lease with its fencing token (src/integrity/postgres-anchor-journal.ts)',
    sql: (S) => `
      -- The batch journal of src/integrity/anchor-journal.ts, shared by every replica. \`fence\` is the drain lease's
      -- token the batch was prepared under; \`ord\` keeps preparation order.
      CREATE TABLE ${S}.anchor_batch (
        root           text    PRIMARY KEY,
        ord            bigint  GENERATED ALWAYS AS IDENTITY UNIQUE,
        leaf_count     integer NOT NULL,
        state          text    NOT NULL CHECK (state IN ('prepared', 'committed')),
        height_before  bigint  NOT NULL,
        fence          bigint  NOT NULL,
        transaction_id text,
        block_number   bigint,
        prepared_at    text    NOT NULL,
        committed_at   text
      );
      CREATE INDEX anchor_batch_prepared ON ${S}.anchor_batch (ord) WHERE state = 'prepared';
      CREATE TABLE ${S}.anchor_batch_member (
        root          text    NOT NULL REFERENCES ${S}.anchor_batch (root),
        leaf_index    integer NOT NULL,
        resource_type text    NOT NULL,
        id            text    NOT NULL,
        version_id    integer NOT NULL,
        leaf_hash     text    NOT NULL,
        ledger_key    text    NOT NULL,
        leaf_version  integer NOT NULL,
        PRIMARY KEY (root, leaf_index)
      );
      -- A version joins at most one batch, whoever prepares it: no version is ever anchored in two batches.
      CREATE UNIQUE INDEX anchor_batch_member_version ON ${S}.anchor_batch_member (resource_type, id, version_id);
      -- The drain lease: one row; its holder holds the session advisory lock, fence counts the holders so far.
      CREATE TABLE ${S}.anchor_drainer (
        one    boolean PRIMARY KEY DEFAULT true CHECK (one),
        fence  bigint  NOT NULL,
        holder text,
        since  text
      );
      INSERT INTO ${S}.anchor_drainer (fence) VALUES (0);
    `,
  },
  {
    version: 6,
    description:
      'replica-shared security state: used client assertions and token-endpoint rate buckets (src/access/shared-state.ts)',
    sql: (S) => `
      -- A client assertion (\`iss jti\`, per namespace) is admitted once across every replica, until it expires.
      CREATE TABLE ${S}.assertion_replay (
        key        text   COLLATE "C" PRIMARY KEY,
        expires_at bigint NOT NULL
      );
      CREATE INDEX assertion_replay_expiry ON ${S}.assertion_replay (expires_at);
      -- Token buckets of /auth/token's rate limits, shared by the replicas (tokens left, when last brought up to date).
      CREATE TABLE ${S}.rate_bucket (
        key    text             COLLATE "C" PRIMARY KEY,
        tokens double precision NOT NULL,
        at     bigint           NOT NULL,
        -- Whether the last request was admitted (what the upsert returns).
        spent  boolean          NOT NULL
      );
    `,
  },
  {
    version: 7,
    description:
      'quantities indexed by unit, in UCUM canonical units (rows rebuilt on open: index_rebuild); current versions by seq',
    sql: (S) => `
      -- A page in the default order walks the current versions in store order (search-sql.ts seqOrderCandidates).
      CREATE INDEX resource_current_type_seq ON ${S}.resource_current (resource_type, seq);
      -- As SQLite's migration 5 (sqlite/schema.ts): quantity searches bound \`high\` as often as \`low\`.
      CREATE INDEX search_index_quantity_high ON ${S}.search_index (resource_type, param, high) WHERE type = 'quantity';
      CREATE TABLE ${S}.index_rebuild (
        name      text   PRIMARY KEY,
        row_type  text,
        after_seq bigint NOT NULL
      );
      -- Stores written before this version lack the UCUM quantity rows, and the full-text and :of-type rows of the
      -- version before (search rows of type 'special'): every current version is re-extracted once.
      INSERT INTO ${S}.index_rebuild (name, row_type, after_seq)
        SELECT 'search-rows-2026-12', NULL, 0 WHERE EXISTS (SELECT 1 FROM ${S}.resource_current);
    `,
  },
  {
    version: 8,
    description: 'search index rows carry their current version (seq): a page walks matches in store order',
    contract:
      'search_index.seq NOT NULL and the value/reference indexes rebuilt: every replica of a release before it stops ' +
      'first (its writes name no seq), as for migration 9',
    sql: (S) => `
      -- As SQLite's migration 6 (sqlite/schema.ts): the search SQL (search-sql.ts) names a row's version by its seq,
      -- and reads a value's or reference's matches in seq order from the index.
      ALTER TABLE ${S}.search_index ADD COLUMN seq bigint;
      UPDATE ${S}.search_index si SET seq = c.seq FROM ${S}.resource_current c
        WHERE c.resource_type = si.resource_type AND c.id = si.id;
      DELETE FROM ${S}.search_index WHERE seq IS NULL;
      ALTER TABLE ${S}.search_index ALTER COLUMN seq SET NOT NULL;
      CREATE INDEX search_index_seq ON ${S}.search_index (seq, param);
      DROP INDEX ${S}.search_index_value;
      DROP INDEX ${S}.search_index_reference;
      CREATE INDEX search_index_value ON ${S}.search_index (resource_type, param, value, seq) WHERE value IS NOT NULL;
      CREATE INDEX search_index_reference ON ${S}.search_index (resource_type, param, reference, seq)
        WHERE reference IS NOT NULL;
      CREATE INDEX search_index_date_high ON ${S}.search_index (resource_type, param, high) WHERE type = 'date';
    `,
  },
  {
    version: 9,
    description:
      'the write clock (seq, lastUpdated and the restore epoch: row-level write concurrency); shared pending consent revocations',
    sql: (S) => `
      -- Writes no longer hold one store-wide lock (postgres-store.ts): each allocates its seq and lastUpdated (ms since
      -- the epoch) here, in one statement of its own (the row is locked for that statement only), so seq order is
      -- lastUpdated order store-wide. Initialised past every stored version (seq) and instant (ms).
      CREATE TABLE ${S}.write_clock (
        one   boolean PRIMARY KEY DEFAULT true CHECK (one),
        seq   bigint  NOT NULL,
        ms    bigint  NOT NULL,
        -- Bumped by \`hie-ledger migrate --restored\` after the database was restored to an earlier point: version
        -- numbers written since may have been anchored already, so ledger keys of new versions carry the epoch.
        epoch integer NOT NULL DEFAULT 0
      );
      INSERT INTO ${S}.write_clock (seq, ms)
        SELECT coalesce(max(seq), 0),
          coalesce((extract(epoch FROM max(last_updated)::timestamptz) * 1000)::bigint, 0)
        FROM ${S}.resource_version;
      -- Revocations accepted and not yet confirmed by the ledger, shared by the replicas: committed with the Consent
      -- version that revokes (src/consent/shared-revocations.ts); pseudonyms only. key: the grant key as JSON.
      CREATE TABLE ${S}.consent_revocation (
        key   text COLLATE "C" PRIMARY KEY,
        entry text NOT NULL
      );
    `,
  },
  {
    version: 10,
    description:
      "the code systems loaded from their owners' files (hie-ledger terminology load), shared by the replicas",
    sql: (S) => `
      -- As DATA/terminology.sqlite (src/terminology/terminology-store.ts): the systems loaded, their concepts,
      -- designations, properties and is-a parents. Codes compare byte-wise (COLLATE "C"), as SQLite's do.
      CREATE TABLE ${S}.ts_system (
        url          text    COLLATE "C" PRIMARY KEY,
        name         text    NOT NULL,
        version      text,
        count        integer NOT NULL,
        hierarchical boolean NOT NULL,
        loaded_at    text    NOT NULL,
        source       text    NOT NULL
      );
      CREATE TABLE ${S}.ts_concept (
        system  text    COLLATE "C" NOT NULL,
        code    text    COLLATE "C" NOT NULL,
        display text,
        active  boolean NOT NULL,
        PRIMARY KEY (system, code)
      );
      -- ord: the order the loader met them (SQLite's rowid), so both stores list them alike.
      CREATE TABLE ${S}.ts_designation (
        system   text    COLLATE "C" NOT NULL,
        code     text    COLLATE "C" NOT NULL,
        ord      integer NOT NULL,
        value    text    NOT NULL,
        use      text,
        language text,
        PRIMARY KEY (system, code, ord)
      );
      CREATE TABLE ${S}.ts_property (
        system   text    COLLATE "C" NOT NULL,
        code     text    COLLATE "C" NOT NULL,
        ord      integer NOT NULL,
        property text    COLLATE "C" NOT NULL,
        value    text    NOT NULL,
        PRIMARY KEY (system, code, ord)
      );
      CREATE TABLE ${S}.ts_parent (
        system text COLLATE "C" NOT NULL,
        code   text COLLATE "C" NOT NULL,
        parent text COLLATE "C" NOT NULL,
        PRIMARY KEY (system, code, parent)
      );
      CREATE INDEX ts_parent_down ON ${S}.ts_parent (system, parent, code);
    `,
  },
  {
    version: 12,
    description:
      'participants (hie-ledger participant), pseudonyms of FHIR references, network patient ids and the grant index, shared by the replicas',
    sql: (S) => `
      -- As DATA/identity/participants.sqlite's participants table (src/access/participants.ts): who may get a token.
      -- Client ids and pseudonyms only; certificates are public. Status changes are notified to every replica
      -- (src/access/postgres-participants.ts).
      CREATE TABLE ${S}.participant (
        client_id    text COLLATE "C" PRIMARY KEY,
        pseudonym    text COLLATE "C" NOT NULL UNIQUE,
        role         text NOT NULL,
        resource     text,
        organization text,
        status       text NOT NULL CHECK (status IN ('registered', 'enrolled', 'revoked')),
        serial       text,
        certificate  text,
        created_at   text NOT NULL,
        revoked_at   text
      );
      -- As the pseudonyms table of participants.sqlite: FHIR references (patients, grantees, consents) <-> the
      -- pseudonyms the ledger knows them by (src/consent/postgres-network-ids.ts).
      CREATE TABLE ${S}.ref_pseudonym (
        reference  text COLLATE "C" PRIMARY KEY,
        pseudonym  text COLLATE "C" NOT NULL UNIQUE,
        created_at text NOT NULL
      );
      -- As DATA/identity/network-ids.sqlite (src/consent/network-ids.ts): the home's network patient ids (secrets of
      -- the home), the grant index (written before its grant is submitted) and the home MSP learnt from the ledger.
      CREATE TABLE ${S}.network_patient (
        reference text COLLATE "C" PRIMARY KEY,
        npid      text COLLATE "C" NOT NULL UNIQUE
      );
      CREATE TABLE ${S}.grant_link (
        grant_id          text COLLATE "C" PRIMARY KEY,
        patient_reference text COLLATE "C" NOT NULL,
        patient           text COLLATE "C" NOT NULL,
        grantee           text COLLATE "C" NOT NULL,
        consent           text COLLATE "C" NOT NULL,
        UNIQUE (patient, grantee, consent)
      );
      CREATE INDEX grant_link_patient ON ${S}.grant_link (patient_reference);
      CREATE TABLE ${S}.network_meta (
        name  text COLLATE "C" PRIMARY KEY,
        value text NOT NULL
      );
    `,
  },
  {
    version: 14,
    description: "range index entries in seq order with their bounds: a range's page walks them index-only",
    sql: (S) => `
      -- As SQLite's migration 10 (sqlite/schema.ts): a range's matches in store order, low and high from the index
      -- itself; a second range filter checked on a candidate's seq from it. Additive (an index), range rows only.
      CREATE INDEX search_index_range_seq ON ${S}.search_index (resource_type, param, seq, low, high)
        WHERE low IS NOT NULL;
    `,
  },
  {
    version: 15,
    description:
      'bulk jobs ($export, $import, $reindex: records, progress, the lease of the one replica running each) and patient links, shared by the replicas',
    sql: (S) => `
      -- As BULK/jobs.sqlite (src/bulk/job-store.ts); the files stay in the bulk folder (--bulk-dir, shared by the
      -- replicas), named by files_at (the folder's id, BULK/bulk-dir.id). One replica runs a job: the holder of its
      -- lease (taken with FOR UPDATE SKIP LOCKED, renewed while it runs, taken over once lease_until passed; every
      -- take increments lease_token, which each save of progress checks). src/bulk/postgres-job-store.ts.
      CREATE TABLE ${S}.bulk_job (
        id           text COLLATE "C" PRIMARY KEY,
        kind         text NOT NULL CHECK (kind IN ('export', 'import', 'reindex')),
        owner        text COLLATE "C" NOT NULL,
        status       text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
        request      text NOT NULL,
        state        text NOT NULL,
        error        text,
        created_at   bigint NOT NULL,
        completed_at bigint,
        expires_at   bigint,
        files_at     text COLLATE "C" NOT NULL,
        holder       text,
        lease_token  bigint NOT NULL DEFAULT 0,
        lease_until  timestamptz
      );
      CREATE INDEX bulk_job_unfinished ON ${S}.bulk_job (kind, created_at, id) WHERE status IN ('queued', 'running');
      CREATE INDEX bulk_job_expiry ON ${S}.bulk_job (expires_at) WHERE expires_at IS NOT NULL;
      -- As DATA/exchange/patient-links.sqlite (src/exchange/patient-links.ts), shared by the replicas
      -- (src/exchange/postgres-patient-links.ts): a custodian's links (local Patient -> npid), their history, the
      -- link tokens redeemed (each once for the whole service), the disclosures made under links and the wrong-link
      -- reports pending; at the home, the locator (which custodians a link token was issued for).
      CREATE TABLE ${S}.patient_link (
        local_patient text COLLATE "C" PRIMARY KEY,
        npid          text COLLATE "C" NOT NULL,
        home_msp      text NOT NULL,
        linked_at     text NOT NULL
      );
      CREATE INDEX patient_link_npid ON ${S}.patient_link (npid);
      CREATE TABLE ${S}.patient_link_history (
        seq           bigserial PRIMARY KEY,
        local_patient text COLLATE "C" NOT NULL,
        npid          text COLLATE "C" NOT NULL,
        home_msp      text NOT NULL,
        linked_at     text NOT NULL,
        ended_at      text NOT NULL,
        reason        text NOT NULL CHECK (reason IN ('corrected', 'revoked', 'wrong'))
      );
      CREATE INDEX patient_link_history_patient ON ${S}.patient_link_history (local_patient);
      CREATE TABLE ${S}.spent_link_token (
        token      text COLLATE "C" PRIMARY KEY,
        expires_at bigint NOT NULL
      );
      CREATE TABLE ${S}.link_disclosure (
        seq           bigserial PRIMARY KEY,
        local_patient text COLLATE "C" NOT NULL,
        npid          text COLLATE "C" NOT NULL,
        at            text NOT NULL,
        accessor_msp  text NOT NULL,
        accessor      text NOT NULL,
        purpose       text NOT NULL,
        records       integer NOT NULL,
        types         text NOT NULL,
        audit_event   text NOT NULL
      );
      CREATE INDEX link_disclosure_patient ON ${S}.link_disclosure (local_patient, npid, at);
      CREATE TABLE ${S}.wrong_link_report (
        history_seq bigint PRIMARY KEY,
        owner_npid  text,
        reported_at text
      );
      CREATE TABLE ${S}.link_locator (
        npid          text COLLATE "C" NOT NULL,
        custodian_msp text COLLATE "C" NOT NULL,
        since         text NOT NULL,
        PRIMARY KEY (npid, custodian_msp)
      );
    `,
  },
];
