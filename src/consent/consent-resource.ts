/**
 * FHIR R4 Consent (scope patient-privacy) <-> consent grants on the ledger.
 *
 * What R4 Consent can say and how it maps (docs/access.md):
 * - each `provision.actor` of the root (permit) provision becomes one grant to that Organization or Practitioner of
 *   this service, or to a participant of another member named by its network handle (a logical reference whose
 *   identifier is `NETWORK_PARTICIPANT_SYSTEM` | `<mspId>|<pseudonym>`: what `$network-actor` tells a clinician);
 * - `provision.class` (resource types) limits the grant to those types; `provision.period` limits it in time;
 * - `provision.purpose` (HL7 v3 PurposeOfUse codes) names the purposes of use it opens; treatment (TREAT) when absent;
 * - a nested `deny` provision (one level deep) narrows its parent: for its actors (all when none), its classes
 *   (all when none), during its period (always when none). Deny wins over permit;
 * - `status` other than `active` grants nothing (and revokes what the Consent granted before), as does a delete.
 * Whatever the mapping cannot enforce (nested permits, deeper nesting, data/code/securityLabel limits, a purpose on a
 * nested deny) is
 * refused with 422, never silently widened.
 */
import { DEFAULT_PURPOSE } from 'hie-ledger-chaincode/dist/grant-rules.js';
import { fhirError } from '../fhir/outcome.js';

export const CONSENT_SCOPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentscope';
export const RESOURCE_TYPES_SYSTEM = 'http://hl7.org/fhir/resource-types';
/** The code system of the PurposeOfUse value set (Consent.provision.purpose). */
export const PURPOSE_OF_USE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
/** The purpose a grant opens when its Consent names none. */
export { DEFAULT_PURPOSE };

export interface GrantPeriod {
  /** Inclusive start, ISO 8601 instant. */
  start?: string;
  /** Exclusive end, ISO 8601 instant: access stops at that instant. */
  end?: string;
}

export interface GrantDenyRule {
  classes: string[];
  period?: GrantPeriod;
}

export interface GrantSpec {
  /**
   * `Organization/x` or `Practitioner/y` of this service; with `granteeMsp`, the participant's pseudonym at that
   * member's service (as the Consent gives it, never re-pseudonymised).
   */
  grantee: string;
  /** Resource types; empty = all. */
  classes: string[];
  period?: GrantPeriod;
  deny: GrantDenyRule[];
  /** Purposes of use opened (PurposeOfUse codes, sorted; [TREAT] when the Consent names none). */
  purpose: string[];
  /**
   * The MSP the grantee acts through, when the Consent names a network participant (its handle); absent: this
   * service's own (the grantee is one of its participants, named by reference).
   */
  granteeMsp?: string;
}

export interface ConsentGrants {
  /** `Patient/x` */
  patient: string;
  /** Grants in force under this Consent (empty when not active). */
  grants: GrantSpec[];
}

/** The identifier system of a network participant handle `<mspId>|<pseudonym>` (docs/exchange.md). */
export const NETWORK_PARTICIPANT_SYSTEM = 'https://hie-ledger.dev/fhir/NamingSystem/network-participant';
/** An MSP id as Fabric (and the consent chaincode) accepts them. */
const MSP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A participant pseudonym as the consent chaincode accepts a grantee (services make them: random, URL-safe). */
const NETWORK_PSEUDONYM = /^[A-Za-z0-9_-]{8,128}$/;

/** A network participant: its pseudonym at the service of the member `mspId`. */
export interface NetworkParticipant {
  mspId: string;
  pseudonym: string;
}

/** The handle `<mspId>|<pseudonym>` of a network participant. */
export function networkHandle(participant: NetworkParticipant): string {
  return `${participant.mspId}|${participant.pseudonym}`;
}

/** Reads a handle `<mspId>|<pseudonym>`; undefined when it is not one (character sets and lengths checked). */
export function parseNetworkHandle(handle: string): NetworkParticipant | undefined {
  const bar = handle.indexOf('|');
  if (bar < 0) return undefined;
  const mspId = handle.slice(0, bar);
  const pseudonym = handle.slice(bar + 1);
  return MSP_ID.test(mspId) && NETWORK_PSEUDONYM.test(pseudonym) ? { mspId, pseudonym } : undefined;
}

