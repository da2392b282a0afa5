/**
 * Saving fetched records at B (docs/exchange.md "Saving fetched records"):
 *
 *   POST [base]/Patient/{id}/$network-save   body: a Bundle with entries as `$network-everything` returned them
 *
 * Each record entry (its `fullUrl` the custodian's version URL, its resource the custodian's exact text) must come
 * with the Provenance that followed it. Every record is verified again against the ledger, now (the answer may
 * be hours old, and the Bundle came back from a client): the custodian is the member the Provenance names, read
 * from the member directory, never the Bundle's word for its URL. Any record that does not verify now (failed, or
 * still pending) refuses the whole save: nothing is stored.
 *
 * Then, in one transaction, each record is stored as B's copy: a new id here, references to the patient rewritten
 * to Patient/{id}, references between saved records to their copies, any other relative reference to the
 * custodian's absolute URL; and beside it a Provenance at B keeping the custodian's version URL (entity source),
 * the original text (base64, `original-text` extension) and the evidence as verified (`integrity-evidence`), so
 * the copy can be verified again later. A saved copy is B's record from then on: a later revocation of the grant
 * does not remove it.
 */
import { readablePatient } from './readable-patient.js';
import { randomUUID } from 'node:crypto';
import { parseFhirJson, type FhirResource } from '../fhir/fhir-json.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import { validateResource, writeVersion } from '../fhir/interactions/common.js';
import type { FhirContext, InteractionHandler } from '../fhir/interactions/types.js';
import { fhirError, type OperationOutcomeIssue } from '../fhir/outcome.js';
import type { BatchSource } from '../integrity/verification.js';
import type { MemberLookup } from './members.js';
import {
  EVIDENCE_EXTENSION_URL,
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
  verifyEvidenceBundle,
  type ScannedBundle,
  type VerifiedAnswer,
} from './record-verifier.js';
import { isJsonObject } from '../fhir/definitions/json.js';

/** The most records one save stores. */
export const MAX_SAVED_RECORDS = 1000;
const DEPTH = 100;

const invalid = (why: string) => fhirError('network-save-invalid', `Nothing was saved: ${why}`);

/** One fetched record as the client sent it back: the custodian's text, and the Provenance that came with it. */
export interface ReturnedRecord {
  fullUrl: string;
  /** The custodian's exact text (a span of the body). */
  text: string;
  resourceType: string;
  id: string;
  /** The MSP id its Provenance names as custodian. */
  custodianMsp: string;
  /** The Provenance, as JSON text, its status made the custodian's again (`anchored`) for the verifier. */
  evidence: string;
}

/** Reads the body: records and their Provenances, each record's text kept exactly (hostile input: capped). */
export function readReturnedRecords(body: string | undefined): ReturnedRecord[] {
  if (body === undefined || body.trim() === '') throw invalid('the request has no body');
  let scanned: ScannedBundle;
  try {
    // One more entry than two per record: an OperationOutcome of the fetch may come along.
    scanned = scanBundleText(body, {
      maxDepth: DEPTH,
      maxEntries: 2 * MAX_SAVED_RECORDS + 1,
      members: ['resourceType'],
    });
  } catch (err) {
    if (err instanceof ShapeError || err instanceof SyntaxError)
      throw invalid(`the body is not JSON (${err.message})`);
    throw err;
  }
  const entries = scanned.entries;
  if (scanned.members.get('resourceType') !== 'Bundle') throw invalid('the body is not a Bundle');

  const provenances = new Map<string, Record<string, unknown>>();
  const records: Omit<ReturnedRecord, 'custodianMsp' | 'evidence'>[] = [];
  for (const [index, entry] of entries.entries()) {
    if (entry.resourceText === undefined) continue;
    let resource: unknown;
    try {
      resource = JSON.parse(entry.resourceText);
    } catch {
      throw invalid(`entry ${index} is not JSON`);
    }
    if (!isJsonObject(resource)) throw invalid(`entry ${index} is not a resource`);
    if (resource.resourceType === 'OperationOutcome') continue;
    if (resource.resourceType === 'Provenance') {
      const targets: unknown[] = Array.isArray(resource.target) ? resource.target : [];
      const target = targets.length === 1 && isJsonObject(targets[0]) ? targets[0].reference : undefined;
      if (typeof target === 'string') {
        if (provenances.has(target))
          throw invalid(`more than one Provenance targets ${target.slice(0, 200)}`);
        provenances.set(target, resource);
      }
      continue;
    }
    if (typeof entry.fullUrl !== 'string' || entry.fullUrl.length > 2048)
      throw invalid(`entry ${index} has no fullUrl: send the entries as they were fetched`);
    if (typeof resource.resourceType !== 'string' || typeof resource.id !== 'string')
      throw invalid(`entry ${index} has no resource type or id`);
    records.push({
      fullUrl: entry.fullUrl,
      text: entry.resourceText,
      resourceType: resource.resourceType,
      id: resource.id,
    });
  }
  if (records.length === 0) throw invalid('the Bundle holds no fetched record');
  if (records.length > MAX_SAVED_RECORDS)
    throw invalid(`one save stores at most ${MAX_SAVED_RECORDS} records`);
  const seen = new Set<string>();
  return records.map((record) => {
    if (seen.has(record.fullUrl)) throw invalid(`${record.fullUrl.slice(0, 200)} is sent twice`);
    seen.add(record.fullUrl);
    const provenance = provenances.get(record.fullUrl);
    if (!provenance)
      throw invalid(`${record.fullUrl.slice(0, 200)} comes without the Provenance it was fetched with`);
    const custodianMsp = custodianOf(provenance);
    if (!custodianMsp)
      throw invalid(`the Provenance of ${record.fullUrl.slice(0, 200)} names no custodian member`);
    return {
      fullUrl: record.fullUrl,
      text: record.text,
      resourceType: record.resourceType,
      id: record.id,
      custodianMsp,
      evidence: asCustodianEvidence(provenance),
    };
  });
}

