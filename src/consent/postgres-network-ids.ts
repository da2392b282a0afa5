/**
 * The pseudonyms of FHIR references, the network patient ids and the grant index in the PostgreSQL store's database
 * (migration 12), shared by the replicas: a grant made at one replica is enforced (and revoked) at every replica.
 * The adapters of PseudonymResolver and NetworkIdIndex whose SQLite adapters are the data directory's
 * `identity/participants.sqlite` (pseudonyms table) and `identity/network-ids.sqlite`.
 *
 * Decisions and ledger events ask synchronously, so each replica keeps the tables in memory: loaded at start, added
 * to by its own inserts and by the notification each insert sends on the schema's channel (`pg_notify` in the
 * insert's statement, delivered at commit); after its listening connection was lost a replica reloads them. What is
 * made (a pseudonym, an npid, a grant id) is inserted first, and the value the database holds is the one used: two
 * replicas making one at once agree on the first committed. A reference another replica gave a pseudonym whose
 * notification has not arrived yet has none here for that moment (decisions refuse: fail closed); a grant event
 * whose grant id is not known yet is applied once catchUp() has read it.
 */
import { createHash, randomBytes } from 'node:crypto';
import type pg from 'pg';
import { listenOnChannel, type ChannelLog } from '../platform/pg-channel.js';
import { newRecordId, type GrantLink, type NetworkIdIndex } from './network-ids.js';
import type { PseudonymResolver } from './consent-service.js';

/** A fresh random pseudonym (as src/access/participants.ts makes them: 128 bits, starting with a letter or digit). */
function newPseudonym(): string {
  for (;;) {
    const pseudonym = randomBytes(16).toString('base64url');
    if (/^[A-Za-z0-9]/.test(pseudonym)) return pseudonym;
  }
}

const quoted = (schema: string) => `"${schema.replace(/"/g, '""')}"`;
const channelOf = (prefix: string, schema: string) =>
  `${prefix}_${createHash('sha256').update(schema).digest('hex').slice(0, 16)}`;

interface SharedTableOptions {
  pool: pg.Pool;
  schema: string;
  log?: ChannelLog;
  /** Follow the other replicas' inserts (a serving replica); default true. */
  listen?: boolean;
}

/** The pseudonyms of FHIR references (patients, grantees, consents): table `ref_pseudonym`. */
export class PostgresPseudonyms implements PseudonymResolver {
  private readonly S: string;
  private readonly channel: string;
  private readonly byReference = new Map<string, string>();
  private readonly byPseudonym = new Map<string, string>();
  private stopListening?: () => Promise<void>;

  private constructor(
    private readonly pool: pg.Pool,
    schema: string,
  ) {
    this.S = quoted(schema);
    this.channel = channelOf('hie_pseudonym', schema);
  }

  static async open(options: SharedTableOptions): Promise<PostgresPseudonyms> {
    const pseudonyms = new PostgresPseudonyms(options.pool, options.schema);
    if (options.listen !== false)
      pseudonyms.stopListening = await listenOnChannel(options.pool, pseudonyms.channel, {
        payload: async (payload) => {
          const [reference, pseudonym] = JSON.parse(payload) as [string, string];
          pseudonyms.add(reference, pseudonym);
        },
        reload: () => pseudonyms.reload(),
        log: options.log,
        what: 'pseudonyms',
      });
    await pseudonyms.reload();
    return pseudonyms;
  }

  async close(): Promise<void> {
    const stop = this.stopListening;
    this.stopListening = undefined;
    await stop?.();
  }

  private async reload(): Promise<void> {
    const { rows } = await this.pool.query<{ reference: string; pseudonym: string }>(
      `SELECT reference, pseudonym FROM ${this.S}.ref_pseudonym`,
    );
    for (const row of rows) this.add(row.reference, row.pseudonym);
  }

  private add(reference: string, pseudonym: string): void {
    this.byReference.set(reference, pseudonym);
    this.byPseudonym.set(pseudonym, reference);
  }

