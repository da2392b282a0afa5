/**
 * Patient identity across members (docs/exchange.md, "Linking a patient across members"). The patient's home is the
 * record locator and the only keeper of the network patient id (npid, src/consent/network-ids.ts). A custodian
 * learns a patient's npid only when the patient brings it a link token issued by the home:
 *
 * - a compact JWE (ECDH-ES+A256KW, A256GCM) to the custodian's service certificate key in the member directory, so
 *   only the named custodian reads the npid and the home's demographics;
 * - around a JWS (ES256) signed with the home's service key, so the custodian knows which member issued it;
 * - claims iss = home MSP, aud = custodian MSP, jti, iat, exp (10 minutes by default), npid, dem (demographics,
 *   normalised: src/exchange/demographics.ts).
 *
 * The custodian redeems it once (the jti is kept, durably, until the token's expiry), scores the demographics
 * against its own Patient and stores the link (local Patient -> npid, home MSP, when) in its data directory
 * (`exchange/patient-links.sqlite`, 0600). No call between the services is needed: the token is the message.
 *
 * The home, as record locator, keeps in the same file which custodians it issued a link token for (table
 * `locator`: npid, custodian MSP, since): off the ledger, so no member learns where a patient is treated. It may
 * over-list (a custodian that never redeemed the token answers with no records), never under-list.
 */
import { randomUUID, X509Certificate, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CompactEncrypt, compactDecrypt, decodeJwt, decodeProtectedHeader, jwtVerify, SignJWT } from 'jose';
import { fhirError } from '../fhir/outcome.js';
import { openDurableSqlite } from '../platform/durable-sqlite.js';
import type { LinkDemographics } from './demographics.js';
import type { MemberLookup } from './members.js';

/** Default lifetime of a link token: long enough to carry it to the custodian's desk, short enough to be useless if stolen later. */
export const DEFAULT_LINK_TOKEN_SECONDS = 600;
/** The longest lifetime a redeemed token may claim (a home's misconfiguration cannot make tokens live for days). */
export const MAX_LINK_TOKEN_SECONDS = 24 * 60 * 60;
const CLOCK_TOLERANCE_SECONDS = 5;
const JWS_TYPE = 'hie-link+jwt';
const KEY_ALGORITHM = 'ECDH-ES+A256KW';
const CONTENT_ENCRYPTION = 'A256GCM';

/** The link file in a data directory. */
export function patientLinksFileIn(dataDir: string): string {
  return join(dataDir, 'exchange', 'patient-links.sqlite');
}

/** The link of one local Patient to a network patient. */
export interface PatientLink {
  /** `Patient/{id}` at this custodian. */
  localPatient: string;
  npid: string;
  /** The MSP id of the patient's home (the token's issuer). */
  homeMsp: string;
  linkedAt: string;
}

/**
 * A link that ended: `corrected` (relinked to another network patient: a statement that the link was wrong),
 * `wrong` (unlinked as wrong) or `revoked` (an ordinary unlink: the patient leaving). The first two are reported to
 * both patients (wrong-link-report.ts).
 */
export interface EndedLink extends PatientLink {
  endedAt: string;
  reason: 'corrected' | 'revoked' | 'wrong';
  /** Its row in the link history. */
  seq: number;
}

/** One disclosure made under a link (network-records at a custodian), kept to report it if the link was wrong. */
export interface LinkDisclosure {
  localPatient: string;
  npid: string;
  /** When (ISO 8601). */
  at: string;
  /** The calling member, its actor (pseudonym), the purpose of use. */
  accessorMsp: string;
  accessor: string;
  purpose: string;
  /** How many records were sent, of which types. */
  records: number;
  types: string[];
  /** The disclosure's AuditEvent id at this member. */
  auditEvent: string;
}

/** A wrong link whose report is not yet made: the ended link and the npid of its owner's new link, if relinked. */
export interface PendingWrongLinkReport {
  ended: EndedLink;
  ownerNpid?: string;
}

/**
 * What the pull side asks about identity (all by local `Patient/{id}` references). At the home, a patient's npid is
 * the one NetworkIds keeps; at a custodian, the one its link stores. Patients who never linked have none: they are
 * not findable across members.
 */
