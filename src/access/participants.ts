/**
 * Participants of this service: patients, clinicians, labs, EHR systems and admins, each with a client id (what
 * they call themselves when they authenticate), a random pseudonym (the only name the ledger and the CA see:
 * enrolment id and `hie.id`), a role, and the FHIR resource they are linked to. The links pseudonym <-> client id
 * <-> FHIR resource stay here, off the ledger, in `identity/participants.sqlite` of the data directory, or (the
 * ParticipantRegistry port's other adapter, ./postgres-participants.ts) in the PostgreSQL store's database, shared
 * by the replicas.
 *
 * The same table links FHIR references (patients, grantees, consents) to the pseudonyms used on the ledger.
 */
import { createPublicKey, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdirSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import type { ClientDirectory, ClientRecord } from './tokens.js';
import { PARTICIPANT_ROLES, type ParticipantRole } from './scopes.js';
import type { IdentityEnrollment, IdentityProvider } from '../ledger/identity/identity-provider.js';
import type { EcKeyType } from '../ledger/identity/embedded-ca.js';
import { ensurePrivateFile } from '../platform/private-files.js';

export type ParticipantStatus = 'registered' | 'enrolled' | 'revoked';

export interface Participant {
  clientId: string;
  pseudonym: string;
  role: ParticipantRole;
  resource?: string;
  organization?: string;
  status: ParticipantStatus;
  serial?: string;
  certificate?: string;
  createdAt: string;
  revokedAt?: string;
}

export interface ParticipantInput {
  clientId: string;
  role: ParticipantRole;
  resource?: string;
  organization?: string;
}

/**
 * The participants of the service (port): the data directory's `identity/participants.sqlite`
 * (ParticipantDirectory) or the PostgreSQL store's `participant` table (PostgresParticipants, every replica's).
 * Reads may answer at once (SQLite) or later (PostgreSQL); isActive, asked on every request, always at once.
 */
export interface ParticipantRegistry extends ClientDirectory {
  get(clientId: string): Participant | undefined | Promise<Participant | undefined>;
  list(): Participant[] | Promise<Participant[]>;
  /** The participant with this pseudonym (for "who accessed my data"). */
  byPseudonym(pseudonym: string): Participant | undefined | Promise<Participant | undefined>;
  /** The certificates of the enrolled participants, PEM (the certificate-expiry alarm reads them). */
  enrolledCertificates(): string[] | Promise<string[]>;
  /** Registers a participant (pseudonym assigned; no certificate yet). */
  register(input: ParticipantInput): Promise<Participant>;
  /** Enrols a participant (registering it first if needed); again: a new certificate, the previous one revoked. */
  enroll(
    input: ParticipantInput & { keyType?: EcKeyType },
  ): Promise<{ participant: Participant; enrollment: IdentityEnrollment }>;
  /** Revokes a participant: refused from the next request on (every replica's), certificates revoked at the CA. */
  revoke(clientId: string): Promise<Participant>;
  close(): void | Promise<void>;
}

/** Refuses to enrol a revoked participant, or one registered with another role, resource or organization. */
export function checkEnrollable(participant: Participant | undefined, input: ParticipantInput): void {
  if (participant?.status === 'revoked')
    throw new Error(`participant ${input.clientId} is revoked; register a new client id`);
  if (
    participant &&
    (participant.role !== input.role ||
      (input.resource !== undefined && participant.resource !== input.resource) ||
      (input.organization !== undefined && participant.organization !== input.organization))
  ) {
    // Silently keeping the old values would leave the caller believing they changed: refuse instead.
    const was = [participant.role, participant.resource, participant.organization].filter(Boolean).join(' ');
    throw new Error(
      `participant ${input.clientId} is registered as ${was}; role, resource and organization cannot change (register a new client id)`,
    );
  }
}

/** The public key of a PEM certificate. */
export function certificatePublicKey(certificate: string): KeyObject {
  return createPublicKey(new X509Certificate(certificate).publicKey.export({ type: 'spki', format: 'pem' }));
}

const CLIENT_ID = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;
const REFERENCE =
  /^(Patient|Practitioner|PractitionerRole|Organization|Device|RelatedPerson|Consent)\/[A-Za-z0-9\-.]{1,64}$/;

/** A fresh random pseudonym (128 bits, URL-safe): what the ledger and the CA know a participant or a patient by. */
export function newPseudonym(): string {
  // Enrolment ids (Fabric CA, the embedded CA) must start with a letter or digit.
  for (;;) {
    const pseudonym = randomBytes(16).toString('base64url');
    if (/^[A-Za-z0-9]/.test(pseudonym)) return pseudonym;
  }
}

/** A participant as both registries store it (the data directory's SQLite file, the database's table). */
export interface ParticipantRow {
  client_id: string;
  pseudonym: string;
  role: ParticipantRole;
  resource: string | null;
  organization: string | null;
  status: ParticipantStatus;
  serial: string | null;
  certificate: string | null;
  created_at: string;
  revoked_at: string | null;
}

export function toParticipant(row: ParticipantRow): Participant {
  const p: Participant = {
    clientId: row.client_id,
    pseudonym: row.pseudonym,
    role: row.role,
    status: row.status,
    createdAt: row.created_at,
  };
  if (row.resource) p.resource = row.resource;
  if (row.organization) p.organization = row.organization;
  if (row.serial) p.serial = row.serial;
  if (row.certificate) p.certificate = row.certificate;
  if (row.revoked_at) p.revokedAt = row.revoked_at;
  return p;
}

/** The public keys of enrolled clients, by client id, each with the serial of the certificate it came from. */
export type ClientKeys = Map<string, { serial: string; key: KeyObject }>;

/**
 * What the token service knows of a participant's row: undefined unless it is enrolled with a certificate. The
 * certificate's key is parsed once per serial (`keys`).
 */
export function clientRecordOf(row: ParticipantRow | undefined, keys: ClientKeys): ClientRecord | undefined {
  if (!row || row.status !== 'enrolled' || !row.certificate || !row.serial) return undefined;
  let cached = keys.get(row.client_id);
  if (!cached || cached.serial !== row.serial) {
    cached = { serial: row.serial, key: certificatePublicKey(row.certificate) };
    keys.set(row.client_id, cached);
  }
  const record: ClientRecord = {
    clientId: row.client_id,
    pseudonym: row.pseudonym,
    role: row.role,
    publicKey: cached.key,
  };
  if (row.resource) record.resource = row.resource;
  if (row.organization) record.organization = row.organization;
  return record;
}

/** Checks what a role must be linked to (issue 4: patient -> Patient, clinician -> Practitioner + Organization, lab/system -> Organization). */
export function validateParticipant(input: ParticipantInput): ParticipantInput {
  if (!CLIENT_ID.test(input.clientId))
    throw new Error(`invalid client id ${JSON.stringify(input.clientId)}: use [A-Za-z0-9._@-], at most 128`);
  if (!PARTICIPANT_ROLES.includes(input.role))
    throw new Error(`invalid role ${JSON.stringify(input.role)}: one of ${PARTICIPANT_ROLES.join(', ')}`);
  for (const [name, value] of [
    ['resource', input.resource],
    ['organization', input.organization],
  ] as const) {
    if (value !== undefined && !REFERENCE.test(value))
      throw new Error(`invalid ${name} ${JSON.stringify(value)}: expected Type/id`);
  }
  if (input.organization !== undefined && !input.organization.startsWith('Organization/'))
    throw new Error('--organization must be an Organization reference');
  const out: ParticipantInput = { ...input };
  switch (input.role) {
    case 'patient':
      if (!input.resource?.startsWith('Patient/'))
        throw new Error('a patient participant needs --resource Patient/ID');
      break;
    case 'clinician':
      if (!input.resource?.startsWith('Practitioner/'))
        throw new Error('a clinician participant needs --resource Practitioner/ID');
      if (!input.organization)
        throw new Error('a clinician participant needs --organization Organization/ID');
      break;
    case 'lab':
    case 'system':
      if (input.resource !== undefined && !input.resource.startsWith('Organization/'))
        throw new Error(`a ${input.role} participant is linked to an Organization`);
      out.organization ??= input.resource;
      if (!out.organization)
        throw new Error(`a ${input.role} participant needs --resource or --organization Organization/ID`);
      break;
    case 'admin':
      break;
  }
  return out;
}

/**
 * What the enrolment steps need of a registry's storage (the SQLite file's statements, the database's): read a
 * participant and record each step's outcome. The CA's part is the same for both (enrolmentSteps).
 */
export interface ParticipantRecords {
  /** The participant as stored now. */
  get(clientId: string): Participant | undefined | Promise<Participant | undefined>;
  /** Stores a participant just registered at the CA; false when its client id was taken meanwhile. */
  insertRegistered(participant: Participant): boolean | Promise<boolean>;
  /** Records a new certificate; undefined when the participant was revoked meanwhile (revoked stays revoked). */
  markEnrolled(
    clientId: string,
    certificate: { serial: string; certificate: string },
  ): Participant | undefined | Promise<Participant | undefined>;
  /** Marks a participant revoked: the service refuses it from its next request on. */
  markRevoked(clientId: string, revokedAt: string): void | Promise<void>;
}

/** The registration, enrolment and revocation steps at the CA, around the storage of `records`. */
export function enrolmentSteps(
  records: ParticipantRecords,
  identity: IdentityProvider | undefined,
): Pick<ParticipantRegistry, 'register' | 'enroll' | 'revoke'> {
  const requireIdentity = (): IdentityProvider => {
    if (!identity) throw new Error('no certificate authority is configured for this participant directory');
    return identity;
  };

  const register = async (input: ParticipantInput): Promise<Participant> => {
    const valid = validateParticipant(input);
    if (await records.get(valid.clientId)) throw new Error(`participant ${valid.clientId} already exists`);
    const pseudonym = newPseudonym();
    await requireIdentity().register({
      enrollmentId: pseudonym,
      type: 'client',
      attrs: { 'hie.role': valid.role, 'hie.id': pseudonym },
    });
    const participant: Participant = {
      clientId: valid.clientId,
      pseudonym,
      role: valid.role,
      status: 'registered',
      createdAt: new Date().toISOString(),
    };
    if (valid.resource !== undefined) participant.resource = valid.resource;
    if (valid.organization !== undefined) participant.organization = valid.organization;
    if (!(await records.insertRegistered(participant)))
      throw new Error(`participant ${valid.clientId} already exists`);
    return (await records.get(valid.clientId))!;
  };

  /** Enrolling an enrolled participant again issues a new certificate and revokes the previous one. */
  const enroll = async (
    input: ParticipantInput & { keyType?: EcKeyType },
  ): Promise<{ participant: Participant; enrollment: IdentityEnrollment }> => {
    let participant = await records.get(input.clientId);
    checkEnrollable(participant, input);
    participant ??= await register(input);
    const ca = requireIdentity();
    const enrollment = await ca.enroll({
      enrollmentId: participant.pseudonym,
      attrs: { 'hie.role': participant.role, 'hie.id': participant.pseudonym },
      keyType: input.keyType ?? 'P-384',
    });
    if (participant.serial)
      await ca.revoke({
        enrollmentId: participant.pseudonym,
        serial: participant.serial,
        reason: 'superseded',
      });
    const enrolled = await records.markEnrolled(participant.clientId, enrollment);
    if (!enrolled) throw new Error(`participant ${input.clientId} is revoked; register a new client id`);
    return { participant: enrolled, enrollment };
  };

  const revoke = async (clientId: string): Promise<Participant> => {
    const participant = await records.get(clientId);
    if (!participant) throw new Error(`unknown participant ${clientId}`);
    if (participant.status !== 'revoked') {
      // The service refuses first; the CA follows.
      await records.markRevoked(clientId, new Date().toISOString());
      if (identity)
        await identity.revoke({ enrollmentId: participant.pseudonym, reason: 'revoked by admin' });
    }
    return (await records.get(clientId))!;
  };

  return { register, enroll, revoke };
}

/** The SQLite adapter of ParticipantRegistry (one data directory's), also the pseudonyms of FHIR references. */
export class ParticipantDirectory implements ParticipantRegistry {
  private readonly db: Database.Database;
  private readonly statusStatement: Database.Statement<[string], ParticipantStatus>;
  private readonly rowStatement: Database.Statement<[string], ParticipantRow>;
  private readonly keys: ClientKeys = new Map();
  private readonly pseudonymCache = new Map<string, string>();
  private readonly activeCache = new Map<string, boolean>();
  private watcher?: FSWatcher;
  private readonly pseudonymMisses = new Map<string, number>();
  private readonly pseudonymStatement: Database.Statement<[string], { pseudonym: string }>;
  /** pseudonym -> reference: the links never change once made. */
  private readonly referenceCache = new Map<string, string>();
  private readonly referenceStatement: Database.Statement<[string], { reference: string }>;
  private readonly steps: Pick<ParticipantRegistry, 'register' | 'enroll' | 'revoke'>;

  constructor(file: string, identity?: IdentityProvider) {
    ensurePrivateFile(file);
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS participants (
        client_id TEXT PRIMARY KEY,
        pseudonym TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        resource TEXT,
        organization TEXT,
        status TEXT NOT NULL,
        serial TEXT,
        certificate TEXT,
        created_at TEXT NOT NULL,
        revoked_at TEXT
      );
      CREATE TABLE IF NOT EXISTS pseudonyms (
        reference TEXT PRIMARY KEY,
        pseudonym TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
      );
    `);
    // pluck: the bare value, no row object per request.
    this.statusStatement = this.db
      .prepare<[string], ParticipantStatus>('SELECT status FROM participants WHERE client_id = ?')
      .pluck();
    this.rowStatement = this.db.prepare('SELECT * FROM participants WHERE client_id = ?');
    this.pseudonymStatement = this.db.prepare('SELECT pseudonym FROM pseudonyms WHERE reference = ?');
    this.referenceStatement = this.db.prepare('SELECT reference FROM pseudonyms WHERE pseudonym = ?');
    this.steps = enrolmentSteps(this.records(), identity);
    this.watchForChanges(file);
  }

  /** The storage of the enrolment steps: this file's statements. */
  private records(): ParticipantRecords {
    return {
      get: (clientId) => this.get(clientId),
      insertRegistered: (p) => {
        this.db
          .prepare(
            `INSERT INTO participants (client_id, pseudonym, role, resource, organization, status, created_at)
             VALUES (?, ?, ?, ?, ?, 'registered', ?)`,
          )
          .run(p.clientId, p.pseudonym, p.role, p.resource ?? null, p.organization ?? null, p.createdAt);
        return true;
      },
      markEnrolled: (clientId, { serial, certificate }) => {
        this.db
          .prepare(
            `UPDATE participants SET status = 'enrolled', serial = ?, certificate = ? WHERE client_id = ?`,
          )
          .run(serial, certificate, clientId);
        this.activeCache.clear();
        return this.get(clientId);
      },
      markRevoked: (clientId, revokedAt) => {
        this.db
          .prepare(`UPDATE participants SET status = 'revoked', revoked_at = ? WHERE client_id = ?`)
          .run(revokedAt, clientId);
        this.keys.delete(clientId);
        this.activeCache.clear();
      },
    };
  }

  /** The directory of a data directory (`DIR/identity/participants.sqlite`). */
  static open(dataDir: string, identity?: IdentityProvider): ParticipantDirectory {
    const dir = join(dataDir, 'identity');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return new ParticipantDirectory(join(dir, 'participants.sqlite'), identity);
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.db.close();
  }

  private watchForChanges(file: string): void {
    const names = new Set([basename(file), `${basename(file)}-wal`]);
    try {
      // Reads touch only the -shm file; every committed write changes the database or its -wal file.
      const watcher = watch(dirname(file), { persistent: false }, (_event, name) => {
        if (name === null || names.has(String(name))) this.activeCache.clear();
      });
      watcher.on('error', () => {
        this.watcher = undefined;
        this.activeCache.clear();
      });
      this.watcher = watcher;
    } catch {
      this.watcher = undefined; // no inotify: read SQLite on every call
    }
  }

  get(clientId: string): Participant | undefined {
    const row = this.rowStatement.get(clientId);
    return row ? toParticipant(row) : undefined;
  }

  list(): Participant[] {
    return (
      this.db.prepare('SELECT * FROM participants ORDER BY created_at, client_id').all() as ParticipantRow[]
    ).map(toParticipant);
  }

  /** The certificates of the enrolled participants, PEM (the certificate-expiry alarm reads them). */
  enrolledCertificates(): string[] {
    return this.db
      .prepare<[], string>(
        `SELECT certificate FROM participants WHERE status = 'enrolled' AND certificate IS NOT NULL`,
      )
      .pluck()
      .all();
  }

  /** Registers a participant (pseudonym assigned; no certificate yet). */
  register(input: ParticipantInput): Promise<Participant> {
    return this.steps.register(input);
  }

  /**
   * Enrols a participant (registering it first if needed): a key pair and a certificate with hie.role and hie.id.
   * Enrolling an enrolled participant again issues a new certificate and revokes the previous one.
   */
  enroll(
    input: ParticipantInput & { keyType?: EcKeyType },
  ): Promise<{ participant: Participant; enrollment: IdentityEnrollment }> {
    return this.steps.enroll(input);
  }

  /** Revokes a participant: refused by the service from the next request on, and its certificates revoked at the CA. */
  revoke(clientId: string): Promise<Participant> {
    return this.steps.revoke(clientId);
  }

  // ClientDirectory (token service)

  findClient(clientId: string): ClientRecord | undefined {
    return clientRecordOf(this.rowStatement.get(clientId), this.keys);
  }

  /**
   * Asked on every request. Answers come from a cache that any change to the database files clears (inotify:
   * a revocation by the CLI, another process, reaches this process within the event loop's next turn, and this
   * process's own revocations clear it synchronously). Without a file watcher, every call reads SQLite.
   */
  isActive(clientId: string): boolean {
    if (!this.watcher) return this.statusStatement.get(clientId) === 'enrolled';
    let active = this.activeCache.get(clientId);
    if (active === undefined) {
      active = this.statusStatement.get(clientId) === 'enrolled';
      if (this.activeCache.size >= 100_000) this.activeCache.clear();
      this.activeCache.set(clientId, active);
    }
    return active;
  }

  // Pseudonyms of FHIR references (patients, grantees, consents) for the ledger.

  /** The pseudonym of a reference, created at first use. */
  pseudonymOf(reference: string): string {
    const cached = this.pseudonymCache.get(reference);
    if (cached) return cached;
    const insert = this.db.prepare(
      'INSERT OR IGNORE INTO pseudonyms (reference, pseudonym, created_at) VALUES (?, ?, ?)',
    );
    insert.run(reference, newPseudonym(), new Date().toISOString());
    const pseudonym = (
      this.db.prepare('SELECT pseudonym FROM pseudonyms WHERE reference = ?').get(reference) as {
        pseudonym: string;
      }
    ).pseudonym;
    this.pseudonymCache.set(reference, pseudonym);
    this.pseudonymMisses.delete(reference);
    return pseudonym;
  }

  /**
   * The reference behind a pseudonym (the consent cache lists a grantee's patients by it; "who accessed my data").
   * Cached: a link never changes once made.
   */
  referenceOf(pseudonym: string): string | undefined {
    const cached = this.referenceCache.get(pseudonym);
    if (cached !== undefined) return cached;
    const row = this.referenceStatement.get(pseudonym);
    if (row) {
      if (this.referenceCache.size >= 100_000) this.referenceCache.clear();
      this.referenceCache.set(pseudonym, row.reference);
    }
    return row?.reference;
  }

  /**
   * The pseudonym of a reference if it has one (no creation). Asked on every consent decision, so misses are
   * remembered too (briefly: another process sharing the data directory may create one).
   */
  existingPseudonymOf(reference: string): string | undefined {
    const cached = this.pseudonymCache.get(reference);
    if (cached) return cached;
    const now = Date.now();
    const missedUntil = this.pseudonymMisses.get(reference);
    if (missedUntil !== undefined && missedUntil > now) return undefined;
    const row = this.pseudonymStatement.get(reference);
    if (row) {
      this.pseudonymCache.set(reference, row.pseudonym);
      this.pseudonymMisses.delete(reference);
    } else {
      if (this.pseudonymMisses.size >= 100_000) this.pseudonymMisses.clear();
      this.pseudonymMisses.set(reference, now + 1000);
    }
    return row?.pseudonym;
  }

  /** The participant with this pseudonym (for "who accessed my data"). */
  byPseudonym(pseudonym: string): Participant | undefined {
    const row = this.db.prepare('SELECT * FROM participants WHERE pseudonym = ?').get(pseudonym) as
      ParticipantRow | undefined;
    return row ? toParticipant(row) : undefined;
  }
}
