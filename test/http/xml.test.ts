/**
 * FHIR XML over HTTP (http://hl7.org/fhir/R4/http.html#mime-type, xml.html): XML bodies on every write,
 * XML answers for Accept and `_format`, error answers in the negotiated format, XML bombs and malformed XML refused
 * with a 4xx OperationOutcome, and an XML write stored exactly as its JSON twin (the same canonical form, hence the
 * same hash input).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coreRegistry } from '../../src/fhir/definitions/definition-registry.js';
import { FhirXml } from '../../src/fhir/fhir-xml.js';
import { canonicalize } from '../../src/fhir/canonical.js';
import { parseFhirJson } from '../../src/fhir/fhir-json.js';
import { errorCodes } from '../support/error-codes.js';
import { json, send, startTestApp, type TestApp } from './helpers.js';
import { suiteCacheDir } from '../support/cli-build.js';

let app: TestApp;
const converter = new FhirXml((type) => coreRegistry({ cacheDir: suiteCacheDir() }).typeDefinition(type));
const XML = { 'content-type': 'application/fhir+xml', accept: 'application/fhir+xml' };
const F = 'xmlns="http://hl7.org/fhir"';

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

/** An XML answer as JSON (through the converter under test's reverse direction). */
function fromXml(body: string): any {
  return converter.toJson(body);
}

function outcomeCode(body: string): string | undefined {
  return errorCodes(fromXml(body))[0];
}

const observationXml =
  `<Observation ${F}><status value="final"/><code><text value="weight"/></code>` +
  '<valueQuantity><value value="72.50"/><unit value="kg"/></valueQuantity></Observation>';

