/**
 * Push (directed exchange), the recipient's side (docs/exchange.md "Push"): `POST [base]/$network-deliver` takes a
 * document Bundle another member sends (src/exchange/push-document.ts) and
 *
 * 1. reads the delivery as text, keeping each record's exact text (a span of the body, never re-serialised);
 * 2. verifies EVERY record against the sender's anchors, written by the sender's own MSP (record-verifier.ts),
 *    before anything is rewritten: one failure refuses the whole document, and nothing is stored;
 * 3. stores copies in one transaction: new ids here, references between the document's records rewritten to
 *    them, the subject to the local Patient linked to the network patient, anything else to the sender's absolute
 *    URL; each copy with a Provenance keeping the sender's URL, the original text and the checked evidence;
 * 4. a network patient linked to no local Patient: the verified document goes to a review inbox (a Task holding
 *    it), never to an automatically created Patient.
 *
 * Ids here are derived from (sender, Bundle.identifier), so the same document delivered twice finds its first
 * delivery in the store itself, in the same transaction as any write: the same answer, nothing new stored.
 */
import { parseFhirJson, type FhirResource } from '../fhir/fhir-json.js';
import { fhirError, issue, type OperationOutcomeIssue } from '../fhir/outcome.js';
import type { AccessPolicy, Caller } from '../fhir/interactions/access-policy.js';
import type { FhirContext, FhirResponse, InteractionHandler } from '../fhir/interactions/types.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import { validateResource, writeVersion } from '../fhir/interactions/common.js';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import { CachedBatchSource, type BatchSource } from '../integrity/verification.js';
import type { Ledger } from '../ledger/ledger.js';
import {
  MSP_IDENTIFIER_SYSTEM,
  PARTICIPANT_TYPE_SYSTEM,
  includeEntryText,
  recordEntryText,
  searchsetText,
  type CustodianIdentity,
} from './record-evidence.js';
import {
  copyProvenance,
  dropSourceVersion,
  referenceHere,
  rewriteReferences,
  verifiedEvidenceOf,
} from './received-copy.js';
import {
  scanBundleText,
  ShapeError,
  SpanScanner,
  verifyEvidenceBundle,
  type ScannedBundle,
  type VerifiedAnswer,
} from './record-verifier.js';
import {
  MAX_DOCUMENT_RECORDS,
  TYPES_NEVER_PUSHED,
  localReference,
  memberEntry,
  uuidFromName,
} from './push-document.js';
import type { MemberLookup } from './members.js';
import { NETWORK_PARTICIPANT_SYSTEM } from '../consent/consent-resource.js';
import { isJsonObject } from '../fhir/definitions/json.js';

/** The code of the review Task of a document whose patient is not linked here. */
export const EXCHANGE_TASK_SYSTEM = 'https://hie-ledger.dev/fhir/CodeSystem/exchange-task';
/** How long the sender is asked to wait when this peer has not seen its anchors yet. */
const PENDING_RETRY_SECONDS = '5';
const DEPTH = 100;

/** The calling member as the network token proves it (src/exchange/network-tokens.ts NetworkCaller). */
export interface DeliveringMember {
  /** The sender's MSP id. */
  member: string;
  /** The acting participant's pseudonym at the sender. */
  actor: string;
}

/** One record of the document: its exact text and where the sender says it lives. */
export interface DeliveredRecord {
  fullUrl: string;
  text: string;
  resourceType: string;
  id: string;
  versionId: string;
}

/** A delivery as read from its body text. */
export interface Delivery {
  npid: string;
  /** The recipient's pseudonym at this service. */
  recipient: string;
  identifier: { system: string; value: string };
  /** The document Bundle's exact text. */
  documentText: string;
  /** Records in document order (the Composition first); evidence Provenances apart. */
  records: DeliveredRecord[];
  /** The evidence Provenances' exact texts. */
  evidence: string[];
}

const invalid = (why: string) => fhirError('network-deliver-invalid', `The delivery is refused: ${why}`);

