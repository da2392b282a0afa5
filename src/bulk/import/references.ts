/**
 * The references of an imported resource: found (every `reference` string, extensions and contained resources
 * included), classified, and rewritten to the `Type/id` they resolve to. Resolution itself (the journal's map, the
 * store) is the engine's: this module knows only the shapes of references (http://hl7.org/fhir/R4/references.html).
 */
import { LosslessNumber } from '../../fhir/fhir-json.js';

export type ReferenceKind =
  /** `#id`: a contained resource; left as is. */
  | { kind: 'contained' }
  /** `urn:uuid:...` / `urn:oid:...`: only the import can resolve it. */
  | { kind: 'urn'; key: string; suffix: string }
  /** `Type/id` (optionally `/_history/n`): the import, else the store. */
  | { kind: 'relative'; type: string; id: string; suffix: string }
  /** `Type?criteria` (relative or on this server's base). */
  | { kind: 'conditional'; type: string; search: string }
  /** `http(s)://...`: another entry's fullUrl, else stored as given. */
  | { kind: 'absolute'; url: string }
  /** Anything else (a logical id-less form this module does not know): stored as given. */
  | { kind: 'other' };

const RELATIVE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/[A-Za-z0-9\-.]{1,64})?$/;
const CONDITIONAL = /^([A-Z][A-Za-z]+)\?(.*)$/s;
const URN = /^(urn:(?:uuid|oid):[^/#]+)(.*)$/;

export function classifyReference(reference: string, baseUrl: string): ReferenceKind {
  if (reference.startsWith('#')) return { kind: 'contained' };
  const urn = URN.exec(reference);
  if (urn) return { kind: 'urn', key: urn[1]!, suffix: urn[2]! };
  const local = reference.startsWith(`${baseUrl}/`) ? reference.slice(baseUrl.length + 1) : reference;
  const relative = RELATIVE.exec(local);
  if (relative) return { kind: 'relative', type: relative[1]!, id: relative[2]!, suffix: relative[3] ?? '' };
  const conditional = CONDITIONAL.exec(local);
  if (conditional) return { kind: 'conditional', type: conditional[1]!, search: conditional[2]! };
  if (/^https?:\/\//i.test(reference)) return { kind: 'absolute', url: reference };
  return { kind: 'other' };
}

/** One `reference` found in a resource: the object holding it and its path (for diagnostics). */
export interface FoundReference {
  holder: Record<string, unknown>;
  path: string;
  reference: string;
}

/** Every `reference` string of a resource (Reference.reference), with its FHIRPath-like path. */
export function findReferences(value: unknown, path: string, out: FoundReference[] = []): FoundReference[] {
  if (value === null || typeof value !== 'object' || value instanceof LosslessNumber) return out;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) findReferences(value[i], `${path}[${i}]`, out);
    return out;
  }
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    const child = record[key];
    if (key === 'reference' && typeof child === 'string')
      out.push({ holder: record, path: `${path}.reference`, reference: child });
    else if (typeof child === 'object') findReferences(child, `${path}.${key}`, out);
  }
  return out;
}

/** `identifier=system|value` (the one form a conditional reference is resolved by within the import). */
export function identifierCriteria(search: string): { system: string; value: string } | undefined {
  const params = new URLSearchParams(search);
  const keys = [...params.keys()];
  if (keys.length !== 1 || keys[0] !== 'identifier') return undefined;
  const token = params.get('identifier')!;
  const bar = token.indexOf('|');
  if (bar <= 0 || bar === token.length - 1) return undefined;
  return { system: token.slice(0, bar), value: token.slice(bar + 1) };
}
