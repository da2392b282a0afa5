/**
 * A registry of conformance resources by canonical URL: the official R4 definitions (loaded once from the npm
 * packages), the network's shared profiles (`--ig PATH`: a folder of JSON or a FHIR package .tgz) and
 * StructureDefinition/ValueSet/CodeSystem/ConceptMap resources stored through the API (`registerResource`).
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import type { CodeSystem, ConceptMap, StructureDefinition, ValueSet } from 'fhir/r4.js';
import { generateSnapshot } from './snapshot.js';
import { isJsonObject, type JsonObject } from './json.js';

export type { JsonObject } from './json.js';

/** The definitions the registry holds, by resource type (trusted: the core packages, IGs, or validated writes). */
export interface ConformanceResources {
  /** `__snapshotFailed` marks a differential-only profile whose snapshot could not be generated (not tried again). */
  StructureDefinition: StructureDefinition & { __snapshotFailed?: boolean };
  ValueSet: ValueSet;
  CodeSystem: CodeSystem;
  ConceptMap: ConceptMap;
}
export type ConformanceType = keyof ConformanceResources;
export type ConformanceResource = ConformanceResources[ConformanceType];
/** Another canonical resource rules refer to by URL (a Measure ...): plain JSON with a url. */
export type CanonicalResource = JsonObject & { resourceType: string; url: string };
const CONFORMANCE_TYPES = new Set<string>(['StructureDefinition', 'ValueSet', 'CodeSystem', 'ConceptMap']);

export interface LoadStats {
  files: number;
  resources: number;
  millis: number;
}

export class DefinitionRegistry {
  private readonly byUrl = new Map<string, Map<string, ConformanceResource>>();
  private readonly otherCanonicals = new Map<string, CanonicalResource>();

  /** A canonical resource of another type (e.g. a Measure) registered here or in a parent, by URL. */
  canonical(type: string, url: string): CanonicalResource | undefined {
    const bare = url.includes('|') ? url.slice(0, url.indexOf('|')) : url;
    return this.otherCanonicals.get(`${type}|${bare}`) ?? this.parent?.canonical(type, url);
  }
  /** Every canonical resource of another type (e.g. the ImplementationGuides) registered here or in a parent. */
  canonicals(type: string): CanonicalResource[] {
    const ofType = this.canonicalsByType.get(type);
    if (!ofType) return this.parent ? this.parent.canonicals(type) : [];
    const own = [...ofType.values()];
    if (!this.parent) return own;
    const urls = new Set(own.map((r) => r.url));
    return [...own, ...this.parent.canonicals(type).filter((r) => !urls.has(r.url))];
  }
  private readonly canonicalsByType = new Map<string, Map<string, CanonicalResource>>();
  /** Bumped on every change, so compiled caches keyed on definitions know when to drop entries. */
  generation = 0;
  private readonly listeners: ((res: ConformanceResource) => void)[] = [];

  /** A registry layered over `parent` (e.g. the shared core definitions): lookups fall through to it. */
  constructor(readonly parent?: DefinitionRegistry) {
    for (const t of CONFORMANCE_TYPES) this.byUrl.set(t, new Map());
  }

  /** Called after a definition is added or replaced (validators drop their compiled forms). */
  onChange(listener: (res: ConformanceResource) => void): void {
    this.listeners.push(listener);
  }

  /** Adds or replaces a conformance resource. Other resource types are ignored; returns whether it was taken. */
  registerResource(input: unknown): boolean {
    if (!isCanonical(input)) return false;
    if (!isConformanceResource(input)) {
      // Other canonical resources (Measure, Questionnaire, ...) that rules refer to by URL.
      if (!/^[A-Z][A-Za-z]+$/.test(input.resourceType)) return false;
      this.otherCanonicals.set(`${input.resourceType}|${input.url}`, input);
      let ofType = this.canonicalsByType.get(input.resourceType);
      if (!ofType) this.canonicalsByType.set(input.resourceType, (ofType = new Map()));
      ofType.set(input.url, input);
      return false;
    }
    const res = input;
    const map = this.byUrl.get(res.resourceType)!;
    map.set(res.url, res);
    if (typeof res.version === 'string') map.set(`${res.url}|${res.version}`, res);
    this.generation++;
    for (const l of this.listeners) l(res);
    return true;
  }

  private get<T extends ConformanceType>(type: T, url: string): ConformanceResources[T] | undefined {
    // Each map holds only resources of its type (registerResource files them by resourceType).
    const map = this.byUrl.get(type)! as Map<string, ConformanceResources[T]>;
    const own = map.get(url) ?? (url.includes('|') ? map.get(url.slice(0, url.indexOf('|'))) : undefined);
    return own ?? this.parent?.get(type, url);
  }