/** Reads the `$network-deliver` body (hostile input: scanned, capped, every part checked). */
export function readDelivery(body: string | undefined): Delivery {
  if (body === undefined || body.trim() === '') throw invalid('no body');
  let npid: unknown;
  let recipient: unknown;
  let documentSpan: [number, number] | undefined;
  let documents = 0;
  try {
    const scanner = new SpanScanner(body, DEPTH);
    scanner.ws();
    let resourceType: unknown;
    scanner.members((name) => {
      if (name === 'resourceType') resourceType = scanner.parsed();
      else if (name === 'parameter')
        scanner.elements(() => {
          scanner.ws();
          let pname: unknown;
          let valueString: unknown;
          let span: [number, number] | undefined;
          scanner.members((member) => {
            if (member === 'name') pname = scanner.parsed();
            else if (member === 'valueString') valueString = scanner.parsed();
            else if (member === 'resource') {
              scanner.ws();
              span = scanner.value();
            } else scanner.value();
          });
          if (pname === 'patient') npid = valueString;
          else if (pname === 'recipient') recipient = valueString;
          else if (pname === 'document') {
            documents++;
            documentSpan = span;
          }
        });
      else scanner.value();
    });
    scanner.end();
    if (resourceType !== 'Parameters') throw invalid('the body is not a Parameters resource');
  } catch (err) {
    if (err instanceof ShapeError || err instanceof SyntaxError) throw invalid(`not JSON (${err.message})`);
    throw err;
  }
  if (typeof npid !== 'string' || !/^[A-Za-z0-9_-]{16,128}$/.test(npid))
    throw invalid('the patient parameter is not a network patient id');
  if (typeof recipient !== 'string' || recipient.length === 0 || recipient.length > 128)
    throw invalid('the recipient parameter is missing');
  if (documents !== 1 || !documentSpan)
    throw invalid('it needs exactly one document parameter with a resource');
  return readDocument(body.slice(documentSpan[0], documentSpan[1]), npid, recipient);
}

function readDocument(documentText: string, npid: string, recipient: string): Delivery {
  let scanned: ScannedBundle;
  try {
    scanned = scanBundleText(documentText, {
      maxDepth: DEPTH,
      maxEntries: 2 * MAX_DOCUMENT_RECORDS,
      members: ['resourceType', 'type', 'identifier'],
    });
  } catch (err) {
    if (err instanceof ShapeError || err instanceof SyntaxError)
      throw invalid(`the document is not JSON (${err.message})`);
    throw err;
  }
  const resourceType = scanned.members.get('resourceType');
  const type = scanned.members.get('type');
  const identifier = scanned.members.get('identifier');
  const entries = scanned.entries;
  if (resourceType !== 'Bundle' || type !== 'document')
    throw invalid('the document is not a document Bundle');
  if (
    !isJsonObject(identifier) ||
    typeof identifier.system !== 'string' ||
    typeof identifier.value !== 'string' ||
    identifier.system.length === 0 ||
    identifier.system.length > 256 ||
    identifier.value.length === 0 ||
    identifier.value.length > 256
  )
    throw invalid('the document has no Bundle.identifier (system and value)');
  const records: DeliveredRecord[] = [];
  const evidence: string[] = [];
  for (const [index, entry] of entries.entries()) {
    if (entry.resourceText === undefined) throw invalid(`entry ${index} has no resource`);
    let resource: unknown;
    try {
      resource = JSON.parse(entry.resourceText);
    } catch {
      throw invalid(`entry ${index} is not JSON`);
    }
    if (!isJsonObject(resource)) throw invalid(`entry ${index} is not a resource`);
    if (resource.resourceType === 'Provenance') {
      evidence.push(entry.resourceText);
      continue;
    }
    const meta = resource.meta;
    if (
      typeof entry.fullUrl !== 'string' ||
      entry.fullUrl.length > 2048 ||
      typeof resource.resourceType !== 'string' ||
      typeof resource.id !== 'string' ||
      !isJsonObject(meta) ||
      typeof meta.versionId !== 'string'
    )
      throw invalid(`entry ${index} has no fullUrl, resource type, id or meta.versionId`);
    if (TYPES_NEVER_PUSHED.has(resource.resourceType))
      throw invalid(`a document may not carry a ${resource.resourceType}`);
    records.push({
      fullUrl: entry.fullUrl,
      text: entry.resourceText,
      resourceType: resource.resourceType,
      id: resource.id,
      versionId: meta.versionId,
    });
  }
  if (records.length === 0 || records[0].resourceType !== 'Composition')
    throw invalid('the first record of a document must be its Composition');
  if (records.length > MAX_DOCUMENT_RECORDS)
    throw invalid(`a document may hold at most ${MAX_DOCUMENT_RECORDS} records`);
  return {
    npid,
    recipient,
    identifier: { system: identifier.system, value: identifier.value },
    documentText,
    records,
    evidence,
  };
}

