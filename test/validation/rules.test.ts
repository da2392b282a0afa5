import { describe, expect, it } from 'vitest';
import { errorPaths, errors, validator } from './helpers.js';
import { createFhirValidatorSync } from '../../src/fhir/validation/index.js';

const patient = (extra: object = {}) => ({ resourceType: 'Patient', id: 'p1', ...extra });

describe('structure', () => {
  it('accepts a minimal valid resource', () => {
    expect(
      errors(patient({ name: [{ family: 'Chalmers', given: ['Peter', 'James'] }], birthDate: '1974-12-25' })),
    ).toEqual([]);
  });

  it('reports unknown properties at the object that holds them', () => {
    const out = errors(patient({ nmae: [{ family: 'x' }] }));
    expect(out).toHaveLength(1);
    expect(out[0].expression).toBe('Patient');
    expect(out[0].diagnostics).toContain("'nmae'");
  });

  it('reports a single value where an array is expected, and an array where a single value is', () => {
    expect(errorPaths(patient({ name: { family: 'x' } }))).toEqual(['Patient.name']);
    expect(errorPaths(patient({ gender: ['male'] }))).toEqual(['Patient.gender']);
  });

  it('forbids empty arrays, empty objects and empty strings', () => {
    expect(errorPaths(patient({ name: [] }))).toEqual(['Patient.name']);
    expect(errorPaths(patient({ name: [{}] }))).toEqual(['Patient.name[0]']);
    expect(errorPaths(patient({ name: [{ given: [''] }] }))).toEqual(['Patient.name[0].given[0]']);
  });

  it('checks minimum cardinality', () => {
    const out = errors({ resourceType: 'Observation', status: 'final' });
    expect(out.map((e) => e.diagnostics)).toEqual([
      expect.stringContaining('Observation.code: minimum required = 1'),
    ]);
    expect(out[0].expression).toBe('Observation');
  });

  it('names choice types with ofType() and rejects two choices at once', () => {
    const obs = { resourceType: 'Observation', status: 'final', code: { text: 'x' } };
    expect(errorPaths({ ...obs, valueQuantity: { value: 'high' } })).toEqual([
      'Observation.value.ofType(Quantity).value',
    ]);
    expect(errors({ ...obs, valueString: 'a', valueBoolean: true })[0].diagnostics).toContain('Only one of');
    expect(errorPaths({ ...obs, valueFoo: 1 })).toEqual(['Observation']);
  });

  it('validates primitive extensions (_name), including parallel arrays', () => {
    const ext = {
      extension: [
        { url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: 'unknown' },
      ],
    };
    expect(errors(patient({ _birthDate: ext }))).toEqual([]);
    expect(errors(patient({ name: [{ given: ['A', null], _given: [null, ext] }] }))).toEqual([]);
    expect(errorPaths(patient({ name: [{ given: ['A', null] }] }))).toEqual(['Patient.name[0].given[1]']);
    expect(errorPaths(patient({ _birthDate: { value: 'x' } }))).toEqual(['Patient.birthDate']);
  });

  it('walks backbone elements and contentReference elements', () => {
    const q = {
      resourceType: 'Questionnaire',
      status: 'draft',
      item: [{ linkId: '1', type: 'group', item: [{ type: 'string' }] }],
    };
    expect(errors(q).map((e) => e.expression)).toEqual(['Questionnaire.item[0].item[0]']);
  });
});

