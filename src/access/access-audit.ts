/**
 * The audit of access decisions. Every FHIR request's decision is counted into an aggregate keyed by who (the
 * participant's pseudonym), what (interaction, method, path shape) and the outcome; inside it, the records touched
 * are counted per patient and per custodian (the organisation whose records they are). Per flush window (250 ms by
 * default) each aggregate becomes one FHIR AuditEvent per (patient, custodian) pair: it names exactly that patient
 * (its only compartment) and has that custodian (StoredVersion.custodian), so only the patient and the custodian
 * whose disclosure it records may read it (access-policy.ts), never another grantee. Its `period`, request count
 * (`outcomeDesc`) and status are those of the requests that touched that pair only: what a caller did with other
 * custodians' (possibly hidden) records changes nothing in the events of its own organisation's records. Requests
 * that touched no patient make one AuditEvent with neither patient nor custodian (service admins only), so a refused
 * read of a hidden record and a read of an absent id leave the same trace for everyone but the custodian (and the
 * patient). Records of several patients are counted under no patient (their custodian's event only). Plus one ledger
 * access record per patient whose records were shown (consent:RecordAccess, with a count): disclosures only, since
 * every ledger member reads them. Per-request AuditEvents would cost a store write per read (the store writes
 * ~2,000/s; reads run at ~6,000/s); the aggregate keeps every decision accounted for at a bounded cost, written off
 * the request's critical path.
 *
 * An AuditEvent is never dropped: when the store cannot take them (disk full, I/O errors) they stay in memory and
 * are retried with backoff (logged once when it starts, once when they are stored again); past `maxKept`
 * events waiting, `canKeep()` is false and the service refuses requests with 503 until they are stored.
 */
import type { Caller } from '../fhir/interactions/access-policy.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import type { IndexEntry, ResourceStore, WriteRequest } from '../fhir/store/resource-store.js';
import type { AccessRecordInput } from '../consent/consent-service.js';
import { newResourceId } from '../fhir/interactions/ids.js';
import { storageFaultOf } from '../fhir/store/storage-fault.js';
import { DoublingBackoff } from '../platform/backoff.js';

export const PARTICIPANT_SYSTEM = 'urn:hie-ledger:participant';

/** What a request did with one custodian's records of one patient. */
export interface TouchCounts {
  allowed: number;
  refused: number;
  /** Types of the records decided on (shown or withheld). */
  types: Set<string>;
  /** Types of the records shown. */
  shown: Set<string>;
}

/**
 * patient (`Patient/id`, '' for records of several patients) -> custodian (`Organization/id`, '' when none) ->
 * counts: what a request touched.
 */
export type Touched = Map<string, Map<string, TouchCounts>>;

/** Adds one decision on a version of `custodian` (undefined: none) belonging to `patient` to `touched`. */
export function touch(
  touched: Touched,
  patient: string,
  custodian: string | undefined,
  allowed: boolean,
  resourceType: string | undefined,
): void {
  let byCustodian = touched.get(patient);
  if (!byCustodian) touched.set(patient, (byCustodian = new Map()));
  const key = custodian ?? '';
  let counts = byCustodian.get(key);
  if (!counts)
    byCustodian.set(key, (counts = { allowed: 0, refused: 0, types: new Set(), shown: new Set() }));
  if (allowed) counts.allowed++;
  else counts.refused++;
  if (resourceType) {
    counts.types.add(resourceType);
    if (allowed) counts.shown.add(resourceType);
  }
}

/** What one request touched and decided (CallerAccessPolicy collects it). */
export interface RequestAudit {
  caller: Caller;
  interaction: string;
  method: string;
  /** Path of the request under the FHIR base, without the query (never tokens). */
  path: string;
  status: number;
  touched: ReadonlyMap<string, ReadonlyMap<string, Readonly<TouchCounts>>>;
  refused: boolean;
  /** When it was answered (epoch ms); now when absent. Made an instant only when the aggregate is written. */
  at?: number;
  /** The recorded reason for access (X-Access-Reason), if one was given. */
  reason?: string;
}

export interface AuditRecorderOptions {
  store: ResourceStore;
  indexEntries?: (resource: FhirResource) => IndexEntry[];
  /** The integrity hook (WriteRequest.anchor), so AuditEvents are anchored like every stored version. */
  anchor?: WriteRequest['anchor'];
  /** Ledger access records (ConsentService.recordAccess); absent without a ledger. */
  recordAccess?: (record: AccessRecordInput) => void;
  batchSize?: number;
  flushMs?: number;
  /** Most aggregates kept in memory while the store refuses them; beyond, requests are refused (canKeep). */
  maxKept?: number;
  /** First retry delay after the store refused a flush (doubles up to 30 s). */
  retryMs?: number;
  log?: { error(obj: object | string, msg?: string): void; info?(obj: object | string, msg?: string): void };
}