function custodianOf(provenance: Record<string, unknown>): string | undefined {
  for (const agent of Array.isArray(provenance.agent) ? provenance.agent : []) {
    if (!isJsonObject(agent) || !isJsonObject(agent.who) || !isJsonObject(agent.who.identifier)) continue;
    const { system, value } = agent.who.identifier;
    if (
      system === MSP_IDENTIFIER_SYSTEM &&
      typeof value === 'string' &&
      /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(value)
    )
      return value;
  }
  return undefined;
}

/**
 * The receiver's Provenance put back in the custodian's terms for the verifier: its evidence status `verified`
 * becomes `anchored` (the custodian's claim), and the receiver's verdict parts are dropped; everything else is
 * checked again from scratch.
 */
function asCustodianEvidence(provenance: Record<string, unknown>): string {
  const copy = JSON.parse(JSON.stringify(provenance)) as Record<string, unknown>;
  for (const extension of Array.isArray(copy.extension) ? copy.extension : []) {
    if (
      !isJsonObject(extension) ||
      extension.url !== EVIDENCE_EXTENSION_URL ||
      !Array.isArray(extension.extension)
    )
      continue;
    extension.extension = extension.extension.filter(
      (part: unknown) =>
        !(
          isJsonObject(part) &&
          (part.url === 'anchoredBy' || part.url === 'anchoredAt' || part.url === 'reason')
        ),
    );
    for (const part of extension.extension as unknown[])
      if (isJsonObject(part) && part.url === 'status' && part.valueCode === 'verified')
        part.valueCode = 'anchored';
  }
  return JSON.stringify(copy);
}

/** Every record verified against the ledger now, per custodian (each as the directory names it). */
export async function verifyReturnedRecords(
  records: readonly ReturnedRecord[],
  members: MemberLookup,
  batches: BatchSource,
): Promise<{ custodians: Map<string, CustodianIdentity>; answers: Map<string, VerifiedAnswer> }> {
  const custodians = new Map<string, CustodianIdentity>();
  for (const mspId of new Set(records.map((r) => r.custodianMsp))) {
    let entry;
    try {
      entry = await members.member(mspId);
    } catch {
      throw fhirError('ledger-unavailable', 'The member directory cannot be read now; retry later');
    }
    if (!entry || entry.mspId !== mspId) throw invalid(`${mspId} is not a member of the exchange`);
    custodians.set(mspId, { mspId, organization: entry.organization, fhirBaseUrl: entry.fhirBaseUrl });
  }
  const answers = new Map<string, VerifiedAnswer>();
  for (const [mspId, custodian] of custodians) {
    const mine = records.filter((r) => r.custodianMsp === mspId);
    const entries: string[] = [];
    for (const record of mine) {
      entries.push(recordEntryText(record.fullUrl, record.text));
      entries.push(includeEntryText(record.evidence));
    }
    answers.set(mspId, await verifyEvidenceBundle(searchsetText(mine.length, entries), custodian, batches));
  }
  const problems: OperationOutcomeIssue[] = [];
  for (const answer of answers.values()) {
    for (const issue of answer.issues) problems.push(issue);
    for (const record of answer.records)
      if (record.status === 'pending')
        problems.push({
          severity: 'error',
          code: 'processing',
          diagnostics: `${record.fullUrl} cannot be verified now (${record.reason ?? 'pending'}); fetch it again later`,
        });
  }
  if (problems.length > 0)
    throw fhirError(
      'network-save-unverified',
      `Nothing was saved: ${problems.map((p) => p.diagnostics).join('; ')}`.slice(0, 4000),
    );
  return { custodians, answers };
}

/** A saved copy and its Provenance at B. */
export interface SavedCopy {
  source: string;
  copy: FhirResource & { id: string };
  provenance: FhirResource & { id: string };
}

/**
 * The copies of verified records, for the local Patient `patientRef`: new ids, references rewritten (the
 * custodian's patients -> patientRef; saved records -> their copies; other relative ones -> the custodian's absolute
 * URL), each with its Provenance at B.
 */
