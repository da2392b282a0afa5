/**
 * Rule families (issue 18, "Rolling out stricter rules"): each family's errors are refused at `error` (the default)
 * and reported as warnings at `warn`; `$validate` (levels `reported`) keeps the true severities; a record received
 * from a member and verified (levels `received`) is held only to the network's pinned levels.
 */
import { describe, expect, it } from 'vitest';
import { createFhirValidatorSync, type FhirValidator } from '../../src/fhir/validation/index.js';
import {
  DEFAULT_FAMILY_LEVELS,
  familyOfIssue,
  FamilyLevelsError,
  parseFamilyLevels,
  RULE_FAMILIES,
  STRICT_FAMILY_LEVELS,
  type RuleFamily,
} from '../../src/fhir/validation/rule-families.js';
import type { ValidationOptions } from '../../src/fhir/validation/validator.js';
import { VALIDATION_FAMILY_NAMES } from '../../src/config/config.js';
import { DIABETES_PROFILE, DIABETES_VALUE_SET, diabetesCondition } from '../support/diabetes-profile.js';
import { validator } from './helpers.js';

/** One resource per family whose only errors are of that family (checked below against the default levels). */
const cases: Record<Exclude<RuleFamily, 'terminology-not-loaded'>, unknown> = {
  // A required binding (Observation.status, R4 observation-status) with a code not in its value set.
  bindings: {
    resourceType: 'Observation',
    status: 'done',
    code: { text: 'x' },
  },
  // The R4 vital signs profile (applied by its LOINC code) slices category: the VSCat slice is required.
  slicing: {
    resourceType: 'Observation',
    status: 'final',
    category: [
      {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' },
        ],
      },
    ],
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: 'Patient/p1' },
    effectiveDateTime: '2025-01-01',
    valueQuantity: { value: 60, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  },
  // An unknown modifier extension (extensibility.html#modifierExtension: never ignored).
  extensions: {
    resourceType: 'Patient',
    modifierExtension: [{ url: 'http://hospital.test/fhir/StructureDefinition/unknown', valueBoolean: true }],
  },
  // A link relation twice in one link list (bundle.html#Bundle.link).
  bundle: {
    resourceType: 'Bundle',
    type: 'searchset',
    link: [
      { relation: 'self', url: 'http://server.test/fhir/Patient?a=1' },
      { relation: 'self', url: 'http://server.test/fhir/Patient?a=2' },
    ],
  },
  // pat-1: a contact has a name, telecom, address or organization.
  invariants: {
    resourceType: 'Patient',
    contact: [{ gender: 'female' }],
  },
  // An element R4 does not define.
  structure: { resourceType: 'Patient', nickname: 'x' },
  // A script in the narrative (txt-1).
  narrative: {
    resourceType: 'Patient',
    text: {
      status: 'generated',
      div: '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script>Patient</div>',
    },
  },
  // A SearchParameter whose expression starts from a type that is not one of its bases.
  conformance: {
    resourceType: 'SearchParameter',
    url: 'http://example.org/fhir/SearchParameter/families',
    name: 'families',
    status: 'draft',
    description: 'x',
    code: 'families',
    base: ['Patient'],
    type: 'token',
    expression: 'Observation.code',
  },
};

function withLevels(text: string): FhirValidator {
  const v = createFhirValidatorSync({ familyLevels: readPairs(text) });
  registerCoded(v);
  return v;
}

function readPairs(text: string): Record<string, 'warn' | 'error'> {
  return Object.fromEntries(text.split(',').map((p) => p.split('='))) as Record<string, 'warn' | 'error'>;
}

/** The diabetes profile: a required binding to a value set on SNOMED CT, which is not loaded here. */
function registerCoded(v: FhirValidator): void {
  v.registerResource(structuredClone(DIABETES_VALUE_SET));
  v.registerResource(structuredClone(DIABETES_PROFILE));
}

const codedCondition = diabetesCondition('44054006');

const severe = (i: { severity: string }) => i.severity === 'error' || i.severity === 'fatal';

function errorFamilies(v: FhirValidator, resource: unknown, options?: ValidationOptions): string[] {
  return [
    ...new Set(
      v
        .validate(structuredClone(resource), options)
        .issues.filter(severe)
        .map((i) => familyOfIssue(i) ?? 'none'),
    ),
  ];
}

