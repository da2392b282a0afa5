/**
 * The one media-type table (src/fhir/media-types.ts) and the negotiation that reads it agree: what the
 * CapabilityStatement states is served, every JSON body type is taken, XML is served when the server converts it
 * (and refused, 406 / 415, when it does not).
 */
import { describe, expect, it } from 'vitest';
import { negotiateResponseType, requestMediaType } from '../../src/fhir/http/negotiation.js';
import {
  FHIR_JSON,
  JSON_MEDIA_TYPES,
  PATCH_FORMATS,
  SUPPORTED_FORMATS,
  XML_FORMATS,
  XML_MEDIA_TYPES,
} from '../../src/fhir/media-types.js';
import { FhirError } from '../../src/fhir/outcome.js';

function statusOf(run: () => unknown): number | undefined {
  try {
    run();
    return undefined;
  } catch (err) {
    return err instanceof FhirError ? err.status : -1;
  }
}

describe('media types', () => {
  it('every format the CapabilityStatement states is served, as _format and as Accept', () => {
    for (const format of SUPPORTED_FORMATS) {
      expect(negotiateResponseType(format, undefined, true)).toMatch(/^application\/(fhir\+)?(json|xml)$/);
      if (format.includes('/')) expect(negotiateResponseType(undefined, format, true)).toBe(format);
    }
  });

  it('every JSON body type is taken as such, and a patch format is a body type', () => {
    for (const type of JSON_MEDIA_TYPES) expect(requestMediaType(`${type}; charset=utf-8`)).toBe(type);
    for (const type of PATCH_FORMATS) expect(requestMediaType(type)).toBe(type);
    expect(negotiateResponseType('application/json+fhir', undefined)).toBe(FHIR_JSON);
  });

  it('a _format typed in a URL, its + decoded as a space, is read as the media type it names', () => {
    expect(negotiateResponseType('application/fhir json', undefined)).toBe(FHIR_JSON);
    expect(negotiateResponseType('application/fhir json; fhirVersion=4.0', undefined)).toBe(FHIR_JSON);
    expect(statusOf(() => negotiateResponseType('application/fhir xml', undefined))).toBe(406);
    expect(negotiateResponseType('application/fhir xml', undefined, true)).toBe('application/fhir+xml');
    expect(statusOf(() => negotiateResponseType('application/fhir json; fhirVersion=3.0', undefined))).toBe(
      406,
    );
  });

  it('XML is refused without a converter: 406 as a response format, 415 as a body', () => {
    for (const format of XML_FORMATS)
      expect(statusOf(() => negotiateResponseType(format, undefined))).toBe(406);
    for (const type of XML_MEDIA_TYPES) expect(statusOf(() => requestMediaType(type))).toBe(415);
  });

  it('XML is served with a converter: application/fhir+xml (application/xml when asked so), every XML body taken', () => {
    for (const format of XML_FORMATS)
      expect(negotiateResponseType(format, undefined, true)).toBe(
        format === 'application/xml' ? 'application/xml' : 'application/fhir+xml',
      );
    expect(negotiateResponseType(undefined, 'application/fhir+xml', true)).toBe('application/fhir+xml');
    expect(negotiateResponseType(undefined, 'text/html, application/xml;q=0.9', true)).toBe(
      'application/xml',
    );
    expect(negotiateResponseType(undefined, 'application/fhir+xml;q=0.5, application/fhir+json', true)).toBe(
      FHIR_JSON,
    );
    for (const type of XML_MEDIA_TYPES) expect(requestMediaType(type, true)).toBe(type);
    expect(statusOf(() => requestMediaType('application/fhir+xml; fhirVersion=3.0', true))).toBe(415);
  });
});
