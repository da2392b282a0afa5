/**
 * The `$export` kick-off request (HL7 FHIR Bulk Data Access IG v2.0.0, "Bulk Data Kick-off Request"), read and
 * checked before a job exists: everything a client can get wrong is a 400 here, never a failed job later.
 *
 *   GET|POST [base]/$export, [base]/Patient/$export, [base]/Group/[id]/$export
 *     _outputFormat  application/fhir+ndjson (also application/ndjson, ndjson)
 *     _since         instant: only resources changed after it
 *     _type          types (comma-separated, repeatable)
 *     _typeFilter    Type?search (comma-separated, repeatable; one type's filters are OR-ed)
 *     patient        (POST Parameters, Patient and Group level) references of the patients to export
 *     includeAssociatedData  `_integrity` (this server's value): each resource's integrity evidence as Provenance
 *     _elements      declared unsupported (400 naming it)
 */
import { fhirError, type OperationOutcomeIssue, issue } from '../fhir/outcome.js';
import { parseQuery } from '../fhir/query.js';
import { parseSearch } from '../fhir/search/parse.js';
import { isKnownResourceType, referenceKey, searchDefinitions } from '../fhir/search/definitions.js';
import { readOperationInput } from '../fhir/operations/terminology.js';
import type { FhirRequest } from '../fhir/interactions/types.js';

export type ExportLevel = 'system' | 'patient' | 'group';

/** The `includeAssociatedData` value of this server: each exported resource's salt and Merkle proof (docs/bulk.md). */
export const INTEGRITY_ASSOCIATED_DATA = '_integrity';

export const OUTPUT_FORMATS = new Set(['application/fhir+ndjson', 'application/ndjson', 'ndjson']);

/** One `_typeFilter`: a type and its search (the query text, parsed again when the job runs). */
export interface TypeFilter {
  type: string;
  query: string;
}

/** The kick-off as the job keeps it (JSON): parameters resolved, nothing left to refuse. */
export interface ExportRequest {
  level: ExportLevel;
  /** Group level: the Group's id. */
  group?: string;
  /**
   * The patients (`Patient/id`) the export is limited to: the Group's members or the `patient` parameter. Absent:
   * every patient (Patient level) or everything (system level).
   */
  patients?: string[];
  /** The types exported, in order. */
  types: string[];
  typeFilters: TypeFilter[];
  /** `_since` as an instant (ISO, ms). */
  since?: string;
  /** includeAssociatedData=_integrity. */
  integrity: boolean;
  /** The kick-off URL, for the manifest's `request`. */
  requestUrl: string;
  /** The FHIR base the files' URLs are made under. */
  baseUrl: string;
}

/** Parameters a kick-off takes; anything else is refused (or ignored with a warning under handling=lenient). */
const KNOWN = new Set([
  '_outputFormat',
  '_since',
  '_type',
  '_typeFilter',
  'patient',
  'includeAssociatedData',
  '_elements',
  '_format',
  '_pretty',
]);

/** Result parameters a `_typeFilter` search may not carry: they shape a search's page, not what matches. */
const TYPE_FILTER_REFUSED = new Set([
  '_include',
  '_revinclude',
  '_sort',
  '_count',
  '_offset',
  '_elements',
  '_summary',
  '_total',
  '_contained',
  '_containedType',
  '_type',
  '_format',
  '_pretty',
]);

/** The types of a patient-level export: Patient and the types of its compartment. */
export function patientCompartmentTypes(): string[] {
  return ['Patient', ...searchDefinitions().patientCompartment.keys()].filter(
    (type, i, all) => all.indexOf(type) === i,
  );
}

function invalid(name: string, diagnostics: string): never {
  throw fhirError('parameter-invalid', diagnostics, { expression: name });
}

/** `_since`: an instant (a dateTime with seconds and a zone); returned as the ISO instant in ms. */
export function parseSinceInstant(value: string): string {
  const ok =
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/.test(value) &&
    !Number.isNaN(Date.parse(value));
  if (!ok) invalid('_since', `_since must be an instant such as 2024-01-01T00:00:00Z, not '${value}'`);
  return new Date(Date.parse(value)).toISOString();
}

function listValues(values: string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** `_typeFilter` values: `Type?query`, the query's own characters percent-encoded (the IG's rule). */
function parseTypeFilters(values: string[] | undefined): TypeFilter[] {
  const filters: TypeFilter[] = [];
  for (const value of listValues(values)) {
    const q = value.indexOf('?');
    const type = q < 0 ? value : value.slice(0, q);
    const query = q < 0 ? '' : value.slice(q + 1);
    if (!isKnownResourceType(type))
      invalid('_typeFilter', `_typeFilter '${value}' does not start with a resource type`);
    if (query === '') invalid('_typeFilter', `_typeFilter '${value}' has no search parameters`);
    const parsed = parseQuery(query);
    for (const name of Object.keys(parsed))
      if (TYPE_FILTER_REFUSED.has(name))
        invalid('_typeFilter', `_typeFilter '${type}?...' may not use ${name}: only search criteria`);
    // Parsed strictly now, so a parameter the search cannot apply is the client's 400 now, not a failed job.
    parseSearch(parsed, { resourceType: type, strict: true });
    filters.push({ type, query });
  }
  return filters;
}

