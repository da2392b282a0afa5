/** FHIR R4 primitive types: their JSON representation and the value regexes of the specification. */

const YEAR = '([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)';
const MONTH = '(0[1-9]|1[0-2])';
const DAY = '(0[1-9]|[1-2][0-9]|3[0-1])';
const TIME = '([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?';
const TZ = '(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))';

export const PRIMITIVE_REGEX: Record<string, RegExp> = {
  id: /^[A-Za-z0-9\-.]{1,64}$/,
  date: new RegExp(`^${YEAR}(-${MONTH}(-${DAY})?)?$`),
  dateTime: new RegExp(`^${YEAR}(-${MONTH}(-${DAY}(T${TIME}${TZ})?)?)?$`),
  instant: new RegExp(`^${YEAR}-${MONTH}-${DAY}T${TIME}${TZ}$`),
  time: new RegExp(`^${TIME}$`),
  code: /^[^\s]+( [^\s]+)*$/,
  oid: /^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$/,
  uuid: /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
  uri: /^\S*$/,
  url: /^\S*$/,
  canonical: /^\S*$/,
  base64Binary: /^(\s*([0-9a-zA-Z+/=]){4}\s*)+$/,
};

/** JSON type of each primitive: 'boolean', 'number' or 'string'. */
export const PRIMITIVE_JSON_TYPE: Record<string, 'boolean' | 'number' | 'string'> = {
  boolean: 'boolean',
  integer: 'number',
  decimal: 'number',
  positiveInt: 'number',
  unsignedInt: 'number',
  string: 'string',
  uri: 'string',
  url: 'string',
  canonical: 'string',
  base64Binary: 'string',
  instant: 'string',
  date: 'string',
  dateTime: 'string',
  time: 'string',
  code: 'string',
  oid: 'string',
  id: 'string',
  markdown: 'string',
  uuid: 'string',
  xhtml: 'string',
};

export function isPrimitiveType(code: string): boolean {
  return code in PRIMITIVE_JSON_TYPE;
}

/** FHIRPath system types used in snapshots for the value of primitives (`http://hl7.org/fhirpath/System.String`). */
export function systemTypeToPrimitive(code: string): string | undefined {
  const m = /^http:\/\/hl7\.org\/fhirpath\/System\.(\w+)$/.exec(code);
  if (!m) return undefined;
  return {
    String: 'string',
    Boolean: 'boolean',
    Integer: 'integer',
    Decimal: 'decimal',
    Date: 'date',
    DateTime: 'dateTime',
    Time: 'time',
  }[m[1]];
}

// Control characters other than tab, CR and LF are not allowed in FHIR strings.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F]/;

/** Checks a primitive's JSON value. Returns a message when invalid. */
export function checkPrimitive(type: string, value: unknown): string | undefined {
  const jsonType = PRIMITIVE_JSON_TYPE[type] ?? 'string';
  if (typeof value !== jsonType) {
    return `Error parsing JSON: the primitive value must be a ${jsonType}, not ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}`;
  }
  if (jsonType === 'number') {
    const n = value as number;
    if (!Number.isFinite(n)) return 'The value is not a finite number';
    if (type === 'decimal') return undefined;
    if (!Number.isInteger(n)) return `The value '${n}' is not a valid integer`;
    if (n > 2147483647 || n < -2147483648) return `The value '${n}' is outside the range of a 32-bit integer`;
    if (type === 'positiveInt' && n < 1)
      return `The value '${n}' is not a valid positiveInt (must be 1 or more)`;
    if (type === 'unsignedInt' && n < 0)
      return `The value '${n}' is not a valid unsignedInt (must be 0 or more)`;
    return undefined;
  }
  if (jsonType === 'boolean') return undefined;
  const s = value as string;
  if (s.length === 0) return '@value cannot be empty';
  if (s.length > 1_048_576 && type !== 'xhtml') return 'The value is longer than 1 MB';
  if (type !== 'xhtml' && CONTROL.test(s)) return 'The value contains illegal control characters';
  if (type === 'string' || type === 'markdown') {
    if (s.trim().length === 0) return 'The value is only whitespace';
    return undefined;
  }
  if (type === 'base64Binary') return base64Problem(s);
  const re = PRIMITIVE_REGEX[type];
  if (re && !re.test(s))
    return `The value '${s.length > 100 ? s.slice(0, 100) + '...' : s}' is not a valid ${type}`;
  if ((type === 'date' || type === 'dateTime' || type === 'instant') && !validCalendarDate(s))
    return `The value '${s}' is not a valid ${type} (no such day)`;
  if (type === 'uri' || type === 'url' || type === 'canonical') {
    if (s.startsWith('urn:oid:') && !PRIMITIVE_REGEX.oid.test(s))
      return `The value '${s}' is not a valid OID`;
    if (
      s.startsWith('urn:uuid:') &&
      !/^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(s)
    )
      return `The value '${s}' is not a valid UUID`;
  }
  return undefined;
}

/**
 * base64Binary (R4 datatypes.html#primitive: "base64 encoded (RFC 4648)"; whitespace allowed by the type's regex).
 * RFC 4648 section 4: the alphabet A-Z a-z 0-9 + /, in groups of four characters, with '=' padding only at the
 * end (one or two). The R4 regex alone lets '=' stand anywhere; the reference validator decodes per the RFC.
 */
export function base64Problem(s: string): string | undefined {
  const clean = s.replace(/\s/g, '');
  const shown = s.length > 100 ? s.slice(0, 100) + '...' : s;
  if (clean.length === 0 || clean.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(clean))
    return `The value '${shown}' is not a valid base64Binary (RFC 4648)`;
  return undefined;
}

/** The number of bytes a valid base64 value decodes to. */
export function base64DecodedSize(s: string): number {
  const clean = s.replace(/\s/g, '');
  const pad = clean.endsWith('==') ? 2 : clean.endsWith('=') ? 1 : 0;
  return (clean.length / 4) * 3 - pad;
}

function validCalendarDate(s: string): boolean {
  if (s.length < 10) return true;
  const y = +s.slice(0, 4);
  const m = +s.slice(5, 7);
  const d = +s.slice(8, 10);
  const days = [
    31,
    y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28,
    31,
    30,
    31,
    30,
    31,
    31,
    30,
    31,
    30,
    31,
  ][m - 1];
  return d <= days;
}
