/**
 * The official R4 SearchParameters by canonical URL (`hl7.fhir.r4.examples/Bundle-searchParams.json`, the 1,375
 * parameters the specification defines), for the cross-resource rules that resolve a parameter by URL: a
 * SearchParameter's `derivedFrom` and composite `component.definition`, a CapabilityStatement's `searchParam.definition`.
 * Read on first use (about 2 MB), so validators that never meet a conformance resource never read it; only what the
 * rules read is kept (url, code, type, base).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { arrayField, field, isJsonObject, type JsonObject } from '../definitions/json.js';

let byUrl: Map<string, JsonObject> | undefined;

export function coreSearchParameter(url: string): JsonObject | undefined {
  byUrl ??= load();
  return byUrl.get(url.split('|')[0]!);
}

function load(): Map<string, JsonObject> {
  const require = createRequire(import.meta.url);
  const examples = dirname(require.resolve('hl7.fhir.r4.examples/package.json'));
  const bundle: unknown = JSON.parse(readFileSync(join(examples, 'Bundle-searchParams.json'), 'utf8'));
  const map = new Map<string, JsonObject>();
  for (const entry of arrayField(bundle, 'entry')) {
    const sp = field(entry, 'resource');
    if (!isJsonObject(sp) || sp.resourceType !== 'SearchParameter' || typeof sp.url !== 'string') continue;
    map.set(sp.url, {
      resourceType: 'SearchParameter',
      url: sp.url,
      code: sp.code,
      type: sp.type,
      base: arrayField(sp, 'base').filter((b) => typeof b === 'string'),
    });
  }
  return map;
}
