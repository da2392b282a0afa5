/**
 * The canonical form of a stored resource version: what the integrity hash is computed over.
 *
 * RFC 8785 (JSON Canonicalization Scheme) for structure: object members sorted by their names' UTF-16 code
 * units, no whitespace, strings escaped exactly as ECMAScript JSON.stringify does (which is what JCS specifies).
 * One deliberate departure: numbers are NOT normalised to their shortest ECMAScript form. A number is written
 * exactly as the stored text has it (`1.50` stays `1.50`, `105.00` stays `105.00`), because in FHIR the
 * written precision of a decimal is part of the data. Numbers that JavaScript prints back identically are
 * plain numbers after parseFhirJson; the others are LosslessNumbers carrying their written text.
 */
import { isLosslessNumber, parseFhirJson, type FhirJsonValue } from './fhir-json.js';

/** Canonical text of a stored version's JSON text (as stored by the ResourceStore). */
export function canonicalizeText(storedJson: string): string {
  return canonicalize(parseFhirJson<FhirJsonValue>(storedJson));
}

/** Canonical text of a parsed FHIR JSON value (plain numbers and LosslessNumbers). */
export function canonicalize(value: unknown): string {
  const out: string[] = [];
  write(value, out);
  return out.join('');
}

function write(value: unknown, out: string[]): void {
  if (value === null) {
    out.push('null');
    return;
  }
  switch (typeof value) {
    case 'string':
      out.push(JSON.stringify(value));
      return;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`Cannot canonicalise the non-finite number ${value}`);
      // ECMAScript's Number-to-String, which is also RFC 8785's number form (and -0 becomes 0).
      out.push(JSON.stringify(value));
      return;
    case 'object':
      break;
    default:
      throw new TypeError(`Cannot canonicalise a value of type ${typeof value}`);
  }
  if (isLosslessNumber(value)) {
    // The written text, verbatim: FHIR decimal precision is significant.
    out.push((value as { value: string }).value);
    return;
  }
  if (Array.isArray(value)) {
    out.push('[');
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out.push(',');
      const item = value[i];
      // As JSON.stringify does: an absent array element is null.
      write(item === undefined ? null : item, out);
    }
    out.push(']');
    return;
  }
  const record = value as Record<string, unknown>;
  // Default sort compares UTF-16 code units, which is exactly RFC 8785's member order.
  const keys = Object.keys(record).sort();
  out.push('{');
  let first = true;
  for (const key of keys) {
    const member = record[key];
    if (member === undefined) continue;
    if (!first) out.push(',');
    first = false;
    out.push(JSON.stringify(key), ':');
    write(member, out);
  }
  out.push('}');
}