describe('primitive formats', () => {
  it.each([
    ['id', { id: 'a/b' }, 'Patient.id'],
    ['id too long', { id: 'x'.repeat(65) }, 'Patient.id'],
    ['date', { birthDate: '1974-13-01' }, 'Patient.birthDate'],
    ['date with no such day', { birthDate: '2023-02-30' }, 'Patient.birthDate'],
    [
      'dateTime without timezone',
      { deceasedDateTime: '2020-01-01T10:00:00' },
      'Patient.deceased.ofType(dateTime)',
    ],
    ['boolean as string', { active: 'true' }, 'Patient.active'],
    ['code with double space', { gender: 'fe  male' }, 'Patient.gender'],
    ['uri with a space', { implicitRules: 'http://a b' }, 'Patient.implicitRules'],
    ['positiveInt', { multipleBirthInteger: 1.5 }, 'Patient.multipleBirth.ofType(integer)'],
    ['control characters', { name: [{ family: 'a\u0001b' }] }, 'Patient.name[0].family'],
  ])('rejects a bad %s', (_label, extra, path) => {
    expect(errorPaths(patient(extra))).toContain(path);
  });

  it('accepts good values of each format', () => {
    expect(
      errors(
        patient({
          birthDate: '2000-02-29',
          deceasedDateTime: '2020-01-01T10:00:00.123+01:00',
          meta: { lastUpdated: '2020-01-01T00:00:00Z' },
        }),
      ),
    ).toEqual([]);
  });

  it('checks base64Binary and attachment sizes', () => {
    const media = (content: object) => ({ resourceType: 'Media', status: 'completed', content });
    expect(errors(media({ contentType: 'text/plain', data: 'aGVsbG8=' }))).toEqual([]);
    expect(errorPaths(media({ contentType: 'text/plain', data: 'not base64!' }))).toEqual([
      'Media.content.data',
    ]);
    expect(errorPaths(media({ contentType: 'text/plain', data: 'aGVsbG8=', size: 100 }))).toEqual([
      'Media.content',
    ]);
  });
});

describe('invariants', () => {
  it('evaluates FHIRPath invariants with their key', () => {
    const out = errors({
      resourceType: 'RiskAssessment',
      status: 'final',
      subject: { reference: 'Patient/1' },
      prediction: [{ probabilityDecimal: 101 }],
    });
    expect(out).toEqual([
      expect.objectContaining({
        code: 'invariant',
        expression: 'RiskAssessment.prediction[0]',
        diagnostics: expect.stringContaining('ras-2'),
      }),
    ]);
  });

  it('per-1: a period may not end before it starts', () => {
    const enc = (period: object) => ({
      resourceType: 'Encounter',
      status: 'finished',
      class: { code: 'AMB' },
      period,
    });
    expect(errors(enc({ start: '2020-01-02', end: '2020-01-01' }))[0].diagnostics).toContain('per-1');
    expect(errors(enc({ start: '2020-01-01T10:00:00Z', end: '2020-01-01T11:00:00+00:00' }))).toEqual([]);
  });

  it('ext-1: an extension has a value or extensions, not both', () => {
    expect(errorPaths(patient({ extension: [{ url: 'http://example.net/x' }] }))).toEqual([
      'Patient.extension[0]',
    ]);
  });

  it('dom-3 natively: contained resources must be referenced', () => {
    const contained = [{ resourceType: 'Practitioner', id: 'pr1' }];
    expect(errors(patient({ contained }))[0].diagnostics).toContain('dom-3');
    expect(errors(patient({ contained, generalPractitioner: [{ reference: '#pr1' }] }))).toEqual([]);
  });

  it('ref-1: a local reference needs its contained resource', () => {
    const out = errors(patient({ generalPractitioner: [{ reference: '#nope' }] }));
    expect(out.map((e) => e.expression)).toContain('Patient.generalPractitioner[0]');
    expect(out.some((e) => e.diagnostics.includes('ref-1'))).toBe(true);
  });

  it('dom-2/dom-4: contained resources may not nest or carry versions', () => {
    const inner = { resourceType: 'Practitioner', id: 'pr1', meta: { versionId: '1' } };
    const out = errors(patient({ contained: [inner], generalPractitioner: [{ reference: '#pr1' }] }));
    expect(out.some((e) => e.diagnostics.includes('dom-4'))).toBe(true);
  });
});

describe('references', () => {
  it('checks the target type against the element', () => {
    expect(errors(patient({ managingOrganization: { reference: 'Patient/2' } }))[0].diagnostics).toContain(
      'not a valid Target',
    );
    expect(errors(patient({ managingOrganization: { reference: 'Organization/2' } }))).toEqual([]);
    expect(
      errors(
        patient({ managingOrganization: { reference: 'urn:uuid:2b4c0c3e-0e4b-4c43-8d6b-0e2b1b6b8f10' } }),
      ),
    ).toEqual([]);
  });
});