type Json = Record<string, unknown>;
const GRANTEE = /^(Organization|Practitioner)\/[A-Za-z0-9\-.]{1,64}$/;
const PATIENT = /^Patient\/[A-Za-z0-9\-.]{1,64}$/;
const TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const PURPOSE_CODE = /^[A-Z][A-Z0-9]{1,31}$/;
/** Elements of a provision that restrict it in ways grants cannot express. */
const UNSUPPORTED_LIMITS = ['securityLabel', 'purpose', 'code', 'dataPeriod', 'data'] as const;

function asObject(value: unknown): Json | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : undefined;
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/**
 * The tag of a Consent kept as a record only (`hie-ledger import --consents inert`, `$import` consents=inert): it
 * grants nothing, whatever it says (docs/import.md, docs/access.md).
 */
export const INERT_CONSENT_TAG = {
  system: 'https://hie-ledger.dev/fhir/CodeSystem/import',
  code: 'consent-inert',
} as const;

/** Does this Consent carry INERT_CONSENT_TAG in meta.tag? */
export function isInertConsent(resource: Json): boolean {
  return asArray(asObject(resource.meta)?.tag).some((tag) => {
    const t = asObject(tag);
    return t?.system === INERT_CONSENT_TAG.system && t.code === INERT_CONSENT_TAG.code;
  });
}

/** Is this a patient-privacy Consent (the FHIR face of grants)? */
export function isPrivacyConsent(resource: Json): boolean {
  if (resource.resourceType !== 'Consent') return false;
  return asArray(asObject(resource.scope)?.coding).some((coding) => {
    const c = asObject(coding);
    return c?.code === 'patient-privacy' && (c.system === undefined || c.system === CONSENT_SCOPE_SYSTEM);
  });
}

/**
 * Turns a FHIR date/dateTime into an instant. Partial dates cover their whole span: as a start they begin at
 * its first instant, as an end they end after its last (FHIR periods are inclusive at the stated precision).
 */
export function periodInstant(value: unknown, edge: 'start' | 'end', path: string): string {
  if (typeof value !== 'string')
    throw fhirError('consent-not-enforceable', `${path} must be a date or dateTime`, { expression: path });
  const partial = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(value);
  if (partial) {
    const [, y, m, d] = partial;
    const year = Number(y);
    const month = m === undefined ? 0 : Number(m) - 1;
    const day = d === undefined ? 1 : Number(d);
    let ms = Date.UTC(year, month, day);
    if (edge === 'end')
      ms =
        m === undefined
          ? Date.UTC(year + 1, 0, 1)
          : d === undefined
            ? Date.UTC(year, month + 1, 1)
            : Date.UTC(year, month, day + 1);
    const check = new Date(Date.UTC(year, month, day));
    if (check.getUTCMonth() !== month || check.getUTCDate() !== day)
      throw fhirError('consent-not-enforceable', `${path} is not a valid date`, { expression: path });
    return new Date(ms).toISOString();
  }
  if (
    !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(value) ||
    Number.isNaN(Date.parse(value))
  ) {
    throw fhirError('consent-not-enforceable', `${path} must be a date or a dateTime with a time zone`, {
      expression: path,
    });
  }
  return new Date(Date.parse(value)).toISOString();
}

function mapPeriod(value: unknown, path: string): GrantPeriod | undefined {
  const period = asObject(value);
  if (!period) return undefined;
  const out: GrantPeriod = {};
  if (period.start !== undefined) out.start = periodInstant(period.start, 'start', `${path}.start`);
  if (period.end !== undefined) out.end = periodInstant(period.end, 'end', `${path}.end`);
  if (out.start && out.end && Date.parse(out.end) < Date.parse(out.start))
    throw fhirError('consent-not-enforceable', `${path}.end is before its start`, { expression: path });
  return out.start || out.end ? out : undefined;
}

function mapClasses(value: unknown, path: string): string[] {
  const classes = asArray(value).map((item, index) => {
    const coding = asObject(item);
    const at = `${path}[${index}]`;
    if (!coding || (coding.system !== undefined && coding.system !== RESOURCE_TYPES_SYSTEM)) {
      throw fhirError(
        'consent-not-enforceable',
        `${at}: only resource types (${RESOURCE_TYPES_SYSTEM}) can limit a grant`,
        { expression: at },
      );
    }
    if (typeof coding.code !== 'string' || !TYPE.test(coding.code))
      throw fhirError('consent-not-enforceable', `${at}.code must be a resource type`, {
        expression: `${at}.code`,
      });
    return coding.code;
  });
  return [...new Set(classes)].sort();
}

