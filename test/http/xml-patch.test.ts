/**
 * XML Patch (RFC 5261, `application/xml-patch+xml`; FHIR R4 http.html#patch): applied to the resource's FHIR XML
 * form and read back, then the normal update path (validation, new version). Instance, conditional and
 * transaction/batch (a Binary entry) forms; 400 for a malformed diff, 422 for one that does not fit the resource.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coreRegistry } from '../../src/fhir/definitions/definition-registry.js';
import { FhirXml } from '../../src/fhir/fhir-xml.js';
import { parseFhirJson, stringifyFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { applyXmlPatchToResource } from '../../src/fhir/interactions/patch.js';
import { applyXmlPatch } from '../../src/fhir/xml-patch.js';
import { expectErrorCode } from '../support/error-codes.js';
import { FHIR_JSON, json, send, startTestApp, type TestApp } from './helpers.js';

const XML_PATCH = { 'content-type': 'application/xml-patch+xml' };
const F = 'xmlns:f="http://hl7.org/fhir"';

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

async function createPatient(): Promise<string> {
  const res = await send(
    app,
    {
      method: 'POST',
      url: '/fhir/Patient',
      body: JSON.stringify({
        resourceType: 'Patient',
        identifier: [
          { system: 'http://example.org/mrn', value: `x-${Math.floor(performance.now() * 1000)}` },
        ],
        text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml"><p/>Ann Ng</div>' },
        active: true,
        name: [{ family: 'Ng', given: ['Ann'] }, { family: 'Old' }],
        extension: [{ url: 'http://example.org/w', valueDecimal: 70.5 }],
      }).replace('70.5', '70.50'),
    },
    201,
  );
  return json(res.body).id as string;
}

function patch(url: string, diff: string, headers: Record<string, string> = XML_PATCH) {
  return app.fastify.inject({ method: 'PATCH', url, headers, payload: diff });
}

describe('XML Patch over HTTP', () => {
  it('replaces an attribute value, adds and removes elements, keeping what it does not touch', async () => {
    const id = await createPatient();
    const res = await patch(
      `/fhir/Patient/${id}`,
      `<diff ${F}>
         <replace sel="f:Patient/f:active/@value">false</replace>
         <remove sel="/f:Patient/f:name[2]"/>
         <add sel="f:Patient/f:name" pos="after"><gender xmlns="http://hl7.org/fhir" value="female"/></add>
       </diff>`,
    );
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers.etag).toBe('W/"2"');
    const body = json(res.body);
    expect(body.active).toBe(false);
    expect(body.gender).toBe('female');
    expect(body.name).toEqual([{ family: 'Ng', given: ['Ann'] }]);
    // Untouched: the decimal as written and the narrative as stored (not as the XML DOM would write it).
    expect(res.body).toContain('"valueDecimal":70.50');
    expect(body.text.div).toBe('<div xmlns="http://www.w3.org/1999/xhtml"><p/>Ann Ng</div>');
  });

  it("takes the diff's default namespace for unprefixed names (RFC 5261 §4.2.2)", async () => {
    const id = await createPatient();
    const res = await patch(
      `/fhir/Patient/${id}`,
      `<diff xmlns="http://hl7.org/fhir"><add sel="Patient/name[1]"><given value="Bea"/></add></diff>`,
    );
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res.body).name[0].given).toEqual(['Ann', 'Bea']);
  });

  it('answers a selector matching no node or several with 422, storing nothing', async () => {
    const id = await createPatient();
    const none = await patch(`/fhir/Patient/${id}`, `<diff ${F}><remove sel="f:Patient/f:gender"/></diff>`);
    expectErrorCode(none, 'patch-not-applicable');
    expect(json(none.body).issue[0].diagnostics).toMatch(
      /operation 1: sel="f:Patient\/f:gender" selects 0 nodes/,
    );
    const several = await patch(`/fhir/Patient/${id}`, `<diff ${F}><remove sel="f:Patient/f:name"/></diff>`);
    expectErrorCode(several, 'patch-not-applicable');
    expect(json(several.body).issue[0].diagnostics).toMatch(/selects 2 nodes; it must select exactly one/);
    // Applied all or nothing: a good first operation is not kept when the second fails.
    const half = await patch(
      `/fhir/Patient/${id}`,
      `<diff ${F}><replace sel="f:Patient/f:active/@value">false</replace><remove sel="f:Patient/f:nope"/></diff>`,
    );
    expectErrorCode(half, 'patch-not-applicable');
    const current = json((await app.fastify.inject({ url: `/fhir/Patient/${id}` })).body);
    expect(current.meta.versionId).toBe('1');
    expect(current.active).toBe(true);
  });

  it('answers a malformed diff with 400 naming what is wrong', async () => {
    const id = await createPatient();
    const cases: [string, RegExp][] = [
      ['<diff', /not well-formed XML/],
      [`<patch ${F}/>`, /root element must be <diff>/],
      [`<diff ${F}><move sel="f:Patient"/></diff>`, /operation 1: <move> is not add, replace or remove/],
      [`<diff ${F}><remove/></diff>`, /needs a sel attribute/],
      [`<diff ${F}><remove sel="f:Patient/[["/></diff>`, /is not an XPath expression/],
      [`<diff><remove sel="g:Patient"/></diff>`, /cannot be evaluated/],
      ['<!DOCTYPE d [<!ENTITY e "x">]><diff/>', /must not have a DOCTYPE/],
    ];
    for (const [diff, message] of cases) {
      const res = await patch(`/fhir/Patient/${id}`, diff);
      expectErrorCode(res, 'patch-invalid');
      expect(json(res.body).issue[0].diagnostics, diff).toMatch(message);
    }
  });

  it('answers a result that is not FHIR XML, or not a valid resource, with 422', async () => {
    const id = await createPatient();
    // An element Patient does not have: not FHIR XML.
    const foreign = await patch(
      `/fhir/Patient/${id}`,
      `<diff ${F}><add sel="f:Patient"><f:colour value="x"/></add></diff>`,
    );
    expectErrorCode(foreign, 'patch-not-applicable');
    expect(json(foreign.body).issue[0].diagnostics).toMatch(/not FHIR XML/);
    // FHIR XML, but not a valid Patient (gender is a code from a required value set).
    const invalid = await patch(
      `/fhir/Patient/${id}`,
      `<diff ${F}><add sel="f:Patient/f:name[2]" pos="after"><f:gender value="nonsense"/></add></diff>`,
    );
    expectErrorCode(invalid, 'patch-result-invalid');
    // The id may not change.
    const renamed = await patch(
      `/fhir/Patient/${id}`,
      `<diff ${F}><replace sel="f:Patient/f:id/@value">other</replace></diff>`,
    );
    expectErrorCode(renamed, 'patch-not-applicable');
  });

  it('patches conditionally (PATCH [type]?criteria)', async () => {
    const id = await createPatient();
    const mrn = json((await app.fastify.inject({ url: `/fhir/Patient/${id}` })).body).identifier[0].value;
    const res = await patch(
      `/fhir/Patient?identifier=${encodeURIComponent(`http://example.org/mrn|${mrn}`)}`,
      `<diff ${F}><replace sel="f:Patient/f:active/@value">false</replace></diff>`,
    );
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res.body).id).toBe(id);
    expect(json(res.body).active).toBe(false);
    const none = await patch(
      '/fhir/Patient?identifier=http://example.org/mrn|no-such',
      `<diff ${F}><replace sel="f:Patient/f:active/@value">false</replace></diff>`,
    );
    expect(none.statusCode).toBe(404);
  });

  it('applies XML Patch entries of a transaction and a batch (a Binary with the diff)', async () => {
    const id = await createPatient();
    const entry = (diff: string) => ({
      resource: {
        resourceType: 'Binary',
        contentType: 'application/xml-patch+xml',
        data: Buffer.from(diff).toString('base64'),
      },
      request: { method: 'PATCH', url: `Patient/${id}` },
    });
    const tx = await send(app, {
      method: 'POST',
      url: '/fhir',
      headers: FHIR_JSON,
      body: JSON.stringify({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [entry(`<diff ${F}><replace sel="f:Patient/f:active/@value">false</replace></diff>`)],
      }),
    });
    expect(tx.statusCode, tx.body).toBe(200);
    expect(json(tx.body).entry[0].response.status).toBe('200 OK');
    const batch = await send(app, {
      method: 'POST',
      url: '/fhir',
      headers: FHIR_JSON,
      body: JSON.stringify({
        resourceType: 'Bundle',
        type: 'batch',
        entry: [entry(`<diff ${F}><remove sel="f:Patient/f:nope"/></diff>`)],
      }),
    });
    expect(batch.statusCode).toBe(200);
    expect(json(batch.body).entry[0].response.status).toMatch(/^422/);
    const current = json((await app.fastify.inject({ url: `/fhir/Patient/${id}` })).body);
    expect(current.active).toBe(false);
    expect(current.meta.versionId).toBe('2');
  });

  it('is stated in the CapabilityStatement patchFormat', async () => {
    const statement = json((await send(app, { url: '/fhir/metadata' }, 200)).body);
    expect(statement.patchFormat).toContain('application/xml-patch+xml');
  });
});

describe('RFC 5261 operations', () => {
  const doc = '<doc xmlns:x="urn:x"><a id="1">t<!--c--></a><b/><x:c/></doc>';
  const serialise = (diff: string) => applyXmlPatch(doc, diff);

  it('add: last child by default, prepend, before, after, and attributes', () => {
    expect(serialise('<diff><add sel="doc/a"><n/></add></diff>')).toContain('<a id="1">t<!--c--><n/></a>');
    expect(serialise('<diff><add sel="doc/a" pos="prepend"><n/></add></diff>')).toContain('<a id="1"><n/>t');
    expect(serialise('<diff><add sel="doc/b" pos="before"><n/></add></diff>')).toContain('</a><n/><b/>');
    expect(serialise('<diff><add sel="doc/b" pos="after"><n/></add></diff>')).toContain('<b/><n/><x:c/>');
    expect(serialise('<diff><add sel="doc/b" type="@k">v</add></diff>')).toContain('<b k="v"/>');
    expect(() => serialise('<diff><add sel="doc/a" type="@id">2</add></diff>')).toThrow(/already exists/);
    expect(() => serialise('<diff><add sel="doc" pos="after"><n/></add></diff>')).toThrow(/one root element/);
  });

  it('replace: an element, an attribute value, a text node and a comment', () => {
    expect(serialise('<diff><replace sel="doc/b"><n/></replace></diff>')).toContain('</a><n/><x:c/>');
    expect(serialise('<diff><replace sel="doc/a/@id">2</replace></diff>')).toContain('<a id="2">');
    expect(serialise('<diff><replace sel="doc/a/text()">u</replace></diff>')).toContain(
      '<a id="1">u<!--c-->',
    );
    expect(serialise('<diff><replace sel="doc/a/comment()"><!--d--></replace></diff>')).toContain('<!--d-->');
    expect(() => serialise('<diff><replace sel="doc/b"><n/><m/></replace></diff>')).toThrow(
      /exactly one node/,
    );
  });

  it('remove: an element, an attribute, a text node; never the root', () => {
    expect(serialise('<diff><remove sel="doc/b"/></diff>')).not.toContain('<b/>');
    expect(serialise('<diff><remove sel="doc/a/@id"/></diff>')).toContain('<a>t');
    expect(serialise('<diff><remove sel="doc/a/text()"/></diff>')).toContain('<a id="1"><!--c--></a>');
    expect(() => serialise('<diff><remove sel="doc"/></diff>')).toThrow(/root element is not removed/);
    expect(applyXmlPatch('<r>\n  <a/>\n  <b/></r>', '<diff><remove sel="r/a" ws="before"/></diff>')).toBe(
      '<r>\n  <b/></r>',
    );
  });

  it('resolves prefixes in the scope of the operation element', () => {
    expect(serialise('<diff><remove xmlns:y="urn:x" sel="doc/y:c"/></diff>')).not.toContain('c/>');
    // Unprefixed names are in no namespace when the diff has no default namespace.
    expect(() => serialise('<diff><remove sel="doc/c"/></diff>')).toThrow(/selects 0 nodes/);
  });
});

describe('an empty diff over official R4 examples', () => {
  it('gives back the resource exactly (narratives and decimals as stored)', () => {
    const xml = new FhirXml((type) => coreRegistry().typeDefinition(type));
    const dir = join(process.cwd(), 'node_modules/hl7.fhir.r4.examples');
    // Every 40th example with a narrative and under 60 kB: a spread of types, quick on a loaded machine.
    const files = readdirSync(dir)
      .filter((f) => f.endsWith('.json') && f !== 'package.json')
      .filter((_, i) => i % 40 === 0);
    let checked = 0;
    for (const file of files) {
      const text = readFileSync(join(dir, file), 'utf8');
      if (text.length > 60_000 || !text.includes('"div"')) continue;
      const resource = parseFhirJson<FhirResource>(text);
      const expected = stringifyFhirJson(xml.toJson(xml.toXml(resource)));
      expect(stringifyFhirJson(applyXmlPatchToResource(xml, resource, '<diff/>')), file).toBe(expected);
      checked++;
    }
    expect(checked).toBeGreaterThan(40);
  });
});