/**
 * Every record of the delivery checked against the sender's anchors (the evidence format of a pull answer: the
 * record texts and evidence Provenances put back into a searchset, fullUrl = the sender's version URL).
 */
export async function verifyDelivery(
  delivery: Delivery,
  sender: CustodianIdentity,
  batches: BatchSource,
): Promise<VerifiedAnswer> {
  const entries: string[] = [];
  for (const record of delivery.records)
    entries.push(recordEntryText(`${record.fullUrl}/_history/${record.versionId}`, record.text));
  for (const provenance of delivery.evidence) entries.push(includeEntryText(provenance));
  return verifyEvidenceBundle(searchsetText(delivery.records.length, entries), sender, batches);
}

/** The refusal of a delivery whose records are not all verified, or undefined when they are. */
export function verificationRefusal(answer: VerifiedAnswer, records: number): Error | undefined {
  const failed = answer.records.filter((r) => r.status === 'failed');
  if (failed.length > 0 || answer.records.length !== records || answer.issues.length > 0) {
    const issues: OperationOutcomeIssue[] = answer.issues.length
      ? answer.issues
      : [issue('error', 'processing', 'the document’s records could not all be verified')];
    return fhirError('network-deliver-unverified', issues.map((i) => i.diagnostics).join('; '));
  }
  // A record the sender itself says is not anchored cannot be proven; the sender sends only anchored ones.
  const claimedPending = answer.records.find(
    (r) => r.status === 'pending' && r.reason === 'not yet anchored by the custodian',
  );
  if (claimedPending)
    return fhirError(
      'network-deliver-unverified',
      `${claimedPending.fullUrl} is not anchored by the sender, so it cannot be verified`,
    );
  if (answer.records.some((r) => r.status !== 'verified'))
    return fhirError(
      'network-deliver-pending',
      'This member’s ledger does not hold the sender’s anchors of the document yet; retry later',
      { headers: { 'Retry-After': PENDING_RETRY_SECONDS } },
    );
  return undefined;
}

/** The id a delivery gives its n-th stored resource here: derived from (sender, document identifier). */
export function deliveredId(
  sender: string,
  identifier: { system: string; value: string },
  what: string,
): string {
  return uuidFromName(`hie-ledger delivery|${sender}|${identifier.system}|${identifier.value}|${what}`);
}

/**
 * The copies of the verified records, with new ids here and every reference rewritten: to another record of the
 * document -> its copy; to the subject Patient -> `localPatient`; to anything else of the sender -> the sender's
 * absolute URL (a relative one would name a resource of this service); others (contained, other servers) kept.
 * The subject Patient record itself is not copied: this service has its own.
 */
