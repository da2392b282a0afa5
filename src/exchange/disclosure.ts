/**
 * The record of a disclosure to another member (docs/exchange.md, "Disclosures"): one AuditEvent stored here (IHE
 * BALP style: type rest, subtype the network operation, the calling member and its actor as agents, the purposes of
 * use, the patients and the grants as entities), written before the answer leaves (a disclosure that cannot be
 * audited is not made), and one access record per local patient on the ledger (blinded with the network patient
 * id, so the patient's home lists it in the network-wide access log, `$access-log`).
 */
import type { AccessRecordInput } from '../consent/consent-service.js';
import { NETWORK_PARTICIPANT_SYSTEM, PURPOSE_OF_USE_SYSTEM } from '../consent/consent-resource.js';
import type { NetworkCaller } from '../fhir/interactions/access-policy.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import { newResourceId } from '../fhir/interactions/ids.js';
import type { IndexEntry, ResourceStore, WriteRequest } from '../fhir/store/resource-store.js';
import type { LinkDisclosure } from './patient-links.js';
import { MSP_IDENTIFIER_SYSTEM } from './record-evidence.js';

/** The code system of the network operations as AuditEvent subtypes. */
export const NETWORK_OPERATION_SYSTEM = 'https://hie-ledger.dev/fhir/CodeSystem/network-operation';
/** The identifier system of a grant id (the ledger key of a grant, `grant/<grantId>`). */
export const GRANT_ID_SYSTEM = 'https://hie-ledger.dev/fhir/NamingSystem/grant-id';
export const ENTITY_TYPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
export const OBJECT_ROLE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/object-role';

/** Where the exchange's AuditEvents and ledger access records go (disclosures, wrong-link reports). */
export interface AuditSink {
  store: ResourceStore;
  indexEntries?: (resource: FhirResource) => IndexEntry[];
  anchor?: WriteRequest['anchor'];
  /** This service's organisation: the custodian of the AuditEvents (they are its disclosures). */
  organization?: string;
  /** Ledger access records (ConsentService.recordAccess). */
  recordAccess(record: AccessRecordInput): void;
}

/** Where disclosures go. */
export interface DisclosureSink extends AuditSink {
  /** Disclosures made under a link, kept for a wrong-link report (PatientLinks.noteLinkDisclosure). */
  underLink?(disclosure: LinkDisclosure): void | Promise<void>;
}

/** Stores an AuditEvent (a new id, in the compartments of `patients`) as this service's own record, anchored; its id. */
export async function storeAuditEvent(
  sink: AuditSink,
  auditEvent: FhirResource,
  patients: readonly string[],
): Promise<string> {
  const id = newResourceId();
  const resource = { ...auditEvent, id } as FhirResource;
  await sink.store.write({
    resourceType: 'AuditEvent',
    id,
    resource,
    method: 'POST',
    patients: [...patients],
    custodian: sink.organization,
    index: sink.indexEntries ? sink.indexEntries(resource) : undefined,
    anchor: sink.anchor,
  });
  return id;
}

export interface Disclosure {
  caller: NetworkCaller;
  /** The network patient id, when this member is not the patient's home (the ledger records are tagged with it). */
  npid?: string;
  /** The grants that opened what was sent. */
  grantIds: readonly string[];
  /** The local Patients (`Patient/x`) whose records were sent. */
  patients: readonly string[];
  count: number;
  types: readonly string[];
  /** When (epoch ms). */
  at: number;
  /** The operation; default `network-records`. */
  operation?: string;
}

/** The AuditEvent of a disclosure. */
export function disclosureAuditEvent(disclosure: Disclosure): FhirResource {
  const { caller } = disclosure;
  const operation = disclosure.operation ?? 'network-records';
  const instant = new Date(disclosure.at).toISOString();
  const entity: Record<string, unknown>[] = disclosure.patients.map((patient) => ({
    what: { reference: patient },
    type: { system: ENTITY_TYPE_SYSTEM, code: '1', display: 'Person' },
    role: { system: OBJECT_ROLE_SYSTEM, code: '1', display: 'Patient' },
    description: `${disclosure.types.join(' ')}: ${disclosure.count} sent`,
  }));
  for (const grantId of disclosure.grantIds)
    entity.push({
      what: { identifier: { system: GRANT_ID_SYSTEM, value: grantId } },
      type: { system: ENTITY_TYPE_SYSTEM, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE_SYSTEM, code: '13', display: 'Security Resource' },
      description: 'consent grant',
    });
  return {
    resourceType: 'AuditEvent',
    type: {
      system: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
      code: 'rest',
      display: 'RESTful Operation',
    },
    subtype: [{ system: NETWORK_OPERATION_SYSTEM, code: operation }],
    action: 'E',
    period: { start: instant, end: instant },
    recorded: instant,
    outcome: '0',
    outcomeDesc: `${disclosure.count} records sent to ${caller.member}`,
    purposeOfEvent: caller.purposes.map((code) => ({ coding: [{ system: PURPOSE_OF_USE_SYSTEM, code }] })),
    agent: [
      {
        type: { coding: [{ system: 'urn:hie-ledger:role', code: 'network' }] },
        who: { identifier: { system: MSP_IDENTIFIER_SYSTEM, value: caller.member } },
        requestor: false,
      },
      {
        type: { coding: [{ system: 'urn:hie-ledger:role', code: caller.actorRole }] },
        who: {
          identifier: { system: NETWORK_PARTICIPANT_SYSTEM, value: `${caller.member}|${caller.actor}` },
        },
        requestor: true,
      },
    ],
    source: {
      observer: { display: 'hie-ledger' },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }],
    },
    entity,
  } as unknown as FhirResource;
}

/** Stores the AuditEvent (awaited: no disclosure without it), then queues one ledger access record per patient. */
export async function recordDisclosure(sink: DisclosureSink, disclosure: Disclosure): Promise<void> {
  const id = await storeAuditEvent(sink, disclosureAuditEvent(disclosure), disclosure.patients);
  const { caller } = disclosure;
  const at = new Date(disclosure.at).toISOString();
  // Under a link (not the home): kept with the link, in case it proves wrong (wrong-link-report.ts).
  if (disclosure.npid !== undefined && sink.underLink)
    for (const patient of disclosure.patients)
      await sink.underLink({
        localPatient: patient,
        npid: disclosure.npid,
        at,
        accessorMsp: caller.member,
        accessor: caller.actor,
        purpose: caller.purposes[0] ?? 'TREAT',
        records: disclosure.count,
        types: [...disclosure.types],
        auditEvent: id,
      });
  for (const patient of disclosure.patients)
    sink.recordAccess({
      patient,
      npid: disclosure.npid,
      accessor: caller.actor,
      interaction: disclosure.operation ?? 'network-records',
      resourceType: disclosure.types.length === 1 ? disclosure.types[0] : undefined,
      outcome: 'allowed',
      at,
      grantId: disclosure.grantIds[0],
      accessorMsp: caller.member,
      purpose: caller.purposes[0],
    });
}
