/**
 * The initiating gateway at B (docs/exchange.md "Pull"; /work pull protocol §4):
 *
 *   GET|POST [base]/Patient/{id}/$network-everything?_type=&_since=&date=&code=&category=&_count=&purpose=
 *
 * A clinician at B asks for what the other members hold about the patient in front of them. In phases:
 *   1. parse: the network search subset (anything else: 400 `parameter-unsupported` naming it);
 *   2. resolve: the caller must see Patient/{id} here (404 otherwise, as for an absent one); its network patient
 *      (npid) and home come from PatientLinks; not linked: a searchset with only a `network-not-linked` outcome;
 *   3. locate: the home's `$network-locate` (or, at the home, the local locator) gives the grant ids for this actor
 *      and purpose and the custodians;
 *   4. fan out: every custodian but B, in parallel, `$network-records` with a network token carrying the grant ids,
 *      each call within the per-member timeout and all within the overall deadline (MemberHttpClient);
 *   5. verify: every answer against this peer's ledger (verifyEvidenceBundle, one batch source for the run); records
 *      whose root this peer does not hold yet are verified again, for at most `pendingRetryMs` within the deadline;
 *   6. assemble: one searchset (receivedBundleText): the kept records byte-identical, each followed by its
 *      Provenance, then one OperationOutcome naming every custodian that was down, slow or refused.
 *
 * Never a 500 and never a hang for what another member does: each failure is an issue naming the member. Nothing
 * fetched is stored at B (see `$network-save`); no paging state is kept: one capped answer.
 */
import { readablePatient } from './readable-patient.js';
import type { ConsentService } from '../consent/consent-service.js';
import type { NetworkIds } from '../consent/network-ids.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import type { NetworkCaller } from '../fhir/interactions/access-policy.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import type { FhirRequest, InteractionHandler } from '../fhir/interactions/types.js';
import { readOperationInput } from '../fhir/operations/terminology.js';
import { fhirError, type OperationOutcomeIssue } from '../fhir/outcome.js';
import { isKnownResourceType, searchDefinitions } from '../fhir/search/definitions.js';
import type { OnChainBatch } from '../integrity/anchor-contract-client.js';
import { ProvenNodes } from '../integrity/merkle.js';
import type { BatchSource } from '../integrity/verification.js';
import { liveFor } from './grant-check.js';
import { MemberCallError, type MemberResponse } from './member-http.js';
import type { MemberEntry, MemberLookup } from './members.js';
import { NetworkTokenRefused, type NetworkActor, type NetworkTokenClient } from './network-token-client.js';
import type { PatientLinks } from './patient-links.js';
import { receivedBundleText, verifyEvidenceBundle, type VerifiedAnswer } from './record-verifier.js';
import { isJsonObject } from '../fhir/definitions/json.js';

// Phase 1: the parameters

/** The network search subset of `$network-everything`, checked. */
export interface NetworkQuery {
  /** `_type`: only these resource types. */
  types?: string[];
  /** `_since`: an instant, as given. */
  since?: string;
  /** `date`: search prefix + date, e.g. `ge2020-01-01` (repeatable: all must hold). */
  dates: string[];
  /** `code`: token `system|code` or `code` (repeatable). */
  codes: string[];
  /** `category`: token (repeatable). */
  categories: string[];
  /** `_count`: the most records one custodian may answer (more: it refuses with network-too-many). */
  count?: number;
  /** `purpose`: PurposeOfUse code (default TREAT). */
  purpose: string;
}

/** The parameters `$network-everything` takes; `_format` and `_pretty` are the HTTP layer's. */
export const NETWORK_QUERY_PARAMETERS = ['_type', '_since', 'date', 'code', 'category', '_count', 'purpose'];
const HTTP_PARAMETERS = new Set(['_format', '_pretty']);
const DEFAULT_PURPOSE = 'TREAT';
/** The most records one custodian is asked for with `_count`. */
export const MAX_NETWORK_COUNT = 100_000;
const PURPOSE_CODE = /^[A-Z][A-Z0-9_-]{0,63}$/;
const INSTANT =
  /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))$/;
const DATE_PARAMETER =
  /^(eq|ne|gt|lt|ge|le|sa|eb|ap)?\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])(T([01]\d|2[0-3]):[0-5]\d(:([0-5]\d|60)(\.\d{1,9})?)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))?)?)?)?$/;
/** A token: `code`, `system|code`, `system|` or `|code`; no control characters. */
const TOKEN = /^[^\s|\p{Cc}][^|\p{Cc}]{0,1023}$|^[^|\p{Cc}]{0,1024}\|[^|\p{Cc}]{0,1024}$/u;
const MAX_REPEATS = 20;

