/**
 * Consent on the ledger, typed: grants and revocations through the `consent` chaincode, and the consent cache the
 * access policy asks on every decision (a few Map lookups).
 *
 * Fail closed:
 * - a revocation (or a narrowing change) takes effect here the moment it is accepted, before it commits: a durable
 *   local deny (src/consent/revocation-outbox.ts, DATA/consent-revocations.json) written before the Consent is
 *   stored, consulted by every decision, kept across restarts and sent to the ledger by a retrying outbox; it ends
 *   only when the ledger holds the revocation. A revocation never fails for want of a ledger;
 * - a grant takes effect only once committed (the submit returned, or its event arrived);
 * - periods are checked against the clock at each decision, so access stops at the instant a period ends.
 * The cache is fed by the chaincode events (so grants written by other instances of this service arrive too) and
 * checkpointed with a snapshot in DATA/checkpoints/consent.json, so a restart replays only the new blocks. The
 * snapshot names the last transaction it reflects; at start that transaction must be on the ledger, in the same
 * block (src/ledger/ledger-continuity.ts), or the service refuses to start: a lost or replaced ledger is never
 * papered over by the checkpoint. A snapshot without that position is not trusted: the cache is rebuilt from the
 * ledger.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { LedgerTransactionError, type EventStream, type Ledger } from '../ledger/ledger.js';
import { RevocationOutbox, type PendingRevocation } from './revocation-outbox.js';
import type { SharedRevocations } from './shared-revocations.js';
import { LedgerMismatchError, verifyLedgerHolds, type CommittedClaim } from '../ledger/ledger-continuity.js';
import type {
  AccessPage,
  GrantRecord as LedgerGrant,
  AccessRecord as LedgerAccessRecord,
} from 'hie-ledger-chaincode';
import { grantAllows, sameGrant, type ConsentGrants } from './consent-resource.js';
import { DoublingBackoff } from '../platform/backoff.js';
import {
  grantTag,
  newRecordId,
  NetworkIds,
  openDetails,
  patientTag,
  sealDetails,
  type GrantLink,
  type NetworkIdIndex,
} from './network-ids.js';

/** The ledger's records, as the chaincode writes them: one definition, in the chaincode package (types only). */

/** Most access records one RecordAccess transaction carries (the chaincode's MAX_ACCESS_RECORDS). */
const MAX_ACCESS_RECORDS_PER_TX = 1000;
/** Retry of access records while the ledger is away: first delay, doubling up to the last. */
const ACCESS_RETRY_FIRST_MS = 250;
const ACCESS_RETRY_MAX_MS = 30_000;
export type { GrantRecord as LedgerGrant, AccessRecord as LedgerAccessRecord } from 'hie-ledger-chaincode';

/**
 * An access decision as the service hands it over, the patient as a FHIR reference (`Patient/x`). On the ledger it
 * becomes an AccessRecord with a blinded patient tag; the details here are sealed with the patient's npid.
 */
export interface AccessRecordInput {
  patient: string;
  /** Pseudonym of the participant who accessed (or tried to). */
  accessor: string;
  interaction: string;
  resourceType?: string;
  outcome: 'allowed' | 'refused';
  /** When the service decided (its clock), ISO 8601: the last decision of an aggregate. */
  at: string;
  /** An aggregate of identical decisions: the first one's time; `count` how many (1 when absent). */
  from?: string;
  count?: number;
  /** The grant that opened the access (a grant tag goes on the ledger), the accessor's MSP, the purpose. */
  grantId?: string;
  accessorMsp?: string;
  purpose?: string;
  /**
   * The network patient id the record is tagged with, when this service is not the patient's home (a custodian's
   * disclosure to another member: the id its link holds). Absent: the home's own id of `patient`.
   */
  npid?: string;
  /** A report of disclosures made under a wrong patient link (interaction `wrong-link`; docs/exchange.md). */
  wrongLink?: WrongLinkDetails;
}

/**
 * What a `wrong-link` access record tells its patient (sealed): which side of the wrong link the patient was, the
 * period the link was in force, and how many records were disclosed under it (`count` is how many disclosures).
 */
export interface WrongLinkDetails {
  /**
   * `not-this-patient`: what was disclosed under this patient's network id was another person's records;
   * `this-patients-records`: this patient's records were disclosed to grantees of another patient.
   */
  side: 'not-this-patient' | 'this-patients-records';
  linkedAt: string;
  endedAt: string;
  records: number;
}

/** The sealed part of an access record. */
interface AccessDetails {
  accessor: string;
  interaction: string;
  resourceType?: string;
  outcome: 'allowed' | 'refused';
  at: string;
  from?: string;
  count: number;
  wrongLink?: WrongLinkDetails;
  /** Orders the records of one service: its clock at the flush, then the position (record ids are random). */
  seq: string;
}

/** An access record of a patient as the home reads it back: the ledger's record with its details opened. */
export interface AccessEntry extends Omit<AccessDetails, 'seq'> {
  recordId: string;
  /** The custodian (the service that decided and recorded). */
  mspId: string;
  accessorMsp: string;
  purpose: string;
  /** The transaction that recorded it, and its timestamp. */
  txId: string;
  time: string;
}

/** Access records read per ListAccess page. */
const ACCESS_PAGE = 1000;

/** FHIR reference <-> pseudonym links kept off the ledger (src/access/participants.ts). */
export interface PseudonymResolver {
  /** Made at first use; a shared resolver answers only for references prepare() made (throws otherwise). */
  pseudonymOf(reference: string): string;
  /** A shared resolver (PostgreSQL): makes the pseudonyms of these references, agreed by every replica. */
  prepare?(references: readonly string[]): Promise<void>;
  existingPseudonymOf(reference: string): string | undefined;
  /** The reference of a pseudonym (for listing a grantee's patients); absent: patientsAllowing lists none. */
  referenceOf?(pseudonym: string): string | undefined;
}