const ACTION: Record<string, string> = { POST: 'C', PUT: 'U', PATCH: 'U', DELETE: 'D' };

/** Requests of an aggregate that touched one thing (a pair, a patient, or nothing): their count and span. */
interface Span {
  requests: number;
  /** Epoch ms of the first and last request counted. */
  from: number;
  to: number;
  /** The status of the first request counted (all share the aggregate's status class). */
  status: number;
}

interface PairSum extends Span, TouchCounts {}

interface PatientSum {
  custodians: Map<string, PairSum>;
  /** The requests that showed some of this patient's records, and the types shown: what the ledger records. */
  disclosures?: Span;
  shown: Set<string>;
}

interface Aggregate {
  first: RequestAudit;
  /** Requests that touched no patient's record. */
  untouched?: Span;
  patients: Map<string, PatientSum>;
}

function newSpan(at: number, status: number): Span & TouchCounts {
  return {
    requests: 0,
    from: at,
    to: at,
    status,
    allowed: 0,
    refused: 0,
    types: new Set(),
    shown: new Set(),
  };
}

/**
 * One AuditEvent: the requests of `span`, about `patient`'s records of one custodian (`counts`), or about no
 * patient. A patient caller is named by reference only in events about themselves: to any other reader (another
 * patient, a custodian) it is a pseudonym.
 */
function auditEvent(
  entry: RequestAudit,
  span: Span,
  about?: { patient?: string; counts: TouchCounts },
): FhirResource {
  // Outcome codes: 0 success, 4 minor failure (refused / not found), 8 serious failure.
  const outcome = span.status >= 500 ? '8' : span.status >= 400 || entry.refused ? '4' : '0';
  const who: Record<string, unknown> = {
    identifier: { system: PARTICIPANT_SYSTEM, value: entry.caller.participant },
  };
  if (entry.caller.fhirUser && (entry.caller.role !== 'patient' || entry.caller.fhirUser === about?.patient))
    who.reference = entry.caller.fhirUser;
  const agents: Record<string, unknown>[] = [
    {
      type: { coding: [{ system: 'urn:hie-ledger:role', code: entry.caller.role }] },
      who,
      requestor: true,
    },
  ];
  if (entry.caller.organization)
    agents.push({ who: { reference: entry.caller.organization }, requestor: false });
  const resource: Record<string, unknown> = {
    resourceType: 'AuditEvent',
    type: {
      system: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
      code: 'rest',
      display: 'RESTful Operation',
    },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: entry.interaction }],
    action: ACTION[entry.method] ?? (entry.interaction.startsWith('search') ? 'E' : 'R'),
    period: { start: new Date(span.from).toISOString(), end: new Date(span.to).toISOString() },
    recorded: new Date(span.to).toISOString(),
    outcome,
    outcomeDesc: `${span.requests} x ${entry.method} ${entry.path} -> ${span.status}`,
    agent: agents,
    source: {
      observer: { display: 'hie-ledger' },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }],
    },
  };
  if (about) resource.entity = [auditEntity(about)];
  if (entry.reason) resource.purposeOfEvent = [{ text: entry.reason }];
  return resource as FhirResource;
}

/** The AuditEvent's entity: the patient whose records were touched, with what was shown and withheld. */
function auditEntity(about: { patient?: string; counts: TouchCounts }): Record<string, unknown> {
  const t = about.counts;
  const description = `${[...t.types].sort().join(' ')}: ${t.allowed} shown, ${t.refused} withheld`;
  return about.patient === undefined
    ? // Records of several patients: counted here, in the custodian's event, and named by no patient.
      { description: `${description} (records of several patients)` }
    : {
        what: { reference: about.patient },
        type: {
          system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type',
          code: '1',
          display: 'Person',
        },
        role: {
          system: 'http://terminology.hl7.org/CodeSystem/object-role',
          code: '1',
          display: 'Patient',
        },
        description,
      };
}

/** The first path segment (a resource type, `_history`, `metadata`...) and an operation name: never ids. */
export function pathShape(path: string): string {
  // By hand rather than split/filter/find: this runs for every audited request.
  let first: string | undefined;
  let operation: string | undefined;
  for (let i = 0; i < path.length;) {
    let end = path.indexOf('/', i);
    if (end < 0) end = path.length;
    if (end > i) {
      if (first === undefined) first = path.slice(i, end);
      else if (operation === undefined && path.charCodeAt(i) === 36 /* $ */) operation = path.slice(i, end);
    }
    i = end + 1;
  }
  return `/${first ?? ''}${operation ? `/${operation}` : ''}`;
}

