/**
 * The ResourceStore contract: every adapter (SQLite, PostgreSQL ...) runs this suite unchanged.
 * `makeStore` returns a fresh, empty, initialised store; the suite closes it after each test.
 *
 * Capabilities: `indexEntries` and `eraseContent` are optional in the port's types but required here (every
 * adapter has them). `search` is optional and not part of this suite: an adapter that searches has its own suite
 * (test/search/store-search.test.ts, on SQLite and PostgreSQL); the in-memory adapter does not search.
 */
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FhirError, type ErrorCode } from '../../src/fhir/outcome.js';
import type {
  IndexEntry,
  PendingAnchor,
  ResourceStore,
  StoredVersion,
  VersionKey,
  WriteRequest,
} from '../../src/fhir/store/resource-store.js';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';

const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

function patient(id: string, extra: Record<string, unknown> = {}): WriteRequest {
  return { resourceType: 'Patient', id, method: 'PUT', resource: { resourceType: 'Patient', ...extra } };
}

function removal(resourceType: string, id: string, ifMatch?: number): WriteRequest {
  const request: WriteRequest = { resourceType, id, method: 'DELETE' };
  if (ifMatch !== undefined) request.ifMatch = ifMatch;
  return request;
}

/** A real (if simplified) anchor: a salted hash of the exact stored text. */
function anchorOf(version: StoredVersion): PendingAnchor {
  const salt = createHash('sha256')
    .update(`salt:${version.resourceType}/${version.id}/${version.versionId}`)
    .digest('hex');
  return {
    resourceType: version.resourceType,
    id: version.id,
    versionId: version.versionId,
    salt,
    leafHash: createHash('sha256')
      .update(salt)
      .update(version.json ?? '')
      .digest('hex'),
    ledgerKey: createHash('sha256')
      .update(`${version.resourceType}/${version.id}/_history/${version.versionId}`)
      .digest('hex'),
  };
}

function key(v: VersionKey): string {
  return `${v.resourceType}/${v.id}/_history/${v.versionId}`;
}

