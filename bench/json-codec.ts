/**
 * `npx tsx bench/json-codec.ts`: CPU and bytes per stored version of the stored-JSON deflate (src/fhir/store/json-codec.ts,
 * docs/store.md "Resource JSON"), by zlib level, strategy and preset dictionary, on Synthea resources in their stored
 * form (the first BENCH_BUNDLES records of ../shared/data/synthea-bundles, default 20: the records bench:disk
 * stores). Every variant writes format-1 bodies: each is checked to inflate, with the whole JSON_DICTIONARY_1, to its
 * text. Rows:
 * - `deflateRawSync`: one zlib context per body, as encodeJson did before (level 6, whole dictionary: main at 87dd149);
 * - `reused`: one context reset between bodies (ReusedDeflater's way), by level 1-6, the whole dictionary or its last
 *   N bytes (a suffix of the dictionary is a valid preset for format 1: same bytes at the same distances) or none,
 *   and the strategies (filtered, Huffman only, RLE, fixed) at level 1 and 6;
 * - `encodeJson`: this checkout's encodeJson.
 * CPU: process.cpuUsage per body, best of BENCH_ROUNDS (default 5) rounds over all variants in turn; prints the load
 * average.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { constants, createDeflateRaw, deflateRawSync, inflateRawSync, type ZlibOptions } from 'node:zlib';
import { encodeJson } from '../src/fhir/store/json-codec.js';
import { JSON_DICTIONARY_1 } from '../src/fhir/store/json-dictionary.js';
import { printTable, ROOT } from './support.js';

const BUNDLES = Number(process.env.BENCH_BUNDLES ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const DICTIONARY = Buffer.from(JSON_DICTIONARY_1.join(''), 'utf8');

/** The stored text of each resource (resourceType, id, meta with versionId and lastUpdated first: serialiseVersion). */
function storedTexts(): Buffer[] {
  const dir = join(ROOT, '..', 'shared', 'data', 'synthea-bundles');
  const texts: Buffer[] = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, BUNDLES)) {
    const bundle = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
      entry: { resource: Record<string, unknown> & { meta?: object } }[];
    };
    for (const { resource } of bundle.entry) {
      const { resourceType, id, meta, ...rest } = resource;
      const version = {
        resourceType,
        id,
        meta: { versionId: '1', lastUpdated: '2026-12-07T23:00:00.000Z', ...meta },
        ...rest,
      };
      texts.push(Buffer.from(JSON.stringify(version), 'utf8'));
    }
  }
  return texts;
}

/** Deflates through one context reset between bodies (the native handle, as ReusedDeflater drives it). */
function reusedDeflate(options: ZlibOptions): (text: Buffer) => Buffer {
  const stream = createDeflateRaw(options);
  const internals = stream as unknown as {
    _handle: {
      writeSync(f: number, i: Buffer, io: number, il: number, o: Buffer, oo: number, ol: number): void;
      reset(): void;
    };
    _writeState: Uint32Array;
  };
  const out = Buffer.allocUnsafe(256 * 1024);
  return (text) => {
    internals._handle.writeSync(constants.Z_FINISH, text, 0, text.length, out, 0, out.length);
    const body = Buffer.from(out.subarray(0, out.length - internals._writeState[0]!));
    internals._handle.reset();
    return body;
  };
}

const texts = storedTexts();
const textBytes = texts.reduce((sum, t) => sum + t.length, 0);
const variants: { name: string; deflate: (text: Buffer) => Buffer }[] = [
  {
    name: 'deflateRawSync level 6, whole dictionary (before)',
    deflate: (t) => deflateRawSync(t, { level: 6, dictionary: DICTIONARY }),
  },
  {
    name: 'deflateRawSync level 1, whole dictionary',
    deflate: (t) => deflateRawSync(t, { level: 1, dictionary: DICTIONARY }),
  },
];
for (const level of [1, 2, 3, 4, 5, 6])
  for (const tail of [DICTIONARY.length, 8192, 4096, 2048, 0])
    variants.push({
      name: `reused level ${level}, ${tail === DICTIONARY.length ? 'whole dictionary' : tail ? `dictionary's last ${tail} B` : 'no dictionary'}`,
      deflate: reusedDeflate(
        tail ? { level, dictionary: DICTIONARY.subarray(DICTIONARY.length - tail) } : { level },
      ),
    });
const STRATEGIES = { filtered: 1, 'Huffman only': 2, RLE: 3, fixed: 4 } as const;
for (const level of [1, 6])
  for (const [strategyName, strategy] of Object.entries(STRATEGIES))
    variants.push({
      name: `reused level ${level}, dictionary's last 4096 B, ${strategyName}`,
      deflate: reusedDeflate({ level, strategy, dictionary: DICTIONARY.subarray(DICTIONARY.length - 4096) }),
    });
variants.push({
  name: 'encodeJson (this checkout)',
  deflate: (t) => {
    const stored = encodeJson(t.toString('utf8'));
    return typeof stored === 'string' ? Buffer.from(stored, 'utf8') : stored.subarray(1);
  },
});

const bytesOf = new Map<string, number>();
for (const variant of variants) {
  // Every body must read back as format 1 does: inflated with the whole dictionary.
  let bytes = 0;
  for (const text of texts) {
    const body = variant.deflate(text);
    bytes += body.length + 1;
    if (body.length < text.length && !inflateRawSync(body, { dictionary: DICTIONARY }).equals(text))
      throw new Error(`${variant.name}: a body does not inflate to its text`);
  }
  bytesOf.set(variant.name, bytes / texts.length);
}
// Rounds over all variants in turn, so that a change in the machine's load touches every variant alike.
const best = new Map<string, number>();
for (let round = 0; round < ROUNDS; round++)
  for (const variant of variants) {
    const start = process.cpuUsage();
    for (const text of texts) variant.deflate(text);
    const used = process.cpuUsage(start);
    const perBody = (used.user + used.system) / texts.length;
    best.set(variant.name, Math.min(best.get(variant.name) ?? Infinity, perBody));
  }
const rows = variants.map((v) => [v.name, best.get(v.name)!.toFixed(1), bytesOf.get(v.name)!.toFixed(0)]);
console.log(
  `bench:json-codec: ${texts.length} Synthea resources of ${BUNDLES} records, ${(textBytes / texts.length).toFixed(0)} B ` +
    `of text each; best of ${ROUNDS} rounds; load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
);
printTable(['variant', 'µs CPU a body', 'bytes a body (with the format byte)'], rows);