export function copiesOf(
  records: readonly ReturnedRecord[],
  verified: Map<string, VerifiedAnswer>,
  custodians: Map<string, CustodianIdentity>,
  patientRef: string,
  enterer: string | undefined,
  recorded: string,
): SavedCopy[] {
  const newReference = new Map<string, string>();
  for (const record of records) {
    const base = custodians.get(record.custodianMsp)!.fhirBaseUrl;
    newReference.set(`${base}/${record.resourceType}/${record.id}`, `${record.resourceType}/${randomUUID()}`);
  }
  return records.map((record) => {
    const custodian = custodians.get(record.custodianMsp)!;
    const base = custodian.fhirBaseUrl;
    const copy = parseFhirJson<FhirResource>(record.text);
    rewriteReferences(copy, (reference) =>
      referenceHere(reference, base, (url, resourceType) =>
        resourceType === 'Patient' ? patientRef : newReference.get(url),
      ),
    );
    const reference = newReference.get(`${base}/${record.resourceType}/${record.id}`)!;
    copy.id = reference.slice(reference.indexOf('/') + 1);
    dropSourceVersion(copy);
    const answer = verified.get(record.custodianMsp)!;
    const index = answer.records.findIndex((r) => r.fullUrl === record.fullUrl);
    const otherAgents: Record<string, unknown>[] = [];
    if (enterer)
      otherAgents.push({
        type: { coding: [{ system: PARTICIPANT_TYPE_SYSTEM, code: 'enterer', display: 'Enterer' }] },
        who: { reference: enterer },
      });
    const provenance = copyProvenance({
      id: randomUUID(),
      target: reference,
      evidence: verifiedEvidenceOf(answer, index),
      originalText: record.text,
      recorded,
      custodian,
      otherAgents,
      entity: [{ role: 'source', what: { reference: record.fullUrl } }],
    });
    return { source: record.fullUrl, copy: copy as FhirResource & { id: string }, provenance };
  });
}

export interface NetworkSaveOptions {
  members: MemberLookup;
  /** A fresh batch source per request (e.g. `() => new CachedBatchSource(ledger)`). */
  batchSource: () => BatchSource;
  now?: () => number;
}

export function networkSaveHandler(options: NetworkSaveOptions): InteractionHandler {
  const now = options.now ?? Date.now;
  return async (request, context) => {
    const patientRef = await readablePatient(request, context);
    // The custodians' Patients are not saved: the records saved belong to this Patient, which stays as it is.
    const all = readReturnedRecords(request.body);
    const records = all.filter((record) => record.resourceType !== 'Patient');
    const skipped = all.filter((record) => record.resourceType === 'Patient');
    if (records.length === 0) throw invalid('the Bundle holds no fetched record but Patients');
    const { custodians, answers } = await verifyReturnedRecords(
      records,
      options.members,
      options.batchSource(),
    );
    const copies = copiesOf(
      records,
      answers,
      custodians,
      patientRef,
      context.access.caller.fhirUser,
      new Date(now()).toISOString(),
    );
    for (const { source, copy } of copies) {
      const patients = context.patientsOf?.(copy) ?? [];
      if (!patients.includes(patientRef))
        throw invalid(
          `${source.slice(0, 200)} does not belong to ${patientRef}'s record once saved (not in its compartment)`,
        );
    }
    for (const { copy, provenance } of copies) {
      // The copy is a record verified against the custodian's anchor: never refused by a rule family stricter here
      // than the network pins (docs/validation.md, "Rule families"); the Provenance is this service's own.
      validateResource(context, copy, 'create', undefined, 'received');
      validateResource(context, provenance, 'create');
    }
    await context.store.transaction(async (tx) => {
      // Built without a spread followed by more properties (docs/architecture.md, hot paths).
      const within: FhirContext = Object.assign({}, context, { store: tx });
      for (const { copy, provenance } of copies)
        for (const resource of [copy, provenance])
          await writeVersion(
            within,
            {
              resourceType: resource.resourceType,
              id: resource.id,
              resource,
              method: 'POST',
              ifNoneExist: true,
            },
            undefined,
          );
    });
    return {
      status: 200,
      body: {
        resourceType: 'Parameters',
        parameter: [
          ...copies.map(({ source, copy, provenance }) => ({
            name: 'saved',
            part: [
              { name: 'source', valueUri: source },
              { name: 'copy', valueReference: { reference: `${copy.resourceType}/${copy.id}` } },
              { name: 'provenance', valueReference: { reference: `Provenance/${provenance.id}` } },
            ],
          })),
          ...skipped.map((record) => ({ name: 'skipped', valueUri: record.fullUrl })),
        ],
      } as unknown as FhirResource,
    };
  };
}

export function networkSaveOperation(options: NetworkSaveOptions): OperationRegistration {
  return {
    name: 'network-save',
    levels: ['instance'],
    resourceTypes: ['Patient'],
    methods: ['POST'],
    documentation:
      "Saves records fetched with $network-everything (a Bundle of the entries as returned, each with its Provenance) as this server's copies for the Patient: each verified again against the ledger, stored with a Provenance keeping the custodian's URL, the original text and the evidence; all or nothing.",
    handler: networkSaveHandler(options),
  };
}