/** One AuditEvent to store: the resource, its one patient (or none) and its custodian. */
interface KeptAuditEvent {
  resource: FhirResource;
  patients: string[];
  custodian?: string;
}

/** The ledger's access records of a batch: one per patient whose records were shown, per aggregate. */
function recordDisclosures(batch: Aggregate[], recordAccess: (record: AccessRecordInput) => void): void {
  for (const aggregate of batch) {
    const interaction =
      aggregate.first.interaction
        .toLowerCase()
        .replace(/[^a-z0-9$-]/g, '-')
        .slice(0, 40) || 'request';
    for (const [patient, sum] of aggregate.patients) {
      // Only disclosures go on the ledger, which every member reads: a refused touch of a record the caller may
      // not see leaves no trace there, as a read of an absent id leaves none. Refusals stay in the AuditEvents
      // of the patient and the custodian. Records of several patients: in their custodian's AuditEvent only.
      const disclosures = sum.disclosures;
      if (patient === '' || !disclosures) continue;
      recordAccess({
        patient,
        accessor: aggregate.first.caller.participant,
        interaction,
        resourceType: sum.shown.size === 1 ? [...sum.shown][0] : undefined,
        outcome: 'allowed',
        at: new Date(disclosures.to).toISOString(),
        from: new Date(disclosures.from).toISOString(),
        count: disclosures.requests,
      });
    }
  }
}

/** The AuditEvents of a batch: one per aggregate for what touched no patient, one per patient and custodian. */
function auditEventsOf(batch: Aggregate[]): KeptAuditEvent[] {
  const events: KeptAuditEvent[] = [];
  for (const aggregate of batch) {
    if (aggregate.untouched)
      events.push({ resource: auditEvent(aggregate.first, aggregate.untouched), patients: [] });
    for (const [patient, sum] of aggregate.patients) {
      for (const [custodian, pair] of sum.custodians) {
        events.push({
          resource: auditEvent(aggregate.first, pair, {
            patient: patient === '' ? undefined : patient,
            counts: pair,
          }),
          patients: patient === '' ? [] : [patient],
          custodian: custodian === '' ? undefined : custodian,
        });
      }
    }
  }
  return events;
}

export class AuditRecorder {
  private pending = new Map<string, Aggregate>();
  /** The previous request's aggregate and what keyed it. */
  private last: { entry: RequestAudit; statusClass: number; key: string; aggregate: Aggregate } | undefined;
  private timer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly flushMs: number;
  private readonly maxAggregates: number;
  /** AuditEvents the store refused: kept, written before newer ones at the next flush. */
  private kept: KeptAuditEvent[] = [];
  private readonly maxKept: number;
  private readonly retryBackoff: DoublingBackoff;
  private retryTimer?: NodeJS.Timeout;
  /** The store is refusing AuditEvents (logged once when it starts and once when it ends). */
  private failing = false;

  constructor(private readonly options: AuditRecorderOptions) {
    this.flushMs = options.flushMs ?? 1000;
    this.maxAggregates = options.batchSize ?? 500;
    this.maxKept = options.maxKept ?? 100_000;
    this.retryBackoff = new DoublingBackoff(options.retryMs ?? 1000, 30_000);
  }

  /** Can another request's audit be kept? False while too many AuditEvents wait for the store: refuse requests. */
  canKeep(): boolean {
    return this.kept.length + this.pending.size < this.maxKept;
  }

  /** Audit records waiting for the store: aggregates not yet flushed, and AuditEvents refused and kept for a retry. */
  get backlog(): number {
    return this.kept.length + this.pending.size;
  }

