/**
 * A verified copy of another member's record, as this service stores it: by `$network-save` (records fetched by
 * pull, network-save.ts) and by `$network-deliver` (a pushed document, push-delivery.ts). Both give the copy a new
 * id here, rewrite its references, drop the source's version and keep beside it a Provenance holding the source's
 * URL, the original text and the evidence as verified (docs/exchange.md, "Saving fetched records" and "Push").
 */
import type { FhirResource } from '../fhir/fhir-json.js';
import { localReference } from './push-document.js';
import {
  MSP_IDENTIFIER_SYSTEM,
  PARTICIPANT_TYPE_SYSTEM,
  EVIDENCE_EXTENSION_URL,
  type CustodianIdentity,
} from './record-evidence.js';
import type { VerifiedAnswer } from './record-verifier.js';
import { isJsonObject } from '../fhir/definitions/json.js';

/** The Provenance extension that keeps a copy's original text, base64 of its UTF-8 bytes. */
export const ORIGINAL_TEXT_EXTENSION_URL = 'https://hie-ledger.dev/fhir/StructureDefinition/original-text';

/** Rewrites every `reference` string in place (contained resources included). */
export function rewriteReferences(value: unknown, rewrite: (reference: string) => string): void {
  if (Array.isArray(value)) for (const item of value) rewriteReferences(item, rewrite);
  else if (isJsonObject(value)) {
    for (const key of Object.keys(value)) {
      const item = value[key];
      if (key === 'reference' && typeof item === 'string') value[key] = rewrite(item);
      else if (typeof item === 'object') rewriteReferences(item, rewrite);
    }
  }
}

/**
 * A reference of a copied record, made right for this service: a reference to a resource of the source (relative,
 * or absolute under its base URL) becomes `copyOf(absolute URL, resource type)` when that names one here, else the
 * source's absolute URL (a relative one would name a resource of this service), its version kept; a contained
 * (`#…`) or another server's reference is kept.
 */
export function referenceHere(
  reference: string,
  sourceBaseUrl: string,
  copyOf: (url: string, resourceType: string) => string | undefined,
): string {
  if (reference.startsWith('#')) return reference;
  const target = localReference(reference, sourceBaseUrl);
  if (!target) return reference;
  const url = `${sourceBaseUrl}/${target.resourceType}/${target.id}`;
  return (
    copyOf(url, target.resourceType) ??
    (target.versionId === undefined ? url : `${url}/_history/${target.versionId}`)
  );
}

/** Drops the source's version: this service numbers its own; the source's stays in the Provenance. */
export function dropSourceVersion(copy: FhirResource): void {
  if (!isJsonObject(copy.meta)) return;
  delete copy.meta.versionId;
  delete copy.meta.lastUpdated;
  if (Object.keys(copy.meta).length === 0) delete copy.meta;
}

/** The checked evidence extension of the index-th record of a verified answer (the verifier's rebuilt Provenance). */
export function verifiedEvidenceOf(verified: VerifiedAnswer, index: number): unknown {
  const provenance = JSON.parse(verified.entries[2 * index + 1]) as {
    resource: { extension: { url: string }[] };
  };
  return provenance.resource.extension.find((e) => e.url === EVIDENCE_EXTENSION_URL);
}

/** What a copy's Provenance says besides its custodian agent. */
export interface CopyProvenance {
  id: string;
  /** The copy here (`Type/id`). */
  target: string;
  /** The checked evidence extension (verifiedEvidenceOf). */
  evidence: unknown;
  /** The source's exact text of the record. */
  originalText: string;
  recorded: string;
  custodian: CustodianIdentity;
  /** Agents after the custodian. */
  otherAgents: Record<string, unknown>[];
  /** The `entity` list (the source's URL of the record, role `source`). */
  entity: Record<string, unknown>[];
}

/** This service's Provenance of a copy (CREATE): the evidence, the original text, the custodian and the sources. */
export function copyProvenance(parts: CopyProvenance): FhirResource & { id: string } {
  return {
    resourceType: 'Provenance',
    id: parts.id,
    extension: [
      parts.evidence,
      {
        url: ORIGINAL_TEXT_EXTENSION_URL,
        valueBase64Binary: Buffer.from(parts.originalText, 'utf8').toString('base64'),
      },
    ],
    target: [{ reference: parts.target }],
    recorded: parts.recorded,
    activity: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: 'CREATE' }],
    },
    agent: [
      {
        type: { coding: [{ system: PARTICIPANT_TYPE_SYSTEM, code: 'custodian', display: 'Custodian' }] },
        who: {
          identifier: { system: MSP_IDENTIFIER_SYSTEM, value: parts.custodian.mspId },
          display: parts.custodian.organization,
        },
      },
      ...parts.otherAgents,
    ],
    entity: parts.entity,
  };
}
