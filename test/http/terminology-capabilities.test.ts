/**
 * `GET|HEAD [base]/metadata?mode=terminology` (http://hl7.org/fhir/R4/http.html#capabilities): a
 * TerminologyCapabilities stating what the terminology operations serve, checked against what they do; `mode=full`
 * (the default) and `normative` the CapabilityStatement; any other mode 400.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFhirValidatorSync, type FhirValidator } from '../../src/fhir/validation/index.js';
import { buildTerminologyCapabilities } from '../../src/fhir/interactions/capabilities.js';
import { FhirRegistry } from '../../src/fhir/interactions/fhir-registry.js';
import { expectErrorCode } from '../support/error-codes.js';
import { json, send, startTestApp, type TestApp } from './helpers.js';
import { suiteCacheDir } from '../support/cli-build.js';

let app: TestApp;
let validator: FhirValidator;

beforeAll(async () => {
  validator = createFhirValidatorSync({ definitionsCacheDir: suiteCacheDir() });
  app = await startTestApp({ validator }, { logLevel: 'warn' });
});
afterAll(async () => {
  await app?.stop();
});

async function terminologyStatement(): Promise<any> {
  return json((await send(app, { url: '/fhir/metadata?mode=terminology' }, 200)).body);
}

describe('metadata?mode=terminology', () => {
  it('is a valid R4 TerminologyCapabilities of this instance', async () => {
    const statement = await terminologyStatement();
    expect(statement.resourceType).toBe('TerminologyCapabilities');
    expect(statement.kind).toBe('instance');
    expect(statement.implementation.url).toMatch(/\/fhir$/);
    const result = validator.validate(statement);
    expect(result.issues.filter((i) => i.severity === 'error')).toEqual([]);
    await send(app, { method: 'HEAD', url: '/fhir/metadata?mode=terminology' }, 200);
  });

  it('lists the code systems $lookup serves, each with its concepts, and no content-less one', async () => {
    const statement = await terminologyStatement();
    const uris: string[] = statement.codeSystem.map((c: any) => c.uri);
    expect(uris).toContain('http://hl7.org/fhir/administrative-gender');
    expect(uris.length).toBeGreaterThan(500);
    for (const uri of uris) expect(validator.registry.codeSystem(uri)?.content, uri).not.toBe('not-present');
    const notPresent = validator.registry.all('CodeSystem').filter((cs) => cs.content === 'not-present');
    for (const cs of notPresent) expect(uris).not.toContain(cs.url);
    // A sample of the listed systems: the first concept of each is looked up.
    for (let i = 0; i < uris.length; i += 97) {
      const code = validator.registry.codeSystem(uris[i])?.concept?.[0]?.code;
      if (code === undefined) continue;
      const lookup = await send(
        app,
        {
          url: `/fhir/CodeSystem/$lookup?system=${encodeURIComponent(uris[i])}&code=${encodeURIComponent(code)}`,
        },
        200,
      );
      expect(json(lookup.body).resourceType).toBe('Parameters');
    }
  });

  it('states the expansion, validate-code and translate behaviour the operations have', async () => {
    const statement = await terminologyStatement();
    expect(statement.expansion).toMatchObject({ hierarchical: false, paging: true, incomplete: false });
    expect(statement.expansion.parameter.map((p: any) => p.name)).toEqual(
      expect.arrayContaining(['filter', 'offset', 'count']),
    );
    expect(statement.validateCode).toEqual({ translations: false });
    expect(statement.translation).toEqual({ needsMap: false });
    // paging: offset and count page the expansion.
    const url = encodeURIComponent('http://hl7.org/fhir/ValueSet/administrative-gender');
    const page = json(
      (await send(app, { url: `/fhir/ValueSet/$expand?url=${url}&offset=1&count=2` }, 200)).body,
    );
    expect(page.expansion.total).toBe(4);
    expect(page.expansion.contains.map((c: any) => c.code)).toEqual(['female', 'other']);
    // textFilter: a case-insensitive substring of the display.
    const filtered = json(
      (await send(app, { url: `/fhir/ValueSet/$expand?url=${url}&filter=MAL` }, 200)).body,
    );
    expect(filtered.expansion.contains.map((c: any) => c.code).sort()).toEqual(['female', 'male']);
  });

  it('is served as XML too', async () => {
    const xml = await send(app, { url: '/fhir/metadata?mode=terminology&_format=xml' }, 200);
    expect(xml.body).toContain('<TerminologyCapabilities xmlns="http://hl7.org/fhir">');
    expect(xml.body.indexOf('<codeSystem>')).toBeLessThan(xml.body.indexOf('<expansion>'));
  });

  it('mode=full (the default) and mode=normative are the CapabilityStatement; another mode is 400', async () => {
    for (const query of ['', '?mode=full', '?mode=normative'])
      expect(json((await send(app, { url: `/fhir/metadata${query}` }, 200)).body).resourceType).toBe(
        'CapabilityStatement',
      );
    const bad = await send(app, { url: '/fhir/metadata?mode=everything' }, 400);
    expect(expectErrorCode(bad, 'parameter-invalid').issue[0].expression).toEqual(['mode']);
  });
});

describe('TerminologyCapabilities without terminology operations', () => {
  it('states no code system and no operation section', () => {
    const statement: any = buildTerminologyCapabilities(
      { registry: new FhirRegistry(), resourceTypes: [] },
      'http://localhost/fhir',
    );
    expect(statement).toMatchObject({ resourceType: 'TerminologyCapabilities', kind: 'instance' });
    expect(statement.codeSystem).toBeUndefined();
    expect(statement.expansion).toBeUndefined();
    expect(statement.validateCode).toBeUndefined();
    expect(statement.translation).toBeUndefined();
  });
});