function invalid(name: string, message: string): Error {
  return fhirError('parameter-invalid', message, { expression: name });
}

/**
 * Phase 1: the network search subset, from the query (GET) or a Parameters body (POST). A parameter outside the
 * subset is refused by name (the network search is a defined subset, never silently widened or narrowed).
 */
export function parseNetworkQuery(request: FhirRequest): NetworkQuery {
  const input = readOperationInput(request);
  for (const name of [...input.strings.keys(), ...input.values.keys()]) {
    if (NETWORK_QUERY_PARAMETERS.includes(name) || HTTP_PARAMETERS.has(name)) continue;
    const shown = name === '__resource' ? 'a resource body' : `'${name.slice(0, 64)}'`;
    throw fhirError(
      'parameter-unsupported',
      `$network-everything does not support the parameter ${shown}; it takes ${NETWORK_QUERY_PARAMETERS.join(', ')}`,
      { expression: name === '__resource' ? [] : name },
    );
  }
  for (const name of input.values.keys())
    throw invalid(name, `${name} must be a simple value (valueString, valueInstant, valueInteger)`);
  const all = (name: string): string[] => {
    const values = input.strings.get(name) ?? [];
    if (values.length > MAX_REPEATS)
      throw invalid(name, `${name} is repeated more than ${MAX_REPEATS} times`);
    return values;
  };
  const single = (name: string): string | undefined => {
    const values = all(name);
    if (values.length > 1) throw invalid(name, `${name} may be given once`);
    return values[0];
  };

  const query: NetworkQuery = { dates: [], codes: [], categories: [], purpose: DEFAULT_PURPOSE };
  const typeValues = all('_type');
  if (typeValues.length > 0) {
    const types = new Set<string>();
    for (const type of typeValues.flatMap((v) => v.split(',')).map((t) => t.trim())) {
      if (!isKnownResourceType(type))
        throw invalid('_type', `_type names an unknown resource type '${type.slice(0, 64)}'`);
      types.add(type);
    }
    query.types = [...types];
  }
  const since = single('_since');
  if (since !== undefined) {
    if (!INSTANT.test(since) || Number.isNaN(Date.parse(since)))
      throw invalid(
        '_since',
        `_since must be an instant such as 2024-01-01T00:00:00Z, not '${since.slice(0, 64)}'`,
      );
    query.since = since;
  }
  for (const date of all('date')) {
    if (!DATE_PARAMETER.test(date))
      throw invalid(
        'date',
        `date must be a search prefix and a date such as ge2020-01-01, not '${date.slice(0, 64)}'`,
      );
    query.dates.push(date);
  }
  for (const [name, out] of [
    ['code', query.codes],
    ['category', query.categories],
  ] as const) {
    for (const token of all(name)) {
      if (token === '|' || !TOKEN.test(token))
        throw invalid(name, `${name} must be a token (code or system|code), not '${token.slice(0, 64)}'`);
      out.push(token);
    }
  }
  const count = single('_count');
  if (count !== undefined) {
    if (!/^\d{1,9}$/.test(count) || Number(count) > MAX_NETWORK_COUNT)
      throw invalid('_count', `_count must be a whole number from 0 to ${MAX_NETWORK_COUNT}`);
    query.count = Number(count);
  }
  const purpose = single('purpose');
  if (purpose !== undefined) {
    if (!PURPOSE_CODE.test(purpose))
      throw invalid(
        'purpose',
        `purpose must be a PurposeOfUse code such as TREAT, not '${purpose.slice(0, 64)}'`,
      );
    query.purpose = purpose;
  }
  return query;
}

// What the members exchange

/** A custodian the home listed. */
export interface LocatedCustodian {
  /** Its MSP id. */
  member: string;
}

/** What the home answers `$network-locate`: the grants for this actor and purpose, and where to ask. */
export interface LocateAnswer {
  grants: string[];
  custodians: LocatedCustodian[];
}

/** Who asks, as the members see it. */
export interface NetworkAsker {
  /** This member's MSP id. */
  member: string;
  /** The acting participant's pseudonym at this member. */
  actor: string;
  role: string;
  purposes: readonly string[];
}

/** The home's locator run in process, when this member is the patient's home (no call to itself). */
export type LocalLocate = (npid: string, asker: NetworkAsker) => Promise<LocateAnswer>;

/**
 * The home's locate run in process, for a fetch at the patient's home itself: the same answer the home gives
 * another member (`$network-locate`): the grants of the home's patient naming exactly (this actor, this member),
 * live now for one of the purposes and at least one resource type; with them, the linked custodians. Recorded as
 * an access record (interaction `network-locate`), as a remote locate is.
 */