export function copiesOf(
  delivery: Delivery,
  verified: VerifiedAnswer,
  sender: CustodianIdentity & { actor: string },
  localPatient: string,
  recorded: string,
): FhirResource[] {
  const composition = parseFhirJson<FhirResource>(delivery.records[0].text);
  const subject = isJsonObject(composition.subject) ? composition.subject.reference : undefined;
  const subjectTarget = typeof subject === 'string' ? localReference(subject, sender.fhirBaseUrl) : undefined;
  const subjectUrl =
    subjectTarget?.resourceType === 'Patient'
      ? `${sender.fhirBaseUrl}/Patient/${subjectTarget.id}`
      : undefined;
  if (!subjectUrl || !delivery.records.some((r) => r.fullUrl === subjectUrl))
    throw invalid('the Composition’s subject is not a Patient of the document');
  const newUrl = new Map<string, string>();
  for (const [index, record] of delivery.records.entries()) {
    if (record.fullUrl === subjectUrl) newUrl.set(record.fullUrl, localPatient);
    else if (record.resourceType === 'Patient')
      throw invalid('a document may hold no Patient but its subject');
    else
      newUrl.set(
        record.fullUrl,
        `${record.resourceType}/${deliveredId(sender.mspId, delivery.identifier, String(index))}`,
      );
  }
  const rewrite = (reference: string): string =>
    referenceHere(reference, sender.fhirBaseUrl, (url) => newUrl.get(url));
  const out: FhirResource[] = [];
  for (const [index, record] of delivery.records.entries()) {
    if (record.fullUrl === subjectUrl) continue;
    const copy = parseFhirJson<FhirResource>(record.text);
    rewriteReferences(copy, rewrite);
    const reference = newUrl.get(record.fullUrl)!;
    copy.id = reference.slice(reference.indexOf('/') + 1);
    dropSourceVersion(copy);
    out.push(copy);
    out.push(
      copyProvenance({
        id: deliveredId(sender.mspId, delivery.identifier, `provenance|${index}`),
        target: reference,
        evidence: verifiedEvidenceOf(verified, index),
        originalText: record.text,
        recorded,
        custodian: sender,
        otherAgents: [
          {
            type: { coding: [{ system: PARTICIPANT_TYPE_SYSTEM, code: 'author', display: 'Author' }] },
            who: {
              identifier: { system: NETWORK_PARTICIPANT_SYSTEM, value: `${sender.mspId}|${sender.actor}` },
            },
          },
        ],
        entity: [
          { role: 'source', what: { reference: `${record.fullUrl}/_history/${record.versionId}` } },
          { role: 'source', what: { identifier: delivery.identifier } },
        ],
      }),
    );
  }
  return out;
}

/** The review Task of a verified document whose network patient no local Patient is linked to. */
export function reviewTask(
  id: string,
  delivery: Delivery,
  sender: CustodianIdentity,
  recipientReference: string | undefined,
  authoredOn: string,
): FhirResource {
  const task: FhirResource = {
    resourceType: 'Task',
    id,
    identifier: [delivery.identifier],
    status: 'requested',
    intent: 'proposal',
    code: {
      coding: [{ system: EXCHANGE_TASK_SYSTEM, code: 'review-received-document' }],
      text: 'Review a document received from another member',
    },
    description:
      'A verified document whose patient is linked to no local Patient: find or link the Patient, then file it.',
    authoredOn,
    requester: {
      identifier: { system: MSP_IDENTIFIER_SYSTEM, value: sender.mspId },
      display: sender.organization,
    },
    input: [
      {
        type: { text: 'document' },
        valueAttachment: {
          contentType: 'application/fhir+json',
          data: Buffer.from(delivery.documentText, 'utf8').toString('base64'),
          title: 'The document as received, with its integrity evidence',
        },
      },
    ],
  };
  if (recipientReference) task.owner = { reference: recipientReference };
  return task;
}

/** What the recipient side needs from the app. */
export interface NetworkDeliverOptions {
  members: MemberLookup;
  ledger: Ledger;
  /** This service's organisation (config.organization): the custodian of what a delivery stores. */
  organization?: string;
  /** Local Patients linked to a network patient (PatientLinks.localPatientsOf). */
  localPatientsOf(npid: string): Promise<string[]>;
  /** The FHIR resource of a participant of this service, by pseudonym (the recipient), if known. */
  participantResource?(pseudonym: string): string | undefined | Promise<string | undefined>;
  /** The calling member, when the request carries a network token; undefined otherwise. */
  callerOf(access: AccessPolicy): DeliveringMember | undefined;
  now?: () => number;
}

/** Writes done on behalf of a delivering member: what it stores is this service's (custodian = organisation). */
class DeliveryWriter implements AccessPolicy {
  readonly caller: Caller;
  constructor(member: DeliveringMember, organization: string | undefined) {
    this.caller = { participant: `${member.member}|${member.actor}`, role: 'service', scopes: [] };
    if (organization !== undefined) this.caller.organization = organization;
  }
  authorize(): void {}
  canRead(): boolean {
    return true;
  }
  canWrite(): boolean {
    return true;
  }
}