function mapPurposes(value: unknown, path: string): string[] {
  if (value === undefined) return [DEFAULT_PURPOSE];
  if (!Array.isArray(value) || value.length === 0)
    throw fhirError('consent-not-enforceable', `${path} must be a non-empty list of codings`, {
      expression: path,
    });
  const purposes = value.map((item, index) => {
    const coding = asObject(item);
    const at = `${path}[${index}]`;
    if (!coding || coding.system !== PURPOSE_OF_USE_SYSTEM)
      throw fhirError(
        'consent-not-enforceable',
        `${at}: only purposes of use of ${PURPOSE_OF_USE_SYSTEM} can limit a grant`,
        { expression: at },
      );
    if (typeof coding.code !== 'string' || !PURPOSE_CODE.test(coding.code))
      throw fhirError('consent-not-enforceable', `${at}.code must be a purpose of use code (e.g. TREAT)`, {
        expression: `${at}.code`,
      });
    return coding.code;
  });
  return [...new Set(purposes)].sort();
}

/** A grantee as a provision names it: a local reference, or a network participant (granteeMsp set). */
interface ProvisionActor {
  grantee: string;
  granteeMsp?: string;
  /** What tells two actors apart (a reference, or the handle: a reference never holds `|`). */
  key: string;
}

/** Types a logical reference to a network participant may state (it is a clinician or an organisation). */
const NETWORK_ACTOR_TYPES = new Set(['Practitioner', 'PractitionerRole', 'Organization']);

function mapActor(item: unknown, at: string): ProvisionActor {
  const reference = asObject(asObject(item)?.reference);
  const id = asObject(reference?.identifier);
  const networkParticipant = id?.system === NETWORK_PARTICIPANT_SYSTEM;
  if (!networkParticipant || reference?.reference !== undefined) {
    const local = reference?.reference;
    if (networkParticipant)
      throw fhirError(
        'consent-not-enforceable',
        `${at}.reference names a grantee twice (a reference and a network participant): give one`,
        { expression: `${at}.reference` },
      );
    if (typeof local !== 'string' || !GRANTEE.test(local)) {
      throw fhirError(
        'consent-not-enforceable',
        `${at}.reference.reference must reference an Organization or a Practitioner (relative reference), or ${at}.reference.identifier identify a network participant (system ${NETWORK_PARTICIPANT_SYSTEM})`,
        { expression: `${at}.reference.reference` },
      );
    }
    return { grantee: local, key: local };
  }
  // A logical reference: a participant of a member, by its handle (docs/exchange.md).
  if (reference?.type !== undefined && !NETWORK_ACTOR_TYPES.has(reference.type as string))
    throw fhirError(
      'consent-not-enforceable',
      `${at}.reference.type must be Practitioner, PractitionerRole or Organization when given`,
      { expression: `${at}.reference.type` },
    );
  const participant = typeof id.value === 'string' ? parseNetworkHandle(id.value) : undefined;
  if (!participant)
    throw fhirError(
      'consent-not-enforceable',
      `${at}.reference.identifier.value must be a network participant handle <mspId>|<pseudonym> (an MSP id of letters, digits, '.', '_', '-' up to 128 characters; a pseudonym of 8 to 128 letters, digits, '_', '-')`,
      { expression: `${at}.reference.identifier.value` },
    );
  return { grantee: participant.pseudonym, granteeMsp: participant.mspId, key: networkHandle(participant) };
}

function mapActors(value: unknown, path: string): ProvisionActor[] {
  return asArray(value).map((item, index) => mapActor(item, `${path}[${index}]`));
}

function refuseUnsupported(provision: Json, path: string, allowPurpose = false): void {
  for (const element of UNSUPPORTED_LIMITS) {
    if (allowPurpose && element === 'purpose') continue;
    if (provision[element] !== undefined)
      throw fhirError('consent-not-enforceable', `${path}.${element} cannot be enforced by this service`, {
        expression: `${path}.${element}`,
      });
  }
}

/**
 * The grants a patient-privacy Consent puts in force. `deleted` (or an inactive status) gives none, which revokes
 * what the Consent granted before.
 */
