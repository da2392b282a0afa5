/**
 * Linking local Patients to network patients (docs/exchange.md, "Linking a patient across members"), and the
 * `PatientLinks` the pull side asks. The FHIR operations:
 *
 *   POST [base]/Patient/{id}/$network-link-token   (home)       custodian=<MSP id> -> token, expires
 *   POST [base]/Patient/{id}/$network-link         (custodian)  token=<link token> -> patient, home, linkedAt
 *   POST [base]/Patient/{id}/$network-unlink       (custodian)                     -> patient, home, endedAt
 *
 * Each is open to the patient themself (a patient token whose fhirUser is this Patient) and to this service's
 * systems and administrators; a caller who may not see the Patient is answered as for an absent one.
 *
 * Merged and duplicate local Patients (`Patient.link`):
 * - a Patient with a `replaced-by` link is not linked itself: the link goes to the Patient that replaced it (the
 *   chain is followed, at most MAX_MERGE_HOPS), and `npidOf` follows the same chain, so a link made before a merge
 *   is found from the surviving Patient and from the replaced one; at the home, a token asked on a replaced
 *   Patient is the surviving Patient's;
 * - two local Patients linked to the same network patient are refused, unless one of them has a `Patient.link` to
 *   the other of type `seealso`, `replaces` or `replaced-by` (this service's records say they are the same person).
 */
import { readablePatient } from './readable-patient.js';
import type { Caller } from '../fhir/interactions/access-policy.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import { parseClientJson } from '../fhir/fhir-json.js';
import type { FhirRegistry } from '../fhir/interactions/fhir-registry.js';
import type { FhirContext, FhirRequest, InteractionHandler } from '../fhir/interactions/types.js';
import { fhirError } from '../fhir/outcome.js';
import { demographicsOf, LINK_SCORE_THRESHOLD, scoreDemographics } from './demographics.js';
import type {
  EndedLink,
  LinkDisclosure,
  LinkTokens,
  PatientLink,
  PatientLinks,
  PatientLinkStorage,
  PendingWrongLinkReport,
} from './patient-links.js';
import { linkConflict } from './patient-links.js';
import { reportWrongLink, type WrongLinkSink } from './wrong-link-report.js';

/** The most `replaced-by` links followed from one Patient (a longer chain or a cycle stops there). */
export const MAX_MERGE_HOPS = 8;
const SAME_PERSON_LINKS = new Set(['seealso', 'replaces', 'replaced-by']);

/** Reads a current (not deleted) Patient by id, with no access check (the service's own bookkeeping). */
export type PatientReader = (id: string) => Promise<FhirResource | undefined>;

/** What the home keeps of its own patients' network ids (src/consent/network-ids.ts). */
export interface HomeNetworkIds {
  /** The patient's npid, made at first use (a shared index: agreed with the other replicas first). */
  npidOf(patientReference: string): string | Promise<string>;
  existingNpidOf(patientReference: string): string | undefined;
  /** The home patient (`Patient/x`) of an npid, when this service made it. */
  referenceOfNpid(npid: string): string | undefined;
}

export interface PatientLinkServiceOptions {
  mspId: string;
  store: PatientLinkStorage;
  tokens: LinkTokens;
  readPatient: PatientReader;
  /** The home's network ids; absent without a ledger (no consent service). */
  home?: HomeNetworkIds;
  /** Where wrong-link reports go; absent without a ledger (they stay pending in the link store). */
  reports?: WrongLinkSink;
  now?: () => number;
}

interface PatientLinkEntry {
  type?: string;
  other?: { reference?: string };
}

function linksOf(patient: FhirResource): PatientLinkEntry[] {
  return Array.isArray(patient.link) ? (patient.link as PatientLinkEntry[]) : [];
}

function patientIdOf(reference: string | undefined): string | undefined {
  const m = /^(?:.*\/)?Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/.exec(reference ?? '');
  return m?.[1];
}

export class PatientLinkService implements PatientLinks {
  private readonly now: () => number;