function resultAnswer(
  result: 'stored' | 'review',
  identifier: { system: string; value: string },
): FhirResponse {
  return {
    status: 200,
    body: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'result', valueCode: result },
        { name: 'identifier', valueIdentifier: { system: identifier.system, value: identifier.value } },
      ],
    } as unknown as FhirResource,
  };
}

/** A delivery already stored (by an earlier request): its answer, the same as then. */
async function earlierDelivery(
  store: ResourceStore,
  sender: string,
  identifier: { system: string; value: string },
): Promise<FhirResponse | undefined> {
  if (await store.read('Composition', deliveredId(sender, identifier, '0')))
    return resultAnswer('stored', identifier);
  if (await store.read('Task', deliveredId(sender, identifier, 'review')))
    return resultAnswer('review', identifier);
  return undefined;
}

/** `POST [base]/$network-deliver`. */
export function networkDeliverHandler(options: NetworkDeliverOptions): InteractionHandler {
  const now = options.now ?? Date.now;
  return async (request, context) => {
    const caller = options.callerOf(context.access);
    if (!caller)
      throw fhirError('access-denied', 'Only another member’s service delivers documents (a network token)');
    const entry = await memberEntry(options.members, caller.member);
    if (!entry || entry.status !== 'active')
      throw fhirError('access-denied', 'Only an active member delivers documents');
    const sender: CustodianIdentity & { actor: string } = {
      mspId: entry.mspId,
      organization: entry.organization,
      fhirBaseUrl: entry.fhirBaseUrl,
      actor: caller.actor,
    };
    const delivery = readDelivery(request.body);
    const earlier = await earlierDelivery(context.store, sender.mspId, delivery.identifier);
    if (earlier) return earlier;

    // Verification first: nothing of the document is read for its meaning before every record is proven.
    const verified = await verifyDelivery(delivery, sender, new CachedBatchSource(options.ledger));
    const refusal = verificationRefusal(verified, delivery.records.length);
    if (refusal) throw refusal;

    const at = new Date(now()).toISOString();
    const writeContext: FhirContext = {
      ...context,
      access: new DeliveryWriter(caller, options.organization),
    };
    const [localPatient] = await options.localPatientsOf(delivery.npid);
    let resources: FhirResource[];
    let result: 'stored' | 'review';
    if (localPatient) {
      resources = copiesOf(delivery, verified, sender, localPatient, at);
      result = 'stored';
    } else {
      // Checked as a stored copy would be, so the inbox holds only documents that could be filed.
      copiesOf(delivery, verified, sender, 'Patient/unlinked', at);
      const owner = await options.participantResource?.(delivery.recipient);
      resources = [
        reviewTask(deliveredId(sender.mspId, delivery.identifier, 'review'), delivery, sender, owner, at),
      ];
      result = 'review';
    }
    // copiesOf lists each verified record's copy followed by this service's Provenance of it: a copy is never refused
    // by a rule family stricter here than the network pins (docs/validation.md, "Rule families").
    for (const [index, resource] of resources.entries())
      validateResource(
        writeContext,
        resource,
        'create',
        undefined,
        result === 'stored' && index % 2 === 0 ? 'received' : undefined,
      );
    return context.store.transaction(async (tx) => {
      const within: FhirContext = { ...writeContext, store: tx };
      // A concurrent delivery of the same document may have stored it since the check above.
      const stored = await earlierDelivery(tx, sender.mspId, delivery.identifier);
      if (stored) return stored;
      for (const resource of resources)
        await writeVersion(
          within,
          {
            resourceType: resource.resourceType,
            id: resource.id!,
            resource,
            method: 'POST',
            ifNoneExist: true,
          },
          undefined,
        );
      return resultAnswer(result, delivery.identifier);
    });
  };
}

export function networkDeliverOperation(options: NetworkDeliverOptions): OperationRegistration {
  return {
    name: 'network-deliver',
    levels: ['system'],
    methods: ['POST'],
    documentation:
      'Push, at the recipient: a member’s service delivers a document Bundle with the integrity evidence of every record; all are verified against the sender’s anchors before anything is stored (a network token is required).',
    handler: networkDeliverHandler(options),
  };
}