/** The refusal a promise rejects with: a FhirError of this catalogue code (docs/errors.md), or of this status. */
async function expectFhirError(promise: Promise<unknown>, expected: number | ErrorCode): Promise<FhirError> {
  const error = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(error, `expected a FhirError ${expected}`).toBeInstanceOf(FhirError);
  if (typeof expected === 'number') expect((error as FhirError).status).toBe(expected);
  else expect((error as FhirError).code).toBe(expected);
  return error as FhirError;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Every page of a history query, writing `between(page)` after each page (new versions arriving meanwhile). */
async function allPages(
  store: ResourceStore,
  query: Omit<Parameters<ResourceStore['history']>[0], 'cursor'>,
  between: (page: number) => Promise<void> = async () => {},
): Promise<{ versions: StoredVersion[]; totals: number[] }> {
  const versions: StoredVersion[] = [];
  const totals: number[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const result = await store.history(cursor === undefined ? query : { ...query, cursor });
    versions.push(...result.versions);
    totals.push(result.total);
    if (result.versions.length > query.count) throw new Error('page larger than count');
    if (result.next === undefined) return { versions, totals };
    cursor = result.next;
    await between(page);
  }
  throw new Error('history paging does not end');
}

export function describeResourceStoreContract(name: string, makeStore: () => Promise<ResourceStore>): void {
  describe(`ResourceStore contract: ${name}`, () => {
    let store: ResourceStore;

    beforeEach(async () => {
      store = await makeStore();
    });

    afterEach(async () => {
      await store.close();
    });

    describe('create, read, vread', () => {
      it('stores a first version with id, meta.versionId and meta.lastUpdated set on its own copy', async () => {
        const resource: FhirResource = {
          resourceType: 'Patient',
          active: true,
          meta: { profile: ['http://example.org/p'], versionId: '99', lastUpdated: '2000-01-01T00:00:00Z' },
          name: [{ family: 'Doe' }],
        };
        const before = structuredClone(resource);
        const stored = await store.write({
          resourceType: 'Patient',
          id: 'p1',
          method: 'POST',
          resource,
          custodian: 'Organization/hospital-a',
          patients: ['Patient/p1'],
        });

        expect(resource).toEqual(before);
        expect(stored).toMatchObject({
          resourceType: 'Patient',
          id: 'p1',
          versionId: 1,
          deleted: false,
          method: 'POST',
          custodian: 'Organization/hospital-a',
          patients: ['Patient/p1'],
        });
        expect(stored.lastUpdated).toMatch(INSTANT);
        const body = JSON.parse(stored.json!) as FhirResource;
        expect(Object.keys(body)).toEqual(['resourceType', 'id', 'meta', 'active', 'name']);
        expect(Object.keys(body.meta!)).toEqual(['versionId', 'lastUpdated', 'profile']);
        expect(body).toEqual({
          resourceType: 'Patient',
          id: 'p1',
          meta: { versionId: '1', lastUpdated: stored.lastUpdated, profile: ['http://example.org/p'] },
          active: true,
          name: [{ family: 'Doe' }],
        });

        expect(await store.read('Patient', 'p1')).toEqual(stored);
        expect(await store.vread('Patient', 'p1', 1)).toEqual(stored);
      });

      it('answers undefined for what was never stored', async () => {
        await store.write(patient('p1'));
        expect(await store.read('Patient', 'nope')).toBeUndefined();
        expect(await store.read('Observation', 'p1')).toBeUndefined();
        expect(await store.vread('Patient', 'p1', 2)).toBeUndefined();
        expect(await store.vread('Patient', 'nope', 1)).toBeUndefined();
      });

      it('numbers versions 1..n and keeps every one', async () => {
        for (let i = 1; i <= 5; i++) {
          const v = await store.write({
            ...patient('p1', { gender: i % 2 ? 'female' : 'male' }),
            method: i === 1 ? 'POST' : 'PUT',
          });
          expect(v.versionId).toBe(i);
        }
        const current = await store.read('Patient', 'p1');
        expect(current?.versionId).toBe(5);
        for (let i = 1; i <= 5; i++) {
          const v = await store.vread('Patient', 'p1', i);
          expect(v?.versionId).toBe(i);
          expect(JSON.parse(v!.json!).meta.versionId).toBe(String(i));
          expect(JSON.parse(v!.json!).gender).toBe(i % 2 ? 'female' : 'male');
        }
      });

      it('vreads many versions in one call, each in the place of its key, as vread answers them', async () => {
        await store.write(patient('m1', { gender: 'female' }));
        await store.write({ ...patient('m1', { gender: 'male' }), method: 'PUT' });
        await store.write(patient('m2'));
        await store.write({ resourceType: 'Patient', id: 'm2', method: 'DELETE' });
        const keys = [
          { resourceType: 'Patient', id: 'm1', versionId: 2 },
          { resourceType: 'Patient', id: 'nope', versionId: 1 },
          { resourceType: 'Patient', id: 'm1', versionId: 1 },
          { resourceType: 'Patient', id: 'm2', versionId: 2 },
          { resourceType: 'Observation', id: 'm1', versionId: 1 },
          { resourceType: 'Patient', id: 'm1', versionId: 2 },
        ];
        const one = await Promise.all(keys.map((k) => store.vread(k.resourceType, k.id, k.versionId)));
        expect(one.map((v) => v?.versionId)).toEqual([2, undefined, 1, 2, undefined, 2]);
        expect(one[3]!.deleted).toBe(true);
        expect(await store.vreadMany(keys)).toEqual(one);
        expect(await store.vreadMany([])).toEqual([]);
        expect(await store.transaction((tx) => tx.vreadMany(keys))).toEqual(one);
      });

      it('vreadManyBytes answers as vreadMany, each stored text as its exact UTF-8 bytes', async () => {
        // Decimals as written and text outside ASCII: the bytes are the stored text's, not a re-serialisation.
        await store.write({
          resourceType: 'Observation',
          id: 'b1',
          method: 'PUT',
          resource: parseFhirJson(
            '{"resourceType":"Observation","status":"final","valueQuantity":{"value":1.50,"unit":"mg"},' +
              '"note":[{"text":"Zoë 😀 ≥ 2"}],"subject":{"reference":"Patient/pb"}}',
          ),
          patients: ['Patient/pb'],
          custodian: 'Organization/org-a',
        });
        await store.write({ resourceType: 'Observation', id: 'b1', method: 'DELETE' });
        await store.write(patient('b2', { gender: 'other' }));
        const keys = [
          { resourceType: 'Observation', id: 'b1', versionId: 1 },
          { resourceType: 'Patient', id: 'absent', versionId: 1 },
          { resourceType: 'Observation', id: 'b1', versionId: 2 },
          { resourceType: 'Patient', id: 'b2', versionId: 1 },
          { resourceType: 'Observation', id: 'b1', versionId: 1 },
        ];
        const texts = await store.vreadMany(keys);
        expect(texts[0]!.json).toContain('"value":1.50');
        const bytes = await store.vreadManyBytes!(keys);
        expect(bytes).toHaveLength(keys.length);
        for (let i = 0; i < keys.length; i++) {
          const text = texts[i];
          if (!text) {
            expect(bytes[i]).toBeUndefined();
            continue;
          }
          const { json, ...meta } = text;
          const { jsonBytes, ...bytesMeta } = bytes[i]!;
          expect(bytesMeta).toEqual(meta);
          if (json === undefined) expect(jsonBytes).toBeUndefined();
          else expect(Buffer.from(jsonBytes!).equals(Buffer.from(json, 'utf8'))).toBe(true);
        }
        expect(bytes[2]!.deleted).toBe(true);
        expect(await store.vreadManyBytes!([])).toEqual([]);
      });

      it('keeps resources of different types with the same id apart', async () => {
        await store.write(patient('x'));
        await store.write(patient('x'));
        const obs = await store.write({
          resourceType: 'Observation',
          id: 'x',
          method: 'PUT',
          resource: { resourceType: 'Observation', status: 'final', code: { text: 't' } },
        });
        expect(obs.versionId).toBe(1);
        expect((await store.read('Patient', 'x'))?.versionId).toBe(2);
      });

      it('refuses a body whose resourceType is not the target type', async () => {
        await expectFhirError(
          store.write({
            resourceType: 'Patient',
            id: 'p1',
            method: 'PUT',
            resource: { resourceType: 'Observation' },
          }),
          'resource-type-mismatch',
        );
        expect(await store.read('Patient', 'p1')).toBeUndefined();
      });
    });

    describe('deletes', () => {
      it('stores a delete as a new version without a body, and a later write revives the resource', async () => {
        await store.write(patient('p1'));
        await store.write(patient('p1'));
        const deletion = await store.write(removal('Patient', 'p1'));
        expect(deletion).toMatchObject({
          resourceType: 'Patient',
          id: 'p1',
          versionId: 3,
          deleted: true,
          method: 'DELETE',
        });
        expect(deletion.json).toBeUndefined();
        expect(await store.read('Patient', 'p1')).toEqual(deletion);
        expect(await store.vread('Patient', 'p1', 3)).toEqual(deletion);
        expect((await store.vread('Patient', 'p1', 2))?.deleted).toBe(false);

        const revived = await store.write(patient('p1', { active: true }));
        expect(revived.versionId).toBe(4);
        expect(revived.deleted).toBe(false);
        expect(JSON.parse(revived.json!).active).toBe(true);
      });

      it('answers 404 for deleting what never existed, and stores nothing', async () => {
        await expectFhirError(store.write(removal('Patient', 'ghost')), 'resource-not-found');
        expect(await store.read('Patient', 'ghost')).toBeUndefined();
        expect((await store.history({ count: 10 })).total).toBe(0);
      });

      it('returns the existing deletion when deleting a deleted resource, without a new version', async () => {
        await store.write(patient('p1'));
        const deletion = await store.write(removal('Patient', 'p1'));
        const again = await store.write(removal('Patient', 'p1'));
        expect(again).toEqual(deletion);
        expect((await store.history({ resourceType: 'Patient', id: 'p1', count: 10 })).total).toBe(2);
      });
    });

    describe('preconditions', () => {
      it('writes when If-Match names the current version', async () => {
        await store.write(patient('p1'));
        const v2 = await store.write({ ...patient('p1'), ifMatch: 1 });
        expect(v2.versionId).toBe(2);
        const v3 = await store.write(removal('Patient', 'p1', 2));
        expect(v3).toMatchObject({ versionId: 3, deleted: true });
      });

      it('refuses with 412 naming both versions when If-Match is not the current version', async () => {
        await store.write(patient('p1'));
        await store.write(patient('p1'));
        const error = await expectFhirError(
          store.write({ ...patient('p1', { active: false }), ifMatch: 1 }),
          'version-conflict',
        );
        expect(error.outcome.resourceType).toBe('OperationOutcome');
        const diagnostics = error.outcome.issue.map((i) => i.diagnostics).join(' ');
        expect(diagnostics).toMatch(/\b1\b/);
        expect(diagnostics).toMatch(/\b2\b/);
        expect((await store.read('Patient', 'p1'))?.versionId).toBe(2);
        await expectFhirError(store.write(removal('Patient', 'p1', 1)), 'version-conflict');
        expect((await store.read('Patient', 'p1'))?.deleted).toBe(false);
      });

      it('refuses with 412 when If-Match is given and the resource does not exist', async () => {
        await expectFhirError(store.write({ ...patient('p1'), ifMatch: 1 }), 'version-conflict');
        expect(await store.read('Patient', 'p1')).toBeUndefined();
      });

      it('stores nothing for a write marked unchanged at the current version, and refuses it (412) at any other', async () => {
        const anchored: number[] = [];
        const v1 = await store.write(patient('p1'));
        const same = await store.write({
          ...patient('p1'),
          ifMatch: 1,
          unchanged: true,
          anchor: (version) => {
            anchored.push(version.versionId);
            return undefined;
          },
        });
        expect(same).toEqual(v1);
        expect(anchored).toEqual([]);
        expect((await store.history({ resourceType: 'Patient', id: 'p1', count: 10 })).total).toBe(1);
        await store.write(patient('p1'));
        await expectFhirError(
          store.write({ ...patient('p1'), ifMatch: 1, unchanged: true }),
          'version-conflict',
        );
        await expectFhirError(
          store.write({ ...patient('p2'), ifMatch: 1, unchanged: true }),
          'version-conflict',
        );
        expect((await store.read('Patient', 'p1'))?.versionId).toBe(2);
      });

      it('refuses ifNoneExist with 412 while the resource exists, and allows it after a delete', async () => {
        await store.write({ ...patient('p1'), ifNoneExist: true });
        await expectFhirError(store.write({ ...patient('p1'), ifNoneExist: true }), 'resource-exists');
        await store.write(removal('Patient', 'p1'));
        const revived = await store.write({ ...patient('p1'), ifNoneExist: true });
        expect(revived.versionId).toBe(3);
      });

      it('lets exactly one of two concurrent writers with the same If-Match win', async () => {
        await store.write(patient('p1'));
        const results = await Promise.allSettled([
          store.write({ ...patient('p1', { gender: 'male' }), ifMatch: 1 }),
          store.write({ ...patient('p1', { gender: 'female' }), ifMatch: 1 }),
        ]);
        const won = results.filter((r) => r.status === 'fulfilled');
        const lost = results.filter((r) => r.status === 'rejected');
        expect(won).toHaveLength(1);
        expect(lost).toHaveLength(1);
        const reason = (lost[0] as PromiseRejectedResult).reason as FhirError;
        expect(reason).toBeInstanceOf(FhirError);
        expect(reason.status).toBe(412);
        const winner = (won[0] as PromiseFulfilledResult<StoredVersion>).value;
        expect(winner.versionId).toBe(2);
        expect(await store.read('Patient', 'p1')).toEqual(winner);
        expect(await store.vread('Patient', 'p1', 3)).toBeUndefined();
      });

      it('gives 20 concurrent writers of one resource the versions 2..21, no gap, no duplicate', async () => {
        await store.write(patient('p1'));
        const written = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.write(patient('p1', { name: [{ family: `w${i}` }] }))),
        );
        expect(written.map((v) => v.versionId).sort((a, b) => a - b)).toEqual(
          Array.from({ length: 20 }, (_, i) => i + 2),
        );
        const history = await allPages(store, { resourceType: 'Patient', id: 'p1', count: 7 });
        expect(history.versions.map((v) => v.versionId)).toEqual(
          Array.from({ length: 21 }, (_, i) => 21 - i),
        );
        // Each writer's body is the version it was told it got.
        for (const v of written) expect((await store.vread('Patient', 'p1', v.versionId))?.json).toBe(v.json);
      });
    });

    describe('lastUpdated', () => {
      it('is strictly increasing across the store, also for writes issued together', async () => {
        const sequential: StoredVersion[] = [];
        for (let i = 0; i < 30; i++) sequential.push(await store.write(patient(`s${i % 3}`)));
        const concurrent = await Promise.all(
          Array.from({ length: 30 }, (_, i) => store.write(patient(`c${i}`))),
        );
        const all = [...sequential, ...concurrent];
        for (const v of all) expect(v.lastUpdated).toMatch(INSTANT);
        const instants = all.map((v) => v.lastUpdated);
        expect(new Set(instants).size).toBe(all.length);
        for (let i = 1; i < sequential.length; i++) {
          expect(Date.parse(sequential[i]!.lastUpdated)).toBeGreaterThan(
            Date.parse(sequential[i - 1]!.lastUpdated),
          );
        }
        // Store order (history, oldest last) is lastUpdated order.
        const history = await allPages(store, { count: 25 });
        const times = history.versions.map((v) => Date.parse(v.lastUpdated));
        for (let i = 1; i < times.length; i++) expect(times[i]!).toBeLessThan(times[i - 1]!);
        // meta.lastUpdated in the body is the version's lastUpdated.
        for (const v of all) expect(JSON.parse(v.json!).meta.lastUpdated).toBe(v.lastUpdated);
      });
    });

    describe('exact text', () => {
      it('keeps decimals as written (1.50, 105.00, 1e2) and partial dates unchanged', async () => {
        const text =
          '{"resourceType":"Observation","status":"final","code":{"text":"weight"},' +
          '"effectiveDateTime":"2020-03","issued":"2020-03-04T10:00:00.1+02:00",' +
          '"valueQuantity":{"value":1.50,"unit":"kg"},' +
          '"component":[{"code":{"text":"a"},"valueQuantity":{"value":105.00}},' +
          '{"code":{"text":"b"},"valueQuantity":{"value":1e2}},{"code":{"text":"c"},"valueInteger":7},' +
          '{"code":{"text":"d"},"valueQuantity":{"value":0.1}},{"code":{"text":"e"},"valueQuantity":{"value":-0.000}}]}';
        const resource = parseFhirJson<FhirResource>(text);
        const stored = await store.write({ resourceType: 'Observation', id: 'o1', method: 'PUT', resource });
        const read = await store.read('Observation', 'o1');
        for (const json of [stored.json!, read!.json!]) {
          expect(json).toContain('"valueQuantity":{"value":1.50,"unit":"kg"}');
          expect(json).toContain('"value":105.00}');
          expect(json).toContain('"value":1e2}');
          expect(json).toContain('"valueInteger":7}');
          expect(json).toContain('"value":0.1}');
          expect(json).toContain('"value":-0.000}');
          expect(json).toContain('"effectiveDateTime":"2020-03"');
          expect(json).toContain('"issued":"2020-03-04T10:00:00.1+02:00"');
        }
        expect(read!.json).toBe(stored.json);

        const born = await store.write(patient('p1', { birthDate: '1970', deceasedDateTime: '2019-07' }));
        expect(born.json).toContain('"birthDate":"1970"');
        expect((await store.read('Patient', 'p1'))!.json).toContain('"deceasedDateTime":"2019-07"');
      });

      it('returns exactly the text it stored, also with non-ASCII text', async () => {
        const stored = await store.write(
          patient('p1', { name: [{ family: 'Åström-Müller 王 😀', given: ['"quoted"\\n'] }] }),
        );
        expect((await store.vread('Patient', 'p1', 1))!.json).toBe(stored.json);
        expect(JSON.parse(stored.json!).name[0].family).toBe('Åström-Müller 王 😀');
        // A lone surrogate and a NUL character travel as JSON escapes, unharmed.
        const odd = await store.write(patient('p2', { name: [{ text: 'a\ud800b\u0000c' }] }));
        expect(odd.json).toContain('"text":"a\\ud800b\\u0000c"');
        expect((await store.read('Patient', 'p2'))!.json).toBe(odd.json);
      });
    });

    describe('history', () => {
      /** Writes: A1 B1 A2 C1(Observation) B2(delete) A3; returns them in write order. */
      async function seed(): Promise<StoredVersion[]> {
        const out: StoredVersion[] = [];
        out.push(await store.write(patient('a')));
        out.push(await store.write(patient('b')));
        out.push(await store.write(patient('a')));
        out.push(
          await store.write({
            resourceType: 'Observation',
            id: 'c',
            method: 'POST',
            resource: { resourceType: 'Observation', status: 'final', code: { text: 't' } },
          }),
        );
        out.push(await store.write(removal('Patient', 'b')));
        out.push(await store.write(patient('a')));
        return out;
      }

      it('lists instance, type and system history newest first, deletions included', async () => {
        const w = await seed();
        const system = await store.history({ count: 50 });
        expect(system.versions.map(key)).toEqual([...w].reverse().map(key));
        expect(system.total).toBe(6);
        expect(system.next).toBeUndefined();
        expect(system.versions[1]).toEqual(w[4]);
        expect(system.versions[1]!.deleted).toBe(true);

        const type = await store.history({ resourceType: 'Patient', count: 50 });
        expect(type.versions.map(key)).toEqual([w[5], w[4], w[2], w[1], w[0]].map((v) => key(v!)));
        expect(type.total).toBe(5);

        const instance = await store.history({ resourceType: 'Patient', id: 'a', count: 50 });
        expect(instance.versions).toEqual([w[5], w[2], w[0]]);
        expect(instance.total).toBe(3);

        expect(await store.history({ resourceType: 'Patient', id: 'zzz', count: 10 })).toEqual({
          versions: [],
          total: 0,
        });
        expect((await store.history({ resourceType: 'Encounter', count: 10 })).total).toBe(0);
      });

      it('filters by since (lastUpdated >= since)', async () => {
        const w = await seed();
        const since = w[2]!.lastUpdated;
        const system = await store.history({ since, count: 50 });
        expect(system.versions.map(key)).toEqual([w[5], w[4], w[3], w[2]].map((v) => key(v!)));
        expect(system.total).toBe(4);
        const type = await store.history({ resourceType: 'Patient', since, count: 50 });
        expect(type.versions.map(key)).toEqual([w[5], w[4], w[2]].map((v) => key(v!)));
        const instance = await store.history({ resourceType: 'Patient', id: 'a', since, count: 50 });
        expect(instance.versions.map((v) => v.versionId)).toEqual([3, 2]);
        // Other spellings of an instant: an offset, and a date.
        const offset = new Date(Date.parse(since)).toISOString().replace('Z', '+00:00');
        expect((await store.history({ since: offset, count: 50 })).total).toBe(4);
        expect((await store.history({ since: '1970-01-01', count: 50 })).total).toBe(6);
        const future = new Date(Date.parse(w[5]!.lastUpdated) + 60_000).toISOString();
        expect(await store.history({ since: future, count: 50 })).toEqual({ versions: [], total: 0 });
      });

      it('filters by at: the version of each resource current at that instant', async () => {
        const w = await seed();
        const at = w[3]!.lastUpdated; // after A2, B1, C1; before B's deletion and A3
        const system = await store.history({ at, count: 50 });
        expect(system.versions.map(key)).toEqual([w[3], w[2], w[1]].map((v) => key(v!)));
        expect(system.total).toBe(3);
        const type = await store.history({ resourceType: 'Patient', at, count: 50 });
        expect(type.versions.map(key)).toEqual([w[2], w[1]].map((v) => key(v!)));
        const instance = await store.history({ resourceType: 'Patient', id: 'a', at, count: 50 });
        expect(instance.versions).toEqual([w[2]]);
        // After B's deletion, B's current version is the deletion.
        const later = await store.history({ resourceType: 'Patient', at: w[4]!.lastUpdated, count: 50 });
        expect(later.versions.map(key)).toEqual([w[4], w[2]].map((v) => key(v!)));
        // Before anything, nothing.
        const before = new Date(Date.parse(w[0]!.lastUpdated) - 1).toISOString();
        expect(await store.history({ at: before, count: 50 })).toEqual({ versions: [], total: 0 });
        // since and at together: current at `at`, and updated since `since`.
        const both = await store.history({ at, since: w[2]!.lastUpdated, count: 50 });
        expect(both.versions.map(key)).toEqual([w[3], w[2]].map((v) => key(v!)));
        // Paged.
        const paged = await allPages(store, { at, count: 1 });
        expect(paged.versions.map(key)).toEqual([w[3], w[2], w[1]].map((v) => key(v!)));
      });

      it('answers only the total for count 0, and 400 for a bad cursor or instant', async () => {
        await seed();
        expect(await store.history({ count: 0 })).toEqual({ versions: [], total: 6 });
        await expectFhirError(store.history({ count: 5, cursor: 'not-a-cursor!' }), 'page-cursor-invalid');
        await expectFhirError(store.history({ count: 5, since: 'yesterday' }), 'parameter-invalid');
      });

      it('counts, pages and returns only the versions `visible` admits, as if the others did not exist', async () => {
        const w = await seed();
        const visible = (version: StoredVersion) => version.id !== 'b';
        const expected = [w[5], w[3], w[2], w[0]].map((v) => key(v!));
        const system = await store.history({ count: 50, visible });
        expect(system.versions.map(key)).toEqual(expected);
        expect(system.total).toBe(4);
        const paged = await allPages(store, { count: 1, visible });
        expect(paged.versions.map(key)).toEqual(expected);
        expect(paged.totals).toEqual([4, 4, 4, 4]);
        const type = await store.history({ resourceType: 'Patient', count: 50, visible });
        expect(type.versions.map(key)).toEqual([w[5], w[2], w[0]].map((v) => key(v!)));
        expect(type.total).toBe(3);
        const at = await store.history({ at: w[4]!.lastUpdated, count: 50, visible });
        expect(at.versions.map(key)).toEqual([w[3], w[2]].map((v) => key(v!)));
        expect(at.total).toBe(2);
        expect(await store.history({ resourceType: 'Patient', id: 'b', count: 10, visible })).toEqual({
          versions: [],
          total: 0,
        });
      });

      for (const level of ['system', 'type', 'instance'] as const) {
        it(`pages ${level} history with count and cursor, no duplicate and no gap while new writes arrive`, async () => {
          for (let i = 0; i < 17; i++) {
            await store.write(
              i % 4 === 3 ? { ...patient('other') } : patient('a', { gender: i % 2 ? 'male' : 'female' }),
            );
            if (i % 5 === 0) {
              await store.write({
                resourceType: 'Observation',
                id: `o${i}`,
                method: 'POST',
                resource: { resourceType: 'Observation', status: 'final', code: { text: 't' } },
              });
            }
          }
          const query =
            level === 'system'
              ? { count: 4 }
              : level === 'type'
                ? { resourceType: 'Patient', count: 4 }
                : { resourceType: 'Patient', id: 'a', count: 4 };
          const snapshot = await store.history({ ...query, count: 1000 });
          let n = 0;
          const paged = await allPages(store, query, async () => {
            // New versions of listed resources and new resources arrive between pages.
            await store.write(patient('a'));
            await store.write(patient(`new${n++}`));
            await store.write(removal('Patient', 'other')).catch(() => undefined);
          });
          expect(paged.versions.map(key)).toEqual(snapshot.versions.map(key));
          expect(new Set(paged.versions.map(key)).size).toBe(paged.versions.length);
          expect(paged.totals.every((t) => t === snapshot.total)).toBe(true);
          expect(snapshot.total).toBe(snapshot.versions.length);
          expect(paged.totals.length).toBe(Math.ceil(snapshot.total / 4));
          // A fresh first page sees the new versions.
          expect((await store.history(query)).total).toBeGreaterThan(snapshot.total);
        });
      }
    });

    describe('transactions', () => {
      it('commits all writes of the work together and returns its result', async () => {
        const result = await store.transaction(async (tx) => {
          const a = await tx.write(patient('a'));
          const b = await tx.write(patient('b'));
          const a2 = await tx.write({ ...patient('a'), ifMatch: 1 });
          expect((await tx.read('Patient', 'a'))?.versionId).toBe(2);
          return [a, b, a2].map((v) => v.versionId);
        });
        expect(result).toEqual([1, 1, 2]);
        expect((await store.read('Patient', 'a'))?.versionId).toBe(2);
        expect((await store.read('Patient', 'b'))?.versionId).toBe(1);
        expect((await store.history({ count: 10 })).total).toBe(3);
      });

      it('rolls everything back when the work throws: versions, index rows and anchors', async () => {
        await store.write({
          ...patient('a'),
          index: [{ param: 'gender', type: 'token', value: 'female' }],
          anchor: anchorOf,
        });
        const boom = new Error('boom');
        await expect(
          store.transaction(async (tx) => {
            await tx.write({
              ...patient('a'),
              index: [{ param: 'gender', type: 'token', value: 'male' }],
              anchor: anchorOf,
            });
            await tx.write({ ...patient('b'), anchor: anchorOf });
            await tx.write(removal('Patient', 'a'));
            throw boom;
          }),
        ).rejects.toBe(boom);
        expect((await store.read('Patient', 'a'))?.versionId).toBe(1);
        expect(await store.read('Patient', 'b')).toBeUndefined();
        expect((await store.history({ count: 10 })).total).toBe(1);
        expect((await store.pendingAnchors(10)).map(key)).toEqual(['Patient/a/_history/1']);
        if (store.indexEntries) {
          expect(await store.indexEntries('Patient', 'a')).toEqual([
            { param: 'gender', type: 'token', value: 'female' },
          ]);
        }
        // The store is usable afterwards.
        expect((await store.write(patient('b'))).versionId).toBe(1);
      });

      it('rolls back a failed write inside the work on its own, if the work carries on', async () => {
        await store.write(patient('a'));
        await store.transaction(async (tx) => {
          await tx.write(patient('b'));
          await expectFhirError(tx.write({ ...patient('a'), ifMatch: 7 }), 'version-conflict');
          await expect(
            tx.write({
              ...patient('c'),
              anchor: () => {
                throw new Error('anchor failed');
              },
            }),
          ).rejects.toThrow('anchor failed');
        });
        expect((await store.read('Patient', 'a'))?.versionId).toBe(1);
        expect((await store.read('Patient', 'b'))?.versionId).toBe(1);
        expect(await store.read('Patient', 'c')).toBeUndefined();
      });

      it('runs a nested transaction that rolls back alone', async () => {
        await store.transaction(async (tx) => {
          await tx.write(patient('outer'));
          await expect(
            tx.transaction(async (inner) => {
              await inner.write(patient('inner'));
              throw new Error('inner failed');
            }),
          ).rejects.toThrow('inner failed');
          await tx.transaction(async (inner) => {
            await inner.write(patient('kept'));
          });
        });
        expect(await store.read('Patient', 'outer')).toBeDefined();
        expect(await store.read('Patient', 'inner')).toBeUndefined();
        expect(await store.read('Patient', 'kept')).toBeDefined();
      });

      it('keeps other callers out while open: they never see uncommitted data, and their writes wait', async () => {
        const opened = deferred();
        const release = deferred();
        const rolledBack = store.transaction(async (tx) => {
          await tx.write(patient('a'));
          opened.resolve();
          await release.promise;
          throw new Error('abort');
        });
        await opened.promise;
        const outsideRead = store.read('Patient', 'a');
        const outsideHistory = store.history({ count: 10 });
        const outsideWrite = store.write(patient('a', { active: true }));
        release.resolve();
        await expect(rolledBack).rejects.toThrow('abort');
        // They may run before the rollback or after the outside write committed (an adapter with MVCC reads
        // does not make them wait), but never see the transaction's version (the one without `active`).
        const read = await outsideRead;
        if (read) expect(JSON.parse(read.json!).active).toBe(true);
        const history = await outsideHistory;
        expect(history.total).toBe(history.versions.length);
        for (const v of history.versions) expect(JSON.parse(v.json!).active).toBe(true);
        expect((await outsideWrite).versionId).toBe(1);

        const opened2 = deferred();
        const release2 = deferred();
        const committed = store.transaction(async (tx) => {
          const v = await tx.write(patient('a'));
          opened2.resolve();
          await release2.promise;
          return v;
        });
        await opened2.promise;
        const concurrent = store.write(patient('a'));
        // Version 1 was current when this write was issued, but it runs after the transaction made version 2.
        const concurrentIfMatch = expectFhirError(
          store.write({ ...patient('a'), ifMatch: 1 }),
          'version-conflict',
        );
        release2.resolve();
        const inTx = await committed;
        expect(inTx.versionId).toBe(2);
        const after = await concurrent;
        expect(after.versionId).toBe(3);
        expect(Date.parse(after.lastUpdated)).toBeGreaterThan(Date.parse(inTx.lastUpdated));
        await concurrentIfMatch;
      });

      it('serialises concurrent transactions', async () => {
        await store.write(patient('counter', { multipleBirthInteger: 0 }));
        await Promise.all(
          Array.from({ length: 8 }, () =>
            store.transaction(async (tx) => {
              const current = await tx.read('Patient', 'counter');
              const value = JSON.parse(current!.json!).multipleBirthInteger as number;
              await new Promise((r) => setTimeout(r, 1));
              await tx.write({
                ...patient('counter', { multipleBirthInteger: value + 1 }),
                ifMatch: current!.versionId,
              });
            }),
          ),
        );
        const final = await store.read('Patient', 'counter');
        expect(final?.versionId).toBe(9);
        expect(JSON.parse(final!.json!).multipleBirthInteger).toBe(8);
      });
    });

    describe('search index rows', () => {
      const female: IndexEntry[] = [
        {
          param: 'gender',
          type: 'token',
          system: 'http://hl7.org/fhir/administrative-gender',
          value: 'female',
        },
        { param: 'birthdate', type: 'date', low: 0, high: 86_399_999 },
        { param: 'general-practitioner', type: 'reference', reference: 'Practitioner/x' },
        { param: 'family', type: 'string', value: 'doe', system: 'Doe' },
      ];

      it('replaceIndex replaces the rows of the current version only, with no new version ($reindex)', async () => {
        expect(store.replaceIndex, 'adapters implement replaceIndex()').toBeTypeOf('function');
        const entries = (id: string) => store.indexEntries!('Patient', id);
        const extra: IndexEntry[] = [...female, { param: 'custom-x', type: 'token', value: 'y' }];
        await store.write({ ...patient('a'), index: female });
        await store.write({ ...patient('a'), index: female });
        await store.write({ ...patient('b'), index: female });
        // An older version, an unknown id: nothing changes.
        expect(await store.replaceIndex!({ resourceType: 'Patient', id: 'a', versionId: 1 }, extra)).toBe(
          false,
        );
        expect(await store.replaceIndex!({ resourceType: 'Patient', id: 'zz', versionId: 1 }, extra)).toBe(
          false,
        );
        expect(await entries('a')).toEqual(female);
        expect(await store.replaceIndex!({ resourceType: 'Patient', id: 'a', versionId: 2 }, extra)).toBe(
          true,
        );
        expect(await entries('a')).toEqual(extra);
        expect(await entries('b')).toEqual(female);
        expect((await store.read('Patient', 'a'))?.versionId).toBe(2);
        expect((await store.history({ resourceType: 'Patient', id: 'a', count: 10 })).total).toBe(2);
        // A deleted resource keeps no rows.
        await store.write(removal('Patient', 'b'));
        expect(await store.replaceIndex!({ resourceType: 'Patient', id: 'b', versionId: 2 }, extra)).toBe(
          false,
        );
        expect(await entries('b')).toEqual([]);
        // Inside a transaction that rolls back: undone.
        await expect(
          store.transaction(async (tx) => {
            expect(await tx.replaceIndex!({ resourceType: 'Patient', id: 'a', versionId: 2 }, female)).toBe(
              true,
            );
            throw new Error('roll back');
          }),
        ).rejects.toThrow('roll back');
        expect(await entries('a')).toEqual(extra);
      });

      it('stores the rows of the current version, replaces them on update and removes them on delete', async () => {
        expect(store.indexEntries, 'adapters implement indexEntries()').toBeTypeOf('function');
        const entries = (type: string, id: string) => store.indexEntries!(type, id);
        await store.write({ ...patient('a'), index: female });
        await store.write({ ...patient('b'), index: [{ param: 'gender', type: 'token', value: 'male' }] });
        expect(await entries('Patient', 'a')).toEqual(female);

        const replaced: IndexEntry[] = [{ param: 'gender', type: 'token', value: 'other' }];
        await store.write({ ...patient('a'), index: replaced });
        expect(await entries('Patient', 'a')).toEqual(replaced);

        await store.write({ ...patient('a'), index: [] });
        expect(await entries('Patient', 'a')).toEqual([]);
        await store.write({ ...patient('a'), index: replaced });

        await expectFhirError(
          store.write({ ...patient('a'), index: female, ifMatch: 1 }),
          'version-conflict',
        );
        expect(await entries('Patient', 'a')).toEqual(replaced);

        await store.write(removal('Patient', 'a'));
        expect(await entries('Patient', 'a')).toEqual([]);
        expect(await entries('Patient', 'b')).toEqual([{ param: 'gender', type: 'token', value: 'male' }]);

        await store.write({ ...patient('a'), index: female });
        expect(await entries('Patient', 'a')).toEqual(female);
        expect(await entries('Patient', 'never')).toEqual([]);
      });
    });

    describe('anchor outbox', () => {
      it('queues the anchor with its version, computed from the exact stored text', async () => {
        const seen: StoredVersion[] = [];
        const stored = await store.write({
          ...patient('a'),
          anchor: (version) => {
            seen.push(version);
            return anchorOf(version);
          },
        });
        expect(seen).toHaveLength(1);
        expect(seen[0]).toMatchObject({ resourceType: 'Patient', id: 'a', versionId: 1, json: stored.json });
        expect(await store.pendingAnchors(10)).toEqual([anchorOf(stored)]);
        expect(await store.anchorState(stored)).toEqual({ ...anchorOf(stored), status: 'pending' });

        // A deletion can be anchored too (its version has no json).
        const deletion = await store.write({ ...removal('Patient', 'a'), anchor: anchorOf });
        expect((await store.anchorState(deletion))?.status).toBe('pending');
        // A version written without anchor has no anchor state.
        const plain = await store.write(patient('b'));
        expect(await store.anchorState(plain)).toBeUndefined();
        expect(await store.anchorState({ resourceType: 'Patient', id: 'zzz', versionId: 1 })).toBeUndefined();
      });

      it('stores neither version nor anchor when the anchor callback throws', async () => {
        await store.write({
          ...patient('a'),
          index: [{ param: 'gender', type: 'token', value: 'female' }],
          anchor: anchorOf,
        });
        const failing: WriteRequest['anchor'] = () => {
          throw new Error('no hash today');
        };
        await expect(
          store.write({
            ...patient('a'),
            index: [{ param: 'gender', type: 'token', value: 'male' }],
            anchor: failing,
          }),
        ).rejects.toThrow('no hash today');
        await expect(store.write({ ...patient('new'), anchor: failing })).rejects.toThrow('no hash today');
        expect((await store.read('Patient', 'a'))?.versionId).toBe(1);
        expect(await store.vread('Patient', 'a', 2)).toBeUndefined();
        expect(await store.read('Patient', 'new')).toBeUndefined();
        expect((await store.pendingAnchors(10)).map(key)).toEqual(['Patient/a/_history/1']);
        expect((await store.history({ count: 10 })).total).toBe(1);
        if (store.indexEntries) {
          expect(await store.indexEntries('Patient', 'a')).toEqual([
            { param: 'gender', type: 'token', value: 'female' },
          ]);
        }
        // The next successful write takes the next version number.
        expect((await store.write(patient('a'))).versionId).toBe(2);
      });

      it('lists pending anchors oldest first, up to the limit', async () => {
        const written: StoredVersion[] = [];
        for (let i = 0; i < 7; i++)
          written.push(await store.write({ ...patient(`p${i % 3}`), anchor: anchorOf }));
        expect((await store.pendingAnchors(100)).map(key)).toEqual(written.map(key));
        expect((await store.pendingAnchors(3)).map(key)).toEqual(written.slice(0, 3).map(key));
        expect(await store.pendingAnchors(0)).toEqual([]);
      });

      it('marks anchors anchored with their batch reference and leaf positions', async () => {
        const written: StoredVersion[] = [];
        for (let i = 0; i < 4; i++)
          written.push(await store.write({ ...patient(`p${i}`), anchor: anchorOf }));
        const batch = {
          transactionId: 'tx-1',
          blockNumber: 12,
          batchId: 'root-hex',
          leafCount: 3,
          root: 'root-hex',
        };
        await store.markAnchored([written[2]!, written[0]!, written[1]!], {
          ...batch,
          leafIndexes: [0, 1, 2],
        });

        expect((await store.pendingAnchors(10)).map(key)).toEqual([key(written[3]!)]);
        const { leafCount, ...reference } = batch;
        expect(await store.anchorState(written[0]!)).toEqual({
          ...anchorOf(written[0]!),
          status: 'anchored',
          anchor: { ...reference, leafCount, leafIndex: 1 },
        });
        expect(await store.anchorState(written[2]!)).toMatchObject({
          status: 'anchored',
          anchor: { leafIndex: 0 },
        });
        expect(await store.anchorState(written[3]!)).toMatchObject({ status: 'pending' });

        // Many at once: each key's state in the keys' order (a repeated key, an unknown one, one never anchored).
        const plain = await store.write(patient('plain'));
        const keys = [
          written[3]!,
          written[0]!,
          { resourceType: 'Patient', id: 'zzz', versionId: 1 },
          plain,
          written[2]!,
          written[0]!,
        ];
        const one = await Promise.all(keys.map((k) => store.anchorState(k)));
        expect(one[2]).toBeUndefined();
        expect(one[3]).toBeUndefined();
        expect(await store.anchorStates(keys)).toEqual(one);
        expect(await store.anchorStates([])).toEqual([]);
        expect(await store.transaction((tx) => tx.anchorStates(keys))).toEqual(one);
      });

      it('refuses to mark an anchor that was never queued, and marks none of the batch then', async () => {
        const a = await store.write({ ...patient('a'), anchor: anchorOf });
        const plain = await store.write(patient('b'));
        const batch = { transactionId: 'tx', blockNumber: 1, batchId: 'r', leafCount: 2, root: 'r' };
        await expect(store.markAnchored([a, plain], { ...batch, leafIndexes: [0, 1] })).rejects.toThrow();
        await expect(store.markAnchored([a], { ...batch, leafIndexes: [0, 1] })).rejects.toThrow();
        expect(await store.anchorState(a)).toMatchObject({ status: 'pending' });
      });
    });

    describe('allVersions', () => {
      it('yields every version in store order with its anchor state', async () => {
        const written: StoredVersion[] = [];
        written.push(await store.write({ ...patient('a'), anchor: anchorOf }));
        written.push(await store.write(patient('b')));
        written.push(await store.write({ ...removal('Patient', 'a'), anchor: anchorOf }));
        written.push(await store.write({ ...patient('a'), anchor: anchorOf }));
        await store.markAnchored([written[0]!], {
          transactionId: 't',
          blockNumber: 3,
          batchId: 'r',
          root: 'r',
          leafCount: 1,
          leafIndexes: [0],
        });
        const seen: { version: StoredVersion; anchor?: unknown }[] = [];
        for await (const item of store.allVersions()) seen.push(item);
        expect(seen.map((s) => s.version)).toEqual(written);
        expect(seen.map((s) => (s.anchor as { status?: string } | undefined)?.status)).toEqual([
          'anchored',
          undefined,
          'pending',
          'pending',
        ]);
        expect(seen[3]!.anchor).toEqual({ ...anchorOf(written[3]!), status: 'pending' });
      });

      it('streams more versions than fit one chunk, and stays fixed while new writes arrive', async () => {
        await store.transaction(async (tx) => {
          for (let i = 0; i < 1203; i++)
            await tx.write({ ...patient(`p${i % 400}`), anchor: i % 2 ? anchorOf : undefined });
        });
        let n = 0;
        let previous = '';
        const keys = new Set<string>();
        for await (const { version, anchor } of store.allVersions()) {
          if (n % 300 === 0) await store.write(patient('late'));
          expect(version.lastUpdated > previous).toBe(true);
          previous = version.lastUpdated;
          keys.add(key(version));
          expect(anchor === undefined).toBe(n % 2 === 0);
          n++;
        }
        expect(n).toBe(1203);
        expect(keys.size).toBe(1203);
        // 1,203 writes: on PostgreSQL under a loaded machine this took ~60 s, the default timeout; far from it now.
      }, 300_000);
    });

    describe('eraseContent', () => {
      it('removes the text, compartments and index rows of every version, keeping the rows as deletions', async () => {
        expect(store.eraseContent, 'adapters implement eraseContent()').toBeTypeOf('function');
        const index: IndexEntry[] = [{ param: 'gender', type: 'token', value: 'female' }];
        await store.write({ ...patient('a', { gender: 'female' }), patients: ['Patient/a'], index });
        await store.write({ ...patient('a', { gender: 'female' }), patients: ['Patient/a'], index });
        const b = await store.write({ ...patient('b'), patients: ['Patient/b'], index });

        expect(await store.eraseContent!('Patient', 'a')).toBe(2);
        for (const versionId of [1, 2]) {
          const erased = await store.vread('Patient', 'a', versionId);
          expect(erased).toMatchObject({ resourceType: 'Patient', id: 'a', versionId, deleted: true });
          expect(erased!.json).toBeUndefined();
          expect(erased!.patients).toBeUndefined();
        }
        expect((await store.read('Patient', 'a'))?.deleted).toBe(true);
        expect(await store.indexEntries!('Patient', 'a')).toEqual([]);
        expect((await store.history({ resourceType: 'Patient', id: 'a', count: 10 })).total).toBe(2);
        for await (const { version } of store.allVersions()) {
          if (version.id === 'a') expect(version.json).toBeUndefined();
        }
        // Others untouched; erasing again changes nothing; a later write revives the resource.
        expect(await store.read('Patient', 'b')).toEqual(b);
        expect(await store.indexEntries!('Patient', 'b')).toEqual(index);
        expect(await store.eraseContent!('Patient', 'a')).toBe(0);
        expect((await store.write(patient('a'))).versionId).toBe(3);
      });

      it('works inside a transaction, and rolls back with it', async () => {
        await store.write(patient('a'));
        await store.write(patient('b'));
        await expect(
          store.transaction(async (tx) => {
            expect(await tx.eraseContent!('Patient', 'a')).toBe(1);
            throw new Error('changed my mind');
          }),
        ).rejects.toThrow('changed my mind');
        expect((await store.read('Patient', 'a'))?.json).toBeDefined();
        await store.transaction(async (tx) => {
          expect(await tx.eraseContent!('Patient', 'b')).toBe(1);
        });
        expect((await store.read('Patient', 'b'))?.json).toBeUndefined();
      });
    });

    describe('eraseSalts', () => {
      it('erases the salts of every version of one resource and takes them out of the outbox', async () => {
        const a1 = await store.write({ ...patient('a'), anchor: anchorOf });
        const a2 = await store.write({ ...patient('a'), anchor: anchorOf });
        const a3 = await store.write(patient('a'));
        const b1 = await store.write({ ...patient('b'), anchor: anchorOf });
        await store.markAnchored([a1], {
          transactionId: 't',
          blockNumber: 1,
          batchId: 'r',
          root: 'r',
          leafCount: 1,
          leafIndexes: [0],
        });

        expect(await store.eraseSalts('Patient', 'a')).toBe(2);
        expect(await store.anchorState(a1)).toEqual({
          resourceType: 'Patient',
          id: 'a',
          versionId: 1,
          status: 'erased',
        });
        expect(await store.anchorState(a2)).toEqual({
          resourceType: 'Patient',
          id: 'a',
          versionId: 2,
          status: 'erased',
        });
        expect(await store.anchorState(a3)).toBeUndefined();
        expect(await store.anchorState(b1)).toEqual({ ...anchorOf(b1), status: 'pending' });
        expect((await store.pendingAnchors(10)).map(key)).toEqual([key(b1)]);
        expect(await store.eraseSalts('Patient', 'a')).toBe(0);
        expect(await store.eraseSalts('Patient', 'never')).toBe(0);
        // The versions themselves are still there.
        expect((await store.vread('Patient', 'a', 1))?.json).toBe(a1.json);
        // No salt is served anywhere any more.
        const salts: string[] = [];
        for await (const { anchor } of store.allVersions()) {
          if (anchor && 'salt' in anchor) salts.push(anchor.salt);
        }
        expect(salts).toEqual([anchorOf(b1).salt]);
      });
    });
  });
}
