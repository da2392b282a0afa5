/**
 * `$import` with the `consents` parameter (docs/bulk.md, "Consent resources"), over the real app with SMART auth:
 * `map` writes each imported patient-privacy Consent as the API's own write of it would (the consent store: its
 * grants go to the ledger and are in force once the job ends), `inert` stores it tagged and grants nothing, and the
 * default `refuse` rejects it alone (its neighbours are stored); the manifest reports the handling and the count.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  actor,
  HOME_ORGANIZATION,
  privacyConsent,
  startHarness,
  type Harness,
} from '../access/app-harness.js';
import { IMPORT_SETTINGS, runImport } from '../../src/commands/import.js';
import { loadSettings } from '../../src/config/config.js';

const ASYNC = { prefer: 'respond-async', accept: 'application/fhir+json' };
const code = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };

/** Patient/{p}, its Observation obs-{p}, and its Consent granting Organization/hosp-b, as NDJSON lines. */
function recordOf(p: string): string {
  return [
    { resourceType: 'Patient', id: p, gender: 'female' },
    {
      resourceType: 'Observation',
      id: `obs-${p}`,
      status: 'final',
      code,
      subject: { reference: `Patient/${p}` },
    },
    privacyConsent(
      `Patient/${p}`,
      { type: 'permit', actor: [actor('Organization/hosp-b')] },
      'active',
      `c-${p}`,
    ),
  ]
    .map((r) => JSON.stringify(r))
    .join('\n');
}

describe('$import consents: refuse, inert, map', () => {
  let h: Harness;
  let root: string;
  const tokens: Record<string, string> = {};

  /** $import of the root's file `name` as sysA with `consents` (absent: the default); the finished manifest. */
  const importAs = async (name: string, consents?: string): Promise<any> => {
    const body = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'inputFormat', valueCode: 'application/fhir+ndjson' },
        ...(consents ? [{ name: 'consents', valueCode: consents }] : []),
        { name: 'input', part: [{ name: 'url', valueUrl: `file://${join(root, name)}` }] },
      ],
    };
    const kick = await h.request(tokens.sysA, 'POST', '/$import', body, {
      ...ASYNC,
      'content-type': 'application/fhir+json',
    });
    expect(kick.status, kick.text).toBe(202);
    const status = new URL(kick.headers['content-location'] as string).pathname.replace('/fhir', '');
    await h.app.bulk!.imports.settled();
    const res = await h.request(tokens.sysA, 'GET', status);
    expect(res.status, res.text).toBe(200);
    return res.body;
  };

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'hie-import-consents-'));
    for (const p of ['p1', 'p2', 'p3']) writeFileSync(join(root, `${p}.ndjson`), recordOf(p));
    h = await startHarness({ flags: { importRoot: root } });
    tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    tokens.drB = await h.enrol('dr-b-client', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    // The grantee the Consents name (an import's relative reference resolves in the import or the store).
    const org = { resourceType: 'Organization', id: 'hosp-b', name: 'Hospital B' };
    expect((await h.request(tokens.sysA, 'PUT', '/Organization/hosp-b', org)).status).toBe(201);
  });
  afterAll(async () => {
    await h?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('map: the Consent is written as the API writes it, its grant in force for the named organisation', async () => {
    const manifest = await importAs('p1.ndjson', 'map');
    expect(manifest.consents).toEqual({ handling: 'map', seen: 1 });
    expect(manifest.error).toEqual([]);
    const read = await h.request(tokens.drB, 'GET', '/Observation/obs-p1');
    expect(read.status, read.text).toBe(200);
    const consent = await h.request(tokens.sysA, 'GET', '/Consent/c-p1');
    expect(consent.status, consent.text).toBe(200);
    expect(JSON.stringify(consent.body.meta?.tag ?? [])).not.toContain('consent-inert');
  });

  it('inert: stored and tagged, granting nothing; refuse (the default): rejected alone', async () => {
    const inert = await importAs('p2.ndjson', 'inert');
    expect(inert.consents).toEqual({ handling: 'inert', seen: 1 });
    const tagged = await h.request(tokens.sysA, 'GET', '/Consent/c-p2');
    expect(tagged.status, tagged.text).toBe(200);
    expect(JSON.stringify(tagged.body.meta.tag)).toContain('consent-inert');
    expect((await h.request(tokens.drB, 'GET', '/Observation/obs-p2')).status).toBe(404);

    const refused = await importAs('p3.ndjson');
    expect(refused.consents).toEqual({ handling: 'refuse', seen: 1 });
    expect(refused.error[0].count).toBe(1);
    expect((await h.request(tokens.sysA, 'GET', '/Observation/obs-p3')).status).toBe(200);
    expect((await h.request(tokens.sysA, 'GET', '/Consent/c-p3')).status).toBe(404);
    expect((await h.request(tokens.drB, 'GET', '/Observation/obs-p3')).status).toBe(404);
  });

  it('an unknown handling is a 400 naming the parameter', async () => {
    const res = await h.request(
      tokens.sysA,
      'POST',
      '/$import',
      {
        resourceType: 'Parameters',
        parameter: [
          { name: 'inputFormat', valueCode: 'application/fhir+ndjson' },
          { name: 'consents', valueCode: 'grant-all' },
          { name: 'input', part: [{ name: 'url', valueUrl: `file://${join(root, 'p1.ndjson')}` }] },
        ],
      },
      { ...ASYNC, 'content-type': 'application/fhir+json' },
    );
    expect(res.status, res.text).toBe(400);
    expect(res.text).toContain('consents');
  });
});

/**
 * `hie-ledger import --consents map` into a stopped data directory (src/commands/import.ts): the data directory's
 * consent service maps each Consent as the service's own write would (the store decorator of every API write), so
 * once the service runs again the grant is in force for the organisation the Consent names.
 */
describe('hie-ledger import --consents map on a data directory', () => {
  let h: Harness;
  let root: string;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'hie-import-consents-cli-'));
    writeFileSync(join(root, 'p7.ndjson'), recordOf('p7'));
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it("maps the Consent: after the import, the named organisation's clinician reads the patient's record", async () => {
    const sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    await h.enrol('dr-b-client', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
    const org = { resourceType: 'Organization', id: 'hosp-b', name: 'Hospital B' };
    expect((await h.request(sys, 'PUT', '/Organization/hosp-b', org)).status).toBe(201);
    let output = '';
    const text = new Writable({
      write(chunk: Buffer, _encoding, done) {
        output += chunk.toString();
        done();
      },
    });
    let code: number | undefined;
    // The service stopped (the import takes the data directory's lock), then started again on the same directory.
    await h.restart({
      whileStopped: async () => {
        code = await runImport({
          ...loadSettings(IMPORT_SETTINGS, { dataDir: h.dataDir, organization: HOME_ORGANIZATION }, {}),
          paths: [join(root, 'p7.ndjson')],
          consents: 'map',
          progress: false,
          workers: 0,
          out: text,
          err: text,
        });
      },
    });
    expect(code, output).toBe(0);
    expect(output).toContain('Consents: --consents map (1 Consent resources in this run).');
    const drB = await h.token('dr-b-client');
    const read = await h.request(drB, 'GET', '/Observation/obs-p7');
    expect(read.status, read.text).toBe(200);
    const consent = await h.request(sys, 'GET', '/Consent/c-p7');
    expect(consent.status, consent.text).toBe(200);
    expect(JSON.stringify(consent.body.meta?.tag ?? [])).not.toContain('consent-inert');
  });
});
