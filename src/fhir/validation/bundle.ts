/**
 * Bundle rules beyond the bdl-* invariants (which run as FHIRPath from the Bundle definition): fullUrl is absolute,
 * agrees with the resource id, and is unique (bdl-7 for versions); references inside a document or message resolve
 * to exactly one entry.
 */
import type { Json } from '../definitions/registry.js';
import type { Run, StructureWalker } from './walker.js';

const ABSOLUTE = /^[a-z][a-z0-9+.-]*:/i;

export function checkBundle(bundle: Json, path: string, run: Run, walker: StructureWalker): void {
  const entries: Json[] = Array.isArray(bundle.entry) ? bundle.entry : [];
  const seen = new Map<string, number>();
  entries.forEach((e, i) => {
    if (!e || typeof e !== 'object') return;
    const fullUrl = e.fullUrl;
    const where = `${path}.entry[${i}]`;
    if (typeof fullUrl === 'string') {
      if (!ABSOLUTE.test(fullUrl)) run.add('error', 'invalid', `The fullUrl must be an absolute URL (not '${fullUrl.slice(0, 100)}')`, where);
      const res = e.resource;
      if (res && typeof res === 'object' && typeof res.resourceType === 'string') {
        const m = /^[a-z][a-z0-9+.-]*:\/\/.*\/([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/i.exec(fullUrl);
        if (m && walker.isResourceType(m[1]) && (m[1] !== res.resourceType || (typeof res.id === 'string' && m[2] !== res.id)))
          run.add('error', 'invalid', `The fullUrl '${fullUrl.slice(0, 100)}' does not match the resource ${res.resourceType}/${res.id ?? ''}`, where);
        const key = `${fullUrl}|${res.meta?.versionId ?? ''}`;
        if (bundle.type !== 'history') {
          const prior = seen.get(key);
          if (prior !== undefined) run.add('error', 'invalid', `Duplicate fullUrl '${fullUrl.slice(0, 100)}' (also in entry ${prior})`, where);
          else seen.set(key, i);
        }
      }
    }
  });
}
