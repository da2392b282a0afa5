/**
 * `POST [base]/$network-records` at a custodian, the patient's home too (docs/exchange.md, "Pull: the responding
 * side"): another member's service, acting for one of its participants under the patient's grants, fetches what
 * this member holds for a network patient, each record with its integrity evidence.
 *
 * In: Parameters { patient: npid; optional `_type` (comma list), `_since` (instant), `date` (repeatable, search
 * prefix + date), `code`, `category` (tokens), `_count` (the caller's own cap) }. The grants are the token's
 * (`consent_reference`), each checked against this member's peer (grant-check.ts). The records are the current
 * versions in the compartments of the local Patients linked to the npid (at the home: its own Patient), of the
 * types the grants open now, matching the parameters, minus the local denials (local-denials.ts) and minus any
 * record that also belongs to a patient outside those Patients. Out: the evidence Bundle (record-evidence.ts).
 * No link or no valid grant: the same empty searchset as "no records". More than the cap: 400 `network-too-many`.
 * Every answer that discloses records is recorded (disclosure.ts).
 */
import type { ConsentService } from '../consent/consent-service.js';
import type { NetworkIds } from '../consent/network-ids.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import type { FhirResponse, InteractionHandler } from '../fhir/interactions/types.js';
import { parseFhirJson } from '../fhir/fhir-json.js';
import { fhirError } from '../fhir/outcome.js';
import {
  indexedAs,
  isKnownResourceType,
  searchDefinitions,
  searchParameter,
} from '../fhir/search/definitions.js';
import { parseSearch } from '../fhir/search/parse.js';
import type { ResourceStore, StoredVersion } from '../fhir/store/resource-store.js';
import type { Ledger } from '../ledger/ledger.js';
import { recordDisclosure, type DisclosureSink } from './disclosure.js';
import { grantedTypes } from './grant-check.js';
import { withheldBy } from './local-denials.js';
import type { MemberDirectory } from './member-directory.js';
import {
  networkCallerOf,
  networkParameters,
  npidParameter,
  refuseWhileBehind,
  single,
} from './network-request.js';
import type { PatientLinks } from './patient-links.js';
import { recordEvidenceBundle, searchsetText, type EvidenceSources } from './record-evidence.js';

export interface NetworkRecordsOptions {
  /** This member's MSP id. */
  mspId: string;
  members: Pick<MemberDirectory, 'member'>;
  ledger: Pick<Ledger, 'evaluate'>;
  store: ResourceStore;
  journal: EvidenceSources['journal'];
  consent?: ConsentService;
  /** The home's network patient ids (npid -> its Patient): which npids are this member's own patients. */
  networkIds?: Pick<NetworkIds, 'referenceOfNpid'>;
  patientLinks: Pick<PatientLinks, 'localPatientsOf' | 'homeOf'>;
  /** Where disclosures are recorded (AuditEvent and ledger access records). */
  disclosures: DisclosureSink;
  maxRecords: number;
  maxLagSeconds: number;
  /** Security labels never sent (`system|code` or a bare code). */
  withholdLabels: readonly string[];
  now?: () => number;
}

const ACCEPTED = new Set(['patient', '_type', '_since', 'date', 'code', 'category', '_count']);
/** The filters that are search parameters of the record's type: a type without one of them matches none. */
const SEARCH_FILTERS = ['date', 'code', 'category'] as const;
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/** The answer when nothing may be sent: byte for byte the answer of a patient without records. */
const NOTHING_TEXT = searchsetText(0, []);

function answer(text: string): FhirResponse {
  return {
    status: 200,
    headers: { 'content-type': 'application/fhir+json; charset=utf-8', 'cache-control': 'no-store' },
    body: text,
  };
}

/** What the caller asks for, checked. */
interface RecordsQuery {
  npid: string;
  /** `_type`, when given: the only types sent. */
  types?: Set<string>;
  /** `_since` as given (an instant). */
  since?: string;
  /** The search filters given (date, code, category), as search parameters. */
  filters: Map<string, string[]>;
  /** The caller's cap (`_count`), when given. */
  count?: number;
}