describe('rule families', () => {
  it('every issue of the full validator names its family (an issue extension)', () => {
    const result = validator().validate(cases.structure);
    expect(result.issues.length).toBeGreaterThan(0);
    for (const issue of result.issues) expect(familyOfIssue(issue)).toBeDefined();
  });

  it('the families are the configuration’s (config imports nothing: the two lists are one)', () => {
    expect([...VALIDATION_FAMILY_NAMES]).toEqual([...RULE_FAMILIES]);
  });

  for (const [family, resource] of Object.entries(cases)) {
    it(`${family}: refused at the default level, accepted with warnings at ${family}=warn, true severities reported`, () => {
      // Default levels: this case's errors are of this family only.
      expect(errorFamilies(validator(), resource)).toEqual([family]);
      const lenient = withLevels(`${family}=warn`);
      const result = lenient.validate(structuredClone(resource));
      expect(result.valid).toBe(true);
      const demoted = result.issues.filter((i) => i.severity === 'warning' && familyOfIssue(i) === family);
      expect(demoted.length).toBeGreaterThan(0);
      expect(demoted[0].diagnostics).toContain(`(rule family '${family}' is at warn on this server)`);
      // $validate: the true severities whatever the write levels.
      expect(errorFamilies(lenient, resource, { levels: 'reported' })).toEqual([family]);
      // Another family at warn changes nothing for this one.
      const other = RULE_FAMILIES.find((f) => f !== family && f !== 'terminology-not-loaded')!;
      expect(withLevels(`${other}=warn`).validate(structuredClone(resource)).valid).toBe(false);
    });
  }

  it('terminology-not-loaded: information by default, refused at error, information again in $validate', () => {
    const byDefault = withLevels('bindings=error');
    const info = byDefault.validate(structuredClone(codedCondition));
    expect(info.valid).toBe(true);
    const notWarnings = info.issues.filter((i) => i.severity !== 'warning');
    expect(notWarnings.map((i) => [i.severity, familyOfIssue(i)])).toEqual([
      ['information', 'terminology-not-loaded'],
    ]);
    const strict = withLevels('terminology-not-loaded=error');
    const refused = strict.validate(structuredClone(codedCondition));
    expect(refused.valid).toBe(false);
    expect(refused.issues.filter(severe).map((i) => i.expression)).toEqual([['Condition.code']]);
    expect(strict.validate(structuredClone(codedCondition), { levels: 'reported' }).valid).toBe(true);
  });

  it('what makes a document no resource at all is refused at any level', () => {
    const v = withLevels('all=warn');
    expect(v.validate({ resourceType: 'NoSuchType' }).valid).toBe(false);
    expect(v.validate('text').valid).toBe(false);
  });

  it('a received record is held to the network’s pinned levels where they are more lenient', () => {
    const v = createFhirValidatorSync({
      familyLevels: { bindings: 'error', structure: 'warn' },
      networkFamilyLevels: { bindings: 'warn' },
    });
    expect(v.validate(structuredClone(cases.bindings)).valid).toBe(false);
    expect(v.validate(structuredClone(cases.bindings), { levels: 'received' }).valid).toBe(true);
    // Never stricter than this service's own levels.
    expect(v.validate(structuredClone(cases.structure), { levels: 'received' }).valid).toBe(true);
    expect(v.validate(structuredClone(cases.invariants), { levels: 'received' }).valid).toBe(false);
  });

  it('parses family=level lists (all first, later pairs win) and names what is wrong', () => {
    expect(parseFamilyLevels('')).toEqual(DEFAULT_FAMILY_LEVELS);
    expect(parseFamilyLevels('all=error')).toEqual(STRICT_FAMILY_LEVELS);
    expect(parseFamilyLevels('all=warn,bindings=error').bindings).toBe('error');
    expect(parseFamilyLevels('all=warn,bindings=error').slicing).toBe('warn');
    expect(() => parseFamilyLevels('binding=warn')).toThrow(FamilyLevelsError);
    expect(() => parseFamilyLevels('bindings=off')).toThrow(/not family=warn or family=error/);
    expect(() => createFhirValidatorSync({ familyLevels: { nope: 'warn' } })).toThrow(/not a rule family/);
  });
});