describe('terminology', () => {
  it('required bindings are errors, with the code location', () => {
    expect(errors(patient({ gender: 'mail' }))).toEqual([
      expect.objectContaining({ code: 'code-invalid', expression: 'Patient.gender' }),
    ]);
  });

  it('unknown codes in a loaded CodeSystem are errors; unknown systems are not', () => {
    const obs = (coding: object) => ({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [coding] },
    });
    expect(
      errorPaths(obs({ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'nope' })),
    ).toEqual(['Observation.code.coding[0].code']);
    expect(errors(obs({ system: 'http://loinc.org', code: '2345-7' }))).toEqual([]);
    expect(errors(obs({ system: 'http://example.net/local-codes', code: 'x' }))).toEqual([]);
  });

  it('unknown codes can be downgraded to warnings (bulk imports), required bindings stay errors', () => {
    const lenient = createFhirValidatorSync({ unknownCodeSeverity: 'warning' });
    const obs = {
      resourceType: 'Observation',
      status: 'final',
      category: [
        {
          coding: [
            { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-sign' },
          ],
        },
      ],
      code: { text: 'x' },
    };
    expect(lenient.validate(obs).valid).toBe(true);
    expect(validator().validate(obs).valid).toBe(false);
    expect(lenient.validate({ ...obs, status: 'done' }).valid).toBe(false);
  });

  it('extensible bindings give warnings, not errors', () => {
    const v = validator();
    const out = v.validate({
      resourceType: 'Patient',
      maritalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'DL' }] },
    });
    expect(out.valid).toBe(true);
    expect(
      out.issues.some((i) => i.severity === 'warning' && i.expression?.[0] === 'Patient.maritalStatus'),
    ).toBe(true);
  });
});

describe('narrative', () => {
  const withDiv = (div: string) => patient({ text: { status: 'generated', div } });
  it('accepts safe XHTML', () => {
    expect(
      errors(withDiv('<div xmlns="http://www.w3.org/1999/xhtml"><p>Hello <b>there</b></p></div>')),
    ).toEqual([]);
  });
  it.each([
    ['<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>'],
    ['<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">a</p></div>'],
    ['<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:alert(1)">a</a></div>'],
    ['<div><p>no namespace</p></div>'],
    ['<div xmlns="http://www.w3.org/1999/xhtml"><p>unclosed</div>'],
    ['<div xmlns="http://www.w3.org/1999/xhtml">   </div>'],
  ])('rejects %s', (div) => {
    expect(errorPaths(withDiv(div))).toContain('Patient.text.div');
  });
});

describe('extensions', () => {
  it('validates a known extension against its definition', () => {
    const bad = patient({
      extension: [
        { url: 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace', valueString: 'Paris' },
      ],
    });
    expect(errorPaths(bad).length).toBeGreaterThan(0);
    const good = patient({
      extension: [
        {
          url: 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace',
          valueAddress: { city: 'Paris' },
        },
      ],
    });
    expect(errors(good)).toEqual([]);
  });

  it('unknown extensions are warnings, unknown modifier extensions errors, example domains errors', () => {
    const v = validator();
    const unknown = v.validate(
      patient({ extension: [{ url: 'http://example.net/fhir/x', valueString: 'a' }] }),
    );
    expect(unknown.valid).toBe(true);
    expect(unknown.issues.some((i) => i.severity === 'warning')).toBe(true);
    expect(
      errorPaths(patient({ modifierExtension: [{ url: 'http://example.net/fhir/x', valueString: 'a' }] })),
    ).toEqual(['Patient.modifierExtension[0]']);
    expect(
      errorPaths(patient({ extension: [{ url: 'http://example.org/fhir/x', valueString: 'a' }] })),
    ).toContain('Patient.extension[0]');
  });
});

describe('bundles', () => {
  it('requires absolute fullUrls matching their resources', () => {
    const b = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        { fullUrl: 'Patient/1', resource: { resourceType: 'Patient', id: '1' } },
        { fullUrl: 'http://x.org/fhir/Patient/2', resource: { resourceType: 'Patient', id: '3' } },
      ],
    };
    expect(errorPaths(b)).toEqual(['Bundle.entry[0]', 'Bundle.entry[1]']);
  });

  it('reports errors inside entries with their path', () => {
    const b = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [{ resource: { resourceType: 'Patient', gender: 'x' } }],
    };
    expect(errorPaths(b)).toEqual(['Bundle.entry[0].resource.gender']);
  });

  it('evaluates bdl invariants (a transaction entry needs a request)', () => {
    const b = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ resource: { resourceType: 'Patient' } }],
    };
    expect(errors(b).some((e) => e.diagnostics.includes('bdl-3'))).toBe(true);
  });
});
