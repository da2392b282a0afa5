/**
 * Push (directed exchange), the sender's side (docs/exchange.md "Push"): `POST [base]/Composition/{id}/$network-send`
 * builds a FHIR document Bundle of the Composition and what it references, checks the patient's grant for the
 * recipient, and delivers the document with every entry's integrity evidence to the recipient member's
 * `$network-deliver` (src/exchange/push-delivery.ts), with a network token for the acting participant.
 *
 * The document carries the stored texts spliced in as they are (numbers as written) and, after them, one evidence
 * Provenance per entry in the evidence format of record-evidence.ts, so the recipient verifies the raw text against
 * this member's anchors before it rewrites anything.
 */
import { createHash } from 'node:crypto';
import type { StoredVersion } from '../fhir/store/resource-store.js';
import type {
  FhirContext,
  FhirRequest,
  FhirResponse,
  InteractionHandler,
} from '../fhir/interactions/types.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import { fhirError, issue, type OperationOutcomeIssue } from '../fhir/outcome.js';
import { parseClientJson, type FhirResource } from '../fhir/fhir-json.js';
import {
  grantAllows,
  parseNetworkHandle,
  DEFAULT_PURPOSE,
  type NetworkParticipant,
} from '../consent/consent-resource.js';
import type { LedgerGrant, AccessRecordInput } from '../consent/consent-service.js';
import type { BatchJournal } from '../integrity/anchor-journal.js';
import {
  collectEvidence,
  evidenceProvenanceText,
  versionUrl,
  type CustodianIdentity,
  type RecordEvidence,
} from './record-evidence.js';
import type { MemberEntry, MemberLookup } from './members.js';
import { NetworkTokenRefused, type NetworkActor, type NetworkTokenClient } from './network-token-client.js';
import { MemberCallError } from './member-http.js';

/** Bundle.identifier.system of a pushed document: its value is a `urn:uuid:`. */
export const DOCUMENT_IDENTIFIER_SYSTEM = 'urn:ietf:rfc:3986';
/** Resource types never sent in a document (and refused in one): they would act at the recipient, or are evidence. */
export const TYPES_NEVER_PUSHED: ReadonlySet<string> = new Set(['Consent', 'Provenance', 'AuditEvent']);
/** Most entries (records) of one document. */
export const MAX_DOCUMENT_RECORDS = 1000;

const RELATIVE_REFERENCE =
  /^([A-Z][A-Za-z]{0,63})\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([1-9][0-9]{0,9}))?$/;

/** A recipient: a participant of another member, by its handle `<mspId>|<pseudonym>` (its pseudonym there). */
export type Recipient = NetworkParticipant;

/** A UUID (version 8: name-based, SHA-256) made from a name: the same name always gives the same UUID. */
export function uuidFromName(name: string): string {
  const hash = createHash('sha256').update(name).digest();
  hash[6] = (hash[6] & 0x0f) | 0x80;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The document's Bundle.identifier value: one per Composition version at this member (its absolute version URL),
 * so sending the same Composition version again is recognisably the same document.
 */
export function documentIdentifierOf(compositionVersionUrl: string): string {
  return `urn:uuid:${uuidFromName(`hie-ledger document|${compositionVersionUrl}`)}`;
}

/** `Type/id[/_history/v]`, relative or under `baseUrl`; undefined for anything else (contained, other servers, urn). */
export function localReference(
  reference: string,
  baseUrl: string,
): { resourceType: string; id: string; versionId?: number } | undefined {
  const relative = reference.startsWith(`${baseUrl}/`) ? reference.slice(baseUrl.length + 1) : reference;
  const match = RELATIVE_REFERENCE.exec(relative);
  if (!match) return undefined;
  return match[3] === undefined
    ? { resourceType: match[1], id: match[2] }
    : { resourceType: match[1], id: match[2], versionId: Number(match[3]) };
}

/** Every `reference` string in a resource, in document order (contained resources included). */
export function referencesIn(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const item of value) referencesIn(item, out);
  else if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      if (key === 'reference' && typeof item === 'string') out.push(item);
      else if (typeof item === 'object') referencesIn(item, out);
    }
  }
  return out;
}