export interface ConsentServiceOptions {
  ledger: Ledger;
  pseudonyms: PseudonymResolver;
  /** Snapshot + checkpoint file (DATA/checkpoints/consent.json); none: replay from block 0. */
  checkpointFile?: string;
  /** Durable local denies and their outbox (DATA/consent-revocations.json); none: in memory only (tests). */
  revocationsFile?: string;
  /**
   * The replicas' shared pending revocations (PostgreSQL): loaded at start, followed by notification, each entry
   * removed once the ledger holds it. With it, the local denies are kept there, not in `revocationsFile`.
   */
  sharedRevocations?: SharedRevocations;
  /** Retry delays of the revocation outbox while the ledger is away: first, then doubling up to the last. */
  revocationRetryMs?: { first: number; max: number };
  log?: { warn(obj: object | string, msg?: string): void; error(obj: object | string, msg?: string): void };
  now?: () => number;
  /**
   * The patients' network ids and the grant index (DATA/identity/network-ids.sqlite); none: in memory (tests that
   * reopen the service pass the same one).
   */
  networkIds?: NetworkIdIndex;
  /**
   * This service's MSP on the ledger: grants whose home is another MSP never open anything here. Absent: learnt
   * from this service's first committed grant (kept with the network ids).
   */
  mspId?: string;
  /** Access records per RecordAccess transaction, and how long one may wait for company. */
  accessBatchSize?: number;
  accessFlushMs?: number;
}

type ConsentGrant = ConsentGrants['grants'][number];

/** A Consent write's changes on the ledger, by grant key (patient, grantee, consent pseudonyms). */
interface ConsentChanges {
  revoke: string[];
  submitGrants: [string, ConsentGrant][];
}

interface CachedGrant {
  record: LedgerGrant;
  blockNumber: number;
  /** From the grant index (the ledger names neither): the patient's and the Consent's pseudonyms. */
  patient: string;
  consent: string;
  /** The grantee as the index names it (granteeKeyOf); absent in older snapshots: derived from the record. */
  grantee?: string;
}

/** A committed transaction: where the cache stands on the ledger. */
interface LedgerPosition {
  blockNumber: number;
  transactionId: string;
}

interface Snapshot {
  /** 2: grants keyed by grant id with blinded patients; older snapshots are not trusted (rebuilt from the ledger). */
  format?: number;
  /** Every event of blocks below `nextBlock` is in `grants`. */
  nextBlock: number;
  grants: CachedGrant[];
  /** The latest committed transaction the snapshot reflects (absent in old snapshots: those are not trusted). */
  committed?: LedgerPosition;
}

const keyOf = (patient: string, grantee: string, consent: string) =>
  `${patient}\u0000${grantee}\u0000${consent}`;
const granteeOfKey = (key: string): string => key.split('\u0000')[1]!;

/**
 * How the cache, the grant index and the revocation outbox name a grantee: the pseudonym of the FHIR reference a
 * Consent named (a grantee of this service); `<granteeMsp>|<pseudonym>` for a network participant a Consent named
 * by its handle. Local pseudonyms never hold `|`, so a grant by handle can never be found by a local decision
 * (allows, patientsAllowing), even when its pseudonym equals a local one: it opens network requests only.
 */
const handleKeyOf = (grantee: string, granteeMsp: string) => `${granteeMsp}|${grantee}`;

/** Is `key` the index's name of this record's grantee (a bare pseudonym only for a grantee of the home's MSP)? */
function granteeKeyMatches(key: string, record: LedgerGrant): boolean {
  return key === record.grantee
    ? record.granteeMsp === record.homeMsp
    : key === handleKeyOf(record.grantee, record.granteeMsp);
}

export class ConsentService {
  private readonly ledger: Ledger;
  private readonly pseudonyms: PseudonymResolver;
  private readonly now: () => number;
  private readonly log: NonNullable<ConsentServiceOptions['log']>;
  /** patient -> grantee -> consent -> grant */
  private readonly grants = new Map<string, Map<string, Map<string, CachedGrant>>>();
  /** consent pseudonym -> keys of its grants */
  private readonly byConsent = new Map<string, Set<string>>();
  /** Revocations accepted here and not yet confirmed by the ledger: refused already, durably. */
  private readonly pendingRevocations: RevocationOutbox;
  /** Ledger writes of consent (commits and the outbox), one at a time, so a retried revocation never lands
   * after the newer grant of the same key. */
  private ledgerWrites: Promise<void> = Promise.resolve();
  private revocationTimer?: NodeJS.Timeout;
  private readonly revocationBackoff: DoublingBackoff;
  private revocationBacklogLogged = false;
  /** Pending revocations the ledger refused (logged once each). */
  private readonly refusedRevocations = new Set<string>();
  private readonly ids: NetworkIdIndex;
  /** grantee pseudonym -> pseudonyms of the patients with a grant record for it (any status: allows() decides). */
  private readonly patientsOfGrantee = new Map<string, Set<string>>();
  /**
   * grantee pseudonym -> a counter bumped by every change of one of its grants or pending revocations:
   * patientsAllowing's answers made under other counts are stale (a grant to one grantee keeps the others').
   */
  private readonly granteeGeneration = new Map<string, number>();
  private allowingCache = new Map<
    string,
    { stamp: string; from: number; until: number; patients: readonly string[] }
  >();
  private nextBlock = 0;
  /** The latest committed transaction applied here; saved with the snapshot. */
  private committed?: LedgerPosition;
  /** The checkpoint's position, until the ledger has confirmed it holds it. */
  private unverified?: CommittedClaim;
  private verifyTimer?: NodeJS.Timeout;
  /** Set when the ledger turned out not to hold the checkpoint's position: every decision refuses. */
  private mismatch?: string;
  private stream?: EventStream;
  private feeding?: Promise<void>;
  /** Stops listening to the shared revocations. */
  private stopSharedRevocations?: () => Promise<void>;
  private dirty = false;
  private checkpointTimer?: NodeJS.Timeout;
  private accessQueue: AccessRecordInput[] = [];
  private accessBacklogLogged = false;
  private readonly accessRetry = new DoublingBackoff(ACCESS_RETRY_FIRST_MS, ACCESS_RETRY_MAX_MS);
  private accessTimer?: NodeJS.Timeout;
  private accessFlushing: Promise<void> = Promise.resolve();
  private readonly accessBatchSize: number;
  private readonly accessFlushMs: number;
  /** Orders this service's access records (their ids are random). */
  private accessSeq = 0;
  private closed = false;
  /** Decisions answered since start, by outcome (read by the metrics at scrape time). */
  readonly decisions = { permit: 0, deny: 0 };
  /** The event feed ended while the service runs (a Fabric stream that gave up): the cache no longer follows. */
  private feedStopped = false;
  /** When (this.now) the cache was first seen behind the ledger's last block; undefined while it is caught up. */
  private behindSince?: number;

