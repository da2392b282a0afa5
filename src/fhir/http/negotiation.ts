/**
 * Content negotiation (http://hl7.org/fhir/R4/http.html#mime-type).
 * - Response: `_format` wins over Accept. JSON (`application/fhir+json`, `application/json`, `json`) and, when the
 *   server converts XML, XML (`application/fhir+xml`, `application/xml`, `text/xml`, `xml`) are served; anything else
 *   is 406. `fhirVersion` other than 4.0 is 406.
 * - Request bodies: JSON media types, and XML when the server converts it; else 415. `fhirVersion` other than 4.0
 *   is 415.
 */
import { fhirError } from '../outcome.js';
import {
  FHIR_JSON,
  FHIR_XML,
  JSON_FORMATS,
  LEGACY_FHIR_JSON,
  PLAIN_JSON,
  PLAIN_XML,
  XML_FORMATS,
} from '../media-types.js';

/** The FHIR versions this server speaks, as mime-type parameter values (R4 http.html#version-parameter). */
const FHIR_VERSIONS = new Set(['4.0', '4.0.1']);

interface MediaRange {
  type: string;
  params: Record<string, string>;
  q: number;
}

function parseMediaRange(text: string): MediaRange {
  const [type, ...rest] = text.split(';');
  const params: Record<string, string> = {};
  for (const param of rest) {
    const eq = param.indexOf('=');
    if (eq < 0) continue;
    params[param.slice(0, eq).trim().toLowerCase()] = param
      .slice(eq + 1)
      .trim()
      .replace(/^"|"$/g, '');
  }
  const q = params.q === undefined ? 1 : Number(params.q);
  return { type: type.trim().toLowerCase(), params, q: Number.isFinite(q) ? q : 0 };
}

/** The XML media type answered for an XML range: `application/xml` when asked by that name, else FHIR's. */
function xmlResponseType(type: string): string {
  return type === PLAIN_XML ? PLAIN_XML : FHIR_XML;
}

/** True for a negotiated response type that is XML. */
export function isXmlType(type: string): boolean {
  return type === FHIR_XML || type === PLAIN_XML;
}

/**
 * The media type of the response, or a 406 FhirError. `xml`: whether this server converts XML (without it, XML is
 * 406 like any other format it does not serve).
 */
export function negotiateResponseType(
  format: string | undefined,
  accept: string | undefined,
  xml = false,
): string {
  if (format !== undefined) {
    // `_format=application/fhir+json` typed in a URL arrives as `application/fhir json` ('+' is a space in a query):
    // a space inside a media type is that '+' (RFC 6838 names have no spaces), so it is read back as one.
    const wanted = parseMediaRange(format.replace(/^(\s*[\w.-]+\/[\w.-]+) ([\w.-]+)/, '$1+$2'));
    if (JSON_FORMATS.has(wanted.type)) {
      checkFhirVersion(wanted, 406);
      return wanted.type === PLAIN_JSON ? PLAIN_JSON : FHIR_JSON;
    }
    if (XML_FORMATS.has(wanted.type) && xml) {
      checkFhirVersion(wanted, 406);
      return xmlResponseType(wanted.type);
    }
    if (XML_FORMATS.has(wanted.type))
      throw fhirError(
        'format-not-acceptable',
        `_format=${format}: this server serves JSON only (XML is not supported)`,
        { expression: '_format' },
      );
    throw fhirError(
      'format-not-acceptable',
      `_format=${format} is not a format this server serves; use json`,
      { expression: '_format' },
    );
  }
  if (accept === undefined || accept === '*/*' || accept === FHIR_JSON || accept.trim() === '')
    return FHIR_JSON;
  if (accept === PLAIN_JSON) return PLAIN_JSON;
  const ranges = accept
    .split(',')
    .map(parseMediaRange)
    .filter((r) => r.q > 0)
    .sort((a, b) => b.q - a.q);
  for (const range of ranges) {
    if (range.params.fhirversion !== undefined && !FHIR_VERSIONS.has(range.params.fhirversion)) continue;
    if (range.type === PLAIN_JSON) return PLAIN_JSON;
    if (xml && XML_FORMATS.has(range.type)) return xmlResponseType(range.type);
    if (
      range.type === FHIR_JSON ||
      range.type === LEGACY_FHIR_JSON ||
      range.type === '*/*' ||
      range.type === 'application/*'
    ) {
      return FHIR_JSON;
    }
  }
  const versioned = ranges.find(
    (r) => r.params.fhirversion !== undefined && !FHIR_VERSIONS.has(r.params.fhirversion),
  );
  if (versioned)
    throw fhirError(
      'format-not-acceptable',
      `This server speaks FHIR 4.0 (R4), not fhirVersion=${versioned.params.fhirversion}`,
    );
  throw fhirError(
    'format-not-acceptable',
    `Accept '${accept}' names no format this server serves; it serves application/fhir+json${xml ? ' and application/fhir+xml' : ''}`,
  );
}

function checkFhirVersion(range: MediaRange, status: 406 | 415): void {
  const version = range.params.fhirversion;
  if (version !== undefined && !FHIR_VERSIONS.has(version)) {
    const message = `This server speaks FHIR 4.0 (R4), not fhirVersion=${version}`;
    throw status === 406
      ? fhirError('format-not-acceptable', message)
      : fhirError('media-type-unsupported', message);
  }
}

/**
 * The request body's media type without parameters (checked: JSON, FHIR R4, UTF-8), or a 415 FhirError. `xml`:
 * whether this server converts XML bodies (then an XML type is returned as is; the body is JSON text by then).
 */
export function requestMediaType(contentType: string | undefined, xml = false): string | undefined {
  if (contentType === undefined || contentType.trim() === '') return undefined;
  const range = parseMediaRange(contentType);
  if (XML_FORMATS.has(range.type) && !xml)
    throw fhirError(
      'media-type-unsupported',
      `Content-Type ${range.type}: XML is not supported; send application/fhir+json`,
    );
  checkFhirVersion(range, 415);
  const charset = range.params.charset?.toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw fhirError('media-type-unsupported', `charset=${charset} is not supported; FHIR bodies are UTF-8`);
  }
  return range.type;
}

/** The `return` preference of a Prefer header (RFC 7240), if any. */
export function preferReturnOf(
  prefer: string | undefined,
): 'minimal' | 'representation' | 'OperationOutcome' | undefined {
  if (!prefer) return undefined;
  for (const preference of prefer.split(',')) {
    const match = /^\s*return\s*=\s*"?([A-Za-z]+)"?\s*$/.exec(preference.split(';')[0]);
    if (match) {
      const value = match[1];
      if (value === 'minimal' || value === 'representation' || value === 'OperationOutcome') return value;
    }
  }
  return undefined;
}

/** The `handling` preference (RFC 7240, FHIR search.html#errors): `strict`, `lenient`, or undefined. */
export function preferHandlingOf(prefer: string | undefined): 'strict' | 'lenient' | undefined {
  if (!prefer) return undefined;
  for (const preference of prefer.split(/[,;]/)) {
    const match = /^\s*handling\s*=\s*"?([A-Za-z]+)"?\s*$/i.exec(preference);
    if (match) {
      const value = match[1].toLowerCase();
      if (value === 'strict' || value === 'lenient') return value;
    }
  }
  return undefined;
}

/** Whether the Prefer header asks for `respond-async` (RFC 7240 §4.1). */
export function preferAsyncOf(prefer: string | undefined): boolean {
  if (!prefer) return false;
  return prefer.split(/[,;]/).some((preference) => preference.trim().toLowerCase() === 'respond-async');
}