export interface PatientLinks {
  /** The network patient id of a local Patient (following `replaced-by` to the surviving Patient). */
  npidOf(localPatient: string): Promise<string | undefined>;
  /** The local Patients linked to a network patient (at the home: its own patient too). */
  localPatientsOf(npid: string): Promise<string[]>;
  /** The MSP id of the home of a local Patient's network patient (this member's own at the home). */
  homeOf(localPatient: string): Promise<string | undefined>;
  /**
   * At the home: the custodians (MSP ids, sorted) it issued a link token for this network patient, whether or not
   * they redeemed it; not the home itself. None at a custodian.
   */
  custodiansOf(npid: string): Promise<string[]>;
  /** At a custodian: notes a disclosure made under a link (wrong-link reports find it); absent: not kept. */
  noteLinkDisclosure?(disclosure: LinkDisclosure): void | Promise<void>;
}

/** A link row, as both adapters' tables hold it (patient-links.ts and postgres-patient-links.ts). */
export interface LinkRow {
  local_patient: string;
  npid: string;
  home_msp: string;
  linked_at: string;
}

/** An ended link's row; `seq` comes back as text from PostgreSQL's bigint. */
export interface HistoryRow extends LinkRow {
  seq: number | string;
  ended_at: string;
  reason: EndedLink['reason'];
}

/** A disclosure's row, as both adapters' tables hold it. */
export interface DisclosureRow {
  local_patient: string;
  npid: string;
  at: string;
  accessor_msp: string;
  accessor: string;
  purpose: string;
  records: number;
  types: string;
  audit_event: string;
}

export function endedOfRow(row: HistoryRow): EndedLink {
  return { ...linkOfRow(row), endedAt: row.ended_at, reason: row.reason, seq: Number(row.seq) };
}

export function linkOfRow(row: LinkRow): PatientLink {
  return { localPatient: row.local_patient, npid: row.npid, homeMsp: row.home_msp, linkedAt: row.linked_at };
}

export function disclosureOfRow(row: DisclosureRow): LinkDisclosure {
  return {
    localPatient: row.local_patient,
    npid: row.npid,
    at: row.at,
    accessorMsp: row.accessor_msp,
    accessor: row.accessor,
    purpose: row.purpose,
    records: row.records,
    types: row.types === '' ? [] : row.types.split(' '),
    auditEvent: row.audit_event,
  };
}

/** A disclosure's values in the column order of DISCLOSURE_COLUMNS. */
export const DISCLOSURE_COLUMNS =
  'local_patient, npid, at, accessor_msp, accessor, purpose, records, types, audit_event';
export function disclosureValues(disclosure: LinkDisclosure): (string | number)[] {
  return [
    disclosure.localPatient,
    disclosure.npid,
    disclosure.at,
    disclosure.accessorMsp,
    disclosure.accessor,
    disclosure.purpose,
    disclosure.records,
    disclosure.types.join(' '),
    disclosure.auditEvent,
  ];
}

/** An answer now (SQLite) or later (PostgreSQL). */
type Answer<T> = T | Promise<T>;

/**
 * Where a member keeps its links, their history, the link tokens already redeemed, the disclosures made under links,
 * the pending wrong-link reports and (at the home) the locator: the data directory's SQLite file (PatientLinkStore)
 * or, shared by the replicas, the PostgreSQL store's tables (PostgresPatientLinks, migration 15).
 */
export interface PatientLinkStorage {
  spend(token: string, expiresAt: number, now: number): Answer<boolean>;
  locate(npid: string, custodianMsp: string, since: string): Answer<void>;
  custodiansOf(npid: string): Answer<string[]>;
  linkOf(localPatient: string): Answer<PatientLink | undefined>;
  linksTo(npid: string): Answer<PatientLink[]>;
  /**
   * Links as PatientLinkStore.link says; `allowed`: the other local Patients the caller found linked to this npid and
   * accepted (the same person). Another one linked meanwhile (a concurrent link, here or at another replica) is
   * refused (`link-conflict`), checked in the write's own transaction.
   */
  link(link: PatientLink, allowed?: readonly string[]): Answer<EndedLink | undefined>;
  unlink(localPatient: string, at: string, wrong?: boolean): Answer<EndedLink | undefined>;
  history(localPatient: string): Answer<EndedLink[]>;
  noteDisclosure(disclosure: LinkDisclosure): Answer<void>;
  disclosuresUnder(ended: EndedLink): Answer<LinkDisclosure[]>;
  pendingReports(): Answer<PendingWrongLinkReport[]>;
  reported(historySeq: number, at: string): Answer<void>;
  close(): Answer<void>;
}