export function homeLocator(options: {
  consent?: Pick<ConsentService, 'networkGrantsOf' | 'recordAccess'>;
  /** The home's network patient ids (npid -> its Patient). */
  networkIds?: Pick<NetworkIds, 'referenceOfNpid'>;
  links: Pick<PatientLinks, 'custodiansOf'>;
  now?: () => number;
}): LocalLocate {
  const now = options.now ?? Date.now;
  const types = ['Patient', ...searchDefinitions().patientCompartment.keys()];
  return async (npid, asker) => {
    const consent = options.consent;
    const patient = options.networkIds?.referenceOfNpid(npid);
    if (!consent || patient === undefined) return { grants: [], custodians: [] };
    const at = now();
    // The same check as the home's $network-locate (src/exchange/grant-check.ts), for this member's own actor.
    const caller: NetworkCaller = {
      member: asker.member,
      actor: asker.actor,
      actorRole: asker.role,
      purposes: asker.purposes,
      consentReferences: [],
      expiresAt: at,
    };
    const grants = consent
      .networkGrantsOf(patient, asker.actor, asker.member)
      .filter((grant) => liveFor(grant, caller, types, at))
      .map((grant) => grant.grantId)
      .sort();
    if (grants.length === 0) return { grants: [], custodians: [] };
    consent.recordAccess({
      patient,
      accessor: asker.actor,
      interaction: 'network-locate',
      outcome: 'allowed',
      at: new Date(at).toISOString(),
      grantId: grants[0],
      accessorMsp: asker.member,
      purpose: asker.purposes[0],
    });
    const custodians = (await options.links.custodiansOf(npid)).map((member) => ({ member }));
    return { grants, custodians };
  };
}

/** Caps on what a home's locate answer may hold (hostile input). */
const MAX_GRANTS = 100;
const MAX_CUSTODIANS = 200;
const MSP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const GRANT_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

function parametersText(parameter: Record<string, unknown>[]): string {
  return JSON.stringify({ resourceType: 'Parameters', parameter });
}

/** The body of `$network-locate`. */
export function locateRequestText(npid: string): string {
  return parametersText([{ name: 'patient', valueString: npid }]);
}

/** The body of `$network-records`: the npid and the network search subset. */
export function recordsRequestText(npid: string, query: NetworkQuery): string {
  const parameter: Record<string, unknown>[] = [{ name: 'patient', valueString: npid }];
  if (query.types) parameter.push({ name: '_type', valueString: query.types.join(',') });
  if (query.since !== undefined) parameter.push({ name: '_since', valueInstant: query.since });
  for (const date of query.dates) parameter.push({ name: 'date', valueString: date });
  for (const code of query.codes) parameter.push({ name: 'code', valueString: code });
  for (const category of query.categories) parameter.push({ name: 'category', valueString: category });
  if (query.count !== undefined) parameter.push({ name: '_count', valueInteger: query.count });
  return parametersText(parameter);
}

/**
 * The home's `$network-locate` answer, read as hostile input: grant ids and custodian MSP ids of the expected
 * shapes only, capped, duplicates dropped. Custodians are called at their directory entry's URL, never at an
 * endpoint the home names. Undefined when the text is not a Parameters resource.
 */
export function parseLocateAnswer(text: string): LocateAnswer | undefined {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isJsonObject(body) || body.resourceType !== 'Parameters') return undefined;
  const grants = new Set<string>();
  const custodians = new Set<string>();
  for (const parameter of Array.isArray(body.parameter) ? body.parameter : []) {
    if (!isJsonObject(parameter)) continue;
    if (parameter.name === 'grant' && typeof parameter.valueString === 'string') {
      if (GRANT_ID.test(parameter.valueString) && grants.size < MAX_GRANTS) grants.add(parameter.valueString);
    } else if (parameter.name === 'custodian' && Array.isArray(parameter.part)) {
      const member = parameter.part.find((p: unknown) => isJsonObject(p) && p.name === 'member') as
        Record<string, unknown> | undefined;
      const mspId = member?.valueString;
      if (typeof mspId === 'string' && MSP_ID.test(mspId) && custodians.size < MAX_CUSTODIANS)
        custodians.add(mspId);
    }
  }
  return { grants: [...grants], custodians: [...custodians].map((member) => ({ member })) };
}

// The run

