/**
 * How the SQLite store keeps a version's JSON (docs/store.md "Resource JSON", schema migration 7): deflated (raw
 * deflate, RFC 1951, with a preset dictionary of FHIR resource shapes) as a BLOB whose first byte names the format;
 * the text itself (TEXT) when deflating would not make it smaller. Reading gives back the exact text stored: the
 * UTF-8 bytes are deflated, so inflating them yields the same string, byte for byte.
 *
 * Cost (docs/store.md): tens of microseconds of CPU per write and per read of a 1.5 KB resource, against 1.5 KB →
 * ~0.35 KB on disk.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { JSON_DICTIONARY_1 } from './json-dictionary.js';

/** Format byte 1: raw deflate, level 6, preset dictionary JSON_DICTIONARY_1. */
const DEFLATE_DICTIONARY_1 = 1;
const DICTIONARY_1 = Buffer.from(JSON_DICTIONARY_1.join(''), 'utf8');

/** The stored form of a resource's JSON text: a BLOB (format byte, deflated bytes) or the text when that is smaller. */
export function encodeJson(json: string): string | Buffer {
  const text = Buffer.from(json, 'utf8');
  const deflated = deflateRawSync(text, { level: 6, dictionary: DICTIONARY_1 });
  if (deflated.length + 1 >= text.length) return json;
  const stored = Buffer.allocUnsafe(deflated.length + 1);
  stored[0] = DEFLATE_DICTIONARY_1;
  deflated.copy(stored, 1);
  return stored;
}

/** The JSON text of a stored value (encodeJson's output, or text stored before migration 7). */
export function decodeJson(stored: string | Uint8Array): string {
  if (typeof stored === 'string') return stored;
  if (stored[0] !== DEFLATE_DICTIONARY_1) {
    throw new Error(`Stored resource JSON in an unknown format (${stored[0]})`);
  }
  return inflateRawSync(stored.subarray(1), { dictionary: DICTIONARY_1 }).toString('utf8');
}

/** decodeJson's text as UTF-8 bytes, without a string in between (the export copies these bytes to its files). */
export function decodeJsonBytes(stored: string | Uint8Array): Buffer {
  if (typeof stored === 'string') return Buffer.from(stored, 'utf8');
  if (stored[0] !== DEFLATE_DICTIONARY_1) {
    throw new Error(`Stored resource JSON in an unknown format (${stored[0]})`);
  }
  return inflateRawSync(stored.subarray(1), { dictionary: DICTIONARY_1 });
}

/** The SQL side of a connection to a store file (better-sqlite3's `db.function`). */
interface SqlFunctions {
  function(name: string, options: { deterministic: boolean }, fn: (value: unknown) => unknown): unknown;
}

/**
 * Registers `hie_encode_json` (migration 7 deflates the stored JSON with it) and `hie_decode_json` (the text back,
 * for SQL run by hand on a store file: `SELECT hie_decode_json(json) FROM resource_version ...`) on a connection.
 */
export function registerJsonFunctions(db: SqlFunctions): void {
  db.function('hie_encode_json', { deterministic: true }, (json) =>
    typeof json === 'string' ? encodeJson(json) : json,
  );
  db.function('hie_decode_json', { deterministic: true }, (json) =>
    typeof json === 'string' || json instanceof Uint8Array ? decodeJson(json) : json,
  );
}