function readQuery(parameters: Map<string, string[]>): RecordsQuery {
  const npid = npidParameter(parameters, 'network-records');
  let types: Set<string> | undefined;
  const typeValues = parameters.get('_type');
  if (typeValues) {
    types = new Set();
    for (const type of typeValues.flatMap((v) => v.split(',')).map((t) => t.trim())) {
      if (type === '') continue;
      if (!isKnownResourceType(type))
        throw fhirError('parameter-invalid', `_type names an unknown resource type '${type}'`, {
          expression: '_type',
        });
      types.add(type);
    }
  }
  const since = single(parameters, '_since');
  if (since !== undefined && !(INSTANT.test(since) && !Number.isNaN(Date.parse(since))))
    throw fhirError('parameter-invalid', `_since must be an instant such as 2024-01-01T00:00:00Z`, {
      expression: '_since',
    });
  const filters = new Map<string, string[]>();
  for (const name of SEARCH_FILTERS) {
    const values = parameters.get(name);
    if (values === undefined) continue;
    if (name !== 'date' && values.length > 1)
      throw fhirError('parameter-invalid', `${name} is given more than once`, { expression: name });
    filters.set(name, values);
  }
  const countText = single(parameters, '_count');
  let count: number | undefined;
  if (countText !== undefined) {
    if (!/^\d{1,9}$/.test(countText))
      throw fhirError('parameter-invalid', '_count must be a non-negative integer', { expression: '_count' });
    count = Number(countText);
  }
  // The filters' syntax is checked now, for every caller alike (before anything about the patient is looked at).
  if (filters.size > 0) {
    const query: Record<string, string[]> = {};
    for (const [name, values] of filters) query[name] = values;
    parseSearch(query, { resourceType: 'Observation', strict: true });
  }
  return { npid, types, since, filters, count };
}

/**
 * Compartment types never sent to another member, whatever the grant: AuditEvents (as at this member, no grant
 * opens them: they are the patient's and the custodian's record of disclosures) and Consents (the patient's grants
 * name the other members' participants the patient chose: who else may see the records is not the caller's).
 */
const NEVER_SENT = new Set(['AuditEvent', 'Consent']);

/** The compartment's types (not the Patient) with the parameters that link a resource of the type to a patient. */
function compartmentParams(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [type, params] of searchDefinitions().patientCompartment) {
    if (type === 'Patient' || NEVER_SENT.has(type)) continue;
    const usable = params.filter((param) => searchParameter(type, param) !== undefined);
    if (usable.length > 0) out.set(type, usable);
  }
  return out;
}

export function networkRecordsHandler(options: NetworkRecordsOptions): InteractionHandler {
  const now = options.now ?? Date.now;
  const withheld = withheldBy(options.withholdLabels);
  const byType = compartmentParams();
  const allTypes = ['Patient', ...byType.keys()];
  return async (request, context) => {
    const caller = networkCallerOf(context, 'network-records');
    const query = readQuery(networkParameters(request, ACCEPTED));
    const { consent } = options;
    if (!consent) return answer(NOTHING_TEXT);
    await refuseWhileBehind(consent, options.maxLagSeconds);
    // Who this member is, as the receiver will check it (its directory entry), before anything about the patient.
    const self = await options.members.member(options.mspId);
    if (!self)
      throw fhirError(
        'member-not-registered',
        'This member has no active entry in the member directory: it cannot answer network requests',
      );

    const homePatient = options.networkIds?.referenceOfNpid(query.npid);
    const localPatients =
      homePatient !== undefined ? [homePatient] : await options.patientLinks.localPatientsOf(query.npid);
    if (localPatients.length === 0) return answer(NOTHING_TEXT);
    const homeMsp =
      homePatient !== undefined ? options.mspId : await options.patientLinks.homeOf(localPatients[0]);
    if (homeMsp === undefined) return answer(NOTHING_TEXT);

    const at = now();
    const candidates = query.types ? allTypes.filter((t) => query.types!.has(t)) : allTypes;
    // At the home, a grant it has withdrawn counts as revoked before the ledger has the revocation.
    const withdrawn = new Set(
      homePatient === undefined
        ? []
        : consent
            .networkGrantsOf(homePatient, caller.actor, caller.member)
            .filter((grant) => grant.status !== 'active')
            .map((grant) => grant.grantId),
    );
    const granted = await grantedTypes(
      options.ledger,
      query.npid,
      homeMsp,
      caller,
      candidates,
      at,
      withdrawn,
    );
    if (granted.types.size === 0) return answer(NOTHING_TEXT);

    const cap = Math.min(options.maxRecords, query.count ?? Infinity);
    const versions = await selectRecords(options.store, localPatients, granted.types, query, byType, cap);
    const sent = versions.filter((version) => !withheld(parseFhirJson<unknown>(version.json!)));
    const text = sent.length === 0 ? NOTHING_TEXT : await recordEvidenceBundle(sent, options, self);
    if (sent.length > 0)
      await recordDisclosure(options.disclosures, {
        caller,
        npid: homePatient === undefined ? query.npid : undefined,
        grantIds: granted.grantIds,
        patients: patientsOf(sent, localPatients),
        count: sent.length,
        types: [...new Set(sent.map((v) => v.resourceType))].sort(),
        at,
      });
    return answer(text);
  };
}

