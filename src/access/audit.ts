/**
 * The audit of access decisions. Every FHIR request's decision is counted into an aggregate keyed by who (the
 * participant's pseudonym), what (interaction, method, resource type, the patients touched), and the outcome;
 * each aggregate becomes, per flush window (250 ms by default), one FHIR AuditEvent (its `period` spans the
 * requests, the count is in `outcomeDesc`; stored in the compartments of the patients it touched, so a patient can
 * search who accessed their data) and one ledger access record per patient (consent:RecordAccess, with a count).
 * Per-request AuditEvents would cost a store write per read (the store writes ~2,000/s; reads run at ~6,000/s);
 * the aggregate keeps every decision accounted for at a bounded cost, written off the request's critical path.
 *
 * An AuditEvent is never dropped: when the store cannot take them (disk full, I/O errors) they stay in memory and
 * are retried with backoff (logged once when it starts, once when they are stored again); past `maxKept`
 * aggregates waiting, `canKeep()` is false and the service refuses requests with 503 until they are stored.
 */
import type { Caller } from './policy.js';
import type { FhirResource } from '../mapping/fhir-json.js';
import type { IndexEntry, ResourceStore, WriteRequest } from '../fhir/store/resource-store.js';
import type { AccessRecordInput } from '../ledger/consent.js';
import { newResourceId } from '../fhir/interactions/ids.js';
import { storageFaultOf } from '../fhir/http/errors.js';

export const PARTICIPANT_SYSTEM = 'urn:hie-ledger:participant';

/** What one request touched and decided (CallerAccessPolicy collects it). */
export interface RequestAudit {
  caller: Caller;
  interaction: string;
  method: string;
  /** Path of the request under the FHIR base, without the query (never tokens). */
  path: string;
  status: number;
  touched: ReadonlyMap<string, { allowed: number; refused: number; types: ReadonlySet<string> }>;
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

interface Aggregate {
  first: RequestAudit;
  count: number;
  /** Epoch ms of the first and last request counted. */
  from: number;
  to: number;
  touched: Map<string, { allowed: number; refused: number; types: Set<string> }>;
}

function auditEvent(aggregate: Aggregate): FhirResource {
  const entry = aggregate.first;
  // Outcome codes: 0 success, 4 minor failure (refused / not found), 8 serious failure.
  const outcome = entry.status >= 500 ? '8' : entry.status >= 400 || entry.refused ? '4' : '0';
  const agent: Record<string, unknown> = {
    type: { coding: [{ system: 'urn:hie-ledger:role', code: entry.caller.role }] },
    who: { identifier: { system: PARTICIPANT_SYSTEM, value: entry.caller.participant } },
    requestor: true,
  };
  if (entry.caller.fhirUser) (agent.who as Record<string, unknown>).reference = entry.caller.fhirUser;
  const agents: Record<string, unknown>[] = [agent];
  if (entry.caller.organization)
    agents.push({ who: { reference: entry.caller.organization }, requestor: false });
  const entities: Record<string, unknown>[] = [];
  for (const [patient, t] of aggregate.touched) {
    entities.push({
      what: { reference: patient },
      type: {
        system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type',
        code: '1',
        display: 'Person',
      },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
      description: `${[...t.types].sort().join(' ')}: ${t.allowed} shown, ${t.refused} withheld`,
    });
  }
  const resource: Record<string, unknown> = {
    resourceType: 'AuditEvent',
    type: {
      system: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
      code: 'rest',
      display: 'RESTful Operation',
    },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: entry.interaction }],
    action: ACTION[entry.method] ?? (entry.interaction.startsWith('search') ? 'E' : 'R'),
    period: { start: new Date(aggregate.from).toISOString(), end: new Date(aggregate.to).toISOString() },
    recorded: new Date(aggregate.to).toISOString(),
    outcome,
    outcomeDesc: `${aggregate.count} x ${entry.method} ${entry.path} -> ${entry.status}`,
    agent: agents,
    source: {
      observer: { display: 'hie-ledger' },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }],
    },
  };
  if (entities.length > 0) resource.entity = entities;
  if (entry.reason) resource.purposeOfEvent = [{ text: entry.reason }];
  return resource as FhirResource;
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