  private constructor(private readonly options: ConsentServiceOptions) {
    this.ledger = options.ledger;
    this.pseudonyms = options.pseudonyms;
    this.now = options.now ?? Date.now;
    this.log = options.log ?? { warn: () => {}, error: () => {} };
    this.ids = options.networkIds ?? new NetworkIds();
    this.accessBatchSize = options.accessBatchSize ?? 200;
    this.accessFlushMs = options.accessFlushMs ?? 1000;
    this.pendingRevocations = new RevocationOutbox(
      options.sharedRevocations ? undefined : options.revocationsFile,
      (entry) => keyOf(entry.patient, entry.grantee, entry.consent),
    );
    this.revocationBackoff = new DoublingBackoff(this.revocationRetry.first, this.revocationRetry.max);
  }

  private get revocationRetry(): { first: number; max: number } {
    return this.options.revocationRetryMs ?? { first: 250, max: 5_000 };
  }

  /** Loads the checkpoint, catches up with the chain, then follows its events. */
  static async open(options: ConsentServiceOptions): Promise<ConsentService> {
    const service = new ConsentService(options);
    await service.followSharedRevocations();
    service.loadCheckpoint();
    await service.verifyCheckpoint();
    await service.follow();
    // Revocations a previous run could not send: refused already (loaded above), now sent.
    if (service.pendingRevocations.size > 0) service.scheduleRevocations(0);
    return service;
  }

  /** The other replicas' pending revocations: every stored one now, then each one as its Consent commits. */
  private async followSharedRevocations(): Promise<void> {
    const shared = this.options.sharedRevocations;
    if (!shared) return;
    const adopt = (entries: PendingRevocation[]) => {
      const fresh = entries.filter((entry) => !this.pendingRevocations.has(this.pendingKeyOf(entry)));
      if (fresh.length > 0) this.addPending(fresh);
    };
    // Listening first, then loading: an entry committed in between arrives once or twice, never not at all.
    this.stopSharedRevocations = await shared.listen(
      (entry) => adopt([entry]),
      () =>
        void shared
          .all()
          .then(adopt, (err: Error) =>
            this.log.warn({ err: err.message }, 'shared revocations not reloaded'),
          ),
    );
    adopt(await shared.all());
  }

  private pendingKeyOf(entry: PendingRevocation): string {
    return keyOf(entry.patient, entry.grantee, entry.consent);
  }

  private loadCheckpoint(): void {
    if (!this.options.checkpointFile) return;
    let snapshot: Snapshot;
    try {
      snapshot = JSON.parse(readFileSync(this.options.checkpointFile, 'utf8')) as Snapshot;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      // A damaged checkpoint costs a full replay, nothing else.
      this.log.warn({ err: (err as Error).message }, 'consent checkpoint unreadable; replaying the chain');
      return;
    }
    if (!snapshot.committed || snapshot.format !== 2) {
      // Without its ledger position the snapshot cannot be checked against the ledger: rebuilt from the ledger.
      if (snapshot.grants.length > 0)
        this.log.warn(
          {},
          'consent checkpoint without its ledger position; rebuilding the cache from the ledger',
        );
      return;
    }
    for (const cached of snapshot.grants) this.put(cached.record, cached.blockNumber, cached);
    this.nextBlock = snapshot.nextBlock;
    this.committed = snapshot.committed;
    this.unverified = {
      source: `the consent checkpoint ${this.options.checkpointFile}`,
      transactionId: snapshot.committed.transactionId,
      blockNumber: snapshot.committed.blockNumber,
    };
  }

  /**
   * The ledger must hold the checkpoint's last transaction: throws LedgerMismatchError when it does not. When the
   * ledger cannot be asked (a Fabric peer away) the cache serves from the checkpoint, as when the ledger goes away
   * later, and the check is retried until the ledger answers; a mismatch found then refuses every decision.
   */
  private async verifyCheckpoint(): Promise<void> {
    const claim = this.unverified;
    if (!claim) return;
    if ((await verifyLedgerHolds(this.ledger, [claim])) === 'verified') {
      this.unverified = undefined;
      return;
    }
    this.log.warn({}, 'ledger unreachable at start: consent checkpoint not yet checked against it');
    this.scheduleVerification();
  }

  private scheduleVerification(): void {
    if (this.verifyTimer || this.closed || !this.unverified) return;
    this.verifyTimer = setTimeout(() => {
      this.verifyTimer = undefined;
      const claim = this.unverified;
      if (!claim || this.closed) return;
      verifyLedgerHolds(this.ledger, [claim]).then(
        (result) => {
          if (result === 'verified') this.unverified = undefined;
          else this.scheduleVerification();
        },
        (err: unknown) => {
          if (!(err instanceof LedgerMismatchError)) return this.scheduleVerification();
          this.mismatch = err.message;
          this.log.error(
            { err: err.message },
            'the ledger does not hold the consent checkpoint; access refused',
          );
        },
      );
    }, this.revocationRetry.max);
    this.verifyTimer.unref();
  }

  /** Why consent decisions are refused (the ledger does not hold what this service committed), if they are. */
  get ledgerMismatch(): string | undefined {
    return this.mismatch;
  }

  private noteCommitted(blockNumber: number, transactionId: string): void {
    if (!this.committed || blockNumber >= this.committed.blockNumber)
      this.committed = { blockNumber, transactionId };
  }

  private saveCheckpoint(): void {
    if (!this.options.checkpointFile || !this.dirty) return;
    this.dirty = false;
    const snapshot: Snapshot = {
      format: 2,
      nextBlock: this.nextBlock,
      grants: [],
      committed: this.committed,
    };
    for (const byGrantee of this.grants.values())
      for (const byConsent of byGrantee.values())
        for (const cached of byConsent.values()) snapshot.grants.push(cached);
    mkdirSync(dirname(this.options.checkpointFile), { recursive: true, mode: 0o700 });
    const tmp = `${this.options.checkpointFile}.tmp`;
    writeFileSync(tmp, JSON.stringify(snapshot), { mode: 0o600 });
    renameSync(tmp, this.options.checkpointFile);
  }