/** The `patient` parameter (POST Parameters): `valueReference` of `Patient/id`. */
function parsePatients(values: unknown[] | undefined, strings: string[] | undefined): string[] | undefined {
  if (strings && strings.length > 0) invalid('patient', 'patient takes valueReference values (Patient/id)');
  if (!values) return undefined;
  const patients: string[] = [];
  for (const value of values) {
    const reference = (value as { reference?: unknown } | null)?.reference;
    const key = typeof reference === 'string' ? referenceKey(reference) : undefined;
    if (!key || !key.startsWith('Patient/'))
      invalid('patient', 'patient takes references to Patient resources (Patient/id)');
    if (!patients.includes(key)) patients.push(key);
  }
  return patients;
}

/**
 * Reads a kick-off: throws the 400 of the first parameter it cannot serve. `warnings` collects what
 * handling=lenient ignored. Access (which types, which patients) is decided by the caller of this function.
 */
export function readExportRequest(
  request: FhirRequest,
  level: ExportLevel,
  warnings: OperationOutcomeIssue[],
): Omit<ExportRequest, 'types' | 'baseUrl' | 'requestUrl'> & { askedTypes?: string[] } {
  const input = readOperationInput(request);
  const lenient = request.preferHandling === 'lenient';
  const names = new Set([...input.strings.keys(), ...input.values.keys()]);
  for (const name of names) {
    if (KNOWN.has(name)) continue;
    if (name === '__resource') invalid('body', 'POST $export takes a Parameters body');
    if (!lenient)
      throw fhirError('parameter-unsupported', `$export does not take the parameter '${name}'`, {
        expression: name,
      });
    warnings.push(issue('warning', 'not-supported', `$export parameter '${name}' is not supported: ignored`));
  }
  const one = (name: string): string | undefined => {
    const values = input.strings.get(name);
    if (values && values.length > 1) invalid(name, `${name} may be given once`);
    return values?.[0];
  };

  const outputFormat = one('_outputFormat');
  if (outputFormat !== undefined && !OUTPUT_FORMATS.has(outputFormat))
    invalid(
      '_outputFormat',
      `_outputFormat '${outputFormat}' is not served: application/fhir+ndjson (or application/ndjson, ndjson)`,
    );
  if (input.strings.has('_elements') || input.values.has('_elements'))
    throw fhirError('parameter-unsupported', '$export does not support _elements: whole resources only', {
      expression: '_elements',
    });
  let integrity = false;
  for (const value of listValues(input.strings.get('includeAssociatedData'))) {
    if (value !== INTEGRITY_ASSOCIATED_DATA)
      throw fhirError(
        'parameter-unsupported',
        `includeAssociatedData '${value}' is not supported; this server offers '${INTEGRITY_ASSOCIATED_DATA}'`,
        { expression: 'includeAssociatedData' },
      );
    integrity = true;
  }

  const sinceText = one('_since');
  const since = sinceText === undefined ? undefined : parseSinceInstant(sinceText);

  let askedTypes: string[] | undefined;
  if (input.strings.has('_type')) {
    askedTypes = [];
    for (const type of listValues(input.strings.get('_type'))) {
      if (!isKnownResourceType(type)) invalid('_type', `_type names an unknown resource type '${type}'`);
      if (!askedTypes.includes(type)) askedTypes.push(type);
    }
    if (askedTypes.length === 0) invalid('_type', '_type names no resource type');
  }
  if (level !== 'system') {
    const compartment = new Set(patientCompartmentTypes());
    for (const type of askedTypes ?? [])
      if (!compartment.has(type))
        invalid('_type', `${type} is not in the Patient compartment, which a ${level}-level $export exports`);
  }
  const typeFilters = parseTypeFilters(input.strings.get('_typeFilter'));
  for (const filter of typeFilters)
    if (askedTypes && !askedTypes.includes(filter.type))
      invalid('_typeFilter', `_typeFilter names ${filter.type}, which _type does not ask for`);

  if (level === 'system' && (input.values.has('patient') || input.strings.has('patient')))
    invalid('patient', 'patient is a parameter of Patient and Group level $export');
  const patients = parsePatients(input.values.get('patient'), input.strings.get('patient'));

  return { level, askedTypes, typeFilters, since, integrity, patients };
}
