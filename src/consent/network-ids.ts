/**
 * What makes the ledger's consent records unlinkable (docs/threat-model.md, "What a member reading the ledger
 * learns"), kept by the patient's home service in its data directory (`identity/network-ids.sqlite`):
 *
 * - the network patient id (npid): 32 random bytes per patient, made at the patient's first grant or access record,
 *   a secret of the home (shared later only with the custodians the patient links and the grantees it allows);
 * - the grant index: grantId (a fresh random id, the ledger key of a grant) -> the patient, grantee and Consent it
 *   belongs to. Written (durably: SQLite, synchronous FULL) before the grant is submitted, so every grant of this
 *   home on the ledger can be mapped back, also after a restart without a consent checkpoint.
 *
 * Ledger records carry `HMAC-SHA256(npid, "<kind>|<recordId>")` for their patient, and access records seal their
 * details with a key derived from the npid: whoever lacks the npid cannot link two records to one patient.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { openDurableSqlite } from '../platform/durable-sqlite.js';

/** Where a grant id leads: pseudonyms (as the consent cache keys grants) and the patient's reference. */
export interface GrantLink {
  patientReference: string;
  patient: string;
  grantee: string;
  consent: string;
}

/** The kinds of record a patient tag is made for (the tag's domain separation). */
export type TaggedKind = 'grant' | 'access';

/** A fresh random record id (128 bits, URL-safe, starting with a letter or digit as pseudonyms do). */
export function newRecordId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (/^[A-Za-z0-9]/.test(id)) return id;
  }
}

/** HMAC-SHA256(key = npid, "<kind>|<recordId>"), hex: the record's blinded patient. */
export function patientTag(npid: string, kind: TaggedKind, recordId: string): string {
  return createHmac('sha256', Buffer.from(npid, 'base64url')).update(`${kind}|${recordId}`).digest('hex');
}

/** HMAC-SHA256(npid, "access-grant|" + recordId + "|" + grantId), hex: which grant opened an access. */
export function grantTag(npid: string, recordId: string, grantId: string): string {
  return createHmac('sha256', Buffer.from(npid, 'base64url'))
    .update(`access-grant|${recordId}|${grantId}`)
    .digest('hex');
}

function sealingKey(npid: string): Buffer {
  return createHmac('sha256', Buffer.from(npid, 'base64url')).update('access-details').digest();
}

/**
 * Seals an access record's details: AES-256-GCM, key HMAC(npid, "access-details"), a fresh 12-byte nonce, the
 * record id as associated data (a sealed detail cannot be moved to another record). base64url(nonce|text|tag).
 */
export function sealDetails(npid: string, recordId: string, details: object): string {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', sealingKey(npid), nonce);
  cipher.setAAD(Buffer.from(recordId, 'utf8'));
  const text = Buffer.concat([cipher.update(JSON.stringify(details), 'utf8'), cipher.final()]);
  return Buffer.concat([nonce, text, cipher.getAuthTag()]).toString('base64url');
}