  /** Counts one request's decisions into its aggregate; returns at once. */
  record(entry: RequestAudit): void {
    if (this.closed) return;
    const at = entry.at ?? Date.now();
    const statusClass = entry.status >= 500 ? 5 : entry.status >= 400 ? 4 : 2;
    // A client repeating the same request (bulk reads) lands in the aggregate of its previous one: no key built.
    const last = this.last;
    let aggregate =
      last &&
      last.entry.caller === entry.caller &&
      last.entry.path === entry.path &&
      last.entry.interaction === entry.interaction &&
      last.entry.method === entry.method &&
      last.statusClass === statusClass &&
      last.entry.refused === entry.refused &&
      last.entry.reason === entry.reason &&
      this.pending.get(last.key) === last.aggregate
        ? last.aggregate
        : undefined;
    if (!aggregate) aggregate = this.aggregateFor(entry, statusClass, at);
    if (entry.touched.size === 0) {
      const span = (aggregate.untouched ??= newSpan(at, entry.status));
      span.requests++;
      span.to = at;
    }
    // Counted per (patient, custodian): each AuditEvent spans only the requests of its own pair.
    for (const [patient, byCustodian] of entry.touched) {
      let sum = aggregate.patients.get(patient);
      if (!sum) aggregate.patients.set(patient, (sum = { custodians: new Map(), shown: new Set() }));
      let disclosed = false;
      for (const [custodian, t] of byCustodian) {
        let pair = sum.custodians.get(custodian);
        if (!pair) sum.custodians.set(custodian, (pair = newSpan(at, entry.status)));
        pair.requests++;
        pair.to = at;
        pair.allowed += t.allowed;
        pair.refused += t.refused;
        for (const type of t.types) pair.types.add(type);
        for (const type of t.shown) {
          pair.shown.add(type);
          sum.shown.add(type);
        }
        if (t.allowed > 0) disclosed = true;
      }
      if (disclosed) {
        const span = (sum.disclosures ??= newSpan(at, entry.status));
        span.requests++;
        span.to = at;
      }
    }
    if (this.pending.size >= this.maxAggregates) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  /**
   * The aggregate of this caller, interaction, path shape and outcome. What the request touched is not part of the
   * key: whether it also touched records the caller may not see must not split the events of those it may.
   */
  private aggregateFor(entry: RequestAudit, statusClass: number, at: number): Aggregate {
    const path = pathShape(entry.path);
    const key =
      `${entry.caller.participant}\u0000${entry.interaction}\u0000${entry.method}\u0000${path}\u0000` +
      `${statusClass}\u0000${entry.refused}\u0000${entry.reason ?? ''}`;
    let aggregate = this.pending.get(key);
    if (!aggregate) {
      // Object.assign, not a spread and more properties (docs/architecture.md, hot paths).
      const first: RequestAudit = Object.assign({}, entry, { path, at, touched: new Map() });
      aggregate = { first, patients: new Map() };
      this.pending.set(key, aggregate);
    }
    this.last = { entry, statusClass, key, aggregate };
    return aggregate;
  }

  /** Writes the pending aggregates: AuditEvents (one store transaction) and ledger access records. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = [...this.pending.values()];
    this.pending = new Map();
    if (batch.length === 0 && this.kept.length === 0) return this.flushing;
    const { recordAccess } = this.options;
    if (recordAccess) recordDisclosures(batch, recordAccess);
    const events = auditEventsOf(batch);
    this.flushing = this.flushing.then(() => this.storeEvents(events));
    return this.flushing;
  }

  /** Stores the AuditEvents in one transaction, after those refused before; refused again, they are kept. */
  private async storeEvents(events: KeptAuditEvent[]): Promise<void> {
    const { store, indexEntries } = this.options;
    // Those refused before go first (their ledger access records were sent when they were counted).
    const toStore = this.kept.length > 0 ? this.kept.concat(events) : events;
    this.kept = [];
    if (toStore.length === 0) return;
    try {
      await store.transaction(async (tx) => {
        for (const event of toStore) {
          const id = newResourceId();
          const resource = { ...event.resource, id };
          await tx.write({
            resourceType: 'AuditEvent',
            id,
            resource,
            method: 'POST',
            patients: event.patients,
            // The custodian whose disclosure it records: with the patient, its only reader (besides admins).
            custodian: event.custodian,
            index: indexEntries ? indexEntries(resource) : undefined,
            anchor: this.options.anchor,
          });
        }
      });
      if (this.failing) {
        this.failing = false;
        this.retryBackoff.reset();
        this.options.log?.info?.({ stored: toStore.length }, 'audit events stored again');
      }
    } catch (err) {
      this.keepForRetry(toStore, err);
    }
  }

  /** Never dropped: kept in memory and retried with backoff; logged once per condition, not per attempt. */
  private keepForRetry(toStore: KeptAuditEvent[], err: unknown): void {
    this.kept = toStore;
    if (!this.failing) {
      this.failing = true;
      this.options.log?.error(
        { err: (err as Error).message, fault: storageFaultOf(err), kept: toStore.length },
        'audit events not stored: kept in memory and retried',
      );
    }
    if (!this.retryTimer && !this.closed) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        void this.flush();
      }, this.retryBackoff.next());
      this.retryTimer.unref();
    }
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.kept.length > 0) {
      this.options.log?.error(
        { kept: this.kept.length },
        'audit events still not stored at shutdown (the storage refuses them)',
      );
    }
  }
}
