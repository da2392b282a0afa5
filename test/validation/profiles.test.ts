import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { createFhirValidatorSync } from '../../src/fhir/validation/index.js';
import { DefinitionRegistry, coreRegistry } from '../../src/fhir/definitions/definition-registry.js';
import { errorPaths, errors } from './helpers.js';

// A differential-only profile: Patient needs a birthDate, at most one name, an identifier slice by system,
// and a fixed gender; and an extension slice.
const profile = {
  resourceType: 'StructureDefinition',
  url: 'http://hie.example.net/fhir/StructureDefinition/network-patient',
  name: 'NetworkPatient',
  status: 'active',
  kind: 'resource',
  abstract: false,
  type: 'Patient',
  baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Patient',
  derivation: 'constraint',
  differential: {
    element: [
      { id: 'Patient', path: 'Patient' },
      {
        id: 'Patient.identifier',
        path: 'Patient.identifier',
        slicing: { discriminator: [{ type: 'value', path: 'system' }], rules: 'open' },
        min: 1,
      },
      { id: 'Patient.identifier:mrn', path: 'Patient.identifier', sliceName: 'mrn', min: 1, max: '1' },
      {
        id: 'Patient.identifier:mrn.system',
        path: 'Patient.identifier.system',
        min: 1,
        fixedUri: 'http://hospital.example.net/mrn',
      },
      { id: 'Patient.name', path: 'Patient.name', max: '1' },
      { id: 'Patient.birthDate', path: 'Patient.birthDate', min: 1 },
      { id: 'Patient.deceased[x]', path: 'Patient.deceased[x]', type: [{ code: 'boolean' }] },
    ],
  },
};

const conforming = {
  resourceType: 'Patient',
  meta: { profile: [profile.url] },
  identifier: [
    { system: 'http://hospital.example.net/mrn', value: '123' },
    { system: 'http://other.example.net', value: 'x' },
  ],
  name: [{ family: 'Doe' }],
  birthDate: '1980-01-01',
};

function withProfile() {
  const v = createFhirValidatorSync();
  v.registerResource(structuredClone(profile));
  return v;
}

