/**
 * The one media-type table (http://hl7.org/fhir/R4/http.html#mime-type): what the HTTP layer takes as bodies and
 * negotiates for responses (fhir/http/), what the interactions accept (fhir/interactions/) and what the
 * CapabilityStatement states. JSON is the stored form; XML (http://hl7.org/fhir/R4/xml.html) is converted at the HTTP
 * edge (fhir/fhir-xml.ts): XML bodies become JSON text before any interaction sees them, responses become XML last.
 */

export const FHIR_JSON = 'application/fhir+json';
export const PLAIN_JSON = 'application/json';
/** The R4 draft name, still sent by some clients. */
export const LEGACY_FHIR_JSON = 'application/json+fhir';
export const JSON_PATCH = 'application/json-patch+json';
/** XML Patch (RFC 5261; media type of RFC 7351): kept as text, applied to the resource's XML form. */
export const XML_PATCH = 'application/xml-patch+xml';
/** POST `_search` bodies (and the OAuth token request). */
export const FORM = 'application/x-www-form-urlencoded';

/** What a response with a FHIR JSON body says it is. */
export const FHIR_JSON_UTF8 = `${FHIR_JSON}; charset=utf-8`;

/** Body media types of one FHIR resource in JSON. */
export const JSON_MEDIA_TYPES: ReadonlySet<string> = new Set([FHIR_JSON, PLAIN_JSON, LEGACY_FHIR_JSON]);
/** Every body media type the FHIR routes take (as text): resources, JSON Patch, XML Patch, forms. */
export const BODY_MEDIA_TYPES: readonly string[] = [...JSON_MEDIA_TYPES, JSON_PATCH, XML_PATCH, FORM];
export const FHIR_XML = 'application/fhir+xml';
export const PLAIN_XML = 'application/xml';
/** XML body media types: converted to FHIR JSON at the HTTP edge. */
export const XML_MEDIA_TYPES: readonly string[] = [
  'application/fhir+xml',
  'application/xml',
  'text/xml',
  'application/xml+fhir',
];

/** `_format` values and media types that ask for JSON. */
export const JSON_FORMATS: ReadonlySet<string> = new Set(['json', ...JSON_MEDIA_TYPES]);
/** `_format` values and media types that ask for XML. */
export const XML_FORMATS: ReadonlySet<string> = new Set(['xml', ...XML_MEDIA_TYPES]);

/** CapabilityStatement.format and .patchFormat: what the server negotiates, in the order stated. */
export const SUPPORTED_FORMATS: readonly string[] = [
  FHIR_JSON,
  PLAIN_JSON,
  'json',
  FHIR_XML,
  PLAIN_XML,
  'xml',
];
export const PATCH_FORMATS: readonly string[] = [JSON_PATCH, FHIR_JSON, XML_PATCH];
