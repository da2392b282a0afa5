/**
 * The one media-type table (src/fhir/media-types.ts) and the negotiation that reads it agree: what the
 * CapabilityStatement states is served, every JSON body type is taken, XML is refused (406 / 415).
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
      expect(negotiateResponseType(format, undefined)).toMatch(/^application\/(fhir\+)?json$/);
      if (format.includes('/')) expect(negotiateResponseType(undefined, format)).toBe(format);
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
    expect(statusOf(() => negotiateResponseType('application/fhir json; fhirVersion=3.0', undefined))).toBe(
      406,
    );
  });

  it('XML is refused: 406 as a response format, 415 as a body', () => {
    for (const format of XML_FORMATS)
      expect(statusOf(() => negotiateResponseType(format, undefined))).toBe(406);
    for (const type of XML_MEDIA_TYPES) expect(statusOf(() => requestMediaType(type))).toBe(415);
  });
});