describe('FHIR XML over HTTP', () => {
  it('create, read (Accept and _format), vread, update, delete with XML', async () => {
    const created = await send(
      app,
      { method: 'POST', url: '/fhir/Observation', headers: XML, body: observationXml },
      201,
    );
    expect(created.headers['content-type']).toBe('application/fhir+xml; charset=utf-8');
    const body = fromXml(created.body);
    expect(body.valueQuantity.value.toString()).toBe('72.50');
    const id = body.id as string;

    const viaAccept = await send(
      app,
      { url: `/fhir/Observation/${id}`, headers: { accept: 'application/fhir+xml' } },
      200,
    );
    expect(viaAccept.body).toMatch(
      /^<\?xml version="1.0" encoding="UTF-8"\?><Observation xmlns="http:\/\/hl7.org\/fhir"><id value=/,
    );
    expect(viaAccept.body).toContain('<value value="72.50"/>');
    const viaFormat = await send(app, { url: `/fhir/Observation/${id}?_format=xml&_pretty=true` }, 200);
    expect(viaFormat.headers['content-type']).toBe('application/fhir+xml; charset=utf-8');
    expect(viaFormat.body).toContain('\n  <status value="final"/>');
    await send(app, { url: `/fhir/Observation/${id}/_history/1?_format=xml` }, 200);
    const asJson = json((await send(app, { url: `/fhir/Observation/${id}` }, 200)).body);
    expect(asJson.valueQuantity).toEqual({ value: 72.5, unit: 'kg' });

    const updated = observationXml.replace(`<Observation ${F}>`, `<Observation ${F}><id value="${id}"/>`);
    const put = await send(
      app,
      {
        method: 'PUT',
        url: `/fhir/Observation/${id}`,
        headers: XML,
        body: updated.replace('final', 'amended'),
      },
      200,
    );
    expect(fromXml(put.body).status).toBe('amended');
    await send(
      app,
      { method: 'DELETE', url: `/fhir/Observation/${id}`, headers: { accept: 'application/fhir+xml' } },
      200,
    );
    const gone = await send(app, { url: `/fhir/Observation/${id}?_format=xml` }, 410);
    expect(gone.headers['content-type']).toBe('application/fhir+xml; charset=utf-8');
    expect(outcomeCode(gone.body)).toBe('resource-deleted');
  });

  it('stores an XML write exactly as its JSON twin: same canonical form, decimals as written', async () => {
    const jsonText =
      '{"resourceType":"Observation","id":"twin-json","status":"final","code":{"text":"weight"},"valueQuantity":{"value":72.50,"unit":"kg"}}';
    await send(app, { method: 'PUT', url: '/fhir/Observation/twin-json', body: jsonText }, 201);
    const xmlText = observationXml.replace(`<Observation ${F}>`, `<Observation ${F}><id value="twin-xml"/>`);
    await send(app, { method: 'PUT', url: '/fhir/Observation/twin-xml', headers: XML, body: xmlText }, 201);
    const stored = async (id: string) => {
      const resource = parseFhirJson<any>((await send(app, { url: `/fhir/Observation/${id}` }, 200)).body);
      delete resource.id;
      delete resource.meta;
      return canonicalize(resource);
    };
    const twin = await stored('twin-json');
    expect(await stored('twin-xml')).toBe(twin);
    expect(twin).toContain('"value":72.50');
  });

  it('search, history and capabilities answer as XML Bundles and a CapabilityStatement', async () => {
    const search = await send(app, { url: '/fhir/Observation?_format=xml' }, 200);
    const bundle = fromXml(search.body);
    expect(bundle.resourceType).toBe('Bundle');
    expect(bundle.entry.length).toBeGreaterThan(0);
    expect(search.body).toContain('<resource><Observation>');
    const history = fromXml((await send(app, { url: '/fhir/Observation/_history?_format=xml' }, 200)).body);
    expect(history.type).toBe('history');
    const statement = fromXml(
      (
        await send(
          app,
          { url: '/fhir/metadata?_summary=true', headers: { accept: 'application/fhir+xml' } },
          200,
        )
      ).body,
    );
    expect(statement.format).toContain('application/fhir+xml');
  });

  it('takes a transaction Bundle and a FHIRPath Patch (Parameters) as XML', async () => {
    const transaction =
      `<Bundle ${F}><type value="transaction"/><entry><fullUrl value="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"/>` +
      `<resource><Patient><gender value="female"/></Patient></resource>` +
      '<request><method value="POST"/><url value="Patient"/></request></entry></Bundle>';
    const answer = fromXml(
      (await send(app, { method: 'POST', url: '/fhir', headers: XML, body: transaction }, 200)).body,
    );
    expect(answer.type).toBe('transaction-response');
    const location: string = answer.entry[0].response.location;
    const id = location.split('/')[1];
    const patch =
      `<Parameters ${F}><parameter><name value="operation"/><part><name value="type"/><valueCode value="replace"/></part>` +
      '<part><name value="path"/><valueString value="Patient.gender"/></part>' +
      '<part><name value="value"/><valueCode value="male"/></part></parameter></Parameters>';
    const patched = await send(
      app,
      { method: 'PATCH', url: `/fhir/Patient/${id}`, headers: XML, body: patch },
      200,
    );
    expect(fromXml(patched.body).gender).toBe('male');
  });

  it('answers errors as an XML OperationOutcome to a client that asked for XML', async () => {
    const missing = await send(
      app,
      { url: '/fhir/Patient/nobody', headers: { accept: 'application/fhir+xml' } },
      404,
    );
    expect(missing.headers['content-type']).toBe('application/fhir+xml; charset=utf-8');
    expect(missing.body).toContain('<OperationOutcome xmlns="http://hl7.org/fhir">');
    expect(outcomeCode(missing.body)).toBe('resource-not-found');
    // A client that asked for JSON gets JSON whatever it sent.
    const jsonAnswer = await send(
      app,
      {
        method: 'POST',
        url: '/fhir/Patient',
        headers: { 'content-type': 'application/fhir+xml' },
        body: '<Patient',
      },
      400,
    );
    expect(jsonAnswer.headers['content-type']).toBe('application/fhir+json; charset=utf-8');
    expect(errorCodes(json(jsonAnswer.body))[0]).toBe('body-not-xml');
  });

  it('refuses malformed XML, XML bombs and deep nesting with 400, huge bodies with 413, never 500', async () => {
    const post = (body: string) => send(app, { method: 'POST', url: '/fhir/Patient', headers: XML, body });
    const malformed = await post('<Patient xmlns="http://hl7.org/fhir"><gender value="male"></Patient>');
    expect(malformed.statusCode).toBe(400);
    expect(outcomeCode(malformed.body)).toBe('body-not-xml');
    const bomb = await post(
      '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">' +
        `<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><Patient ${F}><gender value="&c;"/></Patient>`,
    );
    expect(bomb.statusCode).toBe(400);
    expect(outcomeCode(bomb.body)).toBe('xml-doctype-refused');
    const external = await post(`<!DOCTYPE p SYSTEM "http://example.org/p.dtd"><Patient ${F}/>`);
    expect(outcomeCode(external.body)).toBe('xml-doctype-refused');
    const deep = await post(
      `<Patient ${F}>${'<extension url="u">'.repeat(5000)}${'</extension>'.repeat(5000)}</Patient>`,
    );
    expect(deep.statusCode).toBe(400);
    expect(outcomeCode(deep.body)).toBe('body-not-xml');
    const invalidUtf8 = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Patient',
      headers: XML,
      payload: Buffer.concat([
        Buffer.from(`<Patient ${F}><gender value="`),
        Buffer.from([0xff]),
        Buffer.from('"/></Patient>'),
      ]),
    });
    expect(invalidUtf8.statusCode).toBe(400);
    const huge = await post(`<Patient ${F}>${' '.repeat(20 * 1024 * 1024)}</Patient>`);
    expect(huge.statusCode).toBe(413);
    expect(outcomeCode(huge.body)).toBe('body-too-large');
    // A resource the validator refuses is 4xx as from JSON (here: an unknown code).
    const invalid = await post(`<Patient ${F}><gender value="robot"/></Patient>`);
    expect(invalid.statusCode).toBeGreaterThanOrEqual(400);
    expect(invalid.statusCode).toBeLessThan(500);
  });
});
