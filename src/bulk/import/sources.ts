/**
 * Reading import sources: which files a list of paths names (folders walked, in name order), each file's content
 * hash (a file changed between runs is refused), and its resources one by one with their position: NDJSON line by
 * line (`.ndjson`, `.ndjson.gz`; never the whole file in memory), Bundle files entry by entry.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { gunzipSync, createGunzip } from 'node:zlib';
import { parseClientJson, type FhirResource } from '../../fhir/fhir-json.js';
import { fhirError, FhirError } from '../../fhir/outcome.js';
import type { ImportSource } from './types.js';

export type SourceKind = 'ndjson' | 'bundle';

const NDJSON = /\.ndjson(\.gz)?$/i;
const BUNDLE = /\.json(\.gz)?$/i;

/** The kind of a file by its name, or undefined for a file that is not a source (folders: skipped). */
export function sourceKind(file: string): SourceKind | undefined {
  if (NDJSON.test(file)) return 'ndjson';
  if (BUNDLE.test(file)) return 'bundle';
  return undefined;
}

/**
 * The files the paths name: a file as given (refused if it is neither NDJSON nor JSON), a folder's NDJSON and JSON
 * files (recursively, sorted by name). Throws an Error naming a path that does not exist.
 */
export function discoverSources(paths: readonly string[]): ImportSource[] {
  const out: ImportSource[] = [];
  const seen = new Set<string>();
  const add = (file: string) => {
    if (!seen.has(file)) {
      seen.add(file);
      out.push({ path: file });
    }
  };
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      const stat = statSync(full);
      if (stat.isDirectory()) walk(full);
      else if (stat.isFile() && sourceKind(name)) add(full);
    }
  };
  for (const given of paths) {
    const full = path.resolve(given);
    let stat;
    try {
      stat = statSync(full);
    } catch {
      throw new Error(`no such file or folder: ${given}`);
    }
    if (stat.isDirectory()) walk(full);
    else if (sourceKind(full)) add(full);
    else throw new Error(`${given} is neither NDJSON (.ndjson, .ndjson.gz) nor a Bundle (.json, .json.gz)`);
  }
  return out;
}

/** SHA-256 (hex) of a file's bytes, as stored (compressed files hashed compressed). */
export async function fileHash(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** One resource of a source, with where it was. */
export interface SourceRecord {
  /** 1-based NDJSON line, or undefined in a Bundle. */
  line?: number;
  /** 0-based Bundle entry index. */
  entry?: number;
  resource?: FhirResource;
  /** The line's text (NDJSON read without parsing: the scan). */
  text?: string;
  /** The line or entry could not be read as a resource: why (the record is rejected with it). */
  error?: FhirError;
  /** Bundle entries: fullUrl, request method and URL. */
  fullUrl?: string;
  method?: string;
  url?: string;
}

/** What a Bundle file holds: its type and entries. */
export interface BundleFile {
  type: string;
  records: SourceRecord[];
}

function lines(file: string): AsyncIterable<string> {
  const raw = createReadStream(file);
  const stream = file.toLowerCase().endsWith('.gz') ? raw.pipe(createGunzip()) : raw;
  return createInterface({ input: stream, crlfDelay: Infinity });
}

/** Parses one NDJSON line (lossless numbers, duplicate names refused) as a resource. */
export function parseLine(text: string): Pick<SourceRecord, 'resource' | 'error'> {
  try {
    const value = parseClientJson(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      return { error: fhirError('body-not-resource', 'The line is not a JSON object (a FHIR resource)') };
    const resource = value as FhirResource;
    if (typeof resource.resourceType !== 'string')
      return { error: fhirError('body-not-resource', 'The line has no resourceType') };
    return { resource };
  } catch (err) {
    if (err instanceof FhirError) return { error: err };
    return { error: fhirError('body-not-json', `The line is not JSON: ${(err as Error).message}`) };
  }
}

function parsePlain(text: string): Pick<SourceRecord, 'resource' | 'error'> {
  try {
    const value = JSON.parse(text) as unknown;
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      return { error: fhirError('body-not-resource', 'The file is not a JSON object (a FHIR resource)') };
    const resource = value as FhirResource;
    if (typeof resource.resourceType !== 'string')
      return { error: fhirError('body-not-resource', 'The file has no resourceType') };
    return { resource };
  } catch (err) {
    return { error: fhirError('body-not-json', `The file is not JSON: ${(err as Error).message}`) };
  }
}

/**
 * The lines of an NDJSON file from line `after + 1` on (1-based), blank lines skipped but counted. `parse` false
 * yields no resources (counting only); `'plain'`: parsed by JSON.parse (the check, see readBundleFile).
 */
export async function* ndjsonRecords(
  file: string,
  after = 0,
  parse: boolean | 'plain' = true,
): AsyncIterable<SourceRecord> {
  let line = 0;
  for await (const text of lines(file)) {
    line++;
    if (line <= after || text.trim() === '') continue;
    if (parse === 'plain') yield { line, ...parsePlain(text) };
    else yield parse ? { line, ...parseLine(text) } : { line, text };
  }
}

/**
 * A Bundle file's entries (the whole file is read: Bundles are per patient or per message, not per export).
 * `plain`: parsed by JSON.parse (numbers as JS numbers, duplicate names not refused), several times faster: the scan
 * (keys and ids) and the check (the plain JSON a validator is given is the same; what is written is always parsed
 * losslessly, and a verdict is used only for the same plain JSON).
 */
export async function readBundleFile(file: string, plain = false): Promise<BundleFile> {
  let bytes = await readFile(file);
  if (file.toLowerCase().endsWith('.gz')) bytes = gunzipSync(bytes);
  const parsed = plain ? parsePlain(bytes.toString('utf8')) : parseLine(bytes.toString('utf8'));
  if (parsed.error) return { type: 'invalid', records: [{ entry: 0, error: parsed.error }] };
  const bundle = parsed.resource!;
  if (bundle.resourceType !== 'Bundle') {
    // A file with one resource: imported like an NDJSON line.
    return { type: 'single', records: [{ entry: 0, resource: bundle }] };
  }
  const entries = Array.isArray(bundle.entry) ? (bundle.entry as unknown[]) : [];
  const records = entries.map((raw, entry): SourceRecord => {
    const e = raw as { fullUrl?: unknown; resource?: unknown; request?: { method?: unknown; url?: unknown } };
    if (e === null || typeof e !== 'object' || e.resource === null || typeof e.resource !== 'object')
      return { entry, error: fhirError('bundle-invalid', `Bundle.entry[${entry}] has no resource`) };
    const resource = e.resource as FhirResource;
    if (typeof resource.resourceType !== 'string')
      return {
        entry,
        error: fhirError('body-not-resource', `Bundle.entry[${entry}].resource has no resourceType`),
      };
    return {
      entry,
      resource,
      fullUrl: typeof e.fullUrl === 'string' ? e.fullUrl : undefined,
      method: typeof e.request?.method === 'string' ? e.request.method : undefined,
      url: typeof e.request?.url === 'string' ? e.request.url : undefined,
    };
  });
  return { type: typeof bundle.type === 'string' ? bundle.type : 'collection', records };
}