  private scheduleCheckpoint(): void {
    this.dirty = true;
    if (this.checkpointTimer || !this.options.checkpointFile) return;
    this.checkpointTimer = setTimeout(() => {
      this.checkpointTimer = undefined;
      try {
        this.saveCheckpoint();
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'consent checkpoint write failed');
      }
    }, 500);
    this.checkpointTimer.unref();
  }

  /**
   * Follows the chain's events from the checkpoint on. Resolves once the replay reached the height the chain had
   * at start (or went quiet: blocks without consent events send nothing), so the cache is complete before the
   * first decision. Until then nothing is granted (fail closed).
   */
  private async follow(): Promise<void> {
    let height: number;
    try {
      height = await this.ledger.height();
    } catch (err) {
      // The ledger is away at start (a Fabric peer down): serve from the checkpoint, as when it goes away later;
      // the event stream reconnects and catches up when it returns.
      this.log.warn(
        { err: (err as Error).message },
        'ledger unreachable at start; consent cache from its checkpoint',
      );
      height = this.nextBlock;
    }
    const stream = this.ledger.events(this.nextBlock);
    this.stream = stream;
    let caughtUp: () => void = () => {};
    const ready = new Promise<void>((resolve) => (caughtUp = resolve));
    let idle: NodeJS.Timeout | undefined;
    const quiet = () => {
      if (idle) clearTimeout(idle);
      // Not unref'd: start-up awaits this timer, and `hie-ledger serve` has nothing else keeping Node alive yet
      // (an unref'd timer let the process exit silently, code 0, before listening).
      idle = setTimeout(caughtUp, 200);
    };
    if (this.nextBlock >= height) caughtUp();
    else quiet();
    this.feeding = (async () => {
      try {
        for await (const event of stream) {
          this.apply(event.eventName, event.payload, event.blockNumber);
          this.noteCommitted(event.blockNumber, event.transactionId);
          this.nextBlock = Math.max(this.nextBlock, event.blockNumber);
          this.scheduleCheckpoint();
          if (event.blockNumber >= height - 1) caughtUp();
          else quiet();
        }
      } catch (err) {
        if (!this.closed) this.log.error({ err: (err as Error).message }, 'consent event feed stopped');
      } finally {
        if (!this.closed) this.feedStopped = true;
        caughtUp();
      }
    })();
    await ready;
    if (idle) clearTimeout(idle);
  }

  private apply(eventName: string, payload: string, blockNumber: number): void {
    if (eventName === 'GrantAccess' || eventName === 'RevokeAccess') {
      this.put(JSON.parse(payload) as LedgerGrant, blockNumber);
    }
  }

  /**
   * Applies a committed grant record of this home unless a later one for the same grant is already here. The
   * ledger names no patient: the grant index says whose it is (`link` from a snapshot), and the record's patient
   * tag must agree. Grants of other homes, and grants this home did not make, open nothing here.
   */
  private put(
    record: LedgerGrant,
    blockNumber: number,
    link?: Pick<CachedGrant, 'patient' | 'consent' | 'grantee'>,
    caughtUp = false,
  ): void {
    if (!link) {
      // From an event: only a grant of this home (its MSP, an id of its index, its patient's tag).
      const home = this.options.mspId ?? this.ids.homeMsp();
      if (home !== undefined && record.homeMsp !== home) return;
      const indexed = home === undefined ? undefined : this.ids.linkOf(record.grantId);
      if (!indexed) {
        // A shared index may not have heard yet of a grant another replica made: read it, then apply the record.
        if (this.ids.catchUp && !caughtUp) this.catchUpThenPut(record, blockNumber);
        return;
      }
      if (!granteeKeyMatches(indexed.grantee, record) || !this.tagMatches(indexed, record)) return;
      link = indexed;
    }
    const { patient, consent } = link;
    // Snapshots made before grants by handle name no grantee: all of them were grants by reference.
    const grantee = link.grantee ?? record.grantee;
    // The grantee the index names must be the record's (a local name only for a grantee of the home's MSP).
    if (!granteeKeyMatches(grantee, record)) return;
    let byGrantee = this.grants.get(patient);
    if (!byGrantee) this.grants.set(patient, (byGrantee = new Map()));
    let byConsent = byGrantee.get(grantee);
    if (!byConsent) byGrantee.set(grantee, (byConsent = new Map()));
    const existing = byConsent.get(consent);
    if (existing && existing.blockNumber > blockNumber) return;
    byConsent.set(consent, { record, blockNumber, patient, consent, grantee });
    let patients = this.patientsOfGrantee.get(grantee);
    if (!patients) this.patientsOfGrantee.set(grantee, (patients = new Set()));
    patients.add(patient);
    this.changed(grantee);
    const key = keyOf(patient, grantee, consent);
    let keys = this.byConsent.get(consent);
    if (!keys) this.byConsent.set(consent, (keys = new Set()));
    keys.add(key);
    if (record.status === 'revoked') {
      // Confirms a local deny only when committed after the grant it revoked (not an older revocation replayed).
      const pending = this.pendingRevocations.get(key);
      if (pending && blockNumber > pending.grantBlock) this.removePending([key]);
    }
    this.scheduleCheckpoint();
  }

  /** put() again once the shared index has read what it holds for the record's grant (once: then it is not ours). */
  private catchUpThenPut(record: LedgerGrant, blockNumber: number): void {
    this.ids.catchUp!(record.grantId).then(
      (found) => {
        if (found && !this.closed) this.put(record, blockNumber, undefined, true);
      },
      (err: Error) => this.log.warn({ err: err.message }, 'grant index not read'),
    );
  }

  /** Does the record's patient tag name the patient the index says (made with that patient's npid)? */
  private tagMatches(link: GrantLink, record: LedgerGrant): boolean {
    const npid = this.ids.existingNpidOf(link.patientReference);
    return npid !== undefined && patientTag(npid, 'grant', record.grantId) === record.patientTag;
  }

  private cached(key: string): CachedGrant | undefined {
    const [patient, grantee, consent] = key.split('\u0000');
    return this.grants.get(patient)?.get(grantee)?.get(consent);
  }

  // Decisions (the hot path)

  /**
   * May one of `grantees` (FHIR references: the caller's Practitioner and Organization) read `resourceType` of
   * `patient` (`Patient/x`) now?
   */
  allows(patient: string, grantees: readonly string[], resourceType: string): boolean {
    const allowed = this.decide(patient, grantees, resourceType);
    if (allowed) this.decisions.permit++;
    else this.decisions.deny++;
    return allowed;
  }

  private decide(patient: string, grantees: readonly string[], resourceType: string): boolean {
    if (this.mismatch) return false;
    const patientPseudonym = this.pseudonyms.existingPseudonymOf(patient);
    if (!patientPseudonym) return false;
    const byGrantee = this.grants.get(patientPseudonym);
    if (!byGrantee) return false;
    const at = this.now();
    for (const grantee of grantees) {
      const granteePseudonym = this.pseudonyms.existingPseudonymOf(grantee);
      if (!granteePseudonym) continue;
      const byConsent = byGrantee.get(granteePseudonym);
      if (!byConsent) continue;
      for (const cached of byConsent.values()) if (this.grantInForce(cached, resourceType, at)) return true;
    }
    return false;
  }

  /** Local denies recorded (durably) before their Consent is stored: the grantees' scope caches must drop them. */
  private addPending(entries: PendingRevocation[]): void {
    this.pendingRevocations.add(entries);
    for (const entry of entries) this.changed(entry.grantee);
  }

  /** Local denies the ledger now holds (or a rollback lifted). */
  private removePending(keys: readonly string[]): void {
    const shared = this.options.sharedRevocations;
    if (shared) {
      const entries = keys.flatMap((key) => this.pendingRevocations.get(key) ?? []);
      // Another replica may have removed them already; a row left behind is dropped by the next confirmation.
      shared
        .remove(entries)
        .catch((err: Error) => this.log.warn({ err: err.message }, 'shared revocations not removed'));
    }
    this.pendingRevocations.remove(keys);
    for (const key of keys) this.changed(granteeOfKey(key));
  }

  private changed(granteePseudonym: string): void {
    this.granteeGeneration.set(granteePseudonym, (this.granteeGeneration.get(granteePseudonym) ?? 0) + 1);
  }

  /** The grant state of these grantees, as a string that changes when any of their grants does. */
  private stampOf(grantees: readonly string[]): string {
    let stamp = '';
    for (const grantee of grantees) {
      const pseudonym = this.pseudonyms.existingPseudonymOf(grantee);
      stamp += `${pseudonym === undefined ? -1 : (this.granteeGeneration.get(pseudonym) ?? 0)},`;
    }
    return stamp;
  }

  /** The one rule allows() and patientsAllowing() apply to a grant record. */
  private grantInForce(cached: CachedGrant, resourceType: string, at: number): boolean {
    const { record } = cached;
    // A grant by handle (to another member's participant, or this one's) opens network requests only, never a
    // read here: its key already keeps it out of local lookups; this holds even if one reached them.
    if (record.granteeMsp !== record.homeMsp || (cached.grantee ?? record.grantee) !== record.grantee)
      return false;
    if (
      this.pendingRevocations.size > 0 &&
      this.pendingRevocations.has(keyOf(cached.patient, record.grantee, cached.consent))
    )
      return false;
    // This service's own users act for treatment: a grant for other purposes only opens network requests.
    return grantAllows(record, resourceType, at);
  }

  /**
   * Every patient (`Patient/x`) for whom allows(patient, grantees, resourceType) holds now: what a search may be
   * narrowed to inside its query (AccessPolicy.readScope). Kept per (grantees, type) until a grant or a pending
   * revocation changes, or the clock passes the next bound of a period of one of the grants looked at.
   */
  patientsAllowing(grantees: readonly string[], resourceType: string): readonly string[] | undefined {
    if (this.mismatch) return []; // every decision is refused (the ledger lacks what this service committed)
    const referenceOf = this.pseudonyms.referenceOf?.bind(this.pseudonyms);
    if (!referenceOf) return undefined;
    const at = this.now();
    const cacheKey = `${grantees.join('\u0000')}\u0001${resourceType}`;
    const hit = this.allowingCache.get(cacheKey);
    // Valid from the instant it was made (a clock set back makes it again) to the next bound of a period.
    const stamp = this.stampOf(grantees);
    if (hit && hit.stamp === stamp && at >= hit.from && at < hit.until) return hit.patients;
    let until = Infinity;
    const found = new Set<string>();
    for (const grantee of grantees) {
      const granteePseudonym = this.pseudonyms.existingPseudonymOf(grantee);
      if (!granteePseudonym) continue;
      for (const patientPseudonym of this.patientsOfGrantee.get(granteePseudonym) ?? []) {
        if (found.has(patientPseudonym)) continue;
        const byConsent = this.grants.get(patientPseudonym)?.get(granteePseudonym);
        for (const cached of byConsent?.values() ?? []) {
          until = Math.min(until, nextPeriodBound(cached.record, at));
          if (this.grantInForce(cached, resourceType, at)) {
            found.add(patientPseudonym);
            break;
          }
        }
      }
    }
    const patients: string[] = [];
    for (const pseudonym of found) {
      const reference = referenceOf(pseudonym);
      if (reference !== undefined) patients.push(reference);
    }
    patients.sort();
    if (this.allowingCache.size >= 1000) this.allowingCache = new Map();
    this.allowingCache.set(cacheKey, {
      stamp,
      from: at,
      until,
      patients: Object.freeze(patients),
    });
    return patients;
  }

  /**
   * The grants of a home patient (`Patient/x`) naming one network participant by its handle (its pseudonym at its
   * member's service and that member's MSP, this one's included), from the cache, whatever their status: the home's
   * `$network-locate` applies grantAllows. A grant this service has withdrawn and the ledger not yet confirmed (the
   * revocation outbox) is reported `revoked` at once. None while the ledger does not hold what this service
   * committed.
   */
  networkGrantsOf(patientReference: string, grantee: string, granteeMsp: string): LedgerGrant[] {
    if (this.mismatch) return [];
    const patient = this.pseudonyms.existingPseudonymOf(patientReference);
    const key = handleKeyOf(grantee, granteeMsp);
    const byConsent = patient === undefined ? undefined : this.grants.get(patient)?.get(key);
    if (!byConsent) return [];
    const out: LedgerGrant[] = [];
    for (const cached of byConsent.values()) {
      const { record } = cached;
      if (record.grantee !== grantee || record.granteeMsp !== granteeMsp) continue;
      const withdrawn = this.pendingRevocations.has(keyOf(cached.patient, key, cached.consent));
      out.push(withdrawn && record.status === 'active' ? { ...record, status: 'revoked' } : record);
    }
    return out;
  }

  /** The grants (as committed, revoked ones included) of a patient, from the cache. */
  grantsOf(patient: string): LedgerGrant[] {
    const pseudonym = this.pseudonyms.existingPseudonymOf(patient);
    const out: LedgerGrant[] = [];
    for (const byConsent of this.grants.get(pseudonym ?? '')?.values() ?? [])
      for (const { record } of byConsent.values()) out.push(record);
    return out;
  }

  // Writes

  /**
   * Makes this service the patient's home: gives the patient a network id (npid), kept here, never on the ledger.
   * Idempotent. Nothing goes to the ledger (a patient record there would be one more value linking the patient's
   * records); only the home holds the npid, so only it can write grants others match to the patient.
   */
  async registerPatient(patient: string): Promise<void> {
    await this.ids.npidOf(patient);
  }

  /**
   * Before prepareConsent: makes the pseudonyms it will use (the Consent's, its patient's, its grantees' by
   * reference), which a shared resolver must agree with every replica first.
   */
  async preparePseudonyms(consent: string, target: ConsentGrants | undefined): Promise<void> {
    if (!this.pseudonyms.prepare) return;
    const references = [consent];
    if (target) references.push(target.patient);
    for (const grant of target?.grants ?? [])
      if (grant.granteeMsp === undefined) references.push(grant.grantee);
    await this.pseudonyms.prepare(references);
  }

  /** The patient's network id, if this service is the patient's home (never logged, never on the ledger). */
  networkIdOf(patient: string): string | undefined {
    return this.ids.existingNpidOf(patient);
  }

  /**
   * Phase 1 of a Consent write, before it is stored: refuses at once every grant of this Consent that the new
   * version removes or changes (fail closed). Returns the work to do once the Consent is stored (phase 2), and a
   * rollback if it is not.
   */
  prepareConsent(
    consent: string,
    target: ConsentGrants | undefined,
    actor: { pseudonym: string; inPerson: boolean },
  ): PreparedConsent {
    const consentPseudonym = this.pseudonyms.pseudonymOf(consent);
    const desired = this.desiredGrants(consentPseudonym, target);
    const { revoke, submitGrants } = this.grantChanges(consentPseudonym, desired);
    const newlyPending = this.refuseAtOnce(revoke, actor);
    return {
      revocations: newlyPending.map((key) => this.pendingRevocations.get(key)!),
      rollback: () => this.removePending(newlyPending),
      commit: () => this.commitConsent({ revoke, submitGrants }, target, actor),
    };
  }

  /** The grants the new version of a Consent asks for, by ledger key (none when it grants nothing). */
  private desiredGrants(
    consentPseudonym: string,
    target: ConsentGrants | undefined,
  ): Map<string, ConsentGrant> {
    const patientPseudonym = target ? this.pseudonyms.pseudonymOf(target.patient) : undefined;
    const desired = new Map<string, ConsentGrant>();
    // A participant named by its handle keeps its pseudonym as given (its own service's), under its handle; a
    // participant of this member too: local reads follow grants by reference, a handle opens network requests only.
    for (const grant of target?.grants ?? []) {
      const grantee =
        grant.granteeMsp === undefined
          ? this.pseudonyms.pseudonymOf(grant.grantee)
          : handleKeyOf(grant.grantee, grant.granteeMsp);
      desired.set(keyOf(patientPseudonym!, grantee, consentPseudonym), grant);
    }
    return desired;
  }

  /** What changes on the ledger: the active grants of this Consent to revoke, and the grants to submit. */
  private grantChanges(consentPseudonym: string, desired: Map<string, ConsentGrant>): ConsentChanges {
    const revoke: string[] = [];
    const submitGrants: [string, ConsentGrant][] = [];
    for (const key of this.byConsent.get(consentPseudonym) ?? []) {
      const cached = this.cached(key);
      if (!cached || cached.record.status !== 'active') continue;
      const wanted = desired.get(key);
      if (!wanted || !sameGrant(wanted, cached.record)) revoke.push(key);
    }
    for (const [key, grant] of desired) {
      const cached = this.cached(key);
      if (
        !cached ||
        cached.record.status !== 'active' ||
        !sameGrant(grant, cached.record) ||
        this.pendingRevocations.has(key)
      )
        submitGrants.push([key, grant]);
    }
    return { revoke, submitGrants };
  }

  /** Refuses the grants to revoke from now on, durably; returns those newly pending (the rollback removes them). */
  private refuseAtOnce(revoke: string[], actor: { pseudonym: string; inPerson: boolean }): string[] {
    const newlyPending = revoke.filter((key) => !this.pendingRevocations.has(key));
    // Durable before the Consent version is stored (throws, and nothing is stored, when it cannot be written).
    this.addPending(
      newlyPending.map((key): PendingRevocation => {
        const [patient, grantee, consentId] = key.split('\u0000');
        return {
          patient,
          grantee,
          consent: consentId,
          actor: actor.pseudonym,
          inPerson: actor.inPerson,
          grantBlock: this.cached(key)?.blockNumber ?? -1,
        };
      }),
    );
    return newlyPending;
  }

  /** Phase 2, once the Consent is stored: the revocations and grants go to the ledger. */
  private commitConsent(
    { revoke, submitGrants }: ConsentChanges,
    target: ConsentGrants | undefined,
    actor: { pseudonym: string; inPerson: boolean },
  ): Promise<void> {
    return this.serialised(async () => {
      // Removed grants are revoked now, or by the outbox once the ledger is back: never an error.
      const changed = new Set(submitGrants.map(([key]) => key));
      for (const key of revoke) {
        if (changed.has(key)) continue;
        const pending = this.pendingRevocations.get(key);
        if (pending && (await this.sendRevocation(key, pending)) !== 'sent') this.scheduleRevocations();
      }
      try {
        await this.submitGrants(submitGrants, target, actor);
      } catch (err) {
        // A changed grant whose new terms did not commit: its old terms stay refused, and are revoked.
        if (this.pendingRevocations.size > 0) this.scheduleRevocations();
        throw err;
      }
    });
  }

  /** Runs ledger writes of consent one at a time (a failed one does not stop the next). */
  private serialised(work: () => Promise<void>): Promise<void> {
    const run = this.ledgerWrites.then(work);
    this.ledgerWrites = run.catch(() => undefined);
    return run;
  }

  /** Changed grants are overwritten by their new GrantAccess (in force once committed). */
  private async submitGrants(
    submitGrants: [string, ConsentGrants['grants'][number]][],
    target: ConsentGrants | undefined,
    actor: { pseudonym: string; inPerson: boolean },
  ): Promise<void> {
    if (submitGrants.length > 0) await this.registerPatient(target!.patient);
    // Who granted stays in the Consent's history here (on the ledger a patient's own pseudonym would link the
    // patient's grants): the ledger keeps only whether it was recorded in person.
    for (const [key, grant] of submitGrants) {
      const [patient, grantee, consentId] = key.split('\u0000');
      const link: GrantLink = { patientReference: target!.patient, patient, grantee, consent: consentId };
      // Durable before the grant is on the ledger, so its event always finds its patient here.
      const grantId = await this.ids.grantIdOf(link);
      const argument: Record<string, unknown> = {
        grantId,
        patientTag: patientTag(await this.ids.npidOf(target!.patient), 'grant', grantId),
        // A participant named by its handle: its pseudonym at its own service, as given.
        grantee: grant.granteeMsp === undefined ? grantee : grant.grantee,
        // A grantee named by reference is this service's participant (its own organisation's MSP).
        granteeMsp: grant.granteeMsp ?? this.options.mspId,
        classes: grant.classes,
        deny: grant.deny,
        purpose: grant.purpose,
        inPerson: actor.inPerson,
      };
      if (grant.period) argument.period = grant.period;
      const result = await this.ledger.submit('consent:GrantAccess', [JSON.stringify(argument)]);
      const committed = JSON.parse(result.result) as LedgerGrant;
      await this.ids.noteHomeMsp(committed.homeMsp);
      // Committed: in force from now (the changed grant's pending refusal ends with it).
      this.put(committed, result.blockNumber, link);
      this.noteCommitted(result.blockNumber, result.transactionId);
      this.removePending([key]);
    }
  }

  /**
   * Sends one pending revocation: 'sent' once the ledger holds it; otherwise it stays pending (and refused):
   * 'away' when the ledger could not be reached, 'refused' when the ledger said no (logged once per grant).
   */
  private async sendRevocation(
    key: string,
    pending: PendingRevocation,
  ): Promise<'sent' | 'away' | 'refused'> {
    const cached = this.cached(key);
    if (cached && cached.record.status === 'revoked' && cached.blockNumber > pending.grantBlock) {
      this.removePending([key]);
      return 'sent';
    }
    try {
      const grantId = this.ids.existingGrantIdOf(pending.patient, pending.grantee, pending.consent);
      // Not in the grant index: nothing this service can show revoked; kept (and refused), never dropped.
      if (grantId === undefined) throw new Error('the grant index has no grant for this revocation');
      const result = await this.ledger.submit('consent:RevokeAccess', [grantId]);
      this.put(JSON.parse(result.result) as LedgerGrant, result.blockNumber, pending);
      this.noteCommitted(result.blockNumber, result.transactionId);
      this.removePending([key]);
      return 'sent';
    } catch (err) {
      if (!(err instanceof LedgerTransactionError) || !err.retryable) {
        if (!this.refusedRevocations.has(key)) {
          this.refusedRevocations.add(key);
          this.log.error(
            { err: (err as Error).message },
            'the ledger refused a revocation; it stays in force here and is retried',
          );
        }
        return 'refused';
      }
      if (!this.revocationBacklogLogged) {
        this.revocationBacklogLogged = true;
        this.log.warn(
          { err: (err as Error).message, pending: this.pendingRevocations.size },
          'revocation in force here but not yet on the ledger; retrying until the ledger takes it',
        );
      }
      return 'away';
    }
  }

  /** Retries the outbox after `delayMs` (default: the current backoff), until it is empty. */
  private scheduleRevocations(delayMs = this.revocationBackoff.currentMs): void {
    if (this.revocationTimer || this.closed) return;
    this.revocationTimer = setTimeout(() => {
      this.revocationTimer = undefined;
      void this.serialised(async () => {
        let unsent = false;
        for (const pending of this.pendingRevocations.values()) {
          if (this.closed) return;
          const outcome = await this.sendRevocation(
            keyOf(pending.patient, pending.grantee, pending.consent),
            pending,
          );
          if (outcome === 'sent') continue;
          unsent = true;
          // The ledger is away: the rest waits for the next round. A refusal does not hold up the others.
          if (outcome === 'away') break;
        }
        if (unsent) {
          this.revocationBackoff.lengthen();
          this.scheduleRevocations();
          return;
        }
        if (this.revocationBacklogLogged) this.log.warn({}, 'pending revocations are on the ledger');
        this.revocationBacklogLogged = false;
        this.revocationBackoff.reset();
      });
    }, delayMs);
    this.revocationTimer.unref();
  }

  // Access records

  /** Queues an access record; they go to the ledger in batches, off the request's critical path. */
  recordAccess(record: AccessRecordInput): void {
    if (this.closed) return;
    this.accessQueue.push(record);
    if (this.accessQueue.length >= this.accessBatchSize) this.flushAccess();
    else if (!this.accessTimer) {
      this.accessTimer = setTimeout(() => this.flushAccess(), this.accessFlushMs);
      this.accessTimer.unref();
    }
  }

  /**
   * Sends the queued access records now; resolves when they are on the ledger, or kept for a retry. A ledger that is
   * away (a retryable error) never loses them: they go back to the front of the queue and are sent again with
   * backoff, logged once per outage. Only records the chaincode itself refuses are dropped (logged).
   */
  flushAccess(): Promise<void> {
    if (this.accessTimer) clearTimeout(this.accessTimer);
    this.accessTimer = undefined;
    const batch = this.accessQueue;
    this.accessQueue = [];
    if (batch.length === 0) return this.accessFlushing;
    this.accessFlushing = this.accessFlushing.then(async () => {
      for (let start = 0; start < batch.length; start += MAX_ACCESS_RECORDS_PER_TX) {
        const chunk = batch.slice(start, start + MAX_ACCESS_RECORDS_PER_TX);
        let records: Record<string, unknown>[] = [];
        try {
          // The patients' npids, made now if this is their first record (kept with the record for a retry; a
          // shared index that cannot be reached is retried as a ledger that is away).
          for (const r of chunk) r.npid ??= await this.ids.npidOf(r.patient);
          records = chunk.map((r) => this.blinded(r));
          await this.ledger.submit('consent:RecordAccess', [JSON.stringify(records)]);
        } catch (err) {
          if (err instanceof LedgerTransactionError && !err.retryable) {
            this.log.error({ code: err.code, count: records.length }, 'access records refused by the ledger');
            continue;
          }
          // Kept, in order, ahead of what was queued meanwhile; sent again once the ledger answers.
          this.accessQueue = batch.slice(start).concat(this.accessQueue);
          if (!this.accessBacklogLogged)
            this.log.warn(
              { count: this.accessQueue.length },
              'access records wait for the ledger (kept and retried)',
            );
          this.accessBacklogLogged = true;
          this.scheduleAccessRetry();
          return;
        }
      }
      if (this.accessBacklogLogged && this.accessQueue.length === 0) {
        this.accessBacklogLogged = false;
        this.accessRetry.reset();
        this.log.warn({}, 'access records are on the ledger again');
      }
    });
    return this.accessFlushing;
  }

  /**
   * The ledger form of an access record: a fresh record id, the patient as a tag keyed with the patient's npid,
   * the details sealed with it. Made again at each attempt (a retried batch gets new ids: never a duplicate key).
   */
  private blinded(input: AccessRecordInput): Record<string, unknown> {
    const npid = input.npid!;
    const recordId = newRecordId();
    const details: AccessDetails = {
      accessor: input.accessor,
      interaction: input.interaction,
      resourceType: input.resourceType,
      outcome: input.outcome,
      at: input.at,
      from: input.from,
      count: input.count ?? 1,
      wrongLink: input.wrongLink,
      seq: `${String(this.now()).padStart(15, '0')}.${String(++this.accessSeq).padStart(12, '0')}`,
    };
    const record: Record<string, unknown> = {
      recordId,
      patientTag: patientTag(npid, 'access', recordId),
      sealed: sealDetails(npid, recordId, details),
    };
    if (input.grantId !== undefined) record.grantTag = grantTag(npid, recordId, input.grantId);
    if (input.accessorMsp !== undefined) record.accessorMsp = input.accessorMsp;
    if (input.purpose !== undefined) record.purpose = input.purpose;
    return record;
  }

  /** Access records kept while the ledger is away (for readiness and metrics). */
  get accessBacklog(): number {
    return this.accessQueue.length;
  }

  private scheduleAccessRetry(): void {
    if (this.closed || this.accessTimer) return;
    this.accessTimer = setTimeout(() => void this.flushAccess(), this.accessRetry.next());
    this.accessTimer.unref();
  }

  /**
   * Who accessed this patient's data, from every member (the ledger), oldest first. The records name no patient:
   * this reads every access record on the ledger and keeps those whose tag the patient's npid makes (one HMAC per
   * record; docs/access.md gives the cost), then opens their sealed details.
   */
  async listAccess(patient: string): Promise<AccessEntry[]> {
    const npid = this.ids.existingNpidOf(patient);
    if (!npid) return [];
    const out: (AccessEntry & { seq: string })[] = [];
    let after = '';
    for (;;) {
      const page = JSON.parse(
        await this.ledger.evaluate('consent:ListAccess', [after, String(ACCESS_PAGE)]),
      ) as AccessPage;
      for (const record of page.records) {
        if (record.patientTag !== patientTag(npid, 'access', record.recordId)) continue;
        const details = openDetails(npid, record.recordId, record.sealed) as AccessDetails | undefined;
        if (!details) continue;
        out.push(accessEntry(record, details));
      }
      if (page.next === undefined) break;
      after = page.next;
    }
    out.sort((a, b) =>
      a.time < b.time ? -1 : a.time > b.time ? 1 : a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0,
    );
    return out.map(({ seq: _seq, ...entry }) => entry);
  }

  /** Grants of a patient as committed on the ledger (not the cache): this home's grant ids, read one by one. */
  async listGrants(patient: string): Promise<LedgerGrant[]> {
    const npid = this.ids.existingNpidOf(patient);
    if (!npid) return [];
    const out: LedgerGrant[] = [];
    for (const grantId of this.ids.grantIdsOf(patient)) {
      const record = JSON.parse(
        await this.ledger.evaluate('consent:ReadGrant', [grantId]),
      ) as LedgerGrant | null;
      if (record && record.patientTag === patientTag(npid, 'grant', grantId)) out.push(record);
    }
    return out;
  }

  /**
   * How far the consent cache is behind the ledger (readiness, docs/configuration.md): the last block whose events
   * it applied, the ledger's last block, and whether the event feed still runs. Blocks without events of this
   * chaincode (config blocks, invalidated transactions, other chaincodes on a shared channel) count as behind.
   * Throws when the ledger cannot be reached.
   */
  async lag(): Promise<{ following: boolean; seenBlock: number; tipBlock: number; behind: number }> {
    const tipBlock = (await this.ledger.height()) - 1;
    const seenBlock = this.nextBlock;
    const behind = Math.max(0, tipBlock - seenBlock);
    if (behind === 0) this.behindSince = undefined;
    else this.behindSince ??= this.now();
    return { following: !this.feedStopped && !this.closed, seenBlock, tipBlock, behind };
  }

  /**
   * How long the consent cache has been behind the ledger, in seconds (0 when it holds every block the ledger has;
   * Infinity when the event feed stopped): measured from the first time this service saw a block it had not yet
   * applied (each call, and each readiness check, looks), so a revocation's block counts from when this member's
   * peer had it. Other members' requests are refused while this exceeds --network-max-lag-seconds. Throws when
   * the ledger cannot be read.
   */
  async secondsBehind(): Promise<number> {
    const { following, behind } = await this.lag();
    if (!following) return Infinity;
    return behind === 0 || this.behindSince === undefined ? 0 : (this.now() - this.behindSince) / 1000;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flushAccess();
    this.closed = true;
    await this.stopSharedRevocations?.();
    if (this.revocationTimer) clearTimeout(this.revocationTimer);
    this.revocationTimer = undefined;
    if (this.verifyTimer) clearTimeout(this.verifyTimer);
    this.verifyTimer = undefined;
    await this.ledgerWrites;
    this.stream?.close();
    await this.feeding;
    if (this.checkpointTimer) clearTimeout(this.checkpointTimer);
    this.checkpointTimer = undefined;
    this.saveCheckpoint();
  }
}

