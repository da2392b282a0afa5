/**
 * The report of disclosures made under a wrong patient link (docs/exchange.md, "Wrong links"). At a custodian, a
 * local Patient was linked to network patient X and the link is corrected (relinked to Y) or unlinked as wrong:
 * every disclosure of the Patient's records to X's grantees while the link was in force goes to both patients.
 *
 * - To X (X's home reads it in `$access-log`): ledger access records tagged with X's npid, interaction `wrong-link`,
 *   side `not-this-patient`: what X's grantees were sent under X's id was another person's records.
 * - To the person of the Patient (Y's home, or this member's own access log of the Patient when unlinked):
 *   ledger access records tagged with Y's npid (or this member's own id of the Patient), side
 *   `this-patients-records`: their records went to another patient's grantees.
 * - Here: one AuditEvent in the Patient's compartment (its patient and this member's administrators read it),
 *   naming the members, purposes, period and counts, and each disclosure's own AuditEvent.
 *
 * One ledger record per (member, actor, purpose) on each side, its sealed details carrying the link's period and the
 * number of records; no grant tag. X's records and the owner's are sent in separate transactions, so nothing on the
 * ledger ties X's to the owner's but their time (docs/exchange.md says what an observer can still see).
 */
import { PARTICIPANT_SYSTEM } from '../access/access-audit.js';
import type { AccessRecordInput } from '../consent/consent-service.js';
import { NETWORK_PARTICIPANT_SYSTEM, PURPOSE_OF_USE_SYSTEM } from '../consent/consent-resource.js';
import type { Caller } from '../fhir/interactions/access-policy.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import {
  ENTITY_TYPE_SYSTEM,
  NETWORK_OPERATION_SYSTEM,
  OBJECT_ROLE_SYSTEM,
  storeAuditEvent,
  type AuditSink,
} from './disclosure.js';
import type { EndedLink, LinkDisclosure } from './patient-links.js';
import { MSP_IDENTIFIER_SYSTEM } from './record-evidence.js';

/** The interaction of a wrong-link report, in the access log and as the AuditEvent's subtype. */
export const WRONG_LINK = 'wrong-link';
/** Where wrong-link reports go (as disclosures: the store for the AuditEvent, the ledger's access records). */
export interface WrongLinkSink extends AuditSink {
  /** Sends the queued access records now (ConsentService.flushAccess): each side in its own transaction. */
  flushAccess(): Promise<void>;
}

export interface WrongLinkReport {
  ended: EndedLink;
  /** The network patient the Patient is linked to now (relinked); absent when unlinked. */
  ownerNpid?: string;
  disclosures: readonly LinkDisclosure[];
  /** Who made the correction (absent for a report made again at start-up). */
  by?: Caller;
  /** When (epoch ms). */
  at: number;
}

/** The disclosures of one (member, actor, purpose): one ledger record per side. */
interface DisclosureGroup {
  accessorMsp: string;
  accessor: string;
  purpose: string;
  from: string;
  to: string;
  disclosures: number;
  records: number;
  types: Set<string>;
}

function groupsOf(disclosures: readonly LinkDisclosure[]): DisclosureGroup[] {
  const groups = new Map<string, DisclosureGroup>();
  for (const d of disclosures) {
    const key = `${d.accessorMsp}|${d.accessor}|${d.purpose}`;
    let group = groups.get(key);
    if (!group) {
      group = {
        accessorMsp: d.accessorMsp,
        accessor: d.accessor,
        purpose: d.purpose,
        from: d.at,
        to: d.at,
        disclosures: 0,
        records: 0,
        types: new Set(),
      };
      groups.set(key, group);
    }
    if (d.at < group.from) group.from = d.at;
    if (d.at > group.to) group.to = d.at;
    group.disclosures++;
    group.records += d.records;
    for (const type of d.types) group.types.add(type);
  }
  return [...groups.values()];
}