export interface NetworkEverythingOptions {
  /** This member's MSP id. */
  mspId: string;
  links: PatientLinks;
  members: MemberLookup;
  /** The token client (it calls out through the exchange's MemberHttpClient) signing with this member's service key; undefined while it has none (`member register`). */
  tokens: () => NetworkTokenClient | undefined;
  /** A fresh batch source per run (e.g. `() => new CachedBatchSource(ledger)`): roots read once per run. */
  batchSource: () => BatchSource;
  /** At the home: its locator in process. Absent: a home that is this member locates nothing. */
  localLocate?: LocalLocate;
  /** Overall deadline of one request (ms): `--network-deadline-ms`. */
  deadlineMs: number;
  /** How long records whose root this peer does not hold yet are verified again (ms): `--network-pending-retry-ms`. */
  pendingRetryMs: number;
  /**
   * How long the home's last locate answer (with grants) is reused without asking the home again (ms):
   * `--network-locate-fresh-ms`. Absent or 0: the home is asked on every fetch.
   */
  locateFreshMs?: number;
  /** Test seam: waits between verification rounds. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Test seam: the clock of the remembered locate answers (ms). */
  now?: () => number;
}

/** The wait between two verification rounds of records whose root is not on this peer yet. */
const PENDING_RETRY_INTERVAL_MS = 200;
/** Pending reasons that another look at this peer's ledger may resolve (record-verifier's words). */
const ROOT_NOT_SEEN = new Set([
  'the root is not yet on this peer’s ledger',
  'this peer’s ledger could not be read',
]);

/** An issue code for the answers of other members (beside FHIR's issue.code), docs/exchange.md "Pull". */
export const NETWORK_OUTCOME_SYSTEM = 'https://hie-ledger.dev/fhir/CodeSystem/network-outcome';

function networkIssue(
  severity: OperationOutcomeIssue['severity'],
  code: OperationOutcomeIssue['code'],
  networkCode: string,
  diagnostics: string,
): OperationOutcomeIssue {
  return {
    severity,
    code,
    diagnostics,
    details: { coding: [{ system: NETWORK_OUTCOME_SYSTEM, code: networkCode }] },
  };
}

/** The answer of a custodian that could be fetched, or why it could not. */
type CustodianResult =
  | { kind: 'answer'; custodian: MemberEntry; text: string }
  | { kind: 'too-many'; custodian: MemberEntry }
  | { kind: 'issue'; issue: OperationOutcomeIssue };

/** The key of a home's locate answers: patient, actor, role and purposes. */
function locateKey(npid: string, asker: NetworkAsker): string {
  return JSON.stringify([npid, asker.actor, asker.role, [...asker.purposes].sort()]);
}

/** Custodians asked during the locate under the grants the home named last time (NetworkEverything.speculate). */
class Speculation {
  private readonly grants: string;

  constructor(
    grants: readonly string[],
    private readonly calls: Map<string, Promise<CustodianResult>>,
    private readonly aborted: AbortController,
  ) {
    this.grants = JSON.stringify([...grants].sort());
  }

  /** The call made to `member`, if the home names exactly the grants it was made under; taken once. */
  take(member: string, grants: readonly string[]): Promise<CustodianResult> | undefined {
    if (JSON.stringify([...grants].sort()) !== this.grants) return undefined;
    const call = this.calls.get(member);
    this.calls.delete(member);
    return call;
  }

  /** Every call not taken is aborted and its answer never read. */
  discard(): void {
    if (this.calls.size > 0) this.aborted.abort();
    this.calls.clear();
  }
}

/** Roots read once per run; a root this peer did not hold is asked again on the next round. */
class RunBatches implements BatchSource {
  readonly proven = new ProvenNodes();
  private readonly found = new Map<string, OnChainBatch>();
  private source: BatchSource;

  constructor(private readonly fresh: () => BatchSource) {
    this.source = fresh();
  }

  async readBatch(root: string): Promise<OnChainBatch | null> {
    const known = this.found.get(root);
    if (known) return known;
    const batch = await this.source.readBatch(root);
    if (batch) this.found.set(root, batch);
    return batch;
  }

  /** Next round: what was absent is read again (what was found stays cached). */
  nextRound(): void {
    this.source = this.fresh();
  }
}

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** A member that did not answer for these reasons may answer again soon: nothing it said is contradicted. */
const UNAVAILABLE = new Set(['timeout', 'deadline', 'network']);
/** How long B remembers a home's locate answer, for when the home cannot be reached. */
export const REMEMBERED_LOCATE_MS = 60 * 60 * 1000;
const REMEMBERED_LOCATE_LIMIT = 10_000;

/** The homes' last locate answers per (patient, actor, role, purposes), in memory, for an hour. */
class LocateMemory {
  private readonly answers = new Map<string, { answer: LocateAnswer; at: number }>();

  constructor(private readonly now: () => number) {}

  remember(key: string, answer: LocateAnswer): void {
    if (answer.grants.length === 0) {
      this.answers.delete(key);
      return;
    }
    if (this.answers.size >= REMEMBERED_LOCATE_LIMIT) this.answers.clear();
    this.answers.set(key, { answer, at: this.now() });
  }

