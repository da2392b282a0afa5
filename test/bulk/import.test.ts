/**
 * $import (the ping-and-pull proposal, docs/bulk.md) in development mode: NDJSON sources from the import root and
 * from an allowed http origin, imported by the import engine; the status gives counts by type and an error file
 * naming the input and line of each rejected resource (its neighbours stored); sources outside the root or of
 * another origin are refused at kick-off (400), a redirect is not followed; and an export afterwards returns what
 * was imported, as stored.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { lookup } from 'node:dns/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, send, startTestApp, type TestApp } from '../http/helpers.js';

const DATA = join(import.meta.dirname, '..', '..', '..', 'shared', 'data', 'bulk-ndjson-10-patients');
const ASYNC = {
  prefer: 'respond-async',
  accept: 'application/fhir+json',
  'content-type': 'application/fhir+json',
};
let app: TestApp;
let root: string;
let server: Server;
let origin: string;

const BAD = [
  '{"resourceType":"Practitioner","id":"local-1","active":true}',
  '{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/not-there"}}',
  '{"resourceType":"Practitioner","id":"local-2","active":true}',
].join('\n');

function importBody(...urls: string[]) {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'inputFormat', valueCode: 'application/fhir+ndjson' },
      { name: 'inputSource', valueUri: 'https://ehr.example.org' },
      ...urls.map((url) => ({ name: 'input', part: [{ name: 'url', valueUrl: url }] })),
    ],
  };
}

async function runImport(...urls: string[]): Promise<any> {
  const kick = await send(
    app,
    { method: 'POST', url: '/fhir/$import', headers: ASYNC, body: importBody(...urls) },
    202,
  );
  const status = new URL(kick.headers['content-location'] as string).pathname;
  expect(status).toMatch(/^\/fhir\/bulk\/import\//);
  await app.bulk!.imports.settled();
  return json((await send(app, { url: status }, 200)).body);
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'hie-import-root-'));
  copyFileSync(join(DATA, 'Patient.000.ndjson'), join(root, 'patients.ndjson'));
  writeFileSync(join(root, 'bad.ndjson'), BAD);
  const practitioners = readFileSync(join(DATA, 'Practitioner.000.ndjson'));
  server = createServer((request, response) => {
    if (request.url === '/practitioners.ndjson') response.writeHead(200).end(practitioners);
    else response.writeHead(302, { location: '/practitioners.ndjson' }).end();
  });
  // Listening where `localhost` resolves here (127.0.0.1 or ::1), so a fetch by that name reaches it.
  const local = await lookup('localhost');
  await new Promise<void>((resolve) => server.listen(0, local.address, resolve));
  const host = local.family === 6 ? `[${local.address}]` : local.address;
  origin = `http://${host}:${(server.address() as { port: number }).port}`;
  const port = (server.address() as { port: number }).port;
  app = await startTestApp({}, { importRoot: root, importAllow: `${origin},http://localhost:${port}` });
});
afterAll(async () => {
  await app?.stop();
  server?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('$import', () => {
  it('imports files of the import root and of an allowed origin; a bad resource is rejected alone', async () => {
    const manifest = await runImport(
      `file://${root}/patients.ndjson`,
      `${origin}/practitioners.ndjson`,
      `file://${root}/bad.ndjson`,
    );
    const counts = Object.fromEntries(manifest.output.map((o: any) => [o.type, o.count]));
    const patients = readFileSync(join(DATA, 'Patient.000.ndjson'), 'utf8').trim().split('\n').length;
    const practitioners = readFileSync(join(DATA, 'Practitioner.000.ndjson'), 'utf8')
      .trim()
      .split('\n').length;
    expect(counts).toEqual({ Patient: patients, Practitioner: practitioners + 2 });
    expect(manifest.error).toHaveLength(1);
    expect(manifest.error[0].count).toBe(1);
    const errors = (await send(app, { url: new URL(manifest.error[0].url).pathname }, 200)).body
      .trim()
      .split('\n');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain(`file://${root}/bad.ndjson`);
    expect(errors[0]).toContain(`${root}/bad.ndjson:2:`);
    await send(app, { url: '/fhir/Practitioner/local-2' }, 200);

    // What was imported is exported as stored.
    const kick = await send(app, { url: '/fhir/$export?_type=Patient', headers: ASYNC }, 202);
    await app.bulk!.exports.settled();
    const exported = json(
      (await send(app, { url: new URL(kick.headers['content-location'] as string).pathname }, 200)).body,
    );
    const lines = (await send(app, { url: new URL(exported.output[0].url).pathname }, 200)).body
      .trim()
      .split('\n');
    expect(lines).toHaveLength(patients);
    for (const line of lines) {
      const { id } = JSON.parse(line);
      expect(line).toBe((await send(app, { url: `/fhir/Patient/${id}` }, 200)).body);
    }
  });

  it('refuses sources outside the root or of another origin (400); a redirect is not followed', async () => {
    for (const url of [
      'file:///etc/passwd',
      `file://${root}/../x.ndjson`,
      'https://elsewhere.example/x.ndjson',
      'relative.ndjson',
    ]) {
      const res = await send(app, {
        method: 'POST',
        url: '/fhir/$import',
        headers: ASYNC,
        body: importBody(url),
      });
      expect(res.statusCode, url).toBe(400);
      expect(json(res.body).issue[0].expression).toEqual(['input.url']);
    }
    // A host name: resolved once, the connection made to that address.
    const byName = await runImport(`http://localhost:${new URL(origin).port}/practitioners.ndjson`);
    expect(byName.error).toEqual([]);
    expect(byName.output.map((o: any) => o.type)).toEqual(['Practitioner']);
    const manifest = await runImport(`${origin}/moved.ndjson`);
    expect(manifest.output).toEqual([]);
    const errors = (await send(app, { url: new URL(manifest.error[0].url).pathname }, 200)).body;
    expect(errors).toContain('redirect');
  });

  it('needs Prefer: respond-async and inputFormat', async () => {
    const body = importBody(`file://${root}/patients.ndjson`);
    const noAsync = await send(app, {
      method: 'POST',
      url: '/fhir/$import',
      headers: { 'content-type': 'application/fhir+json' },
      body,
    });
    expect(json(noAsync.body).issue[0].details.coding[0].code).toBe('respond-async-required');
    const noFormat = { ...body, parameter: body.parameter.slice(1) };
    const res = await send(
      app,
      { method: 'POST', url: '/fhir/$import', headers: ASYNC, body: noFormat },
      400,
    );
    expect(json(res.body).issue[0].expression).toEqual(['inputFormat']);
  });
});
