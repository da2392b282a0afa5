/**
 * Every input file of the HL7 validator test cases (../shared/data/validator-r4/, valid and invalid, JSON and
 * XML, including malformed JSON) is sent as-is: PUT under its own id when it has one, else POST. None may give a
 * 5xx; every refusal is an OperationOutcome; the store holds exactly what was accepted.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, startTestApp, type TestApp } from './helpers.js';

const CASES_DIR = join(process.cwd(), '..', 'shared', 'data', 'validator-r4');

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp({}, { logLevel: 'warn' });
});
afterAll(async () => {
  await app?.stop();
});

function inputFiles(): string[] {
  return readdirSync(CASES_DIR)
    .filter((f) => f !== 'manifest.json' && statSync(join(CASES_DIR, f)).isFile())
    .sort();
}

/** Where to send a file that may not even be JSON: read its type and id with a regex, not a parser. */
function target(text: string): { method: 'PUT' | 'POST'; url: string } {
  const type =
    /"resourceType"\s*:\s*"([^"]*)"/.exec(text)?.[1] ?? /<([A-Z][A-Za-z]+)[\s>]/.exec(text)?.[1] ?? 'Basic';
  const id = /^\s*\{\s*"resourceType"\s*:\s*"[^"]*"\s*,\s*"id"\s*:\s*"([^"]*)"/.exec(text)?.[1];
  return id !== undefined
    ? { method: 'PUT', url: `/fhir/${encodeURIComponent(type)}/${encodeURIComponent(id)}` }
    : { method: 'POST', url: `/fhir/${encodeURIComponent(type)}` };
}

describe('HL7 validator test inputs over HTTP', () => {
  it('never answers 5xx, refuses with OperationOutcomes, and stores exactly what it accepted', async () => {
    const files = inputFiles();
    expect(files.length).toBeGreaterThan(80);
    let accepted = 0;
    let refused = 0;
    // Versions stored: a PUT of content identical to the current version is accepted but stores nothing (its
    // Location names the version already there).
    const versions = new Set<string>();
    for (const file of files) {
      const text = readFileSync(join(CASES_DIR, file), 'utf8');
      const { method, url } = target(text);
      const contentType = file.endsWith('.xml') ? 'application/fhir+xml' : 'application/fhir+json';
      const res = await app.fastify.inject({
        method,
        url,
        headers: { 'content-type': contentType },
        payload: text,
      });
      expect(res.statusCode, `${file}: ${res.body.slice(0, 200)}`).toBeLessThan(500);
      if (res.statusCode < 300) {
        accepted++;
        const location = String(res.headers.location).replace(/^https?:\/\/[^/]+/, '');
        versions.add(location);
        const stored = await app.fastify.inject({ url: location });
        expect(stored.statusCode, file).toBe(200);
      } else {
        refused++;
        const outcome = json(res.body);
        expect(outcome.resourceType, file).toBe('OperationOutcome');
        expect(outcome.issue.length, file).toBeGreaterThan(0);
        // XML is served (docs/architecture.md): an XML input is judged as its JSON twin, never refused for its format.
        if (file.endsWith('.xml')) expect([400, 412, 422], file).toContain(res.statusCode);
        if (
          file.startsWith('bad-json') ||
          file.startsWith('json-comma-bad') ||
          file.startsWith('json-no-quotes')
        ) {
          expect(res.statusCode, file).toBe(400);
        }
      }
    }
    expect(accepted).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
    const history = json((await app.fastify.inject({ url: '/fhir/_history?_count=1' })).body);
    expect(history.total).toBe(versions.size);
  });
});