  /** The answer remembered for `key` if the home gave it less than `maxAgeMs` ago (at most an hour). */
  recall(key: string, maxAgeMs = REMEMBERED_LOCATE_MS): LocateAnswer | undefined {
    const remembered = this.answers.get(key);
    if (!remembered) return undefined;
    const age = this.now() - remembered.at;
    if (age >= REMEMBERED_LOCATE_MS || age < 0) {
      this.answers.delete(key);
      return undefined;
    }
    return age < maxAgeMs ? remembered.answer : undefined;
  }
}

export class NetworkEverything {
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  private readonly located: LocateMemory;

  constructor(private readonly options: NetworkEverythingOptions) {
    this.sleep = options.sleep ?? defaultSleep;
    this.located = new LocateMemory(options.now ?? Date.now);
  }

  /** The operation's handler: every phase in order. */
  readonly handler: InteractionHandler = async (request, context) => {
    const query = parseNetworkQuery(request);
    const patientRef = await readablePatient(request, context);
    const asker: NetworkAsker = {
      member: this.options.mspId,
      // The caller's pseudonym at this member: what `$network-actor` tells the patient to name in a grant.
      actor: context.access.caller.participant,
      role: context.access.caller.role,
      purposes: [query.purpose],
    };
    const body = await this.run(patientRef, asker, query);
    return {
      status: 200,
      // Other members' records: never kept by a cache between the clinician and B.
      headers: { 'content-type': 'application/fhir+json; charset=utf-8', 'cache-control': 'no-store' },
      body,
    };
  };

  /** Phases 2 to 6 for a Patient the caller may see: the searchset text. */
  async run(patientRef: string, asker: NetworkAsker, query: NetworkQuery): Promise<string> {
    const deadline = new AbortController();
    const startedAt = Date.now();
    const timer = setTimeout(() => deadline.abort(), this.options.deadlineMs);
    let speculation: Speculation | undefined;
    try {
      // Phase 2: the network patient and its home.
      const npid = await this.options.links.npidOf(patientRef);
      const home = npid === undefined ? undefined : await this.options.links.homeOf(patientRef);
      if (npid === undefined || home === undefined)
        return onlyOutcomes([
          networkIssue(
            'information',
            'not-found',
            'network-not-linked',
            `${patientRef} is not linked to a network patient: no other member can be asked (the patient links at each member with a link token from the home)`,
          ),
        ]);

      // Phase 3: the grants and the custodians; meanwhile, the custodians the home named last time are asked
      // under the grants it named then (see speculate: used only if the home names the same grants now).
      speculation = this.speculate(home, npid, asker, query, deadline.signal);
      const { answer: located, issue: homeIssue } = await this.locate(home, npid, asker, deadline.signal);
      if (!located) return onlyOutcomes([homeIssue!]);
      if (located.grants.length === 0)
        return onlyOutcomes([
          networkIssue(
            'information',
            'not-found',
            'network-no-grant',
            `The patient's home (${home}) lists nothing for you and purpose ${asker.purposes.join(', ')}: no live grant names you, or there is nothing to fetch`,
          ),
        ]);

      // Phase 4: every custodian but this member, in parallel.
      const actor: NetworkActor = {
        subjectId: asker.actor,
        subjectRole: asker.role,
        purposes: asker.purposes,
        consentReferences: located.grants,
      };
      // Not B itself; nor a home that could not be reached (already named in an issue).
      const custodians = located.custodians.filter(
        (c) => c.member !== this.options.mspId && !(homeIssue && c.member === home),
      );
      const results = await Promise.all(
        custodians.map(
          (c) =>
            speculation?.take(c.member, located.grants) ??
            this.fetchRecords(c.member, npid, actor, query, deadline.signal),
        ),
      );
      speculation?.discard();
      const tooMany = results.filter((r) => r.kind === 'too-many').map((r) => r.custodian.mspId);
      if (tooMany.length > 0)
        throw fhirError(
          'network-too-many',
          `${tooMany.join(', ')} hold${tooMany.length === 1 ? 's' : ''} more records for this patient than one answer may carry: narrow the request with _type, _since or date`,
        );

      // Phase 5: verification, with bounded retries of roots this peer has not seen yet.
      const issues: OperationOutcomeIssue[] = homeIssue ? [homeIssue] : [];
      const fetched: { custodian: MemberEntry; text: string }[] = [];
      for (const result of results) {
        if (result.kind === 'issue') issues.push(result.issue);
        else if (result.kind === 'answer') fetched.push(result);
      }
      const answers = await this.verify(fetched, deadline.signal, startedAt);

      // Phase 6: one searchset.
      return receivedBundleText(answers, issues);
    } finally {
      clearTimeout(timer);
      // Whatever was asked speculatively and not used (no grant now, other grants, an error): aborted, unread.
      speculation?.discard();
    }
  }

