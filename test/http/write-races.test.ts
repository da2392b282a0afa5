/**
 * A PUT is stored only on the version its decision was made on: another write landing between the read and the
 * store makes it a 409 (no If-Match) rather than overwriting a resource created meanwhile or storing a "no-op"
 * over a changed one; with If-Match it is a 412 that names no version (docs/access.md).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';
import { expectErrorCode } from '../support/error-codes.js';

/** Ids whose next read lets another writer in first (the interleaving a busy server can produce). */
const raceOnRead = new Map<string, () => Promise<unknown>>();
let app: TestApp;

beforeAll(async () => {
  const store = new SqliteResourceStore({ file: join(mkdtempSync(join(tmpdir(), 'hie-race-')), 'r.sqlite') });
  const read = store.read.bind(store);
  store.read = async (type, id) => {
    const current = await read(type, id);
    const race = raceOnRead.get(`${type}/${id}`);
    if (race) {
      raceOnRead.delete(`${type}/${id}`);
      await race();
    }
    return current;
  };
  app = await startTestApp({ store: store as ResourceStore });
});
afterAll(async () => {
  await app?.stop();
});

const put = (id: string, gender: string, headers: Record<string, string> = {}) =>
  app.fastify.inject({
    method: 'PUT',
    url: `/fhir/Patient/${id}`,
    headers: { ...FHIR_JSON, ...headers },
    payload: JSON.stringify({ resourceType: 'Patient', id, gender }),
  });
const otherWriter = (id: string, gender: string) => async () =>
  app.store.write({
    resourceType: 'Patient',
    id,
    method: 'PUT',
    resource: { resourceType: 'Patient', id, gender },
  });

describe('a PUT racing another write', () => {
  it('does not overwrite a resource created after it found the id unused (409)', async () => {
    raceOnRead.set('Patient/race-1', otherWriter('race-1', 'female'));
    const res = await put('race-1', 'male');
    expectErrorCode(res, 'concurrent-update');
    const current = json((await app.fastify.inject({ url: '/fhir/Patient/race-1' })).body);
    expect(current.gender).toBe('female');
    expect(current.meta.versionId).toBe('1');
  });

  it('stores no "no-op" over a version that changed meanwhile: 409, or 412 naming no version with If-Match', async () => {
    expect((await put('race-2', 'male')).statusCode).toBe(201);
    raceOnRead.set('Patient/race-2', otherWriter('race-2', 'female'));
    const res = await put('race-2', 'male');
    expect(res.statusCode, res.body).toBe(409);
    expect(json((await app.fastify.inject({ url: '/fhir/Patient/race-2' })).body).gender).toBe('female');

    raceOnRead.set('Patient/race-2', otherWriter('race-2', 'other'));
    const withIfMatch = await put('race-2', 'female', { 'if-match': 'W/"2"' });
    expectErrorCode(withIfMatch, 'version-conflict');
    const current = json((await app.fastify.inject({ url: '/fhir/Patient/race-2' })).body);
    expect(current.gender).toBe('other');
    expect(current.meta.versionId).toBe('3');
  });
});