export function consentToGrants(consent: Json): ConsentGrants {
  const patient = asObject(consent.patient)?.reference;
  if (typeof patient !== 'string' || !PATIENT.test(patient))
    throw fhirError(
      'consent-not-enforceable',
      'Consent.patient must reference a Patient (relative reference)',
      { expression: 'Consent.patient' },
    );
  if (consent.status !== 'active') return { patient, grants: [] };

  const root = asObject(consent.provision);
  if (!root)
    throw fhirError('consent-not-enforceable', 'an active patient-privacy Consent needs a provision', {
      expression: 'Consent.provision',
    });
  const rootPath = 'Consent.provision';
  refuseUnsupported(root, rootPath, root.type === 'permit');
  if (root.type === 'deny') {
    // A root deny: nobody outside the care team, which is the default. No grants.
    if (root.provision !== undefined)
      throw fhirError(
        'consent-not-enforceable',
        'nested provisions under a deny provision are not supported',
        { expression: `${rootPath}.provision` },
      );
    return { patient, grants: [] };
  }
  if (root.type !== 'permit')
    throw fhirError('consent-not-enforceable', 'Consent.provision.type must be permit or deny', {
      expression: `${rootPath}.type`,
    });
  const actors = mapActors(root.actor, `${rootPath}.actor`);
  if (actors.length === 0)
    throw fhirError('consent-not-enforceable', 'a permit provision needs at least one actor (the grantee)', {
      expression: `${rootPath}.actor`,
    });
  const classes = mapClasses(root.class, `${rootPath}.class`);
  const period = mapPeriod(root.period, `${rootPath}.period`);
  const purpose = mapPurposes(root.purpose, `${rootPath}.purpose`);

  const denies = asArray(root.provision).map((item, index) => {
    const path = `${rootPath}.provision[${index}]`;
    const nested = asObject(item);
    if (!nested)
      throw fhirError('consent-not-enforceable', `${path} must be an object`, { expression: path });
    if (nested.type !== 'deny')
      throw fhirError(
        'consent-not-enforceable',
        `${path}: only deny provisions may be nested (they narrow the permit)`,
        { expression: `${path}.type` },
      );
    if (nested.provision !== undefined)
      throw fhirError('consent-not-enforceable', `${path}: provisions nest one level deep at most`, {
        expression: `${path}.provision`,
      });
    refuseUnsupported(nested, path);
    return {
      actors: mapActors(nested.actor, `${path}.actor`),
      rule: {
        classes: mapClasses(nested.class, `${path}.class`),
        period: mapPeriod(nested.period, `${path}.period`),
      },
    };
  });

  const seen = new Set<string>();
  const grants: GrantSpec[] = [];
  for (const actor of actors) {
    if (seen.has(actor.key)) continue;
    seen.add(actor.key);
    const deny = denies
      .filter((d) => d.actors.length === 0 || d.actors.some((a) => a.key === actor.key))
      .map((d) => (d.rule.period ? d.rule : { classes: d.rule.classes }));
    const grant: GrantSpec = { grantee: actor.grantee, classes, deny, purpose };
    if (actor.granteeMsp !== undefined) grant.granteeMsp = actor.granteeMsp;
    if (period) grant.period = period;
    grants.push(grant);
  }
  return { patient, grants };
}

/**
 * Does a grant allow reading `resourceType` at `atMs`? Only an active grant; start inclusive, end exclusive; deny
 * wins. The chaincode's own function (not a copy), so the consent cache and the ledger's CheckGrant never disagree.
 */
export { grantAllows } from 'hie-ledger-chaincode/dist/grant-rules.js';

/** Two grant specs say the same thing (so an unchanged Consent update submits nothing). */
export function sameGrant(
  a: Omit<GrantSpec, 'grantee' | 'granteeMsp'>,
  b: Omit<GrantSpec, 'grantee' | 'granteeMsp'>,
): boolean {
  const norm = (g: Omit<GrantSpec, 'grantee' | 'granteeMsp'>) =>
    JSON.stringify([
      g.purpose,
      g.classes,
      g.period?.start ?? null,
      g.period?.end ?? null,
      g.deny.map((d) => [d.classes, d.period?.start ?? null, d.period?.end ?? null]),
    ]);
  return norm(a) === norm(b);
}
