/**
 * Rule families (issue 18, "Rolling out stricter rules"): every issue of the full validator belongs to one named
 * family, and each family has a `warn|error` level on writes, so a stricter rule can be rolled out family by family
 * (reported first, enforced later; `hie-ledger validate --dry-run` shows what enforcing it would refuse).
 *
 * Level `error`: the family's errors refuse the write (the default: today's rules). Level `warn`: its errors are
 * reported as warnings and the write is accepted. The `terminology-not-loaded` family ("not loaded, not checked", an
 * information issue) is at `warn` by default; at `error` a required binding whose code systems are not loaded here
 * refuses the write. Each issue names its family in an extension (RULE_FAMILY_EXTENSION, valueCode).
 */
import type { IssueSeverity, OperationOutcomeIssue } from '../outcome.js';

/** The families, in the order exchange traffic meets them most (issue 18). Names are stable (configuration). */
export const RULE_FAMILIES = [
  'bindings',
  'slicing',
  'extensions',
  'bundle',
  'invariants',
  'structure',
  'narrative',
  'conformance',
  'terminology-not-loaded',
] as const;

export type RuleFamily = (typeof RULE_FAMILIES)[number];

/**
 * The family of an issue: a configurable one, or `resource` for what makes a document no resource at all (not a
 * JSON object, no or an unknown resourceType, nested too deep), which always refuses.
 */
export type IssueFamily = RuleFamily | 'resource';

export type FamilyLevel = 'warn' | 'error';
export type FamilyLevels = Record<RuleFamily, FamilyLevel>;

/**
 * The extension of an OperationOutcome issue that names its family (valueCode). An extension, not a
 * `details.coding`: the first coding of a refused write's issues is its catalogue error code.
 */
export const RULE_FAMILY_EXTENSION = 'https://hie-ledger.dev/fhir/StructureDefinition/validation-rule-family';

/** Today's rules: every family's errors refuse; "not loaded, not checked" is information. */
export const DEFAULT_FAMILY_LEVELS: Readonly<FamilyLevels> = Object.freeze({
  bindings: 'error',
  slicing: 'error',
  extensions: 'error',
  bundle: 'error',
  invariants: 'error',
  structure: 'error',
  narrative: 'error',
  conformance: 'error',
  'terminology-not-loaded': 'warn',
});

/** Every family at `error` (the dry run's default: what the strictest setting would refuse). */
export const STRICT_FAMILY_LEVELS: Readonly<FamilyLevels> = Object.freeze(
  Object.fromEntries(RULE_FAMILIES.map((f) => [f, 'error'])) as FamilyLevels,
);

export function isRuleFamily(name: string): name is RuleFamily {
  return (RULE_FAMILIES as readonly string[]).includes(name);
}

/** A bad `family=level` list; the message names what is wrong (never a value of a resource). */
export class FamilyLevelsError extends Error {}

/**
 * `bindings=warn,slicing=error` (`all=warn` sets every family; later pairs win) over `base`. Throws
 * FamilyLevelsError for an unknown family or level.
 */
export function parseFamilyLevels(
  text: string,
  base: Readonly<FamilyLevels> = DEFAULT_FAMILY_LEVELS,
): FamilyLevels {
  return withFamilyLevels(readFamilyLevelPairs(text), base);
}

/** The pairs of a `family=level` list, names and levels checked for syntax only (unknown names kept). */
export function readFamilyLevelPairs(text: string): Record<string, FamilyLevel> {
  const out: Record<string, FamilyLevel> = {};
  for (const pair of text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')) {
    const match = /^([a-z][a-z-]*)=(warn|error)$/.exec(pair);
    if (!match) throw new FamilyLevelsError(`'${pair.slice(0, 100)}' is not family=warn or family=error`);
    out[match[1]] = match[2] as FamilyLevel;
  }
  return out;
}

/** `base` with the given levels (`all` first, then each family); throws FamilyLevelsError for an unknown family. */
export function withFamilyLevels(
  given: Readonly<Record<string, FamilyLevel>>,
  base: Readonly<FamilyLevels> = DEFAULT_FAMILY_LEVELS,
): FamilyLevels {
  const out: FamilyLevels = { ...base };
  if (given.all) for (const f of RULE_FAMILIES) out[f] = given.all;
  for (const [name, level] of Object.entries(given)) {
    if (name === 'all') continue;
    if (!isRuleFamily(name))
      throw new FamilyLevelsError(
        `'${name.slice(0, 64)}' is not a rule family (families: ${RULE_FAMILIES.join(', ')}, or all)`,
      );
    out[name] = level;
  }
  return out;
}

/** Per family the more lenient of two settings (`warn` over `error`). */
export function lenientFamilyLevels(a: Readonly<FamilyLevels>, b: Readonly<FamilyLevels>): FamilyLevels {
  const out = { ...a };
  for (const f of RULE_FAMILIES) if (b[f] === 'warn') out[f] = 'warn';
  return out;
}

export function sameFamilyLevels(a: Readonly<FamilyLevels>, b: Readonly<FamilyLevels>): boolean {
  return RULE_FAMILIES.every((f) => a[f] === b[f]);
}

/**
 * The severity an issue of `family` has under `levels`: an error of a family at `warn` is a warning; the
 * information of `terminology-not-loaded` at `error` is an error. `fatal` and the `resource` family never change.
 */
export function severityAtLevel(
  severity: IssueSeverity,
  family: IssueFamily,
  levels: Readonly<FamilyLevels>,
): IssueSeverity {
  if (family === 'resource') return severity;
  const level = levels[family];
  if (level === 'warn' && severity === 'error') return 'warning';
  if (level === 'error' && family === 'terminology-not-loaded' && severity === 'information') return 'error';
  return severity;
}

/** The family an issue names (undefined for issues that are not the full validator's). */
export function familyOfIssue(issue: OperationOutcomeIssue): IssueFamily | undefined {
  const code = issue.extension?.find((e) => e.url === RULE_FAMILY_EXTENSION)?.valueCode;
  return code !== undefined && (code === 'resource' || isRuleFamily(code)) ? code : undefined;
}
