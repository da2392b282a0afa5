/**
 * $export over the real app with SMART auth (docs/bulk.md, docs/access.md): what a caller exports is exactly what
 * it could read, resource by resource (custodian rule, the patient's grants), the manifest counts only that, a job
 * is its owner's alone (another client's job is answered as an unknown one, byte for byte), and an admin's export
 * is recorded in the audit.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, privacyConsent, startHarness, type Harness } from '../access/app-harness.js';

const code = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };
const record = (patient: string) => [
  // Text outside ASCII: the export copies the stored bytes, which must stay the text a read returns.
  {
    resourceType: 'Patient',
    id: patient,
    gender: 'female',
    name: [{ family: 'Zoë', given: ['Ångström 😀'] }],
  },
  { resourceType: 'Condition', id: `cond-${patient}`, subject: { reference: `Patient/${patient}` }, code },
  ...[1, 2].map((n) => ({
    resourceType: 'Observation',
    id: `obs-${patient}-${n}`,
    status: 'final',
    code,
    subject: { reference: `Patient/${patient}` },
    valueQuantity: { value: 70.1 + n, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
  })),
];
const ASYNC = { prefer: 'respond-async', accept: 'application/fhir+json' };

describe('$export exports exactly what the caller may read', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};

  /** Kick-off, wait for the job, then the manifest and every file's lines (as the caller). */
  const exportAs = async (
    caller: string,
    url: string,
    headers: Record<string, string> = {},
  ): Promise<{ manifest: any; lines: Map<string, string[]>; status: string }> => {
    const kick = await h.request(tokens[caller], 'GET', url, undefined, { ...ASYNC, ...headers });
    expect(kick.status, kick.text).toBe(202);
    const status = new URL(kick.headers['content-location'] as string).pathname.replace('/fhir', '');
    await h.app.bulk!.exports.settled();
    const res = await h.request(tokens[caller], 'GET', status);
    expect(res.status, res.text).toBe(200);
    const lines = new Map<string, string[]>();
    for (const output of res.body.output) {
      const file = await h.request(tokens[caller], 'GET', new URL(output.url).pathname.replace('/fhir', ''));
      expect(file.status, file.text).toBe(200);
      const got = file.text.split('\n').filter((l) => l !== '');
      expect(got).toHaveLength(output.count);
      lines.set(output.type, [...(lines.get(output.type) ?? []), ...got]);
    }
    return { manifest: res.body, lines, status };
  };
  const refs = (lines: Map<string, string[]>) =>
    [...lines.values()]
      .flat()
      .map((l) => JSON.parse(l))
      .map((r) => `${r.resourceType}/${r.id}`)
      .filter((r) => !r.startsWith('Consent/'))
      .sort();

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    tokens.drB = await h.enrol('dr-b-client', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    tokens.drB2 = await h.enrol('dr-b2-client', 'clinician', 'Practitioner/dr-b2', 'Organization/hosp-b');
    tokens.patient1 = await h.enrol('patient-1', 'patient', 'Patient/p1');
    tokens.admin = await h.enrol('admin-1', 'admin');
    for (const resource of [
      { resourceType: 'Organization', id: 'hosp-a', name: 'Hospital A' },
      ...record('p1'),
      ...record('p2'),
      {
        resourceType: 'Group',
        id: 'cohort',
        type: 'person',
        actual: true,
        member: [{ entity: { reference: 'Patient/p1' } }],
      },
      // drB may not read this one: p2 granted it nothing (a resource of several patients needs every one's grant).
      {
        resourceType: 'Group',
        id: 'mixed',
        type: 'person',
        actual: true,
        member: [{ entity: { reference: 'Patient/p1' } }, { entity: { reference: 'Patient/p2' } }],
      },
    ]) {
      const res = await h.request(tokens.sysA, 'PUT', `/${resource.resourceType}/${resource.id}`, resource);
      expect(res.status, res.text).toBe(201);
    }
    const consent = await h.request(
      tokens.patient1,
      'POST',
      '/Consent',
      privacyConsent('Patient/p1', { type: 'permit', actor: [actor('Organization/hosp-b')] }),
    );
    expect(consent.status, consent.text).toBe(201);
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('the custodian exports both patients; another organisation only the granted one, counts included', async () => {
    const all = await exportAs('sysA', '/$export?_type=Patient,Observation,Condition');
    expect(refs(all.lines)).toEqual(
      [...record('p1'), ...record('p2')].map((r) => `${r.resourceType}/${r.id}`).sort(),
    );
    const granted = await exportAs('drB', '/$export?_type=Patient,Observation,Condition');
    expect(refs(granted.lines)).toEqual(
      record('p1')
        .map((r) => `${r.resourceType}/${r.id}`)
        .sort(),
    );
    const counts = Object.fromEntries(granted.manifest.output.map((o: any) => [o.type, o.count]));
    expect(counts).toEqual({ Patient: 1, Observation: 2, Condition: 1 });
    // Nothing in what it got names p2 or counts its records.
    expect(JSON.stringify(granted.manifest)).not.toContain('p2');
    for (const lines of granted.lines.values()) for (const line of lines) expect(line).not.toContain('p2');
  });

  it('each line is the stored text byte for byte, as a read returns it to that caller; the ungranted patient gives nothing', async () => {
    const callers: [string, Record<string, string>][] = [
      ['sysA', {}],
      ['drB', {}],
      ['admin', { 'x-access-reason': 'export byte copy check' }],
    ];
    for (const [caller, headers] of callers) {
      const { lines } = await exportAs(caller, '/$export?_type=Patient,Observation,Condition', headers);
      const exported = [...lines.values()].flat();
      expect(exported.length).toBe(caller === 'drB' ? 4 : 8);
      for (const line of exported) {
        const resource = JSON.parse(line);
        // What the export wrote before it copied bytes: vreadMany's text of the version, as a string.
        const [stored] = await h.app.store.vreadMany([
          {
            resourceType: resource.resourceType,
            id: resource.id,
            versionId: Number(resource.meta.versionId),
          },
        ]);
        expect(line).toBe(stored!.json);
        const read = await h.request(
          tokens[caller],
          'GET',
          `/${resource.resourceType}/${resource.id}`,
          undefined,
          headers,
        );
        expect(read.status).toBe(200);
        expect(read.text).toBe(line);
      }
      if (caller === 'drB') for (const line of exported) expect(line).not.toContain('p2');
    }
  });

  it('Patient level and Group level are limited to the patients, as the caller may read them', async () => {
    const patients = await exportAs('drB', '/Patient/$export?_type=Patient,Observation');
    expect(refs(patients.lines)).toEqual(['Observation/obs-p1-1', 'Observation/obs-p1-2', 'Patient/p1']);
    const group = await exportAs('sysA', '/Group/cohort/$export?_type=Patient,Observation');
    expect(refs(group.lines)).toEqual(['Observation/obs-p1-1', 'Observation/obs-p1-2', 'Patient/p1']);
    // drB reads the cohort (p1 granted it all); of a Group of p1 and p2 it gets only what p1 granted.
    const cohort = await exportAs('drB', '/Group/cohort/$export?_type=Patient');
    expect(refs(cohort.lines)).toEqual(['Patient/p1']);
    // A Group drB may not read is a 404, as an absent one.
    const hidden = await h.request(tokens.drB, 'GET', '/Group/mixed/$export', undefined, ASYNC);
    const absent = await h.request(tokens.drB, 'GET', '/Group/nothing/$export', undefined, ASYNC);
    expect(hidden.status).toBe(404);
    expect(hidden.text).toBe(absent.text.replace('Group/nothing', 'Group/mixed'));
    const mixed = await exportAs('sysA', '/Group/mixed/$export?_type=Patient');
    expect(refs(mixed.lines)).toEqual(['Patient/p1', 'Patient/p2']);
    // `patient` (POST Parameters) names a patient the caller may not read: as absent.
    const named = await h.request(
      tokens.drB,
      'POST',
      '/Patient/$export',
      {
        resourceType: 'Parameters',
        parameter: [{ name: 'patient', valueReference: { reference: 'Patient/p2' } }],
      },
      ASYNC,
    );
    expect(named.status).toBe(404);
  });

  it("another client's job, its status, files and cancel, are answered as an unknown job", async () => {
    const mine = await exportAs('drB', '/$export?_type=Observation');
    const fileUrl = new URL(mine.manifest.output[0].url).pathname.replace('/fhir', '');
    const unknownJob = '/bulk/export/00000000-0000-4000-8000-000000000000';
    for (const [path, method] of [
      [mine.status, 'GET'],
      [fileUrl, 'GET'],
      [mine.status, 'DELETE'],
    ] as const) {
      const other = await h.request(tokens.drB2, method, path);
      const id = path.split('/')[3];
      const absent = await h.request(tokens.drB2, method, path.replace(id, unknownJob.split('/')[3]));
      expect(other.status).toBe(404);
      expect(other.text).toBe(absent.text.replace(unknownJob.split('/')[3], id));
    }
    // Still there for its owner.
    expect((await h.request(tokens.drB, 'GET', mine.status)).status).toBe(200);
  });

  it("an admin's export is recorded in the audit, with its reason", async () => {
    const reason = 'quality audit 2026';
    const exported = await exportAs('admin', '/$export?_type=Patient', { 'x-access-reason': reason });
    expect(refs(exported.lines)).toEqual(['Patient/p1', 'Patient/p2']);
    // The audit writes its events on its own window: read them from the store until they are there.
    let recorded: any[] = [];
    for (
      let attempt = 0;
      attempt < 200 && recorded.filter((e) => e.entity === undefined).length === 0;
      attempt++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      recorded = [];
      for await (const { version } of h.app.store.allVersions())
        if (version.resourceType === 'AuditEvent') {
          const event = JSON.parse(version.json!);
          if (event.purposeOfEvent?.[0]?.text === reason && event.outcomeDesc.includes('GET /$export -> 200'))
            recorded.push(event);
        }
    }
    // One event names no patient (the export itself), others the patients whose records it disclosed.
    expect(recorded.some((e) => e.entity === undefined)).toBe(true);
    expect(recorded.some((e) => e.entity?.[0]?.what?.reference === 'Patient/p1')).toBe(true);
  });

  it('an admin without a recorded reason gets no clinical data', async () => {
    const kick = await h.request(tokens.admin, 'GET', '/$export?_type=Patient', undefined, ASYNC);
    expect(kick.status).toBe(403);
  });
});