  async prepare(references: readonly string[]): Promise<void> {
    const missing = [...new Set(references)].filter((reference) => !this.byReference.has(reference));
    if (missing.length === 0) return;
    const fresh = missing.map(() => newPseudonym());
    const at = new Date().toISOString();
    const inserted = await this.pool.query<{ reference: string; pseudonym: string }>(
      `WITH i AS (INSERT INTO ${this.S}.ref_pseudonym (reference, pseudonym, created_at)
                  SELECT reference, pseudonym, $3 FROM unnest($1::text[], $2::text[]) AS n (reference, pseudonym)
                  ON CONFLICT DO NOTHING RETURNING reference, pseudonym)
       SELECT reference, pseudonym, pg_notify($4, json_build_array(reference, pseudonym)::text) FROM i`,
      [missing, fresh, at, this.channel],
    );
    for (const row of inserted.rows) this.add(row.reference, row.pseudonym);
    // Made by another replica meanwhile (its row won): the database's value.
    const others = missing.filter((reference) => !this.byReference.has(reference));
    if (others.length === 0) return;
    const { rows } = await this.pool.query<{ reference: string; pseudonym: string }>(
      `SELECT reference, pseudonym FROM ${this.S}.ref_pseudonym WHERE reference = ANY($1::text[])`,
      [others],
    );
    for (const row of rows) this.add(row.reference, row.pseudonym);
  }

  pseudonymOf(reference: string): string {
    const pseudonym = this.byReference.get(reference);
    if (pseudonym === undefined) throw new Error('a shared pseudonym is used before prepare() made it');
    return pseudonym;
  }

  existingPseudonymOf(reference: string): string | undefined {
    return this.byReference.get(reference);
  }

  referenceOf(pseudonym: string): string | undefined {
    return this.byPseudonym.get(pseudonym);
  }
}

type IdNotice = ['npid', string, string] | ['grant', string, GrantLink] | ['home', string];

/** The network patient ids (`network_patient`), the grant index (`grant_link`) and the home MSP (`network_meta`). */
export class PostgresNetworkIds implements NetworkIdIndex {
  private readonly S: string;
  private readonly channel: string;
  private readonly npids = new Map<string, string>();
  private readonly referenceByNpid = new Map<string, string>();
  private readonly links = new Map<string, GrantLink>();
  /** `patient\0grantee\0consent` -> grant id. */
  private readonly grantIdByKey = new Map<string, string>();
  private readonly grantIdsByPatient = new Map<string, Set<string>>();
  private knownHomeMsp?: string;
  private stopListening?: () => Promise<void>;

  private constructor(
    private readonly pool: pg.Pool,
    schema: string,
  ) {
    this.S = quoted(schema);
    this.channel = channelOf('hie_network_ids', schema);
  }

  static async open(options: SharedTableOptions): Promise<PostgresNetworkIds> {
    const ids = new PostgresNetworkIds(options.pool, options.schema);
    if (options.listen !== false)
      ids.stopListening = await listenOnChannel(options.pool, ids.channel, {
        payload: async (payload) => ids.notice(JSON.parse(payload) as IdNotice),
        reload: () => ids.reload(),
        log: options.log,
        what: 'network ids',
      });
    await ids.reload();
    return ids;
  }

  async close(): Promise<void> {
    const stop = this.stopListening;
    this.stopListening = undefined;
    await stop?.();
  }

  private notice(notice: IdNotice): void {
    if (notice[0] === 'npid') this.addNpid(notice[1], notice[2]);
    else if (notice[0] === 'grant') this.addLink(notice[1], notice[2]);
    else this.knownHomeMsp ??= notice[1];
  }

  private async reload(): Promise<void> {
    const [npids, links, home] = await Promise.all([
      this.pool.query<{ reference: string; npid: string }>(
        `SELECT reference, npid FROM ${this.S}.network_patient`,
      ),
      this.pool.query<LinkRow>(`SELECT * FROM ${this.S}.grant_link`),
      this.pool.query<{ value: string }>(`SELECT value FROM ${this.S}.network_meta WHERE name = 'home_msp'`),
    ]);
    for (const row of npids.rows) this.addNpid(row.reference, row.npid);
    for (const row of links.rows) this.addLink(row.grant_id, linkOfRow(row));
    if (home.rows[0]) this.knownHomeMsp = home.rows[0].value;
  }

  private addNpid(reference: string, npid: string): void {
    this.npids.set(reference, npid);
    this.referenceByNpid.set(npid, reference);
  }

  private addLink(grantId: string, link: GrantLink): void {
    this.links.set(grantId, link);
    this.grantIdByKey.set(grantKey(link.patient, link.grantee, link.consent), grantId);
    let ids = this.grantIdsByPatient.get(link.patientReference);
    if (!ids) this.grantIdsByPatient.set(link.patientReference, (ids = new Set()));
    ids.add(grantId);
  }

  homeMsp(): string | undefined {
    return this.knownHomeMsp;
  }

