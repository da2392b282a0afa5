/**
 * Conditional delete of several matches (http://hl7.org/fhir/R4/http.html#cdelete): off by default (412), on with
 * --delete-multiple for admins only, at most --delete-multiple-max (more: 412, nothing deleted); the
 * CapabilityStatement says `single` or `multiple`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { bootApp, send, type BootedApp } from '../support/app-harness.js';
import { startHarness, type Harness } from '../access/app-harness.js';

const SYSTEM = 'urn:test:delete-multiple';
const organisation = (value: string) => ({
  resourceType: 'Organization',
  identifier: [{ system: SYSTEM, value }],
});
const code = (body: string) => JSON.parse(body).issue?.[0]?.details?.coding?.[0]?.code;

describe('DELETE [type]?criteria with several matches (development mode: every caller is an admin)', () => {
  let booted: BootedApp | undefined;
  afterEach(async () => {
    await booted?.stop();
    booted = undefined;
  });
  const start = async (flags: Record<string, unknown>) => {
    booted = await bootApp({
      auth: 'dev-open',
      logLevel: 'warn',
      anchoring: 'off',
      validation: 'schema',
      ...flags,
    });
    return booted.app;
  };
  const matching = async (value: string) =>
    JSON.parse(
      (await send(booted!.app, { method: 'GET', url: `/fhir/Organization?identifier=${SYSTEM}|${value}` }))
        .body,
    ).total as number;
  const create = async (value: string, n: number) => {
    for (let i = 0; i < n; i++)
      await send(booted!.app, { method: 'POST', url: '/fhir/Organization', body: organisation(value) }, 201);
  };
  const conditionalDeleteOf = async () =>
    JSON.parse(
      (await send(booted!.app, { method: 'GET', url: '/fhir/metadata' })).body,
    ).rest[0].resource.find((r: { type: string }) => r.type === 'Organization').conditionalDelete;

  it('is refused by default (412, nothing deleted); the CapabilityStatement says single', async () => {
    const app = await start({});
    await create('a', 2);
    const res = await send(app, { method: 'DELETE', url: `/fhir/Organization?identifier=${SYSTEM}|a` });
    expect(res.statusCode).toBe(412);
    expect(code(res.body)).toBe('conditional-multiple-matches');
    expect(await matching('a')).toBe(2);
    expect(await conditionalDeleteOf()).toBe('single');
  });

  it('with --delete-multiple deletes every match up to the cap, and none above it', async () => {
    const app = await start({ deleteMultiple: 'on', deleteMultipleMax: 3 });
    expect(await conditionalDeleteOf()).toBe('multiple');
    await create('b', 3);
    const deleted = await send(app, { method: 'DELETE', url: `/fhir/Organization?identifier=${SYSTEM}|b` });
    expect(deleted.statusCode, deleted.body).toBe(200);
    expect(deleted.body).toContain('3 Organization resources deleted');
    expect(await matching('b')).toBe(0);

    await create('c', 4);
    const tooMany = await send(app, { method: 'DELETE', url: `/fhir/Organization?identifier=${SYSTEM}|c` });
    expect(tooMany.statusCode).toBe(412);
    expect(code(tooMany.body)).toBe('conditional-multiple-matches');
    expect(tooMany.body).toContain('more than 3');
    expect(await matching('c')).toBe(4);

    await create('d', 2);
    const minimal = await send(app, {
      method: 'DELETE',
      url: `/fhir/Organization?identifier=${SYSTEM}|d`,
      headers: { prefer: 'return=minimal' },
    });
    expect(minimal.statusCode).toBe(204);
    expect(await matching('d')).toBe(0);
  });
});

describe('DELETE [type]?criteria with several matches, SMART auth: admins only', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.stop();
    h = undefined;
  });

  it('a system gets 412 even with --delete-multiple on; an admin deletes them all', async () => {
    h = await startHarness({ flags: { deleteMultiple: 'on', anchoring: 'off' } });
    const sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    const admin = await h.enrol('admin-1', 'admin');
    for (let i = 0; i < 2; i++)
      expect((await h.request(sys, 'POST', '/Organization', organisation('e'))).status).toBe(201);
    const url = `/Organization?identifier=${SYSTEM}|e`;
    const refused = await h.request(sys, 'DELETE', url);
    expect(refused.status, refused.text).toBe(412);
    expect((await h.request(sys, 'GET', url)).body.total).toBe(2);
    const deleted = await h.request(admin, 'DELETE', url);
    expect(deleted.status, deleted.text).toBe(200);
    expect((await h.request(sys, 'GET', url)).body.total).toBe(0);
  });
});