function accessEntry(record: LedgerAccessRecord, details: AccessDetails): AccessEntry & { seq: string } {
  const entry: AccessEntry & { seq: string } = {
    recordId: record.recordId,
    accessor: details.accessor,
    interaction: details.interaction,
    outcome: details.outcome,
    at: details.at,
    count: details.count,
    seq: details.seq,
    mspId: record.custodianMsp,
    accessorMsp: record.accessorMsp,
    purpose: record.purpose,
    txId: record.txId,
    time: record.time,
  };
  if (details.resourceType !== undefined) entry.resourceType = details.resourceType;
  if (details.from !== undefined) entry.from = details.from;
  if (details.wrongLink !== undefined) entry.wrongLink = details.wrongLink;
  return entry;
}

/** The first bound (start or end of the grant's period or of a deny rule's) after `at`, in epoch ms. */
function nextPeriodBound(record: LedgerGrant, at: number): number {
  let next = Infinity;
  const consider = (text: string | undefined) => {
    if (text === undefined) return;
    const ms = Date.parse(text);
    if (ms > at && ms < next) next = ms;
  };
  consider(record.period?.start);
  consider(record.period?.end);
  for (const rule of record.deny) {
    consider(rule.period?.start);
    consider(rule.period?.end);
  }
  return next;
}

export interface PreparedConsent {
  /** The local denies this preparation added: stored with the Consent version when they are shared. */
  revocations: PendingRevocation[];
  /** After the Consent is stored: revocations and grants to the ledger (grants in force once committed). */
  commit(): Promise<void>;
  /** The Consent was not stored: lift the refusals this preparation made. */
  rollback(): void;
}