/** The refusal of a link to a network patient another local Patient is linked to. */
export function linkConflict(otherPatient: string): never {
  throw fhirError(
    'link-conflict',
    `${otherPatient} is already linked to this network patient; mark the two Patients as the same person (Patient.link seealso, replaces or replaced-by) or unlink it first`,
  );
}

/** The custodian's links, their history and the link tokens already redeemed: one SQLite file (0600). */
export class PatientLinkStore implements PatientLinkStorage {
  private readonly db: Database.Database;
  private readonly byPatient: Database.Statement<[string], LinkRow>;
  private readonly byNpid: Database.Statement<[string], LinkRow>;

  /** `file` absent: in memory (tests). */
  constructor(file?: string) {
    // A spent token must stay spent after a crash: durable commits.
    this.db = openDurableSqlite(file);
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS patient_links (
        local_patient TEXT PRIMARY KEY,
        npid TEXT NOT NULL,
        home_msp TEXT NOT NULL,
        linked_at TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS patient_links_npid ON patient_links (npid);
      CREATE TABLE IF NOT EXISTS link_history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        local_patient TEXT NOT NULL,
        npid TEXT NOT NULL,
        home_msp TEXT NOT NULL,
        linked_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        reason TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS link_history_patient ON link_history (local_patient);
      CREATE TABLE IF NOT EXISTS spent_link_tokens (
        token TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
      );
      CREATE TABLE IF NOT EXISTS link_disclosures (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        local_patient TEXT NOT NULL,
        npid TEXT NOT NULL,
        at TEXT NOT NULL,
        accessor_msp TEXT NOT NULL,
        accessor TEXT NOT NULL,
        purpose TEXT NOT NULL,
        records INTEGER NOT NULL,
        types TEXT NOT NULL,
        audit_event TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS link_disclosures_patient ON link_disclosures (local_patient, npid, at);
      CREATE TABLE IF NOT EXISTS wrong_link_reports (
        history_seq INTEGER PRIMARY KEY,
        owner_npid TEXT,
        reported_at TEXT
      );
      CREATE TABLE IF NOT EXISTS locator (
        npid TEXT NOT NULL,
        custodian_msp TEXT NOT NULL,
        since TEXT NOT NULL,
        PRIMARY KEY (npid, custodian_msp)
      ) WITHOUT ROWID;
    `);
    this.byPatient = this.db.prepare('SELECT * FROM patient_links WHERE local_patient = ?');
    this.byNpid = this.db.prepare('SELECT * FROM patient_links WHERE npid = ? ORDER BY local_patient');
  }

  close(): void {
    this.db.close();
  }

  /** Marks a token (`iss jti`) spent until `expiresAt` (epoch ms); false when it was spent before. */
  spend(token: string, expiresAt: number, now: number): boolean {
    this.db.prepare('DELETE FROM spent_link_tokens WHERE expires_at < ?').run(now);
    return (
      this.db
        .prepare('INSERT OR IGNORE INTO spent_link_tokens (token, expires_at) VALUES (?, ?)')
        .run(token, expiresAt).changes === 1
    );
  }

  /**
   * At the home: notes that a link token for `custodianMsp` was issued for this network patient. Idempotent: the
   * first issue's time stays `since`.
   */
  locate(npid: string, custodianMsp: string, since: string): void {
    this.db
      .prepare('INSERT OR IGNORE INTO locator (npid, custodian_msp, since) VALUES (?, ?, ?)')
      .run(npid, custodianMsp, since);
  }

  /** At the home: the custodians a link token was issued for, for this network patient (MSP ids, sorted). */
  custodiansOf(npid: string): string[] {
    return this.db
      .prepare<[string], string>('SELECT custodian_msp FROM locator WHERE npid = ? ORDER BY custodian_msp')
      .pluck()
      .all(npid);
  }

  linkOf(localPatient: string): PatientLink | undefined {
    const row = this.byPatient.get(localPatient);
    return row && linkOfRow(row);
  }

  linksTo(npid: string): PatientLink[] {
    return this.byNpid.all(npid).map(linkOfRow);
  }

  /**
   * Links `link.localPatient`; a link it had to another network patient (or home) is ended as `corrected` and kept
   * in the history, with a pending wrong-link report (the disclosures made under it go to both patients). Returns
   * the ended link, if any.
   */
  link(link: PatientLink, allowed?: readonly string[]): EndedLink | undefined {
    return this.db.transaction((): EndedLink | undefined => {
      if (allowed)
        for (const other of this.linksTo(link.npid))
          if (other.localPatient !== link.localPatient && !allowed.includes(other.localPatient))
            linkConflict(other.localPatient);
      const previous = this.linkOf(link.localPatient);
      let ended: EndedLink | undefined;
      if (previous && (previous.npid !== link.npid || previous.homeMsp !== link.homeMsp)) {
        ended = this.remember(previous, link.linkedAt, 'corrected');
        this.db
          .prepare('INSERT INTO wrong_link_reports (history_seq, owner_npid) VALUES (?, ?)')
          .run(ended.seq, link.npid);
      }
      this.db
        .prepare(
          `INSERT INTO patient_links (local_patient, npid, home_msp, linked_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (local_patient) DO UPDATE SET npid = excluded.npid, home_msp = excluded.home_msp,
             linked_at = excluded.linked_at`,
        )
        .run(link.localPatient, link.npid, link.homeMsp, link.linkedAt);
      return ended;
    })();
  }

  /**
   * Ends the link of a local Patient, kept in the history: `revoked` (an ordinary unlink, nothing reported) or,
   * when `wrong`, `wrong` with a pending wrong-link report. Undefined when it had none.
   */
  unlink(localPatient: string, at: string, wrong = false): EndedLink | undefined {
    return this.db.transaction((): EndedLink | undefined => {
      const previous = this.linkOf(localPatient);
      if (!previous) return undefined;
      const ended = this.remember(previous, at, wrong ? 'wrong' : 'revoked');
      if (wrong) this.db.prepare('INSERT INTO wrong_link_reports (history_seq) VALUES (?)').run(ended.seq);
      this.db.prepare('DELETE FROM patient_links WHERE local_patient = ?').run(localPatient);
      return ended;
    })();
  }

  /** The ended links of a local Patient, oldest first. */
  history(localPatient: string): EndedLink[] {
    return this.db
      .prepare<[string], HistoryRow>('SELECT * FROM link_history WHERE local_patient = ? ORDER BY seq')
      .all(localPatient)
      .map(endedOfRow);
  }

  /** Notes a disclosure made under a link (before the answer leaves), so a wrong link's report finds it. */
  noteDisclosure(disclosure: LinkDisclosure): void {
    this.db
      .prepare(`INSERT INTO link_disclosures (${DISCLOSURE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(...disclosureValues(disclosure));
  }

  /** The disclosures of the local Patient made under an ended link (its npid, within its period), oldest first. */
  disclosuresUnder(ended: EndedLink): LinkDisclosure[] {
    return this.db
      .prepare<[string, string, string, string], DisclosureRow>(
        `SELECT * FROM link_disclosures WHERE local_patient = ? AND npid = ? AND at >= ? AND at <= ?
         ORDER BY at, seq`,
      )
      .all(ended.localPatient, ended.npid, ended.linkedAt, ended.endedAt)
      .map(disclosureOfRow);
  }

  /** The wrong links whose report is not yet made, oldest first. */
  pendingReports(): PendingWrongLinkReport[] {
    return this.db
      .prepare<[], HistoryRow & { owner_npid: string | null }>(
        `SELECT h.*, r.owner_npid FROM wrong_link_reports r JOIN link_history h ON h.seq = r.history_seq
         WHERE r.reported_at IS NULL ORDER BY h.seq`,
      )
      .all()
      .map((row) => {
        const ended = endedOfRow(row);
        return row.owner_npid === null ? { ended } : { ended, ownerNpid: row.owner_npid };
      });
  }

  /** Marks a wrong link's report made. */
  reported(historySeq: number, at: string): void {
    this.db
      .prepare('UPDATE wrong_link_reports SET reported_at = ? WHERE history_seq = ?')
      .run(at, historySeq);
  }

  private remember(link: PatientLink, endedAt: string, reason: EndedLink['reason']): EndedLink {
    const { lastInsertRowid } = this.db
      .prepare(
        'INSERT INTO link_history (local_patient, npid, home_msp, linked_at, ended_at, reason) VALUES (?, ?, ?, ?, ?, ?)',
      )
      .run(link.localPatient, link.npid, link.homeMsp, link.linkedAt, endedAt, reason);
    return { ...link, endedAt, reason, seq: Number(lastInsertRowid) };
  }
}

/** What a redeemed link token says. */
export interface RedeemedLinkToken {
  homeMsp: string;
  npid: string;
  demographics: LinkDemographics;
  jti: string;
  /** Expiry, epoch ms. */
  expiresAt: number;
}

export interface LinkTokenOptions {
  /** This member's MSP id: the issuer of the tokens it issues, the audience of those it redeems. */
  mspId: string;
  /** This member's service private key (DATA/identity/exchange/key.pem); undefined while it has none. */
  serviceKey: () => KeyObject | undefined;
  members: MemberLookup;
  /** Where redeemed token ids are kept (the link store). */
  spent: Pick<PatientLinkStorage, 'spend'>;
  /** Lifetime of issued tokens (default 600 s). */
  tokenSeconds?: number;
  now?: () => number;
}

interface LinkClaims {
  npid: string;
  dem: LinkDemographics;
}

function invalid(reason: string): Error {
  return fhirError('link-token-invalid', `The link token is refused: ${reason}`);
}

function notMember(): Error {
  return fhirError(
    'member-not-registered',
    'This service has no exchange service key: register it in the member directory (hie-ledger member register)',
  );
}

/** Issues (at the home) and redeems (at a custodian) link tokens. */
export class LinkTokens {
  private readonly now: () => number;
  readonly tokenSeconds: number;

  constructor(private readonly options: LinkTokenOptions) {
    this.now = options.now ?? Date.now;
    this.tokenSeconds = options.tokenSeconds ?? DEFAULT_LINK_TOKEN_SECONDS;
    if (!(this.tokenSeconds > 0 && this.tokenSeconds <= MAX_LINK_TOKEN_SECONDS))
      throw new Error(`a link token lives 1..${MAX_LINK_TOKEN_SECONDS} seconds`);
  }

  /** A token for `custodian` carrying the patient's npid and demographics, readable only by that custodian. */
  async issue(input: {
    npid: string;
    demographics: LinkDemographics;
    custodian: string;
  }): Promise<{ token: string; expiresAt: number }> {
    const key = this.options.serviceKey();
    if (!key) throw notMember();
    if (input.custodian === this.options.mspId)
      throw fhirError(
        'parameter-invalid',
        "The custodian is this service: a patient's home links its own patients without a token",
        { expression: 'custodian' },
      );
    const custodian = await this.member(input.custodian);
    if (!custodian)
      throw fhirError('parameter-invalid', `${input.custodian} is not a member of the exchange`, {
        expression: 'custodian',
      });
    const iat = Math.floor(this.now() / 1000);
    const exp = iat + this.tokenSeconds;
    const claims: LinkClaims = { npid: input.npid, dem: input.demographics };
    const signed = await new SignJWT({ ...claims })
      .setProtectedHeader({ alg: 'ES256', typ: JWS_TYPE })
      .setIssuer(this.options.mspId)
      .setAudience(input.custodian)
      .setJti(randomUUID())
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(key);
    const token = await new CompactEncrypt(new TextEncoder().encode(signed))
      .setProtectedHeader({ alg: KEY_ALGORITHM, enc: CONTENT_ENCRYPTION, cty: 'JWT' })
      .encrypt(custodian.publicKey);
    return { token, expiresAt: exp * 1000 };
  }

  /**
   * Opens a token addressed to this member, checks the home's signature against its directory certificate (an
   * active member), the audience, the times, and spends its jti (a second redemption is refused, whatever the
   * first one's outcome). Throws `link-token-invalid` with the reason.
   */
  async redeem(token: string): Promise<RedeemedLinkToken> {
    const key = this.options.serviceKey();
    if (!key) throw notMember();
    if (typeof token !== 'string' || token.split('.').length !== 5) throw invalid('it is not a compact JWE');
    let signed: string;
    try {
      const header = decodeProtectedHeader(token);
      if (header.alg !== KEY_ALGORITHM || header.enc !== CONTENT_ENCRYPTION)
        throw new Error('unexpected algorithms');
      const { plaintext } = await compactDecrypt(token, key, {
        keyManagementAlgorithms: [KEY_ALGORITHM],
        contentEncryptionAlgorithms: [CONTENT_ENCRYPTION],
      });
      signed = new TextDecoder().decode(plaintext);
    } catch {
      // Altered, or encrypted to another member's key: the same answer.
      throw invalid('it was not issued for this member, or it was altered');
    }
    let issuer: unknown;
    try {
      issuer = decodeJwt(signed).iss;
    } catch {
      throw invalid('its content is not a signed JWT');
    }
    if (typeof issuer !== 'string' || issuer === '') throw invalid('it names no issuing home');
    const home = await this.member(issuer);
    if (!home) throw invalid('its issuer is not an active member of the exchange');
    let payload;
    try {
      ({ payload } = await jwtVerify(signed, home.publicKey, {
        algorithms: ['ES256'],
        typ: JWS_TYPE,
        issuer,
        audience: this.options.mspId,
        requiredClaims: ['exp', 'iat', 'jti'],
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        currentDate: new Date(this.now()),
      }));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ERR_JWT_EXPIRED') throw invalid('it has expired');
      if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && (err as { claim?: string }).claim === 'aud')
        throw invalid('it was issued for another member');
      throw invalid("its signature or claims do not verify against the home's service certificate");
    }
    const exp = payload.exp!;
    if (exp - payload.iat! > MAX_LINK_TOKEN_SECONDS) throw invalid('it claims too long a lifetime');
    if (payload.iat! > this.now() / 1000 + CLOCK_TOLERANCE_SECONDS)
      throw invalid('it was issued in the future');
    const claims = payload as unknown as Partial<LinkClaims>;
    if (typeof claims.npid !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(claims.npid))
      throw invalid('it carries no network patient id');
    if (!isDemographics(claims.dem)) throw invalid('its demographics are malformed');
    const jti = payload.jti!;
    const expiresAt = (exp + CLOCK_TOLERANCE_SECONDS) * 1000;
    if (!(await this.options.spent.spend(`${issuer} ${jti}`, expiresAt, this.now())))
      throw invalid('it was already used');
    return { homeMsp: issuer, npid: claims.npid, demographics: claims.dem, jti, expiresAt: exp * 1000 };
  }

  /** An active member's service public key, or undefined; a directory failure is a 503. */
  private async member(mspId: string): Promise<{ publicKey: KeyObject } | undefined> {
    let entry;
    try {
      entry = await this.options.members.member(mspId);
    } catch {
      throw fhirError('ledger-unavailable', 'The member directory cannot be read now; retry later');
    }
    if (!entry || entry.status !== 'active' || entry.mspId !== mspId) return undefined;
    try {
      return { publicKey: new X509Certificate(entry.serviceCertificate).publicKey };
    } catch {
      return undefined;
    }
  }
}

function isDemographics(value: unknown): value is LinkDemographics {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const dem = value as Record<string, unknown>;
  const optionalString = (v: unknown) => v === undefined || typeof v === 'string';
  return (
    optionalString(dem.family) &&
    optionalString(dem.birthDate) &&
    optionalString(dem.gender) &&
    optionalString(dem.postalCode) &&
    (dem.given === undefined || (Array.isArray(dem.given) && dem.given.every((g) => typeof g === 'string')))
  );
}