  async noteHomeMsp(mspId: string): Promise<void> {
    if (this.knownHomeMsp !== undefined) return;
    await this.pool.query(
      `WITH i AS (INSERT INTO ${this.S}.network_meta (name, value) VALUES ('home_msp', $1)
                  ON CONFLICT DO NOTHING RETURNING value)
       SELECT pg_notify($2, json_build_array('home', value)::text) FROM i`,
      [mspId, this.channel],
    );
    const { rows } = await this.pool.query<{ value: string }>(
      `SELECT value FROM ${this.S}.network_meta WHERE name = 'home_msp'`,
    );
    this.knownHomeMsp ??= rows[0]?.value;
  }

  async npidOf(patientReference: string): Promise<string> {
    const known = this.npids.get(patientReference);
    if (known) return known;
    await this.pool.query(
      `WITH i AS (INSERT INTO ${this.S}.network_patient (reference, npid) VALUES ($1, $2)
                  ON CONFLICT DO NOTHING RETURNING reference, npid)
       SELECT pg_notify($3, json_build_array('npid', reference, npid)::text) FROM i`,
      [patientReference, randomBytes(32).toString('base64url'), this.channel],
    );
    // Ours, or another replica's made meanwhile: the database's.
    const { rows } = await this.pool.query<{ npid: string }>(
      `SELECT npid FROM ${this.S}.network_patient WHERE reference = $1`,
      [patientReference],
    );
    this.addNpid(patientReference, rows[0]!.npid);
    return rows[0]!.npid;
  }

  existingNpidOf(patientReference: string): string | undefined {
    return this.npids.get(patientReference);
  }

  referenceOfNpid(npid: string): string | undefined {
    return this.referenceByNpid.get(npid);
  }

  async grantIdOf(link: GrantLink): Promise<string> {
    const known = this.existingGrantIdOf(link.patient, link.grantee, link.consent);
    if (known) return known;
    const grantId = newRecordId();
    await this.pool.query(
      `WITH i AS (INSERT INTO ${this.S}.grant_link (grant_id, patient_reference, patient, grantee, consent)
                  VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING grant_id)
       SELECT pg_notify($6, json_build_array('grant', grant_id, $7::json)::text) FROM i`,
      [
        grantId,
        link.patientReference,
        link.patient,
        link.grantee,
        link.consent,
        this.channel,
        JSON.stringify(link),
      ],
    );
    const { rows } = await this.pool.query<LinkRow>(
      `SELECT * FROM ${this.S}.grant_link WHERE patient = $1 AND grantee = $2 AND consent = $3`,
      [link.patient, link.grantee, link.consent],
    );
    this.addLink(rows[0]!.grant_id, linkOfRow(rows[0]!));
    return rows[0]!.grant_id;
  }

  existingGrantIdOf(patient: string, grantee: string, consent: string): string | undefined {
    return this.grantIdByKey.get(grantKey(patient, grantee, consent));
  }

  linkOf(grantId: string): GrantLink | undefined {
    return this.links.get(grantId);
  }

  grantIdsOf(patientReference: string): string[] {
    return [...(this.grantIdsByPatient.get(patientReference) ?? [])].sort();
  }

  async catchUp(grantId: string): Promise<boolean> {
    const { rows } = await this.pool.query<LinkRow & { npid: string | null; home_msp: string | null }>(
      `SELECT g.*, p.npid, (SELECT value FROM ${this.S}.network_meta WHERE name = 'home_msp') AS home_msp
       FROM ${this.S}.grant_link g LEFT JOIN ${this.S}.network_patient p ON p.reference = g.patient_reference
       WHERE g.grant_id = $1`,
      [grantId],
    );
    const row = rows[0];
    if (!row) return false;
    if (row.npid !== null) this.addNpid(row.patient_reference, row.npid);
    if (row.home_msp !== null) this.knownHomeMsp ??= row.home_msp;
    this.addLink(row.grant_id, linkOfRow(row));
    return true;
  }
}

interface LinkRow {
  grant_id: string;
  patient_reference: string;
  patient: string;
  grantee: string;
  consent: string;
}

function linkOfRow(row: LinkRow): GrantLink {
  return {
    patientReference: row.patient_reference,
    patient: row.patient,
    grantee: row.grantee,
    consent: row.consent,
  };
}

const grantKey = (patient: string, grantee: string, consent: string) =>
  `${patient}\u0000${grantee}\u0000${consent}`;