  /** A StructureDefinition by canonical URL (`url` or `url|version`); a differential-only one gets its snapshot generated. */
  structureDefinition(url: string): ConformanceResources['StructureDefinition'] | undefined {
    const sd = this.get('StructureDefinition', url);
    if (sd && !sd.snapshot && sd.differential && !sd.__snapshotFailed) {
      try {
        sd.snapshot = generateSnapshot(sd, this);
      } catch {
        sd.__snapshotFailed = true;
      }
    }
    return sd;
  }

  /** The core StructureDefinition of a type or resource name, e.g. `Patient`, `string`. */
  typeDefinition(type: string): ConformanceResources['StructureDefinition'] | undefined {
    return this.structureDefinition(
      type.includes('/') ? type : `http://hl7.org/fhir/StructureDefinition/${type}`,
    );
  }

  valueSet(url: string): ValueSet | undefined {
    return this.get('ValueSet', url);
  }

  codeSystem(url: string): CodeSystem | undefined {
    return this.get('CodeSystem', url);
  }

  conceptMap(url: string): ConceptMap | undefined {
    return this.get('ConceptMap', url);
  }

  /** Every distinct resource of a type (versioned aliases counted once). */
  all<T extends ConformanceType>(type: T): ConformanceResources[T][] {
    const own = [...new Set((this.byUrl.get(type)! as Map<string, ConformanceResources[T]>).values())];
    if (!this.parent) return own;
    const urls = new Set(own.map((r) => r.url));
    return [...own, ...this.parent.all(type).filter((r) => !urls.has(r.url))];
  }

  /** Loads every conformance resource of a folder (JSON files, recursively one level for `package/`) or a .tgz package. */
  loadPath(p: string): LoadStats {
    const started = performance.now();
    let files = 0;
    let resources = 0;
    const take = (text: string): void => {
      files++;
      let res: unknown;
      try {
        res = JSON.parse(text);
      } catch {
        return;
      }
      for (const r of bundleOrResource(res)) {
        if (this.registerResource(r)) resources++;
      }
    };
    const stat = fs.statSync(p);
    if (stat.isDirectory()) {
      const walk = (dir: string, depth: number): void => {
        for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
          const full = path.join(dir, ent.name);
          if (ent.isDirectory()) {
            if (depth < 3 && !ent.name.startsWith('.')) walk(full, depth + 1);
          } else if (ent.name.endsWith('.json') && !ent.name.startsWith('.') && ent.name !== 'package.json') {
            take(fs.readFileSync(full, 'utf8'));
          }
        }
      };
      walk(p, 0);
    } else if (/\.(tgz|tar\.gz)$/.test(p)) {
      for (const entry of readTarGz(fs.readFileSync(p))) {
        const base = entry.name.split('/').pop() ?? '';
        if (base.endsWith('.json') && !base.startsWith('.') && base !== 'package.json')
          take(entry.data.toString('utf8'));
      }
    } else {
      take(fs.readFileSync(p, 'utf8'));
    }
    return { files, resources, millis: performance.now() - started };
  }

  /**
   * Loads the official R4 definitions: StructureDefinitions, ValueSets, CodeSystems and ConceptMaps from
   * hl7.fhir.r4.examples, then the expansions of hl7.fhir.r4.expansions (stored as `expansion` on the ValueSets).
   * Documentation-only content (narratives, element definitions/comments, mappings) is dropped. With `cacheDir`,
   * the compact form is written there once and read from there afterwards (about 3x faster than the packages).
   */
  loadCore(options: { cacheDir?: string } = {}): LoadStats {
    const started = performance.now();
    const { examples, expansions } = corePackages();
    const cacheFile = options.cacheDir ? coreDefinitionsCacheFile(options.cacheDir) : undefined;
    if (cacheFile && fs.existsSync(cacheFile)) {
      try {
        const cached: unknown[] = JSON.parse(fs.readFileSync(cacheFile, 'utf8'));
        let resources = 0;
        for (const r of cached) if (this.registerResource(r)) resources++;
        return { files: 1, resources, millis: performance.now() - started };
      } catch {
        // A damaged cache is rebuilt below.
      }
    }
    let files = 0;
    let resources = 0;
    for (const f of fs.readdirSync(examples)) {
      if (!/^(StructureDefinition|ValueSet|CodeSystem|ConceptMap)-.*\.json$/.test(f)) continue;
      files++;
      const res = compactDefinition(JSON.parse(fs.readFileSync(path.join(examples, f), 'utf8')));
      if (this.registerResource(res)) resources++;
    }
    for (const f of fs.readdirSync(expansions)) {
      if (!/^ValueSet-.*\.json$/.test(f)) continue;
      files++;
      const vs: ValueSet = compactDefinition(JSON.parse(fs.readFileSync(path.join(expansions, f), 'utf8')));
      const known = typeof vs.url === 'string' ? this.valueSet(vs.url) : undefined;
      if (known && vs.expansion && !known.expansion) known.expansion = vs.expansion;
      else if (!known && this.registerResource(vs)) resources++;
    }
    if (cacheFile) {
      try {
        fs.mkdirSync(path.dirname(cacheFile), { recursive: true, mode: 0o700 });
        const tmp = `${cacheFile}.${process.pid}.tmp`;
        const all = [
          ...this.all('StructureDefinition'),
          ...this.all('ValueSet'),
          ...this.all('CodeSystem'),
          ...this.all('ConceptMap'),
        ];
        fs.writeFileSync(tmp, JSON.stringify(all), { mode: 0o600 });
        fs.renameSync(tmp, cacheFile);
      } catch {
        // The cache is an optimisation only.
      }
    }
    return { files, resources, millis: performance.now() - started };
  }
}

