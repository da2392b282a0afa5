/**
 * FHIR XML <-> JSON (src/fhir/fhir-xml.ts) by the rules of http://hl7.org/fhir/R4/xml.html: element order from the
 * StructureDefinitions, `value` attributes, id and extensions on primitives, the XHTML div, resources wrapped, and
 * a parser that refuses DOCTYPEs (XML bombs, external entities), deep nesting and anything that is not FHIR XML.
 */
import { describe, expect, it } from 'vitest';
import { coreRegistry } from '../../src/fhir/definitions/definition-registry.js';
import { FhirXml, MAX_XML_DEPTH } from '../../src/fhir/fhir-xml.js';
import { parseFhirJson, stringifyFhirJson } from '../../src/fhir/fhir-json.js';
import { FhirError } from '../../src/fhir/outcome.js';
import { errorCodes } from '../support/error-codes.js';

const xml = new FhirXml((type) => coreRegistry().typeDefinition(type));

function refusal(run: () => unknown): { status: number; code: string | undefined; text: string } {
  try {
    run();
  } catch (err) {
    if (err instanceof FhirError)
      return {
        status: err.status,
        code: errorCodes(err.outcome)[0],
        text: err.outcome.issue[0].diagnostics ?? '',
      };
    throw err;
  }
  throw new Error('not refused');
}

const F = 'xmlns="http://hl7.org/fhir"';

describe('JSON -> XML', () => {
  it('writes elements in definition order with value attributes, whatever the JSON order', () => {
    const text = xml.toXml(
      parseFhirJson(
        '{"valueQuantity":{"unit":"mg","value":1.50},"code":{"text":"x"},"status":"final","resourceType":"Observation","id":"o1"}',
      ),
    );
    expect(text).toBe(
      `<?xml version="1.0" encoding="UTF-8"?><Observation ${F}><id value="o1"/><status value="final"/>` +
        '<code><text value="x"/></code><valueQuantity><value value="1.50"/><unit value="mg"/></valueQuantity></Observation>',
    );
  });

  it('puts Element.id and Extension.url in attributes, and a primitive id and extensions from `_name`', () => {
    const text = xml.toXml({
      resourceType: 'Patient',
      birthDate: '1974-12',
      _birthDate: { id: 'b', extension: [{ url: 'http://e.org/x', valueBoolean: true }] },
      name: [
        { id: 'n1', given: ['A', null], _given: [null, { extension: [{ url: 'u', valueString: 'B' }] }] },
      ],
    });
    expect(text).toContain(
      '<name id="n1"><given value="A"/><given><extension url="u"><valueString value="B"/></extension></given></name>',
    );
    expect(text).toContain(
      '<birthDate id="b" value="1974-12"><extension url="http://e.org/x"><valueBoolean value="true"/></extension></birthDate>',
    );
  });

  it('wraps contained and Bundle resources in their element; the div stays XHTML', () => {
    const div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>a &amp; b</p></div>';
    const text = xml.toXml({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          resource: {
            resourceType: 'Patient',
            text: { status: 'generated', div },
            contained: [{ resourceType: 'Organization', id: 'o' }],
          },
        },
      ],
    });
    expect(text).toContain(
      `<entry><resource><Patient><text><status value="generated"/>${div}</text><contained><Organization><id value="o"/></Organization></contained></Patient></resource></entry>`,
    );
  });

  it('escapes attribute values so that they read back exactly (quotes, <, &, line breaks, tabs)', () => {
    const value = 'a"b<c>&d\ne\r\tf';
    const back = xml.toJson(xml.toXml({ resourceType: 'Patient', gender: 'other', _gender: { id: value } }));
    expect(back._gender).toEqual({ id: value });
  });

  it('leaves out a member whose value is undefined, as JSON.stringify does', () => {
    expect(xml.toXml({ resourceType: 'Patient', id: undefined, gender: 'male' })).toBe(
      `<?xml version="1.0" encoding="UTF-8"?><Patient ${F}><gender value="male"/></Patient>`,
    );
  });

  it('refuses (406) what XML cannot carry: an unknown element, a control character', () => {
    expect(refusal(() => xml.toXml({ resourceType: 'Patient', nickname: 'x' })).status).toBe(406);
    expect(refusal(() => xml.toXml({ resourceType: 'Patient', gender: 'a\u0001' })).status).toBe(406);
  });
});