describe('profiles', () => {
  it('generates a snapshot for a differential-only profile', () => {
    const reg = new DefinitionRegistry(coreRegistry());
    reg.registerResource(structuredClone(profile));
    const sd = reg.structureDefinition(profile.url);
    const ids = sd?.snapshot?.element.map((e) => e.id);
    expect(ids).toContain('Patient.identifier:mrn');
    expect(ids).toContain('Patient.identifier:mrn.system');
    expect(ids).toContain('Patient.contact.name'); // inherited from the base
    expect(sd?.snapshot?.element.find((e) => e.id === 'Patient.birthDate')?.min).toBe(1);
  });

  it('accepts a conforming resource that claims the profile', () => {
    expect(errors(conforming, undefined, withProfile())).toEqual([]);
  });

  it('checks cardinality, slices and choice restrictions of a claimed profile', () => {
    const v = withProfile();
    const bad = {
      ...conforming,
      identifier: [{ system: 'http://other.example.net', value: 'x' }],
      name: [{ family: 'a' }, { family: 'b' }],
      birthDate: undefined,
      deceasedDateTime: '2020-01-01',
    };
    const out = errors(bad, undefined, v);
    const text = out.map((e) => `${e.expression} ${e.diagnostics}`).join('\n');
    expect(text).toContain('Patient.birthDate: minimum required = 1');
    expect(text).toContain('Patient.name: max allowed = 1');
    expect(text).toMatch(/Slice 'Patient.identifier:mrn'/);
    expect(out.map((e) => e.expression)).toContain('Patient');
  });

  it('validates against profiles given as options (e.g. required per type, or $validate?profile=)', () => {
    const v = withProfile();
    const plain = { resourceType: 'Patient', name: [{ family: 'x' }] };
    expect(errors(plain, undefined, v)).toEqual([]);
    expect(errors(plain, [profile.url], v).length).toBeGreaterThan(0);
    const required = createFhirValidatorSync({ requiredProfiles: { Patient: [profile.url] } });
    required.registerResource(structuredClone(profile));
    expect(required.validate(plain).valid).toBe(false);
  });

  it('an unknown claimed profile is a warning', () => {
    const out = createFhirValidatorSync().validate({
      resourceType: 'Patient',
      meta: { profile: ['http://nowhere.example.net/p'] },
    });
    expect(out.valid).toBe(true);
    expect(out.issues).toContainEqual(
      expect.objectContaining({ severity: 'warning', expression: ['Patient.meta.profile[0]'] }),
    );
  });

  it('uses the core profiles shipped with R4 (vital signs: slicing by pattern on coding)', () => {
    const obs = {
      resourceType: 'Observation',
      meta: { profile: ['http://hl7.org/fhir/StructureDefinition/bodytemp'] },
      status: 'final',
      category: [
        {
          coding: [
            { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' },
          ],
        },
      ],
      code: { coding: [{ system: 'http://loinc.org', code: '8310-5' }] },
      subject: { reference: 'Patient/1' },
      effectiveDateTime: '2020-01-01',
      valueQuantity: { value: 37, unit: 'C', system: 'http://unitsofmeasure.org', code: 'Cel' },
    };
    expect(errors(obs)).toEqual([]);
    const wrongCode = { ...obs, code: { coding: [{ system: 'http://loinc.org', code: '1234-5' }] } };
    expect(errorPaths(wrongCode)).toContain('Observation.code');
  });

  it('applies the R4 vital signs profiles to Observations with their LOINC codes, and slices through coding slices', () => {
    const temp = {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8310-5' }] },
      subject: { reference: 'Patient/1' },
      effectiveDateTime: '2020-01-01',
      valueQuantity: { value: 37, unit: 'C', system: 'http://unitsofmeasure.org', code: 'Cel' },
    };
    expect(errors(temp).map((e) => e.diagnostics)).toEqual([
      'Observation.category: minimum required = 1, but only found 0',
    ]);
    expect(errors({ ...temp, code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] } })).toEqual(
      [],
    );
    const vitalSigns = [
      {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' },
        ],
      },
    ];
    const loinc = (code: string) => ({
      coding: [
        { system: 'http://loinc.org', code },
        { system: 'http://snomed.info/sct', code: '75367002' },
      ],
    });
    const bp = {
      resourceType: 'Observation',
      status: 'final',
      category: vitalSigns,
      code: loinc('85354-9'),
      subject: { reference: 'Patient/1' },
      effectiveDateTime: '2020-01-01',
      component: [
        {
          code: loinc('8480-6'),
          valueQuantity: { value: 120, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
        },
        {
          code: loinc('8462-4'),
          valueQuantity: { value: 80, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
        },
      ],
    };
    expect(errors(bp)).toEqual([]);
    const noDiastolic = { ...bp, component: [bp.component[0]] };
    const messages = errors(noDiastolic).map((e) => e.diagnostics);
    expect(messages).toHaveLength(2);
    expect(messages).toContain('Observation.component: minimum required = 2, but only found 1');
    expect(messages).toContainEqual(expect.stringContaining("Slice 'Observation.component:DiastolicBP'"));
  });

  it('loads IG packages from a folder and from a .tgz', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ig-'));
    try {
      fs.mkdirSync(path.join(dir, 'folder'));
      fs.writeFileSync(
        path.join(dir, 'folder', 'StructureDefinition-network-patient.json'),
        JSON.stringify(profile),
      );
      const fromFolder = createFhirValidatorSync({ igPaths: [path.join(dir, 'folder')] });
      expect(fromFolder.validate({ resourceType: 'Patient', meta: { profile: [profile.url] } }).valid).toBe(
        false,
      );

      const tgz = path.join(dir, 'package.tgz');
      fs.writeFileSync(
        tgz,
        zlib.gzipSync(
          tarOf([
            { name: 'package/StructureDefinition-network-patient.json', data: JSON.stringify(profile) },
          ]),
        ),
      );
      const fromTgz = createFhirValidatorSync({ igPaths: [tgz] });
      expect(fromTgz.registry.structureDefinition(profile.url)).toBeDefined();
      expect(fromTgz.validate(conforming).valid).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A minimal ustar archive. */
function tarOf(files: { name: string; data: string }[]): Buffer {
  const blocks: Buffer[] = [];
  for (const f of files) {
    const data = Buffer.from(f.data);
    const header = Buffer.alloc(512);
    header.write(f.name, 0);
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    header.write('00000000000\0', 136);
    header.write('        ', 148);
    header.write('0', 156);
    header.write('ustar\0', 257);
    header.write('00', 263);
    let sum = 0;
    for (const b of header) sum += b;
    header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

describe('conformance resources', () => {
  it('OperationDefinition input profiles must agree with the declared parameters', () => {
    const v = createFhirValidatorSync();
    v.registerResource({
      resourceType: 'StructureDefinition',
      url: 'http://hie.example.net/fhir/StructureDefinition/op-in',
      name: 'OpIn',
      status: 'active',
      kind: 'resource',
      abstract: false,
      type: 'Parameters',
      baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Parameters',
      derivation: 'constraint',
      differential: {
        element: [
          {
            id: 'Parameters.parameter',
            path: 'Parameters.parameter',
            slicing: { discriminator: [{ type: 'value', path: 'name' }], rules: 'open' },
          },
          {
            id: 'Parameters.parameter:subject',
            path: 'Parameters.parameter',
            sliceName: 'subject',
            min: 1,
            max: '1',
          },
          {
            id: 'Parameters.parameter:subject.name',
            path: 'Parameters.parameter.name',
            fixedString: 'subject',
          },
        ],
      },
    });
    const op = (min: number, max: string) => ({
      resourceType: 'OperationDefinition',
      name: 'Op',
      status: 'active',
      kind: 'operation',
      code: 'op',
      system: false,
      type: true,
      instance: false,
      inputProfile: 'http://hie.example.net/fhir/StructureDefinition/op-in',
      parameter: [{ name: 'subject', use: 'in', min, max, type: 'string' }],
    });
    expect(errors(op(1, '1'), undefined, v)).toEqual([]);
    expect(errors(op(0, '*'), undefined, v).map((e) => e.expression)).toEqual([
      'OperationDefinition.inputProfile.parameter[0]',
      'OperationDefinition.inputProfile.parameter[0]',
    ]);
  });

  it('a MeasureReport of a cohort Measure has no measureScore', () => {
    const v = createFhirValidatorSync();
    v.registerResource({
      resourceType: 'Measure',
      url: 'http://hie.example.net/fhir/Measure/beds',
      status: 'active',
      scoring: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/measure-scoring', code: 'cohort' }],
      },
    });
    const report = {
      resourceType: 'MeasureReport',
      status: 'complete',
      type: 'summary',
      measure: 'http://hie.example.net/fhir/Measure/beds',
      period: { start: '2020-01-01', end: '2020-01-31' },
      group: [{ population: [{ count: 3 }], measureScore: { value: 3 } }],
    };
    // A cross-resource rule: an error in $validate, a warning on writes (issue 18).
    const inValidate = (r: object) =>
      v
        .validate(r, { crossResourceSeverity: 'error' })
        .issues.filter((i) => i.severity === 'error')
        .map((i) => i.expression?.[0]);
    expect(inValidate(report)).toEqual(['MeasureReport.group[0].measureScore']);
    expect(errors(report, undefined, v)).toEqual([]);
    expect(inValidate({ ...report, group: [{ population: [{ count: 3 }] }] })).toEqual([]);
  });

  it('a SearchParameter expression starts from its base types', () => {
    const sp = (expression: string) => ({
      resourceType: 'SearchParameter',
      url: 'http://hie.example.net/fhir/SearchParameter/x',
      name: 'x',
      status: 'active',
      description: 'x',
      code: 'x',
      base: ['Patient'],
      type: 'string',
      expression,
    });
    expect(errors(sp('Patient.name | (Patient.contact.name)'))).toEqual([]);
    expect(
      errors(sp("Patient.name | Organization.name.where(value = 'a|b')")).map((e) => e.expression),
    ).toEqual(['SearchParameter.expression']);
  });
});
