/**
 * What the local network's patient has at each member (scripts/local-network.ts): at hospital A (the home) a
 * Synthea patient's whole record (a transaction Bundle from ../shared/data/synthea-bundles) or a few built-in
 * records; at lab C a few lab results; at A, B and C the patient's own Patient, with the same demographics so that
 * `$network-link` matches them. Everything here is fictional.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export type FhirJson = Record<string, unknown> & { resourceType: string };

/** The demographics the home sends in a link token and the custodians compare (docs/exchange.md). */
export interface Demographics {
  family: string;
  given: string[];
  birthDate: string;
  gender: string;
  postalCode?: string;
}

/** The built-in patient (fictional). */
export const BUILTIN_PATIENT: Demographics = {
  family: 'Rivera',
  given: ['Ana', 'Lucia'],
  birthDate: '1980-04-02',
  gender: 'female',
  postalCode: '1000',
};

/** A Patient of these demographics; `id` given, for a PUT. */
export function patientResource(id: string, who: Demographics): FhirJson {
  return {
    resourceType: 'Patient',
    id,
    name: [{ use: 'official', family: who.family, given: who.given }],
    gender: who.gender,
    birthDate: who.birthDate,
    ...(who.postalCode ? { address: [{ use: 'home', postalCode: who.postalCode }] } : {}),
  };
}

/** The demographics of a Patient resource (its official name, else the first). */
export function demographicsOf(patient: FhirJson): Demographics {
  const names = (patient.name ?? []) as { use?: string; family?: string; given?: string[] }[];
  const name = names.find((n) => n.use === 'official') ?? names[0] ?? {};
  const addresses = (patient.address ?? []) as { postalCode?: string }[];
  return {
    family: name.family ?? '',
    given: name.given ?? [],
    birthDate: String(patient.birthDate ?? ''),
    gender: String(patient.gender ?? 'unknown'),
    postalCode: addresses.find((a) => a.postalCode)?.postalCode,
  };
}

/** A few records at the home, written by its EHR system with chosen ids (PUT). */
export function builtinHomeRecords(patient: string): FhirJson[] {
  const subject = { reference: patient };
  return [
    {
      resourceType: 'Condition',
      id: 'a-hypertension',
      clinicalStatus: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }],
      },
      verificationStatus: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }],
      },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '38341003', display: 'Hypertension' }] },
      subject,
      onsetDateTime: '2019-03-14',
    },
    {
      resourceType: 'Observation',
      id: 'a-body-weight',
      status: 'final',
      category: [
        {
          coding: [
            { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' },
          ],
        },
      ],
      code: { coding: [{ system: 'http://loinc.org', code: '29463-7', display: 'Body weight' }] },
      subject,
      effectiveDateTime: '2024-05-02T09:30:00Z',
      valueQuantity: { value: 72.5, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
    },
    {
      resourceType: 'Immunization',
      id: 'a-influenza-2024',
      status: 'completed',
      vaccineCode: {
        coding: [{ system: 'http://hl7.org/fhir/sid/cvx', code: '141', display: 'Influenza, seasonal' }],
      },
      patient: subject,
      occurrenceDateTime: '2024-10-07',
    },
  ];
}

/** Lab C's results for its Patient, each with an identifier (stored with a conditional create: once). */
export function labResults(patient: string): FhirJson[] {
  const laboratory = [
    {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }],
    },
  ];
  const result = (id: string, loinc: string, display: string, value: number, unit: string, code: string) => ({
    resourceType: 'Observation',
    identifier: [{ system: 'https://lab-c.example/results', value: id }],
    status: 'final',
    category: laboratory,
    code: { coding: [{ system: 'http://loinc.org', code: loinc, display }] },
    subject: { reference: patient },
    effectiveDateTime: '2025-01-20T08:15:00Z',
    valueQuantity: { value, unit, system: 'http://unitsofmeasure.org', code },
  });
  return [
    result('c-hba1c-2025-01', '4548-4', 'Hemoglobin A1c/Hemoglobin.total in Blood', 6.1, '%', '%'),
    result('c-glucose-2025-01', '2345-7', 'Glucose [Mass/volume] in Serum or Plasma', 104, 'mg/dL', 'mg/dL'),
  ];
}

/** The Synthea bundles folder next to the project (../shared/data/synthea-bundles), when it is there. */
export function syntheaFolder(projectRoot: string): string | undefined {
  const folder = join(projectRoot, '..', 'shared', 'data', 'synthea-bundles');
  return existsSync(folder) ? folder : undefined;
}

/** A Synthea transaction Bundle: the given file, or the first one of the folder (by name). */
export function syntheaBundle(projectRoot: string, file?: string): { file: string; text: string } {
  if (file) return { file, text: readFileSync(file, 'utf8') };
  const folder = syntheaFolder(projectRoot);
  const first =
    folder &&
    readdirSync(folder)
      .filter((f) => f.endsWith('.json'))
      .sort()[0];
  if (!folder || !first)
    throw new Error('no Synthea bundle found: use --records builtin or --synthea-bundle FILE');
  const path = join(folder, first);
  return { file: path, text: readFileSync(path, 'utf8') };
}

/** The Patient of a Synthea transaction Bundle and its entry's index. */
export function syntheaPatient(bundleText: string): { index: number; patient: FhirJson } {
  const bundle = JSON.parse(bundleText) as { entry?: { resource?: FhirJson }[] };
  const index = (bundle.entry ?? []).findIndex((e) => e.resource?.resourceType === 'Patient');
  if (index < 0) throw new Error('the Synthea bundle has no Patient');
  return { index, patient: bundle.entry![index]!.resource! };
}
