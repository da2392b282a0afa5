/**
 * The audit of access decisions: one FHIR AuditEvent per FHIR request (who, what, when, outcome; stored through the
 * store, in the compartments of the patients it touched, so a patient can search who accessed their data), and one
 * ledger access record per patient touched (consent:RecordAccess). Both are queued and written in batches, off the
 * request's critical path.
 */
import { randomUUID } from 'node:crypto';
import type { Caller } from './policy.js';
import type { FhirResource } from '../mapping/fhir-json.js';
import type { IndexEntry, ResourceStore } from '../fhir/store/resource-store.js';
import type { AccessRecordInput } from '../ledger/consent.js';

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
  at: string;
}

export interface AuditRecorderOptions {
  store: ResourceStore;
  indexEntries?: (resource: FhirResource) => IndexEntry[];
  /** Ledger access records (ConsentService.recordAccess); absent without a ledger. */
  recordAccess?: (record: AccessRecordInput) => void;
  batchSize?: number;
  flushMs?: number;
  log?: { error(obj: object | string, msg?: string): void };
}

const ACTION: Record<string, string> = { POST: 'C', PUT: 'U', PATCH: 'U', DELETE: 'D' };

function auditEvent(entry: RequestAudit): FhirResource {
  // Outcome codes: 0 success, 4 minor failure (refused / not found), 8 serious failure.
  const outcome = entry.status >= 500 ? '8' : entry.status >= 400 || entry.refused ? '4' : '0';
  const agent: Record<string, unknown> = {
    type: { coding: [{ system: 'urn:hie-ledger:role', code: entry.caller.role }] },
    who: { identifier: { system: PARTICIPANT_SYSTEM, value: entry.caller.participant } },
    requestor: true,
  };
  if (entry.caller.fhirUser) (agent.who as Record<string, unknown>).reference = entry.caller.fhirUser;
  const entities: Record<string, unknown>[] = [];
  for (const [patient, t] of entry.touched) {
    entities.push({
      what: { reference: patient },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
      description: `${[...t.types].sort().join(' ')}: ${t.allowed} shown, ${t.refused} withheld`,
    });
  }
  const resource: Record<string, unknown> = {
    resourceType: 'AuditEvent',
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest', display: 'RESTful Operation' },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: entry.interaction }],
    action: ACTION[entry.method] ?? (entry.interaction.startsWith('search') ? 'E' : 'R'),
    recorded: entry.at,
    outcome,
    outcomeDesc: `${entry.method} ${entry.path} -> ${entry.status}`,
    agent: [agent],
    source: { observer: { display: 'hie-ledger' }, type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }] },
  };
  if (entities.length > 0) resource.entity = entities;
  if (entry.caller.organization) (resource.agent as unknown[]).push({ who: { reference: entry.caller.organization }, requestor: false });
  return resource as FhirResource;
}

export class AuditRecorder {
  private queue: RequestAudit[] = [];
  private timer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly batchSize: number;
  private readonly flushMs: number;

  constructor(private readonly options: AuditRecorderOptions) {
    this.batchSize = options.batchSize ?? 200;
    this.flushMs = options.flushMs ?? 250;
  }

  /** Queues the audit of one request; returns at once. */
  record(entry: RequestAudit): void {
    if (this.closed) return;
    this.queue.push(entry);
    const interaction = entry.interaction.toLowerCase().replace(/[^a-z0-9$-]/g, '-').slice(0, 40) || 'request';
    if (this.options.recordAccess) {
      for (const [patient, t] of entry.touched) {
        this.options.recordAccess({
          patient,
          accessor: entry.caller.participant,
          interaction,
          resourceType: t.types.size === 1 ? [...t.types][0] : undefined,
          outcome: t.allowed > 0 ? 'allowed' : 'refused',
          at: entry.at,
        });
      }
    }
    if (this.queue.length >= this.batchSize) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  /** Writes the queued AuditEvents (one store transaction per batch). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return this.flushing;
    const { store, indexEntries } = this.options;
    this.flushing = this.flushing.then(async () => {
      try {
        await store.transaction(async (tx) => {
          for (const entry of batch) {
            const id = randomUUID();
            const resource = { ...auditEvent(entry), id };
            await tx.write({
              resourceType: 'AuditEvent',
              id,
              resource,
              method: 'POST',
              patients: [...entry.touched.keys()],
              index: indexEntries ? indexEntries(resource) : undefined,
            });
          }
        });
      } catch (err) {
        this.options.log?.error({ err: (err as Error).message, count: batch.length }, 'audit events not stored');
      }
    });
    return this.flushing;
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }
}
