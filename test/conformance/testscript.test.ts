/**
 * The TestScript runner (conformance/testscript/runner.ts, `npm run conformance:testscript`): this project's own
 * TestScripts (conformance/testscripts/, written from http.html and search.html) all pass against the app over real
 * HTTP; a script whose expectation is wrong fails and the CLI exits 1; the official R4 TestScript examples parse and
 * load (their fixtures are not shipped, so they are not run); every TestReport is a valid R4 TestReport.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTestScript, runTestScript, summaryTable } from '../../conformance/testscript/runner.js';
import { main, scriptFiles } from '../../conformance/testscript.js';
import { createFhirValidatorSync } from '../../src/fhir/validation/index.js';
import { startTestApp, type TestApp } from '../http/helpers.js';
import { suiteCacheDir } from '../support/cli-build.js';

const SCRIPTS = path.join(import.meta.dirname, '..', '..', 'conformance', 'testscripts');
const EXAMPLES = path.dirname(createRequire(import.meta.url).resolve('hl7.fhir.r4.examples/package.json'));

let app: TestApp;
let baseUrl: string;
let scratch: string;

beforeAll(async () => {
  app = await startTestApp(
    { validator: createFhirValidatorSync({ definitionsCacheDir: suiteCacheDir() }) },
    { logLevel: 'warn' },
  );
  baseUrl = `${await app.fastify.listen({ host: '127.0.0.1', port: 0 })}/fhir`;
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'hie-testscript-test-'));
});
afterAll(async () => {
  await app?.stop();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

describe('conformance:testscript', () => {
  it("runs this project's TestScripts against the service: every one passes, with a valid TestReport", async () => {
    const files = scriptFiles(SCRIPTS);
    expect(files.map((f) => path.basename(f))).toEqual([
      'http-capabilities-errors.json',
      'http-conditional.json',
      'http-crud.json',
      'http-json-patch.json',
      'http-patch-history-batch.json',
      'http-search.json',
      'http-xml.json',
      'search-includes.json',
      'search-modifiers.json',
      'search-number-quantity-uri.json',
      'search-references-chains.json',
    ]);
    const runs = [];
    for (const file of files) runs.push(await runTestScript(loadTestScript(file), { baseUrl }));
    const table = summaryTable(runs);
    for (const run of runs) {
      expect(run.passed, table).toBe(true);
      expect(run.report.result).toBe('pass');
      expect(run.report.score).toBe(100);
      const asserts = run.actions.filter((a) => a.kind === 'assert');
      expect(asserts.length).toBeGreaterThan(5);
      const validity = app.validator.validate(run.report);
      expect(validity.issues.filter((i) => i.severity === 'error')).toEqual([]);
    }
  });

  it('reports a failing assert as fail (with the server reason) and the CLI exits 1', async () => {
    const failing = {
      resourceType: 'TestScript',
      url: 'https://hie-ledger.dev/fhir/TestScript/failing',
      name: 'failing',
      status: 'draft',
      test: [
        {
          name: 'expects the wrong status',
          action: [
            { operation: { type: { code: 'read' }, resource: 'Patient', params: '/not-there' } },
            { assert: { label: 'wrongly expects 200', response: 'okay' } },
            { assert: { label: 'skipped after a failure', resource: 'Patient' } },
          ],
        },
        {
          name: 'a warning only',
          action: [
            { operation: { type: { code: 'capabilities' } } },
            {
              assert: {
                label: 'not there',
                headerField: 'X-Not-There',
                operator: 'notEmpty',
                warningOnly: true,
              },
            },
          ],
        },
      ],
    };
    const file = path.join(scratch, 'failing.json');
    fs.writeFileSync(file, JSON.stringify(failing));
    const run = await runTestScript(loadTestScript(file), { baseUrl });
    expect(run.passed).toBe(false);
    expect(run.report.result).toBe('fail');
    expect(run.actions.map((a) => a.result)).toEqual(['pass', 'fail', 'skip', 'pass', 'warning']);
    expect(run.actions[1].message).toMatch(/'404' equals '200' does not hold: .*not-there/);
    const reportDir = path.join(scratch, 'reports');
    const exit = await main(['--base', baseUrl, '--report-dir', reportDir, file]);
    expect(exit).toBe(1);
    const report = JSON.parse(fs.readFileSync(path.join(reportDir, 'failing.TestReport.json'), 'utf8'));
    expect(report).toMatchObject({ resourceType: 'TestReport', result: 'fail' });
    expect(await main(['--base', baseUrl, path.join(SCRIPTS, 'http-crud.json')])).toBe(0);
  });

  it('parses and loads every official R4 TestScript example (their fixture files are not in the package)', () => {
    const examples = fs.readdirSync(EXAMPLES).filter((name) => /^TestScript-.*\.json$/.test(name));
    expect(examples.length).toBeGreaterThanOrEqual(6);
    for (const name of examples) {
      const loaded = loadTestScript(path.join(EXAMPLES, name));
      expect(loaded.script.resourceType, name).toBe('TestScript');
      // Every fixture is either resolved or listed as missing: none is silently dropped.
      const fixtures = (loaded.script.fixture ?? []) as unknown[];
      expect(loaded.fixtures.size + loaded.missingFixtures.length, name).toBe(fixtures.length);
    }
  });
});