/** Opens sealed details; undefined when they were not sealed with this npid for this record. */
export function openDetails(npid: string, recordId: string, sealed: string): unknown {
  const bytes = Buffer.from(sealed, 'base64url');
  if (bytes.length < 12 + 16) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', sealingKey(npid), bytes.subarray(0, 12));
    decipher.setAAD(Buffer.from(recordId, 'utf8'));
    decipher.setAuthTag(bytes.subarray(bytes.length - 16));
    const text = Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]);
    return JSON.parse(text.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

interface LinkRow {
  grant_id: string;
  patient_reference: string;
  patient: string;
  grantee: string;
  consent: string;
}

/**
 * The network patient ids and the grant index (port): the data directory's `identity/network-ids.sqlite`
 * (NetworkIds) or the PostgreSQL store's tables, shared by the replicas (PostgresNetworkIds). Reads answer at once
 * (asked on decisions and events); what makes a new id may answer later (it must be durable, and in the database
 * agreed by every replica, before it is used).
 */
export interface NetworkIdIndex {
  homeMsp(): string | undefined;
  noteHomeMsp(mspId: string): void | Promise<void>;
  /** The patient's npid (`Patient/x`), made at first use. */
  npidOf(patientReference: string): string | Promise<string>;
  existingNpidOf(patientReference: string): string | undefined;
  referenceOfNpid(npid: string): string | undefined;
  /** The grant id of (patient, grantee, consent) pseudonyms, made (and durable) at first use. */
  grantIdOf(link: GrantLink): string | Promise<string>;
  existingGrantIdOf(patient: string, grantee: string, consent: string): string | undefined;
  linkOf(grantId: string): GrantLink | undefined;
  grantIdsOf(patientReference: string): string[];
  /**
   * A shared index only: reads what it holds for a grant id this process has not heard of yet (made by another
   * replica: its link, its patient's npid, the home MSP). True when the grant is this home's.
   */
  catchUp?(grantId: string): Promise<boolean>;
  close(): void | Promise<void>;
}

/** The SQLite adapter of NetworkIdIndex (one data directory's). */
export class NetworkIds implements NetworkIdIndex {
  private readonly db: Database.Database;
  private readonly npids = new Map<string, string>();
  private readonly links = new Map<string, GrantLink>();
  private knownHomeMsp?: string;
  private readonly npidStatement: Database.Statement<[string], string>;
  private readonly linkStatement: Database.Statement<[string], LinkRow>;
  private readonly grantIdStatement: Database.Statement<[string, string, string], string>;

  /** `file` absent: in memory (tests). */
  constructor(file?: string) {
    // A grant id must be on disk before its grant is on the ledger.
    this.db = openDurableSqlite(file);
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS network_patients (
        reference TEXT PRIMARY KEY,
        npid TEXT NOT NULL UNIQUE
      );
      CREATE TABLE IF NOT EXISTS grant_index (
        grant_id TEXT PRIMARY KEY,
        patient_reference TEXT NOT NULL,
        patient TEXT NOT NULL,
        grantee TEXT NOT NULL,
        consent TEXT NOT NULL,
        UNIQUE (patient, grantee, consent)
      );
      CREATE INDEX IF NOT EXISTS grant_index_patient ON grant_index (patient_reference);
      CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    `);
    this.npidStatement = this.db
      .prepare<[string], string>('SELECT npid FROM network_patients WHERE reference = ?')
      .pluck();
    this.linkStatement = this.db.prepare('SELECT * FROM grant_index WHERE grant_id = ?');
    this.grantIdStatement = this.db
      .prepare<[string, string, string], string>(
        'SELECT grant_id FROM grant_index WHERE patient = ? AND grantee = ? AND consent = ?',
      )
      .pluck();
  }

  close(): void {
    this.db.close();
  }

  /**
   * The MSP this home's grants carry on the ledger (`homeMsp`), learnt from its first committed grant and kept:
   * a record of another MSP is never taken for one of this home's grants, even with an id of its index.
   */
  homeMsp(): string | undefined {
    this.knownHomeMsp ??= this.db
      .prepare<[], string>("SELECT value FROM meta WHERE name = 'home_msp'")
      .pluck()
      .get();
    return this.knownHomeMsp;
  }

  /** Notes the home MSP (the first one noted stays). */
  noteHomeMsp(mspId: string): void {
    if (this.homeMsp() !== undefined) return;
    this.db.prepare("INSERT OR IGNORE INTO meta (name, value) VALUES ('home_msp', ?)").run(mspId);
    this.knownHomeMsp = undefined;
  }

  /** The patient's npid (`Patient/x`), made at first use. */
  npidOf(patientReference: string): string {
    const known = this.existingNpidOf(patientReference);
    if (known) return known;
    this.db
      .prepare('INSERT OR IGNORE INTO network_patients (reference, npid) VALUES (?, ?)')
      .run(patientReference, randomBytes(32).toString('base64url'));
    return this.existingNpidOf(patientReference)!;
  }

  existingNpidOf(patientReference: string): string | undefined {
    const cached = this.npids.get(patientReference);
    if (cached) return cached;
    const npid = this.npidStatement.get(patientReference);
    if (npid) this.npids.set(patientReference, npid);
    return npid;
  }

  /** The patient (`Patient/x`) whose npid this is, when this home made it (the exchange's link service asks). */
  referenceOfNpid(npid: string): string | undefined {
    return this.db
      .prepare<[string], string>('SELECT reference FROM network_patients WHERE npid = ?')
      .pluck()
      .get(npid);
  }

  /** The grant id of (patient, grantee, consent) pseudonyms, made (and durable) at first use. */
  grantIdOf(link: GrantLink): string {
    const known = this.grantIdStatement.get(link.patient, link.grantee, link.consent);
    if (known) return known;
    const grantId = newRecordId();
    this.db
      .prepare(
        'INSERT OR IGNORE INTO grant_index (grant_id, patient_reference, patient, grantee, consent) VALUES (?, ?, ?, ?, ?)',
      )
      .run(grantId, link.patientReference, link.patient, link.grantee, link.consent);
    return this.grantIdStatement.get(link.patient, link.grantee, link.consent)!;
  }

  existingGrantIdOf(patient: string, grantee: string, consent: string): string | undefined {
    return this.grantIdStatement.get(patient, grantee, consent);
  }

  /** What a grant id of this home belongs to; undefined for grants of other homes. */
  linkOf(grantId: string): GrantLink | undefined {
    const cached = this.links.get(grantId);
    if (cached) return cached;
    const row = this.linkStatement.get(grantId);
    if (!row) return undefined;
    const link: GrantLink = {
      patientReference: row.patient_reference,
      patient: row.patient,
      grantee: row.grantee,
      consent: row.consent,
    };
    if (this.links.size >= 100_000) this.links.clear();
    this.links.set(grantId, link);
    return link;
  }

  /** The grant ids of a patient (`Patient/x`). */
  grantIdsOf(patientReference: string): string[] {
    return this.db
      .prepare<[string], string>(
        'SELECT grant_id FROM grant_index WHERE patient_reference = ? ORDER BY grant_id',
      )
      .pluck()
      .all(patientReference);
  }
}