  constructor(private readonly options: PatientLinkServiceOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The Patient ids from `id` along its `replaced-by` links, `id` first (a cycle or a missing Patient ends it). */
  async mergeChain(id: string): Promise<string[]> {
    const chain = [id];
    let current = await this.options.readPatient(id);
    while (current && chain.length <= MAX_MERGE_HOPS) {
      const next = patientIdOf(linksOf(current).find((l) => l.type === 'replaced-by')?.other?.reference);
      if (!next || chain.includes(next)) break;
      const survivor = await this.options.readPatient(next);
      if (!survivor) break;
      chain.push(next);
      current = survivor;
    }
    return chain;
  }

  // The pull side's questions

  async npidOf(localPatient: string): Promise<string | undefined> {
    return (await this.linkFor(localPatient))?.npid;
  }

  async homeOf(localPatient: string): Promise<string | undefined> {
    return (await this.linkFor(localPatient))?.homeMsp;
  }

  async custodiansOf(npid: string): Promise<string[]> {
    return this.options.store.custodiansOf(npid);
  }

  async noteLinkDisclosure(disclosure: LinkDisclosure): Promise<void> {
    await this.options.store.noteDisclosure(disclosure);
  }

  async localPatientsOf(npid: string): Promise<string[]> {
    const linked = (await this.options.store.linksTo(npid)).map((l) => l.localPatient);
    const own = this.options.home?.referenceOfNpid(npid);
    return own && !linked.includes(own) ? [own, ...linked] : linked;
  }

  /** The link nearest the surviving Patient along the merge chain; the home's own npid for its patients. */
  private async linkFor(localPatient: string): Promise<Pick<PatientLink, 'npid' | 'homeMsp'> | undefined> {
    const id = patientIdOf(localPatient);
    if (!id) return undefined;
    const chain = await this.mergeChain(id);
    for (let i = chain.length - 1; i >= 0; i--) {
      const reference = `Patient/${chain[i]}`;
      const link = await this.options.store.linkOf(reference);
      if (link) return link;
      const npid = this.options.home?.existingNpidOf(reference);
      if (npid) return { npid, homeMsp: this.options.mspId };
    }
    return undefined;
  }

  // The operations' work

  /** At the home: a link token for `custodian` (the npid is made if the patient has none yet). */
  async issueToken(patientId: string, custodian: string): Promise<{ token: string; expiresAt: number }> {
    // A merged Patient's token is the surviving Patient's (one network patient per person at the home too).
    const chain = await this.mergeChain(patientId);
    const survivorId = chain[chain.length - 1]!;
    const reference = `Patient/${survivorId}`;
    if (await this.options.store.linkOf(reference))
      throw fhirError(
        'link-not-home',
        "This Patient is linked to another member's network patient: that member is the patient's home and issues link tokens",
      );
    if (!this.options.home)
      throw fhirError('ledger-unavailable', 'Network patient ids need the ledger (consent service)');
    const patient = await this.options.readPatient(survivorId);
    if (!patient) throw fhirError('resource-not-found', `Patient/${patientId} is not known`);
    // An npid made here stays this home's, even if the custodian never redeems the token.
    const npid = await this.options.home.npidOf(reference);
    const issued = await this.options.tokens.issue({
      npid,
      demographics: demographicsOf(patient),
      custodian,
    });
    // The home's locator: recorded before the token is handed out (never under-lists a custodian that links).
    await this.options.store.locate(npid, custodian, new Date(this.now()).toISOString());
    return issued;
  }

  /** At a custodian: redeems the token and links the Patient (or the Patient that replaced it). */
  async link(
    patientId: string,
    token: string,
    by?: Caller,
  ): Promise<{ link: PatientLink; corrected?: EndedLink }> {
    const redeemed = await this.options.tokens.redeem(token);
    const chain = await this.mergeChain(patientId);
    const survivorId = chain[chain.length - 1]!;
    const reference = `Patient/${survivorId}`;
    if (this.options.home?.referenceOfNpid(redeemed.npid))
      throw fhirError('link-not-home', 'This service is the home of that network patient: it needs no link');
    const survivor = await this.options.readPatient(survivorId);
    if (!survivor) throw fhirError('resource-not-found', `Patient/${patientId} is not known`);
    const score = scoreDemographics(redeemed.demographics, demographicsOf(survivor));
    if (!score.matches)
      throw fhirError(
        'link-demographics-mismatch',
        `The home's demographics do not match this Patient (score ${score.score}, ${LINK_SCORE_THRESHOLD} needed with the same birth date; agreed: ${score.agreed.join(', ') || 'none'}); correct the demographics and ask the home for a new token`,
      );
    // The others found linked to this npid must be the same person; the write checks again, in its transaction,
    // that no other was linked meanwhile (two concurrent links of unrelated Patients, at any replica: one fails).
    const allowed: string[] = [];
    for (const other of await this.options.store.linksTo(redeemed.npid)) {
      if (other.localPatient === reference) continue;
      if (!(await this.samePerson(survivorId, survivor, other.localPatient)))
        linkConflict(other.localPatient);
      allowed.push(other.localPatient);
    }
    const link: PatientLink = {
      localPatient: reference,
      npid: redeemed.npid,
      homeMsp: redeemed.homeMsp,
      linkedAt: new Date(this.now()).toISOString(),
    };
    // A relink to another network patient is a correction: the old link was wrong, and both patients are told.
    const corrected = await this.options.store.link(link, allowed);
    if (!corrected) return { link };
    await this.report({ ended: corrected, ownerNpid: link.npid }, by);
    return { link, corrected };
  }

  /**
   * At a custodian: ends the link of the Patient (or of the Patient that replaced it). `wrong`: the link named
   * another person, and the disclosures made under it are reported to both patients; otherwise an ordinary unlink
   * (the patient leaving the network here), nothing reported.
   */
  async unlink(patientId: string, wrong = false, by?: Caller): Promise<EndedLink> {
    const chain = await this.mergeChain(patientId);
    const at = new Date(this.now()).toISOString();
    for (let i = chain.length - 1; i >= 0; i--) {
      const ended = await this.options.store.unlink(`Patient/${chain[i]}`, at, wrong);
      if (!ended) continue;
      if (wrong) await this.report({ ended }, by);
      return ended;
    }
    throw fhirError('link-not-found', `Patient/${patientId} is not linked to a network patient`);
  }

  /**
   * Makes the wrong-link reports still pending (a report that failed, or was cut by a stop): at start-up. Returns
   * how many were made.
   */
  async reportPending(): Promise<number> {
    let made = 0;
    for (const pending of await this.options.store.pendingReports()) {
      await this.report(pending);
      made++;
    }
    return made;
  }

  /** One wrong link's report, then marked made (kept pending when it fails: the error reaches the caller). */
  private async report(pending: PendingWrongLinkReport, by?: Caller): Promise<void> {
    const sink = this.options.reports;
    if (!sink) return;
    const { store } = this.options;
    await reportWrongLink(sink, {
      ended: pending.ended,
      ownerNpid: pending.ownerNpid,
      disclosures: await store.disclosuresUnder(pending.ended),
      by,
      at: this.now(),
    });
    await store.reported(pending.ended.seq, new Date(this.now()).toISOString());
  }

  /** One of the two Patients names the other with a seealso, replaces or replaced-by link. */
  private async samePerson(id: string, patient: FhirResource, otherReference: string): Promise<boolean> {
    const otherId = patientIdOf(otherReference);
    if (!otherId) return false;
    const names = (p: FhirResource, target: string) =>
      linksOf(p).some(
        (l) => SAME_PERSON_LINKS.has(l.type ?? '') && patientIdOf(l.other?.reference) === target,
      );
    if (names(patient, otherId)) return true;
    const other = await this.options.readPatient(otherId);
    return other !== undefined && names(other, id);
  }
}

// The FHIR operations

/**
 * A string parameter from a Parameters body (valueString, valueCode, valueId) or, failing that and when allowed,
 * the query. A link token is taken from the body only: URLs end up in access logs.
 */
function stringParameter(request: FhirRequest, name: string, fromQuery: boolean): string | undefined {
  if (request.body) {
    let body: unknown;
    try {
      body = parseClientJson(request.body);
    } catch {
      throw fhirError('body-not-json', 'The body is not JSON');
    }
    const parameters = body as { resourceType?: unknown; parameter?: unknown };
    if (parameters?.resourceType !== 'Parameters')
      throw fhirError('body-not-resource', 'The body must be a Parameters resource');
    const found = (Array.isArray(parameters.parameter) ? parameters.parameter : []).find(
      (p: { name?: unknown }) => p?.name === name,
    ) as Record<string, unknown> | undefined;
    const value = found?.valueString ?? found?.valueCode ?? found?.valueId;
    if (found && typeof value !== 'string')
      throw fhirError('parameter-invalid', `${name} must be a string`, { expression: name });
    if (typeof value === 'string') return value;
  }
  if (!fromQuery && request.query[name] !== undefined)
    throw fhirError('parameter-invalid', `${name} is accepted only in a Parameters body, never in the URL`, {
      expression: name,
    });
  return request.query[name]?.[0];
}

/** A boolean parameter (valueBoolean in the body, or `true`/`false` in the query); false when absent. */
function booleanParameter(request: FhirRequest, name: string): boolean {
  if (request.body) {
    let body: { parameter?: unknown };
    try {
      body = parseClientJson(request.body) as { parameter?: unknown };
    } catch {
      throw fhirError('body-not-json', 'The body is not JSON');
    }
    const found = (Array.isArray(body?.parameter) ? body.parameter : []).find(
      (p: { name?: unknown }) => p?.name === name,
    ) as Record<string, unknown> | undefined;
    if (found) {
      if (typeof found.valueBoolean !== 'boolean')
        throw fhirError('parameter-invalid', `${name} must be a boolean (valueBoolean)`, {
          expression: name,
        });
      return found.valueBoolean;
    }
  }
  const values = request.query[name];
  if (values === undefined) return false;
  if (values.length !== 1 || (values[0] !== 'true' && values[0] !== 'false'))
    throw fhirError('parameter-invalid', `${name} must be true or false`, { expression: name });
  return values[0] === 'true';
}

function requiredParameter(request: FhirRequest, name: string, maxLength: number, fromQuery = true): string {
  const value = stringParameter(request, name, fromQuery);
  if (value === undefined || value === '')
    throw fhirError('parameter-missing', `$${request.operation} needs the parameter ${name}`, {
      expression: name,
    });
  if (value.length > maxLength)
    throw fhirError('parameter-invalid', `${name} is longer than ${maxLength} characters`, {
      expression: name,
    });
  return value;
}

/** The Patient the caller may see (404 otherwise, as for an absent one), and the caller the patient or staff. */
async function authorizedPatient(request: FhirRequest, context: FhirContext): Promise<string> {
  await readablePatient(request, context);
  const id = request.id!;
  const caller = context.access.caller;
  const isPatient = caller.role === 'patient' && caller.fhirUser === `Patient/${id}`;
  const staff = caller.role === 'system' || caller.role === 'admin' || caller.role === 'open';
  if (!isPatient && !staff)
    throw fhirError(
      'access-denied',
      "Only the patient and this service's systems and administrators manage the patient's network links",
    );
  return id;
}

function parameters(parameter: Record<string, unknown>[]): FhirResource {
  return { resourceType: 'Parameters', parameter } as unknown as FhirResource;
}

function linkTokenHandler(service: PatientLinkService): InteractionHandler {
  return async (request, context) => {
    const id = await authorizedPatient(request, context);
    const custodian = requiredParameter(request, 'custodian', 128);
    const { token, expiresAt } = await service.issueToken(id, custodian);
    return {
      status: 200,
      headers: { 'cache-control': 'no-store' },
      body: parameters([
        { name: 'token', valueString: token },
        { name: 'custodian', valueString: custodian },
        { name: 'expires', valueInstant: new Date(expiresAt).toISOString() },
      ]),
    };
  };
}

function linkHandler(service: PatientLinkService): InteractionHandler {
  return async (request, context) => {
    const id = await authorizedPatient(request, context);
    const token = requiredParameter(request, 'token', 16_384, false);
    const { link, corrected } = await service.link(id, token, context.access.caller);
    const out: Record<string, unknown>[] = [
      { name: 'patient', valueReference: { reference: link.localPatient } },
      { name: 'home', valueString: link.homeMsp },
      { name: 'linkedAt', valueInstant: link.linkedAt },
    ];
    if (corrected)
      out.push({
        name: 'corrected',
        part: [
          { name: 'home', valueString: corrected.homeMsp },
          { name: 'linkedAt', valueInstant: corrected.linkedAt },
        ],
      });
    return { status: 200, body: parameters(out) };
  };
}

function unlinkHandler(service: PatientLinkService): InteractionHandler {
  return async (request, context) => {
    const id = await authorizedPatient(request, context);
    const wrong = booleanParameter(request, 'wrong');
    const ended = await service.unlink(id, wrong, context.access.caller);
    const out: Record<string, unknown>[] = [
      { name: 'patient', valueReference: { reference: ended.localPatient } },
      { name: 'home', valueString: ended.homeMsp },
      { name: 'endedAt', valueInstant: ended.endedAt },
    ];
    if (wrong) out.push({ name: 'wrong', valueBoolean: true });
    return { status: 200, body: parameters(out) };
  };
}

/** Registers `$network-link-token`, `$network-link` and `$network-unlink` (Patient instance level, POST). */
export function registerPatientLinkOperations(registry: FhirRegistry, service: PatientLinkService): void {
  registry.registerOperation({
    name: 'network-link-token',
    levels: ['instance'],
    resourceTypes: ['Patient'],
    methods: ['POST'],
    documentation:
      "At the patient's home: a single-use, short-lived link token for one custodian (parameter custodian = its MSP id), which the patient takes to that custodian.",
    handler: linkTokenHandler(service),
  });
  registry.registerOperation({
    name: 'network-link',
    levels: ['instance'],
    resourceTypes: ['Patient'],
    methods: ['POST'],
    documentation:
      "At a custodian: links this Patient to the network patient of a link token (parameter token) when the home's demographics match.",
    handler: linkHandler(service),
  });
  registry.registerOperation({
    name: 'network-unlink',
    levels: ['instance'],
    resourceTypes: ['Patient'],
    methods: ['POST'],
    documentation:
      "At a custodian: ends this Patient's link to its network patient (kept in the link history); wrong=true says the link named another person, and the disclosures made under it are reported to both patients.",
    handler: unlinkHandler(service),
  });
}