  /**
   * Phase 3: the home's locator (in process at the home), or an issue naming the home. When the home cannot be
   * reached (down, slow, 5xx), the answer it gave this actor for this patient and purpose within the last hour is
   * used, with the issue: each custodian still checks every grant on its own ledger, so a remembered answer never
   * opens more than the grants do now (a revoked grant is refused there); it only lets B find the custodians.
   */
  private async locate(
    home: string,
    npid: string,
    asker: NetworkAsker,
    signal: AbortSignal,
  ): Promise<{ answer?: LocateAnswer; issue?: OperationOutcomeIssue }> {
    if (home === this.options.mspId) {
      if (!this.options.localLocate) return { answer: { grants: [], custodians: [] } };
      return { answer: await this.options.localLocate(npid, asker) };
    }
    const actor: NetworkActor = {
      subjectId: asker.actor,
      subjectRole: asker.role,
      purposes: asker.purposes,
      consentReferences: [],
    };
    const key = locateKey(npid, asker);
    // A fresh answer is reused without a second round trip: each custodian still checks every grant id on its own
    // ledger, so it opens nothing a revocation closed; a custodian linked (or a grant added) meanwhile is only
    // found once it is no longer fresh (docs/exchange.md "The flow").
    const freshMs = this.options.locateFreshMs ?? 0;
    if (freshMs > 0) {
      const fresh = this.located.recall(key, freshMs);
      if (fresh) return { answer: fresh };
    }
    const called = await this.call(home, actor, 'network-locate', locateRequestText(npid), signal);
    if ('issue' in called)
      return { answer: called.unavailable ? this.located.recall(key) : undefined, issue: called.issue };
    const { member, response } = called;
    if (response.status !== 200) {
      const unavailable = response.status >= 500 || response.status === 429;
      return {
        answer: unavailable ? this.located.recall(key) : undefined,
        issue: refusedIssue(member, response, 'the patient’s home'),
      };
    }
    const answer = parseLocateAnswer(response.body.toString('utf8'));
    if (!answer)
      return {
        issue: networkIssue(
          'error',
          'structure',
          'network-member-answer',
          `The patient's home ${member.organization} (${member.mspId}) did not answer the locate with a Parameters resource`,
        ),
      };
    // What the home said now replaces what was remembered (no grant now: nothing remembered).
    this.located.remember(key, answer);
    return { answer };
  }

  /**
   * Phase 4 begun during phase 3: when the home is another member and answered this actor, patient and purpose
   * with grants within the last hour, the custodians it named then (but this member) are asked under those grants
   * while the home is asked again, saving a round trip. What they answer is used only for a custodian the home
   * names again with exactly the same grants (a custodian it names anew is asked then, under the grants it names
   * now); everything else is discarded unread and its calls aborted: a home that says "no grant" or names other
   * grants is believed, as without speculation. Each custodian checks every grant id on its own ledger, so a
   * speculative call is answered only under a live grant: it opens nothing (docs/exchange.md "The flow",
   * docs/threat-model.md).
   */
  private speculate(
    home: string,
    npid: string,
    asker: NetworkAsker,
    query: NetworkQuery,
    signal: AbortSignal,
  ): Speculation | undefined {
    if (home === this.options.mspId) return undefined;
    const remembered = this.located.recall(locateKey(npid, asker));
    if (!remembered) return undefined;
    const actor: NetworkActor = {
      subjectId: asker.actor,
      subjectRole: asker.role,
      purposes: asker.purposes,
      consentReferences: remembered.grants,
    };
    const aborted = new AbortController();
    const callSignal = AbortSignal.any([signal, aborted.signal]);
    const calls = new Map<string, Promise<CustodianResult>>();
    for (const { member } of remembered.custodians) {
      if (member === this.options.mspId || calls.has(member)) continue;
      const call = this.fetchRecords(member, npid, actor, query, callSignal);
      // A call never taken is never awaited: its failure must not surface as an unhandled rejection.
      call.catch(() => undefined);
      calls.set(member, call);
    }
    return new Speculation(remembered.grants, calls, aborted);
  }

  /** Phase 4, one custodian: its evidence Bundle text, or why there is none. */
  private async fetchRecords(
    mspId: string,
    npid: string,
    actor: NetworkActor,
    query: NetworkQuery,
    signal: AbortSignal,
  ): Promise<CustodianResult> {
    const called = await this.call(mspId, actor, 'network-records', recordsRequestText(npid, query), signal);
    if ('issue' in called) return { kind: 'issue', issue: called.issue };
    const { member, response } = called;
    if (response.status === 200)
      return { kind: 'answer', custodian: member, text: response.body.toString('utf8') };
    if (response.status === 400 && errorCodeIn(response) === 'network-too-many')
      return { kind: 'too-many', custodian: member };
    return { kind: 'issue', issue: refusedIssue(member, response, 'custodian') };
  }