/** The folders of the two packages the core definitions come from. */
function corePackages(): { examples: string; expansions: string } {
  const require = createRequire(import.meta.url);
  return {
    examples: path.dirname(require.resolve('hl7.fhir.r4.examples/package.json')),
    expansions: path.dirname(require.resolve('hl7.fhir.r4.expansions/package.json')),
  };
}

/** The file `loadCore` keeps the compact core definitions in, under `cacheDir` (named by the packages' versions). */
export function coreDefinitionsCacheFile(cacheDir: string): string {
  const { examples, expansions } = corePackages();
  const version = (dir: string): string =>
    String(JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version);
  return path.join(cacheDir, `r4-definitions-${version(examples)}-${version(expansions)}-v1.json`);
}

const ELEMENT_DOCUMENTATION = [
  'definition',
  'comment',
  'requirements',
  'mapping',
  'alias',
  'example',
  'meaningWhenMissing',
  'isModifierReason',
  'orderMeaning',
];

/** Drops what validation and terminology never read: narratives, mappings, element documentation. */
export function compactDefinition<T>(res: T): T {
  if (!res || typeof res !== 'object') return res;
  const r = res as JsonObject;
  delete r.text;
  if (r.resourceType === 'StructureDefinition') {
    delete r.mapping;
    for (const part of [r.snapshot, r.differential]) {
      const list = isJsonObject(part) ? part.element : undefined;
      if (!Array.isArray(list)) continue;
      for (const el of list) for (const k of ELEMENT_DOCUMENTATION) delete (el as JsonObject)[k];
    }
  }
  return res;
}

function isCanonical(value: unknown): value is CanonicalResource {
  return isJsonObject(value) && typeof value.url === 'string' && typeof value.resourceType === 'string';
}

/** A StructureDefinition, ValueSet, CodeSystem or ConceptMap with a url (its content is trusted as its type). */
function isConformanceResource(value: CanonicalResource): value is CanonicalResource & ConformanceResource {
  return CONFORMANCE_TYPES.has(value.resourceType);
}

/** The resources of a Bundle's entries, or the resource itself. */
export function bundleOrResource(res: unknown): unknown[] {
  if (!isJsonObject(res) || res.resourceType !== 'Bundle') return [res];
  const entries = res.entry ?? [];
  return (entries as unknown[]).map((e) => (e as JsonObject | null | undefined)?.resource);
}

/** Minimal ustar reader for FHIR package tarballs (regular files only). */
export function readTarGz(buf: Buffer): { name: string; data: Buffer }[] {
  const tar = zlib.gunzipSync(buf);
  const out: { name: string; data: Buffer }[] = [];
  let off = 0;
  let longName: string | undefined;
  while (off + 512 <= tar.length) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const field = (start: number, len: number): string =>
      header
        .subarray(start, start + len)
        .toString('utf8')
        .replace(/\0.*$/s, '');
    let name = field(0, 100);
    const prefix = field(345, 155);
    if (prefix) name = `${prefix}/${name}`;
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const kind = String.fromCharCode(header[156] || 48);
    const data = tar.subarray(off + 512, off + 512 + size);
    if (kind === 'L') longName = data.toString('utf8').replace(/\0.*$/s, '');
    else if (kind === '0' || kind === '\0') {
      out.push({ name: longName ?? name, data });
      longName = undefined;
    } else longName = undefined;
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

let shared: DefinitionRegistry | undefined;
/**
 * The process-wide registry with the core R4 definitions, loaded on first use (about 1 s from the packages, a third
 * of that from the compact cache in `cacheDir` when given; the first call decides).
 */
export function coreRegistry(options: { cacheDir?: string } = {}): DefinitionRegistry {
  if (!shared) {
    shared = new DefinitionRegistry();
    shared.loadCore(options);
  }
  return shared;
}
