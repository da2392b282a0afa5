/**
 * History at type and system level over the real app: totals, `_count=0`, `_since` windows and pages count only
 * what the caller may see (the same numbers as if the hidden resources did not exist), and paging cursors are
 * opaque and bound to their caller (replayed by anyone else they are an invalid cursor, revealing nothing).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, privacyConsent, startHarness, type Harness } from './app-harness.js';

const code = { coding: [{ system: 'http://loinc.org', code: '2339-0' }] };
const observation = (id: string, patient: string, value: number) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code,
  subject: { reference: patient },
  valueQuantity: { value, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
});

describe('history totals, windows, pages and cursors count only what the caller may see', () => {
  let h: Harness;
  const tokens: Record<string, string> = {};
  let since = '';

  /** Server-assigned ids of hospital B's records (only this service's organisation chooses ids), by test name. */
  const ids: Record<string, string> = {};
  const put = async (who: string, body: Record<string, unknown>) => {
    const name = String(body.id);
    if (who === 'sysB' && ids[name] === undefined) {
      const created = await h.request(tokens[who], 'POST', `/${body.resourceType}`, {
        ...body,
        id: undefined,
      });
      expect(created.status, created.text).toBe(201);
      ids[name] = created.body.id;
      return created.body as { meta: { lastUpdated: string } };
    }
    if (ids[name] !== undefined) body = { ...body, id: ids[name] };
    const res = await h.request(tokens[who], 'PUT', `/${body.resourceType}/${body.id}`, body);
    expect([200, 201], res.text).toContain(res.status);
    return res.body as { meta: { lastUpdated: string } };
  };
  const get = (who: string, url: string) => h.request(tokens[who], 'GET', url);
  /** Follows `next` links from `url`; the page sizes, totals and entries seen. */
  const allPages = async (who: string, url: string) => {
    const sizes: number[] = [];
    const totals: number[] = [];
    const entries: string[] = [];
    let next: string | undefined = url;
    while (next) {
      const res = await get(who, next);
      expect(res.status, res.text).toBe(200);
      sizes.push(res.body.entry.length);
      totals.push(res.body.total);
      for (const e of res.body.entry)
        entries.push(`${e.fullUrl.split('/fhir/')[1]}@${e.response?.etag ?? e.search?.mode}`);
      const link = (res.body.link as { relation: string; url: string }[]).find((l) => l.relation === 'next');
      next = link ? link.url.split('/fhir')[1] : undefined;
    }
    return { sizes, totals, entries };
  };

  beforeAll(async () => {
    h = await startHarness();
    tokens.sysA = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    tokens.sysB = await h.enrol('sys-b', 'system', 'Organization/hosp-b');
    tokens.drC = await h.enrol('dr-c', 'clinician', 'Practitioner/dr-c', 'Organization/hosp-c');
    tokens.patient1 = await h.enrol('patient-1', 'patient', 'Patient/p1');
    tokens.patient2 = await h.enrol('patient-2', 'patient', 'Patient/p2');

    await put('sysA', { resourceType: 'Patient', id: 'p1', gender: 'female' });
    await put('sysA', { resourceType: 'Patient', id: 'p2', gender: 'male' });
    await put('sysA', observation('a1', 'Patient/p1', 1));
    await put('sysA', observation('a1', 'Patient/p1', 2));
    for (let v = 1; v <= 3; v++) await put('sysA', observation('a2', 'Patient/p2', v));
    await put('sysB', observation('b1', 'Patient/p1', 1));
    await put('sysB', observation('b1', 'Patient/p1', 2));
    const consent = await h.request(
      tokens.patient1,
      'POST',
      '/Consent',
      privacyConsent('Patient/p1', {
        type: 'permit',
        actor: [actor('Organization/hosp-b')],
        class: [
          { system: 'http://hl7.org/fhir/resource-types', code: 'Patient' },
          { system: 'http://hl7.org/fhir/resource-types', code: 'Observation' },
        ],
      }),
    );
    expect(consent.status, consent.text).toBe(201);
    since = (await put('sysA', observation('a1', 'Patient/p1', 3))).meta.lastUpdated;
    await put('sysA', observation('a2', 'Patient/p2', 4));
    await put('sysB', observation('b1', 'Patient/p1', 3));
  });
  afterAll(async () => {
    await h?.stop();
  });

  // hosp-b sees a1 (p1 granted it Observation) and its own b1, three versions each; a2 (p2's, 4 versions) is hidden.
  it('type level: total and _count=0 count visible versions only', async () => {
    for (const url of ['/Observation/_history', '/Observation/_history?_count=0']) {
      expect((await get('sysB', url)).body.total, `sysB ${url}`).toBe(6);
      expect((await get('drC', url)).body.total, `drC ${url}`).toBe(0);
      expect((await get('patient2', url)).body.total, `patient2 ${url}`).toBe(4);
    }
    expect((await get('drC', '/Observation/_history')).body.entry).toEqual([]);
  });

  it('system level: total and _count=0 count visible versions only', async () => {
    // Patient/p1 (granted) and the six Observation versions; Consent and AuditEvents are not granted to hosp-b.
    for (const url of ['/_history', '/_history?_count=0'])
      expect((await get('sysB', url)).body.total, `sysB ${url}`).toBe(7);
    const everything = await allPages('sysB', '/_history?_count=1000');
    expect(everything.entries).toHaveLength(7);
  });

  it('_since and _at windows count visible versions only', async () => {
    const url = `/Observation/_history?_since=${encodeURIComponent(since)}`;
    const sysB = await get('sysB', url);
    expect(sysB.body.total).toBe(2);
    expect(sysB.body.entry.map((e: { fullUrl: string }) => e.fullUrl.split('/').pop()).sort()).toEqual(
      ['a1', ids.b1].sort(),
    );
    expect((await get('drC', url)).body.total).toBe(0);
    expect((await get('sysB', `/_history?_count=0&_since=${encodeURIComponent(since)}`)).body.total).toBe(2);
    // _at: the versions current at that instant (a1 v3, a2 v3, b1 v2), counted per caller.
    const at = `/Observation/_history?_at=${encodeURIComponent(since)}`;
    expect((await get('sysB', at)).body.total).toBe(2);
    expect((await get('patient2', at)).body.total).toBe(1);
    expect((await get('drC', at)).body.total).toBe(0);
  });

  it('pages are full pages of visible versions, with the same total on each', async () => {
    const pages = await allPages('sysB', '/Observation/_history?_count=2');
    expect(pages.sizes).toEqual([2, 2, 2]);
    expect(pages.totals).toEqual([6, 6, 6]);
    expect(new Set(pages.entries).size).toBe(6);
    expect(pages.entries.some((e) => e.startsWith('Observation/a2'))).toBe(false);
    const patient2 = await allPages('patient2', '/Observation/_history?_count=3');
    expect(patient2.sizes).toEqual([3, 1]);
    expect(patient2.totals).toEqual([4, 4]);
    const drC = await allPages('drC', '/_history?_count=1');
    expect(drC.sizes).toEqual([0]);
  });

  it('search paging links and totals count visible matches only', async () => {
    // hosp-b sees a1 and b1 of the three Observations (a2 hidden): two pages of one, total 2.
    const pages = await allPages('sysB', '/Observation?_count=1&_total=accurate');
    expect(pages.sizes).toEqual([1, 1]);
    expect(pages.totals).toEqual([2, 2]);
    expect((await get('sysB', '/Observation?_summary=count')).body.total).toBe(2);
    expect((await get('drC', '/Observation?_summary=count')).body.total).toBe(0);
    const past = await get('sysB', '/Observation?_count=1&_offset=2&_total=accurate');
    expect(past.body.entry ?? []).toEqual([]);
    expect(past.body.total).toBe(2);
  });

  it('a cursor is opaque and only its caller can use it: replayed by another caller it reveals nothing', async () => {
    const first = await get('sysB', '/Observation/_history?_count=1');
    const next = (first.body.link as { relation: string; url: string }[]).find((l) => l.relation === 'next')!;
    const url = next.url.split('/fhir')[1]!;
    const cursor = new URL(next.url).searchParams.get('_cursor')!;
    // Nothing readable inside: not the store's positions or totals.
    expect(Buffer.from(cursor, 'base64url').toString('latin1')).not.toMatch(/^[\d.]+$/);

    const own = await get('sysB', url);
    expect(own.status).toBe(200);
    expect(own.body.entry).toHaveLength(1);
    const invalid = await get('sysB', '/Observation/_history?_cursor=garbage');
    expect(invalid.status).toBe(400);
    for (const other of ['drC', 'patient2', 'sysA']) {
      const replay = await get(other, url);
      expect(replay.status, `${other}: ${replay.text}`).toBe(400);
      // The same answer as any invalid cursor: no total, no entries, the same text.
      expect(replay.text).toBe(invalid.text);
    }
    // Nor does it open on another history of the same caller.
    expect((await get('sysB', `/_history?_cursor=${cursor}`)).status).toBe(400);
    // Altered: refused.
    const altered = `${cursor.slice(0, -2)}${cursor.endsWith('AA') ? 'BB' : 'AA'}`;
    expect((await get('sysB', `/Observation/_history?_count=1&_cursor=${altered}`)).status).toBe(400);
  });
});