/** The AuditEvent at this member: the Patient, the recipients, the period and counts, each disclosure's event. */
export function wrongLinkAuditEvent(report: WrongLinkReport): FhirResource {
  const { ended, disclosures } = report;
  const groups = groupsOf(disclosures);
  const records = disclosures.reduce((sum, d) => sum + d.records, 0);
  const members = [...new Set(groups.map((g) => g.accessorMsp))].sort();
  const purposes = [...new Set(groups.map((g) => g.purpose))].sort();
  const types = [...new Set(disclosures.flatMap((d) => d.types))].sort();
  const how = ended.reason === 'corrected' ? 'corrected' : 'unlinked as wrong';
  const agent: Record<string, unknown>[] = members.map((member) => ({
    type: { coding: [{ system: 'urn:hie-ledger:role', code: 'network' }] },
    who: { identifier: { system: MSP_IDENTIFIER_SYSTEM, value: member } },
    requestor: false,
  }));
  for (const group of groups)
    agent.push({
      type: { coding: [{ system: 'urn:hie-ledger:role', code: 'network-actor' }] },
      who: {
        identifier: { system: NETWORK_PARTICIPANT_SYSTEM, value: `${group.accessorMsp}|${group.accessor}` },
      },
      requestor: false,
      purposeOfUse: [{ coding: [{ system: PURPOSE_OF_USE_SYSTEM, code: group.purpose }] }],
    });
  if (report.by)
    agent.push({
      type: { coding: [{ system: 'urn:hie-ledger:role', code: report.by.role }] },
      who: {
        identifier: { system: PARTICIPANT_SYSTEM, value: report.by.participant },
        ...(report.by.fhirUser ? { reference: report.by.fhirUser } : {}),
      },
      requestor: true,
    });
  const entity: Record<string, unknown>[] = [
    {
      what: { reference: ended.localPatient },
      type: { system: ENTITY_TYPE_SYSTEM, code: '1', display: 'Person' },
      role: { system: OBJECT_ROLE_SYSTEM, code: '1', display: 'Patient' },
      description: `${types.join(' ')}: ${records} sent in ${disclosures.length} disclosures under a wrong link`,
    },
  ];
  for (const d of disclosures)
    entity.push({
      what: { reference: `AuditEvent/${d.auditEvent}` },
      type: { system: ENTITY_TYPE_SYSTEM, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE_SYSTEM, code: '4', display: 'Domain Resource' },
      description: `${d.at} to ${d.accessorMsp} for ${d.purpose}: ${d.records} sent`,
    });
  const instant = new Date(report.at).toISOString();
  return {
    resourceType: 'AuditEvent',
    type: {
      system: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
      code: 'rest',
      display: 'RESTful Operation',
    },
    subtype: [{ system: NETWORK_OPERATION_SYSTEM, code: WRONG_LINK }],
    action: 'E',
    period: { start: ended.linkedAt, end: ended.endedAt },
    recorded: instant,
    outcome: '0',
    outcomeDesc: `The patient link was ${how}: ${records} records of this patient were sent to ${members.join(', ')} for another patient, from ${ended.linkedAt} to ${ended.endedAt}`,
    purposeOfEvent: purposes.map((code) => ({ coding: [{ system: PURPOSE_OF_USE_SYSTEM, code }] })),
    agent,
    source: {
      observer: { display: 'hie-ledger' },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }],
    },
    entity,
  } as unknown as FhirResource;
}

/**
 * Makes the report: the AuditEvent here (awaited), then the access records of X (tagged with the ended link's npid),
 * sent, then those of the owner (tagged with `ownerNpid`, or this member's own id of the Patient), sent. Nothing is
 * reported when nothing was disclosed under the link.
 */
export async function reportWrongLink(sink: WrongLinkSink, report: WrongLinkReport): Promise<void> {
  const { ended, disclosures } = report;
  if (disclosures.length === 0) return;
  await storeAuditEvent(sink, wrongLinkAuditEvent(report), [ended.localPatient]);
  const groups = groupsOf(disclosures);
  const side = (
    group: DisclosureGroup,
    npid: string | undefined,
    which: 'not-this-patient' | 'this-patients-records',
  ) => {
    const record: AccessRecordInput = {
      patient: ended.localPatient,
      accessor: group.accessor,
      interaction: WRONG_LINK,
      resourceType: group.types.size === 1 ? [...group.types][0] : undefined,
      outcome: 'allowed',
      at: group.to,
      from: group.from,
      count: group.disclosures,
      accessorMsp: group.accessorMsp,
      purpose: group.purpose,
      wrongLink: { side: which, linkedAt: ended.linkedAt, endedAt: ended.endedAt, records: group.records },
    };
    if (npid !== undefined) record.npid = npid;
    return record;
  };
  for (const group of groups) sink.recordAccess(side(group, ended.npid, 'not-this-patient'));
  await sink.flushAccess();
  for (const group of groups) sink.recordAccess(side(group, report.ownerNpid, 'this-patients-records'));
  await sink.flushAccess();
}