  /**
   * One network operation at a member: its directory entry (an active member only), a network token (cached), the
   * POST; a 401 (a token the member no longer honours) is retried once with a new token. Every failure is an issue
   * naming the member, never an exception.
   */
  private async call(
    mspId: string,
    actor: NetworkActor,
    operation: string,
    body: string,
    signal: AbortSignal,
  ): Promise<
    | { member: MemberEntry; response: MemberResponse }
    | { issue: OperationOutcomeIssue; unavailable?: boolean }
  > {
    let member: MemberEntry | undefined;
    try {
      member = await this.options.members.member(mspId);
    } catch {
      return {
        issue: networkIssue(
          'error',
          'transient',
          'network-directory',
          `The member directory could not be read for ${mspId}`,
        ),
      };
    }
    if (!member || member.status !== 'active' || member.mspId !== mspId)
      return {
        issue: networkIssue(
          'warning',
          'not-found',
          'network-not-member',
          `${mspId} is not an active member of the exchange: it was not asked`,
        ),
      };
    const tokens = this.options.tokens();
    if (!tokens)
      return {
        issue: networkIssue(
          'error',
          'security',
          'network-not-registered',
          `member ${member.mspId} was not asked: this service has no exchange service key (hie-ledger member register)`,
        ),
      };
    try {
      const response = await tokens.postOperation(member, actor, operation, body, signal);
      return { member, response };
    } catch (err) {
      if (err instanceof MemberCallError)
        return { issue: err.toIssue(), unavailable: UNAVAILABLE.has(err.kind) };
      if (err instanceof NetworkTokenRefused)
        return {
          issue: networkIssue(
            'error',
            'security',
            'network-member-refused',
            `member ${member.mspId}: refused a network token for you (${err.error})`,
          ),
        };
      // Anything else (a key that cannot sign...) is this member's fault: still named, never a 500.
      return {
        issue: networkIssue(
          'error',
          'exception',
          'network-member-unavailable',
          `member ${member.mspId}: the call could not be made (${(err as Error).name})`,
        ),
      };
    }
  }

  /**
   * Phase 5: every answer verified; while records wait for a root this peer has not seen yet, and the retry time and
   * the deadline allow, those answers are verified again (found roots stay cached, absent ones are read again).
   */
  private async verify(
    fetched: readonly { custodian: MemberEntry; text: string }[],
    signal: AbortSignal,
    startedAt: number,
  ): Promise<VerifiedAnswer[]> {
    const batches = new RunBatches(this.options.batchSource);
    const identity = (m: MemberEntry) => ({
      mspId: m.mspId,
      organization: m.organization,
      fhirBaseUrl: m.fhirBaseUrl,
    });
    const answers = await Promise.all(
      fetched.map((f) => verifyEvidenceBundle(f.text, identity(f.custodian), batches)),
    );
    const retryUntil = startedAt + Math.min(this.options.pendingRetryMs, this.options.deadlineMs);
    for (;;) {
      const waiting = answers
        .map((answer, i) => ({ answer, i }))
        .filter(({ answer }) =>
          answer.records.some((r) => r.status === 'pending' && ROOT_NOT_SEEN.has(r.reason ?? '')),
        );
      const left = retryUntil - Date.now();
      if (waiting.length === 0 || left <= 0 || signal.aborted) break;
      await this.sleep(Math.min(PENDING_RETRY_INTERVAL_MS, left), signal);
      if (signal.aborted) break;
      batches.nextRound();
      for (const { i } of waiting)
        answers[i] = await verifyEvidenceBundle(fetched[i].text, identity(fetched[i].custodian), batches);
    }
    return answers;
  }
}

/** A searchset with no records and one OperationOutcome entry. */
function onlyOutcomes(issues: OperationOutcomeIssue[]): string {
  return receivedBundleText([], issues);
}

/** The catalogue code of a member's OperationOutcome answer (details.coding of ours), if any. */
function errorCodeIn(response: MemberResponse): string | undefined {
  try {
    const outcome = JSON.parse(response.body.toString('utf8')) as { issue?: unknown };
    for (const i of Array.isArray(outcome.issue) ? outcome.issue : []) {
      const coding =
        isJsonObject(i) && isJsonObject(i.details) && Array.isArray(i.details.coding) ? i.details.coding : [];
      for (const c of coding)
        if (isJsonObject(c) && typeof c.code === 'string' && /^[a-z][a-z0-9-]{0,63}$/.test(c.code))
          return c.code;
    }
  } catch {
    // not JSON: no code
  }
  return undefined;
}