/** The document's records: the Composition, its subject Patient, then what the Composition references. */
export interface AssembledDocument {
  composition: StoredVersion;
  /** `Patient/{id}` of the subject. */
  patient: string;
  /** Composition first, then the Patient, then the others in the order the Composition names them. */
  versions: StoredVersion[];
}

/**
 * The Composition and what it references at this service, as the caller may see it: a reference to something
 * absent, deleted or hidden from the caller is left out (the recipient keeps it as this member's absolute URL),
 * so the caller learns nothing through the document. The subject must be a Patient of this service.
 */
export async function assembleDocument(
  context: FhirContext,
  compositionId: string,
  baseUrls: readonly string[],
): Promise<AssembledDocument> {
  const local = (reference: string) => {
    for (const base of baseUrls) {
      const target = localReference(reference, base);
      if (target) return target;
    }
    return undefined;
  };
  context.access.authorize('read', 'Composition');
  const composition = await context.store.read('Composition', compositionId);
  if (!composition || composition.deleted || !composition.json || !context.access.canRead(composition))
    throw fhirError('resource-not-found', `Composition/${compositionId} is not known`);
  const resource = JSON.parse(composition.json) as {
    subject?: { reference?: unknown };
  };
  const subject =
    typeof resource.subject?.reference === 'string' ? local(resource.subject.reference) : undefined;
  const patientVersion =
    subject?.resourceType === 'Patient' ? await readVisible(context, subject) : undefined;
  if (!patientVersion)
    throw fhirError(
      'network-send-invalid',
      `Composition/${compositionId} has no subject Patient of this service that you may read`,
      { expression: 'Composition.subject' },
    );
  const versions: StoredVersion[] = [composition, patientVersion];
  const seen = new Set([`Composition/${composition.id}`, `Patient/${patientVersion.id}`]);
  for (const reference of referencesIn(resource)) {
    const target = local(reference);
    if (!target || TYPES_NEVER_PUSHED.has(target.resourceType) || target.resourceType === 'Patient') continue;
    const key = `${target.resourceType}/${target.id}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const version = await readVisible(context, target);
    if (version) versions.push(version);
  }
  if (versions.length > MAX_DOCUMENT_RECORDS)
    throw fhirError(
      'network-send-invalid',
      `The document would hold more than ${MAX_DOCUMENT_RECORDS} records`,
    );
  return { composition, patient: `Patient/${patientVersion.id}`, versions };
}

async function readVisible(
  context: FhirContext,
  target: { resourceType: string; id: string; versionId?: number },
): Promise<StoredVersion | undefined> {
  const version =
    target.versionId === undefined
      ? await context.store.read(target.resourceType, target.id)
      : await context.store.vread(target.resourceType, target.id, target.versionId);
  if (!version || version.deleted || version.json === undefined) return undefined;
  return context.access.canRead(version) ? version : undefined;
}

/** The types of a document's records that no live grant of these opens (for treatment, now). */
export function typesNotGranted(
  grants: readonly LedgerGrant[],
  recipient: Recipient,
  resourceTypes: Iterable<string>,
  atMs: number,
): { refused: string[]; grantIds: string[] } {
  const mine = grants.filter((g) => g.grantee === recipient.pseudonym && g.granteeMsp === recipient.mspId);
  const refused: string[] = [];
  const used = new Set<string>();
  for (const type of new Set(resourceTypes)) {
    const opening = mine.find((g) => grantAllows(g, type, atMs, DEFAULT_PURPOSE));
    if (opening) used.add(opening.grantId);
    else refused.push(type);
  }
  return { refused, grantIds: [...used].sort() };
}

/**
 * The document Bundle as text: the records spliced in as stored (never re-serialised; fullUrl = this member's
 * absolute URL of the resource), then one evidence Provenance per record (target = its absolute version URL).
 */
export function documentBundleText(
  versions: readonly StoredVersion[],
  evidence: readonly RecordEvidence[],
  sender: CustodianIdentity,
  identifier: string,
  timestamp: string,
): string {
  const entries: string[] = [];
  const provenances: string[] = [];
  for (let i = 0; i < versions.length; i++) {
    const version = versions[i];
    const fullUrl = `${sender.fhirBaseUrl}/${version.resourceType}/${version.id}`;
    entries.push(`{"fullUrl":${JSON.stringify(fullUrl)},"resource":${version.json!}}`);
    const target = versionUrl(sender.fhirBaseUrl, version.resourceType, version.id, version.versionId);
    provenances.push(
      `{"fullUrl":"urn:uuid:${uuidFromName(`hie-ledger evidence|${target}`)}","resource":` +
        `${evidenceProvenanceText({ fullUrl: target, lastUpdated: version.lastUpdated }, sender, evidence[i])}}`,
    );
  }
  return (
    `{"resourceType":"Bundle","identifier":{"system":"${DOCUMENT_IDENTIFIER_SYSTEM}","value":${JSON.stringify(identifier)}},` +
    `"type":"document","timestamp":${JSON.stringify(timestamp)},"entry":[${entries.concat(provenances).join(',')}]}`
  );
}

/** The `$network-deliver` body: the network patient, the recipient's pseudonym, the document. */
export function deliverBodyText(npid: string, recipient: Recipient, documentText: string): string {
  return (
    `{"resourceType":"Parameters","parameter":[{"name":"patient","valueString":${JSON.stringify(npid)}},` +
    `{"name":"recipient","valueString":${JSON.stringify(recipient.pseudonym)}},` +
    `{"name":"document","resource":${documentText}}]}`
  );
}

/** What the recipient member answered, or why it could not be reached. */
export type DeliveryOutcome =
  | { kind: 'answered'; status: number; body: string; retryAfter?: string }
  | { kind: 'unreachable'; issue: OperationOutcomeIssue };

/** Sends a `$network-deliver` body to a member with a network token for the actor (push-setup.ts wires it). */
export interface DeliveryTransport {
  deliver(recipient: MemberEntry, actor: NetworkActor, body: string): Promise<DeliveryOutcome>;
}

/**
 * The transport over the exchange's own clients: a network token of the recipient member for the actor (cached by
 * NetworkTokenClient), then the POST through the hardened MemberHttpClient, all within `deadlineMs`. A token the
 * recipient no longer takes (401) is fetched anew once.
 */
export function memberDeliveryTransport(tokens: NetworkTokenClient, deadlineMs: number): DeliveryTransport {
  return {
    async deliver(recipient, actor, body) {
      const signal = AbortSignal.timeout(deadlineMs);
      try {
        const response = await tokens.postOperation(recipient, actor, 'network-deliver', body, signal);
        const retryAfter = response.headers['retry-after'];
        return {
          kind: 'answered',
          status: response.status,
          body: response.body.toString('utf8'),
          retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
        };
      } catch (err) {
        if (err instanceof MemberCallError) return { kind: 'unreachable', issue: err.toIssue() };
        if (err instanceof NetworkTokenRefused)
          return { kind: 'unreachable', issue: issue('error', 'security', err.message) };
        throw err;
      }
    },
  };
}

/** What A's grant check reads: the home's network id of a patient and its grants naming one participant of a
 * member, a withdrawn one already `revoked` (ConsentService). */
export interface PatientGrantSource {
  networkIdOf(patient: string): string | undefined;
  networkGrantsOf(patientReference: string, grantee: string, granteeMsp: string): LedgerGrant[];
}

export interface NetworkSendOptions {
  /** This member's MSP id. */
  mspId: string;
  members: MemberLookup;
  journal: Pick<BatchJournal, 'members'>;
  grants: PatientGrantSource | undefined;
  transport: DeliveryTransport;
  recordAccess?: (record: AccessRecordInput) => void;
  now?: () => number;
}

/** A member's directory entry; the ledger out of reach is 503 `ledger-unavailable`, never a 500. */
export async function memberEntry(members: MemberLookup, mspId: string): Promise<MemberEntry | undefined> {
  try {
    return await members.member(mspId);
  } catch (err) {
    throw fhirError(
      'ledger-unavailable',
      'The member directory on the ledger cannot be read now; retry later',
      {
        headers: { 'Retry-After': '5' },
        cause: err,
      },
    );
  }
}

/** The retry hint while records wait for their anchors (the anchoring interval is seconds). */
const NOT_ANCHORED_RETRY_SECONDS = '5';

function recipientParameter(request: FhirRequest): Recipient {
  if (request.query.recipient !== undefined)
    throw fhirError('parameter-invalid', 'recipient is accepted only in a Parameters body', {
      expression: 'recipient',
    });
  if (request.body === undefined || request.body.trim() === '')
    throw fhirError('parameter-missing', '$network-send needs the parameter recipient', {
      expression: 'recipient',
    });
  let body: unknown;
  try {
    body = parseClientJson(request.body);
  } catch {
    throw fhirError('body-not-json', 'The body is not JSON');
  }
  const parameters = body as { resourceType?: unknown; parameter?: unknown };
  if (parameters?.resourceType !== 'Parameters')
    throw fhirError('body-not-resource', 'The body must be a Parameters resource');
  const found = (Array.isArray(parameters.parameter) ? parameters.parameter : []).filter(
    (p: { name?: unknown }) => p?.name === 'recipient',
  ) as Record<string, unknown>[];
  if (found.length === 0)
    throw fhirError('parameter-missing', '$network-send needs the parameter recipient', {
      expression: 'recipient',
    });
  const handle = found[0].valueString;
  const recipient = found.length === 1 && typeof handle === 'string' ? parseNetworkHandle(handle) : undefined;
  if (!recipient)
    throw fhirError(
      'parameter-invalid',
      'recipient must be one valueString "<mspId>|<pseudonym>" (the recipient’s $network-actor handle)',
      { expression: 'recipient' },
    );
  return recipient;
}

/** `POST [base]/Composition/{id}/$network-send`. */
export function networkSendHandler(options: NetworkSendOptions): InteractionHandler {
  const now = options.now ?? Date.now;
  return async (request, context) => {
    const recipient = recipientParameter(request);
    const self = await memberEntry(options.members, options.mspId);
    if (!self || self.status !== 'active')
      throw fhirError(
        'member-not-registered',
        'This service has no active entry in the member directory: run `hie-ledger member register`',
      );
    const sender: CustodianIdentity = {
      mspId: self.mspId,
      organization: self.organization,
      fhirBaseUrl: self.fhirBaseUrl,
    };
    // References may name this service by its own request URL or by its directory URL.
    const document = await assembleDocument(context, request.id!, [request.baseUrl, sender.fhirBaseUrl]);
    const refused = (why: string) =>
      fhirError(
        'network-send-refused',
        `The document cannot be sent to ${recipient.mspId}|${recipient.pseudonym}: ${why}`,
      );
    if (recipient.mspId === options.mspId)
      throw refused('the recipient is a participant of this service: it reads the records here');
    const npid = options.grants?.networkIdOf(document.patient);
    if (npid === undefined || !options.grants)
      throw refused('this service is not the home of the patient, so it holds no grant of the patient');
    const at = now();
    const { refused: notGranted, grantIds } = typesNotGranted(
      options.grants.networkGrantsOf(document.patient, recipient.pseudonym, recipient.mspId),
      recipient,
      document.versions.map((v) => v.resourceType),
      at,
    );
    if (notGranted.length > 0)
      throw refused(`no live grant of the patient for this recipient opens ${notGranted.join(', ')}`);
    const recipientEntry = await memberEntry(options.members, recipient.mspId);
    if (!recipientEntry || recipientEntry.status !== 'active')
      throw refused(`${recipient.mspId} is not an active member`);

    const evidence = await collectEvidence(document.versions, {
      store: context.store,
      journal: options.journal,
    });
    const pending = document.versions.filter((_, i) => evidence[i].status !== 'anchored');
    if (pending.length > 0)
      throw fhirError(
        'network-send-not-anchored',
        `${pending.map((v) => `${v.resourceType}/${v.id}`).join(', ')} not yet anchored on the ledger; retry shortly`,
        { headers: { 'Retry-After': NOT_ANCHORED_RETRY_SECONDS } },
      );
    const identifier = documentIdentifierOf(
      versionUrl(sender.fhirBaseUrl, 'Composition', document.composition.id, document.composition.versionId),
    );
    const documentText = documentBundleText(
      document.versions,
      evidence,
      sender,
      identifier,
      new Date(at).toISOString(),
    );
    const caller = context.access.caller;
    const outcome = await options.transport.deliver(
      recipientEntry,
      {
        subjectId: caller.participant,
        subjectRole: caller.role,
        purposes: [DEFAULT_PURPOSE],
        consentReferences: grantIds,
      },
      deliverBodyText(npid, recipient, documentText),
    );
    const answer = deliveryAnswer(outcome, recipient, identifier);
    options.recordAccess?.({
      patient: document.patient,
      accessor: recipient.pseudonym,
      accessorMsp: recipient.mspId,
      interaction: 'network-send',
      outcome: 'allowed',
      at: new Date(now()).toISOString(),
      count: document.versions.length,
      grantId: grantIds[0],
      purpose: DEFAULT_PURPOSE,
    });
    return answer;
  };
}

const ERROR_CODE_PATTERN = /^[a-z][a-z-]{0,63}$/;

/** The recipient's error code from its OperationOutcome (its own words are another member's text: not passed on). */
function recipientErrorCode(body: string): string | undefined {
  try {
    const outcome = JSON.parse(body) as {
      issue?: { details?: { coding?: { system?: unknown; code?: unknown }[] } }[];
    };
    for (const entry of outcome.issue ?? [])
      for (const coding of entry.details?.coding ?? [])
        if (typeof coding.code === 'string' && ERROR_CODE_PATTERN.test(coding.code)) return coding.code;
  } catch {
    // not an OperationOutcome
  }
  return undefined;
}

/** The recipient's answer as this service's: its result on success, else a refusal naming the member. */
export function deliveryAnswer(
  outcome: DeliveryOutcome,
  recipient: Recipient,
  identifier: string,
): FhirResponse {
  if (outcome.kind === 'unreachable')
    throw fhirError(
      'network-send-failed',
      `The document was not delivered: ${outcome.issue.diagnostics ?? ''}`,
    );
  if (outcome.status === 200) {
    let result: unknown;
    try {
      const parameters = JSON.parse(outcome.body) as {
        parameter?: { name?: unknown; valueCode?: unknown }[];
      };
      result = parameters.parameter?.find((p) => p.name === 'result')?.valueCode;
    } catch {
      result = undefined;
    }
    if (result === 'stored' || result === 'review')
      return {
        status: 200,
        body: {
          resourceType: 'Parameters',
          parameter: [
            { name: 'result', valueCode: result },
            {
              name: 'identifier',
              valueIdentifier: { system: DOCUMENT_IDENTIFIER_SYSTEM, value: identifier },
            },
            { name: 'recipient', valueString: `${recipient.mspId}|${recipient.pseudonym}` },
          ],
        } as unknown as FhirResource,
      };
    throw fhirError('network-send-failed', `member ${recipient.mspId} answered 200 without a result`);
  }
  const code = recipientErrorCode(outcome.body);
  const said = `member ${recipient.mspId} answered ${outcome.status}${code ? ` ${code}` : ''}`;
  if (outcome.status === 503)
    throw fhirError('network-send-retry', `The document was not taken yet (${said}); retry later`, {
      headers: { 'Retry-After': /^[0-9]{1,4}$/.test(outcome.retryAfter ?? '') ? outcome.retryAfter! : '5' },
    });
  throw fhirError('network-send-failed', `The document was not delivered (${said})`);
}

export function networkSendOperation(options: NetworkSendOptions): OperationRegistration {
  return {
    name: 'network-send',
    levels: ['instance'],
    resourceTypes: ['Composition'],
    methods: ['POST'],
    documentation:
      'Push: sends this Composition as a FHIR document Bundle, with the integrity evidence of every entry, to a recipient of another member (parameter recipient = "<mspId>|<pseudonym>") under the patient’s grant.',
    handler: networkSendHandler(options),
  };
}