/** The local Patients whose records are among `versions`. */
function patientsOf(versions: readonly StoredVersion[], localPatients: readonly string[]): string[] {
  const local = new Set(localPatients);
  const out = new Set<string>();
  for (const version of versions) {
    if (version.resourceType === 'Patient' && local.has(`Patient/${version.id}`))
      out.add(`Patient/${version.id}`);
    for (const patient of version.patients ?? []) if (local.has(patient)) out.add(patient);
  }
  return [...out].sort();
}

/**
 * The current versions of the local Patients and their compartments, of the granted types, matching the query;
 * a record that also belongs to a patient outside `localPatients` is left out (its other patient granted nothing).
 * More than `cap`: 400 `network-too-many`.
 */
async function selectRecords(
  store: ResourceStore,
  localPatients: readonly string[],
  types: ReadonlySet<string>,
  query: RecordsQuery,
  byType: ReadonlyMap<string, string[]>,
  cap: number,
): Promise<StoredVersion[]> {
  const local = new Set(localPatients);
  const found = new Map<string, StoredVersion>();
  const tooMany = () =>
    fhirError('network-too-many', `More than ${cap} records match: narrow the request with _type or _since`);
  const since = query.since === undefined ? undefined : Date.parse(query.since);
  // The Patient itself: it has none of the search filters' parameters, so only when none is given.
  if (types.has('Patient') && query.filters.size === 0) {
    for (const reference of localPatients) {
      const patient = await store.read('Patient', reference.slice('Patient/'.length));
      if (!patient || patient.deleted || patient.json === undefined) continue;
      if (since !== undefined && Date.parse(patient.lastUpdated) < since) continue;
      found.set(reference, patient);
    }
  }
  if (!store.search) throw fhirError('not-implemented', 'This store does not support search');
  for (const [type, params] of byType) {
    if (!types.has(type)) continue;
    if ([...query.filters.keys()].some((name) => searchParameter(type, name) === undefined)) continue;
    for (const param of params) {
      const search: Record<string, string[]> = { [param]: [localPatients.join(',')] };
      for (const [name, values] of query.filters) search[name] = values;
      if (query.since !== undefined) search._lastUpdated = [`ge${query.since}`];
      const compiled = parseSearch(search, { resourceType: type });
      const result = await store.search({
        query: { ...compiled, count: cap + 1, offset: 0, total: 'none', include: [], revinclude: [] },
        indexedAs,
        canRead: (version) =>
          !version.deleted && (version.patients ?? []).every((patient) => local.has(patient)),
      });
      for (const version of result.versions) {
        if (version.json === undefined) continue;
        found.set(`${version.resourceType}/${version.id}`, version);
        if (found.size > cap) throw tooMany();
      }
      if (found.size > cap) throw tooMany();
    }
  }
  return [...found.values()];
}

export function networkRecordsOperation(options: NetworkRecordsOptions): OperationRegistration {
  return {
    name: 'network-records',
    levels: ['system'],
    methods: ['POST'],
    documentation:
      "For another member's service (network token) under the patient's grants: this member's records of a network patient, each with its integrity evidence; the empty searchset without a link or a grant.",
    handler: networkRecordsHandler(options),
  };
}
