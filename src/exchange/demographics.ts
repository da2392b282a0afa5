/**
 * The demographics a link token carries from the patient's home, and how a custodian scores them against its own
 * Patient before linking it to the network patient (docs/exchange.md, "Linking a patient across members").
 *
 * Names are normalised before they are compared or sent: Unicode NFKD, diacritics dropped, lower case, every
 * character but a-z removed ("Müller-Lüdenscheidt" -> "mullerludenscheidt", "O'Brien" -> "obrien"). The name used is
 * the Patient's `official` name, else its `usual` one, else the first one not `old`, `maiden` or ended.
 *
 * The score (LINK_SCORE_THRESHOLD points needed):
 * - birthDate: both present (a full date) and equal, or the link is refused whatever else agrees;
 * - family name: equal 4, Jaro-Winkler >= 0.9 2, otherwise 0;
 * - first given name: equal 3, Jaro-Winkler >= 0.9 2, otherwise 0 (a missing given name 0);
 * - gender: equal 1, different -2 (`unknown`, `other` or absent on either side: 0);
 * - postal code of the home address: equal 1 (spaces and case ignored), otherwise 0.
 * So birth date + exact family + exact given, or one of the two names close and the other exact plus gender or
 * postal code, pass; the same birth date and family name alone does not.
 */
import type { FhirResource } from '../fhir/fhir-json.js';

/** Points a link needs (see the table above). */
export const LINK_SCORE_THRESHOLD = 6;
/** Jaro-Winkler similarity at or above which two normalised names count as close. */
export const CLOSE_NAME_SIMILARITY = 0.9;

/** What the home sends of its Patient in a link token (normalised; absent fields omitted). */
export interface LinkDemographics {
  family?: string;
  given?: string[];
  birthDate?: string;
  gender?: string;
  postalCode?: string;
}

export interface DemographicScore {
  score: number;
  /** The score reached the threshold and the birth dates agree. */
  matches: boolean;
  /** Which fields agreed, for the refusal's diagnostics (field names only, never values). */
  agreed: string[];
}

interface HumanName {
  use?: string;
  family?: string;
  given?: string[];
  period?: { end?: string };
}

interface Address {
  use?: string;
  type?: string;
  postalCode?: string;
  period?: { end?: string };
}

/** Lower-case a-z only, diacritics dropped. */
export function normaliseName(value: string): string {
  return value
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/[^a-z]/g, '');
}

function normalisePostalCode(value: string): string {
  return value.replace(/\s+/g, '').toUpperCase();
}

function chosenName(names: HumanName[]): HumanName | undefined {
  const current = names.filter((n) => !n.period?.end && n.use !== 'old' && n.use !== 'maiden');
  return (
    current.find((n) => n.use === 'official') ??
    current.find((n) => n.use === 'usual') ??
    current[0] ??
    names[0]
  );
}

/** The demographics of a Patient resource, normalised. */
export function demographicsOf(patient: FhirResource): LinkDemographics {
  const out: LinkDemographics = {};
  const names = Array.isArray(patient.name) ? (patient.name as HumanName[]) : [];
  const name = chosenName(names);
  if (typeof name?.family === 'string' && normaliseName(name.family) !== '')
    out.family = normaliseName(name.family);
  const given = (Array.isArray(name?.given) ? name.given : [])
    .filter((g): g is string => typeof g === 'string')
    .map(normaliseName)
    .filter((g) => g !== '');
  if (given.length > 0) out.given = given;
  if (typeof patient.birthDate === 'string') out.birthDate = patient.birthDate;
  if (typeof patient.gender === 'string') out.gender = patient.gender;
  const addresses = Array.isArray(patient.address) ? (patient.address as Address[]) : [];
  const address =
    addresses.find((a) => a.use === 'home' && !a.period?.end && a.postalCode) ??
    addresses.find((a) => !a.period?.end && a.postalCode);
  if (typeof address?.postalCode === 'string' && address.postalCode.trim() !== '')
    out.postalCode = normalisePostalCode(address.postalCode);
  return out;
}

/** Jaro similarity of two strings (0..1). */
function jaro(a: string, b: string): number {
  if (a === b) return 1;
  if (a.length === 0 || b.length === 0) return 0;
  const window = Math.max(0, Math.floor(Math.max(a.length, b.length) / 2) - 1);
  const matchedA = new Array<boolean>(a.length).fill(false);
  const matchedB = new Array<boolean>(b.length).fill(false);
  let matches = 0;
  for (let i = 0; i < a.length; i++) {
    const from = Math.max(0, i - window);
    const to = Math.min(b.length - 1, i + window);
    for (let j = from; j <= to; j++) {
      if (matchedB[j] || a[i] !== b[j]) continue;
      matchedA[i] = matchedB[j] = true;
      matches++;
      break;
    }
  }
  if (matches === 0) return 0;
  let transpositions = 0;
  let k = 0;
  for (let i = 0; i < a.length; i++) {
    if (!matchedA[i]) continue;
    while (!matchedB[k]) k++;
    if (a[i] !== b[k]) transpositions++;
    k++;
  }
  const m = matches;
  return (m / a.length + m / b.length + (m - transpositions / 2) / m) / 3;
}

/** Jaro-Winkler similarity (prefix scale 0.1, common prefix up to 4), as Winkler (1990) defines it. */
export function jaroWinkler(a: string, b: string): number {
  const similarity = jaro(a, b);
  let prefix = 0;
  while (prefix < 4 && prefix < a.length && prefix < b.length && a[prefix] === b[prefix]) prefix++;
  return similarity + prefix * 0.1 * (1 - similarity);
}

function namePoints(home: string | undefined, local: string | undefined, exact: number): number {
  if (!home || !local) return 0;
  if (home === local) return exact;
  return jaroWinkler(home, local) >= CLOSE_NAME_SIMILARITY ? 2 : 0;
}

const FULL_DATE = /^\d{4}-\d{2}-\d{2}$/;
const INFORMATIVE_GENDERS = new Set(['male', 'female']);

/** Scores the home's demographics against the custodian's Patient (the table in this file's comment). */
export function scoreDemographics(home: LinkDemographics, local: LinkDemographics): DemographicScore {
  const agreed: string[] = [];
  const birthDateAgrees =
    home.birthDate !== undefined && FULL_DATE.test(home.birthDate) && home.birthDate === local.birthDate;
  if (birthDateAgrees) agreed.push('birthDate');
  let score = 0;
  const family = namePoints(home.family, local.family, 4);
  if (family > 0) agreed.push('family');
  const given = namePoints(home.given?.[0], local.given?.[0], 3);
  if (given > 0) agreed.push('given');
  score += family + given;
  if (INFORMATIVE_GENDERS.has(home.gender ?? '') && INFORMATIVE_GENDERS.has(local.gender ?? '')) {
    if (home.gender === local.gender) {
      score += 1;
      agreed.push('gender');
    } else score -= 2;
  }
  if (home.postalCode !== undefined && home.postalCode === local.postalCode) {
    score += 1;
    agreed.push('postalCode');
  }
  return { score, matches: birthDateAgrees && score >= LINK_SCORE_THRESHOLD, agreed };
}