function sameKeys(a: ReadonlyMap<string, unknown>, b: ReadonlyMap<string, unknown>): boolean {
  if (a.size !== b.size) return false;
  for (const key of a.keys()) if (!b.has(key)) return false;
  return true;
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
  /** Aggregates whose AuditEvents the store refused: kept, written before newer ones at the next flush. */
  private kept: Aggregate[] = [];
  private readonly maxKept: number;
  private readonly minRetryMs: number;
  private retryMs: number;
  private retryTimer?: NodeJS.Timeout;
  /** The store is refusing AuditEvents (logged once when it starts and once when it ends). */
  private failing = false;

  constructor(private readonly options: AuditRecorderOptions) {
    this.flushMs = options.flushMs ?? 1000;
    this.maxAggregates = options.batchSize ?? 500;
    this.maxKept = options.maxKept ?? 100_000;
    this.minRetryMs = options.retryMs ?? 1000;
    this.retryMs = this.minRetryMs;
  }

  /** Can another request's audit be kept? False while too many AuditEvents wait for the store: refuse requests. */
  canKeep(): boolean {
    return this.kept.length + this.pending.size < this.maxKept;
  }

  /** AuditEvents waiting for the store (not yet flushed, or refused and kept for a retry). */
  backlog(): number {
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
      sameKeys(last.entry.touched, entry.touched) &&
      this.pending.get(last.key) === last.aggregate
        ? last.aggregate
        : undefined;
    if (!aggregate) aggregate = this.aggregateFor(entry, statusClass, at);
    aggregate.count++;
    aggregate.to = at;
    for (const [patient, t] of entry.touched) {
      let sum = aggregate.touched.get(patient);
      if (!sum) aggregate.touched.set(patient, (sum = { allowed: 0, refused: 0, types: new Set() }));
      sum.allowed += t.allowed;
      sum.refused += t.refused;
      for (const type of t.types) sum.types.add(type);
    }
    if (this.pending.size >= this.maxAggregates) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  private aggregateFor(entry: RequestAudit, statusClass: number, at: number): Aggregate {
    const path = pathShape(entry.path);
    const touched =
      entry.touched.size === 0
        ? ''
        : entry.touched.size === 1
          ? entry.touched.keys().next().value!
          : [...entry.touched.keys()].sort().join(',');
    const key =
      `${entry.caller.participant}\u0000${entry.interaction}\u0000${entry.method}\u0000${path}\u0000` +
      `${statusClass}\u0000${entry.refused}\u0000${entry.reason ?? ''}\u0000${touched}`;
    let aggregate = this.pending.get(key);
    if (!aggregate) {
      aggregate = { first: { ...entry, path }, count: 0, from: at, to: at, touched: new Map() };
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
    const { store, indexEntries, recordAccess } = this.options;
    if (recordAccess) {
      for (const aggregate of batch) {
        const interaction =
          aggregate.first.interaction
            .toLowerCase()
            .replace(/[^a-z0-9$-]/g, '-')
            .slice(0, 40) || 'request';
        for (const [patient, t] of aggregate.touched) {
          recordAccess({
            patient,
            accessor: aggregate.first.caller.participant,
            interaction,
            resourceType: t.types.size === 1 ? [...t.types][0] : undefined,
            outcome: t.allowed > 0 ? 'allowed' : 'refused',
            at: new Date(aggregate.to).toISOString(),
            from: new Date(aggregate.from).toISOString(),
            count: aggregate.count,
          });
        }
      }
    }
    this.flushing = this.flushing.then(async () => {
      // Those refused before go first (their ledger access records were sent when they were counted).
      const events = this.kept.length > 0 ? this.kept.concat(batch) : batch;
      this.kept = [];
      if (events.length === 0) return;
      try {
        await store.transaction(async (tx) => {
          for (const aggregate of events) {
            const id = newResourceId();
            const resource = { ...auditEvent(aggregate), id };
            await tx.write({
              resourceType: 'AuditEvent',
              id,
              resource,
              method: 'POST',
              patients: [...aggregate.touched.keys()],
              index: indexEntries ? indexEntries(resource) : undefined,
              anchor: this.options.anchor,
            });
          }
        });
        if (this.failing) {
          this.failing = false;
          this.retryMs = this.minRetryMs;
          this.options.log?.info?.({ stored: events.length }, 'audit events stored again');
        }
      } catch (err) {
        // Never dropped: kept in memory and retried; logged once per condition, not per attempt.
        this.kept = events;
        if (!this.failing) {
          this.failing = true;
          this.options.log?.error(
            { err: (err as Error).message, fault: storageFaultOf(err), kept: events.length },
            'audit events not stored: kept in memory and retried',
          );
        }
        if (!this.retryTimer && !this.closed) {
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            void this.flush();
          }, this.retryMs);
          this.retryTimer.unref();
          this.retryMs = Math.min(this.retryMs * 2, 30_000);
        }
      }
    });
    return this.flushing;
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