/** A member answered with an error status: named with the status and its code (never its text). */
function refusedIssue(member: MemberEntry, response: MemberResponse, as: string): OperationOutcomeIssue {
  const code = errorCodeIn(response);
  const unavailable = response.status === 503 || response.status === 429 || response.status >= 500;
  return networkIssue(
    'error',
    unavailable ? 'transient' : 'security',
    unavailable ? 'network-member-unavailable' : 'network-member-refused',
    `member ${member.mspId} (${as}): answered ${response.status}${code ? ` ${code}` : ''}; none of its records are included`,
  );
}

// Declaration

/** The canonical URL of the operation's definition. */
export const NETWORK_EVERYTHING_URL =
  'https://hie-ledger.dev/fhir/OperationDefinition/Patient-network-everything';

/** The OperationDefinition of `$network-everything` (served in the CapabilityStatement). */
export function networkEverythingDefinition(): FhirResource & { id: string } {
  const inParameter = (
    name: string,
    type: string,
    max: string,
    documentation: string,
    searchType?: string,
  ) => ({
    name,
    use: 'in',
    min: 0,
    max,
    type,
    ...(searchType ? { searchType } : {}),
    documentation,
  });
  return {
    resourceType: 'OperationDefinition',
    id: 'Patient-network-everything',
    url: NETWORK_EVERYTHING_URL,
    version: '1.0.0',
    name: 'PatientNetworkEverything',
    title: "What the exchange's other members hold about the patient",
    status: 'active',
    kind: 'operation',
    publisher: 'hie-ledger',
    description:
      "Fetches, under the patient's grants, what the other members of the exchange hold about this Patient: the patient's home is asked for the grants and custodians, every custodian is called in parallel, and every record is verified against the ledger (anchored by the custodian's own MSP). Each record is returned byte-identical with fullUrl = the custodian's absolute URL, followed by a Provenance (search.mode include) with status verified or pending; failed records are left out and named, as are custodians that were down, slow or refused, in one OperationOutcome (search.mode outcome). Unlike $everything, which answers what this server holds, nothing here is stored at this server unless saved with $network-save.",
    affectsState: false,
    code: 'network-everything',
    resource: ['Patient'],
    system: false,
    type: false,
    instance: true,
    parameter: [
      inParameter('_type', 'string', '*', 'Only these resource types (comma-separated).', undefined),
      inParameter('_since', 'instant', '1', 'Only records last updated at or after this instant.'),
      inParameter(
        'date',
        'string',
        '*',
        'A date search (prefix and date, e.g. ge2020-01-01) on each record.',
        'date',
      ),
      inParameter('code', 'string', '*', 'A token search (system|code) on the record’s code.', 'token'),
      inParameter(
        'category',
        'string',
        '*',
        'A token search (system|code) on the record’s category.',
        'token',
      ),
      inParameter(
        '_count',
        'integer',
        '1',
        'The most records one custodian may answer; a custodian holding more refuses the fetch (400 network-too-many: narrow it).',
      ),
      inParameter(
        'purpose',
        'code',
        '1',
        'PurposeOfUse (http://terminology.hl7.org/CodeSystem/v3-ActReason) of the fetch; default TREAT.',
      ),
      {
        name: 'return',
        use: 'out',
        min: 1,
        max: '1',
        type: 'Bundle',
        documentation:
          'A searchset Bundle: the verified and pending records with their Provenance, then one OperationOutcome naming what was left out.',
      },
    ],
  } as unknown as FhirResource & { id: string };
}

export function networkEverythingOperation(handler: InteractionHandler): OperationRegistration {
  return {
    name: 'network-everything',
    definition: NETWORK_EVERYTHING_URL,
    definitionResource: networkEverythingDefinition(),
    levels: ['instance'],
    resourceTypes: ['Patient'],
    methods: ['GET', 'POST'],
    documentation:
      "What the exchange's other members hold about the patient, under the patient's grants, each record verified against the ledger (parameters _type, _since, date, code, category, _count, purpose). $everything answers what this server holds.",
    handler,
  };
}

/** Registers `$network-everything` (Patient instance level, GET and POST); the app calls it from its exchange wiring. */
export function registerNetworkEverything(
  registry: { registerOperation(operation: OperationRegistration): unknown },
  options: NetworkEverythingOptions,
): NetworkEverything {
  const everything = new NetworkEverything(options);
  registry.registerOperation(networkEverythingOperation(everything.handler));
  return everything;
}