describe('XML -> JSON', () => {
  it('keeps decimals as written and types numbers and booleans', () => {
    const json = xml.toJsonText(
      `<Observation ${F}><status value="final"/><code><text value="x"/></code><valueQuantity><value value="1.50"/></valueQuantity></Observation>`,
    );
    expect(json).toBe(
      '{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50}}',
    );
    const patient = xml.toJson(
      `<Patient ${F}><active value="true"/><multipleBirthInteger value="2"/></Patient>`,
    );
    expect(patient).toEqual({ resourceType: 'Patient', active: true, multipleBirthInteger: 2 });
  });

  it('reads the XHTML div as its exact text, and a primitive array with id-only members as nulls', () => {
    const div = '<div xmlns="http://www.w3.org/1999/xhtml">\n  <p>x &lt; y <b>z</b></p>\n</div>';
    const json = xml.toJson(
      `<Patient ${F}><text><status value="generated"/>${div}</text><name><given value="A"/><given id="g"/></name></Patient>`,
    );
    expect(json).toEqual({
      resourceType: 'Patient',
      text: { status: 'generated', div },
      name: [{ given: ['A', null], _given: [null, { id: 'g' }] }],
    });
  });

  it('round-trips JSON -> XML -> JSON exactly, decimals included', () => {
    const original =
      '{"resourceType":"Observation","id":"x","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1-8"}]},"valueQuantity":{"value":100.000,"unit":"mg"},"component":[{"code":{"text":"c"},"valueRange":{"low":{"value":1.0}}}]}';
    const back = xml.toJsonText(xml.toXml(parseFhirJson(original)));
    expect(back).toBe(stringifyFhirJson(parseFhirJson(original)));
  });

  it('refuses a DOCTYPE (entity expansion bombs, external entities) without expanding anything', () => {
    const bomb =
      '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>' +
      `<Patient ${F}><gender value="&lol2;"/></Patient>`;
    expect(refusal(() => xml.toJson(bomb))).toMatchObject({ status: 400, code: 'xml-doctype-refused' });
    const external = `<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]><Patient ${F}><gender value="&x;"/></Patient>`;
    expect(refusal(() => xml.toJson(external))).toMatchObject({ status: 400, code: 'xml-doctype-refused' });
    // An entity never declared is a well-formedness error, not a lookup.
    expect(refusal(() => xml.toJson(`<Patient ${F}><gender value="&x;"/></Patient>`)).code).toBe(
      'body-not-xml',
    );
  });

  it('refuses nesting deeper than the limit before converting anything', () => {
    const depth = MAX_XML_DEPTH + 5;
    const deep = `<Patient ${F}>${'<extension url="u">'.repeat(depth)}${'</extension>'.repeat(depth)}</Patient>`;
    const refused = refusal(() => xml.toJson(deep));
    expect(refused).toMatchObject({ status: 400, code: 'body-not-xml' });
    expect(refused.text).toMatch(/deeper than 100/);
  });

  it('refuses what is not FHIR XML, naming where (400 body-not-xml)', () => {
    const cases: [string, RegExp][] = [
      ['<Patient', /not FHIR XML/],
      [`<Patient><gender value="male"/></Patient>`, /namespace/],
      [`<Nothing ${F}/>`, /not an R4 resource/],
      [`<Patient ${F}><nickname value="x"/></Patient>`, /Patient\.nickname is not an R4 element/],
      [`<Patient ${F}><gender value="male"/><active value="true"/></Patient>`, /active is out of order/],
      [`<Patient ${F}><gender value="male"/><gender value="female"/></Patient>`, /at most once/],
      [`<Patient ${F}><active value="yes"/></Patient>`, /not a boolean/],
      [`<Patient ${F}><multipleBirthInteger value="01"/></Patient>`, /not a valid integer/],
      [`<Patient ${F}><gender>male</gender></Patient>`, /holds text/],
      [`<Patient ${F}><gender/></Patient>`, /neither a value nor extensions/],
      [`<Patient ${F}><gender value="male" colour="red"/></Patient>`, /attribute colour/],
      [`<Patient ${F}><contained/></Patient>`, /exactly one resource/],
      [`<Patient ${F}/><Patient ${F}/>`, /not FHIR XML/],
    ];
    for (const [text, message] of cases) {
      const refused = refusal(() => xml.toJson(text));
      expect(refused.status, text).toBe(400);
      expect(refused.code, text).toBe('body-not-xml');
      expect(refused.text, text).toMatch(message);
    }
  });

  it('refuses an encoding other than UTF-8 (415)', () => {
    const latin = `<?xml version="1.0" encoding="ISO-8859-1"?><Patient ${F}/>`;
    expect(refusal(() => xml.toJson(latin))).toMatchObject({ status: 415, code: 'media-type-unsupported' });
  });
});
