/** Rules of whole resources: dom-3, the rules of particular resource types, and the profiles a resource claims. */
import type { StructureDefinition } from 'fhir/r4.js';
import { arrayField, field, type JsonObject } from '../definitions/json.js';
import { generateSnapshot, type SnapshotProblem } from '../definitions/snapshot.js';
import { containedReferenced } from './invariants.js';
import { checkBundle } from './bundle.js';
import {
  checkCapabilityStatementSearchParams,
  checkCompositeComponents,
  checkMeasureReport,
  checkOperationDefinitionProfiles,
  checkSearchParameterDerivation,
  checkSearchParameter,
  checkValueSetParameters,
} from './conformance-resources.js';
import { coreSearchParameter } from './core-search-parameters.js';
import { type Frame, probeRun, Run, type WalkContext } from './walk-context.js';
import type { TypeRef } from './structure.js';

/** A SearchParameter by URL: one loaded here, else one of the specification's own. */
function searchParameterOf(w: WalkContext, url: string): JsonObject | undefined {
  return w.registry.canonical('SearchParameter', url) ?? coreSearchParameter(url);
}

/** The vital-sign LOINC codes and their core profiles, per walker (built on first use). */
const vitalSignCodesOf = new WeakMap<WalkContext, Map<string, string>>();

export function vitalSignsProfiles(w: WalkContext, obs: JsonObject): string[] {
  let vitalSignCodes = vitalSignCodesOf.get(w);
  if (!vitalSignCodes) {
    vitalSignCodes = new Map();
    vitalSignCodesOf.set(w, vitalSignCodes);
    for (const sd of w.registry.all('StructureDefinition')) {
      if (
        sd.type !== 'Observation' ||
        sd.baseDefinition !== 'http://hl7.org/fhir/StructureDefinition/vitalsigns' ||
        !sd.url?.startsWith('http://hl7.org/fhir/StructureDefinition/')
      )
        continue;
      for (const e of sd.snapshot?.element ?? []) {
        if (/^Observation\.code\.coding:[^.]*\.code$/.test(e.id ?? '') && typeof e.fixedCode === 'string')
          vitalSignCodes.set(e.fixedCode, sd.url);
      }
    }
  }
  const out: string[] = [];
  const codings = field(obs.code, 'coding');
  for (const c of Array.isArray(codings) ? codings : []) {
    const code = field(c, 'code');
    const url =
      field(c, 'system') === 'http://loinc.org' && typeof code === 'string'
        ? vitalSignCodes.get(code)
        : undefined;
    if (url) out.push(url);
  }
  return out;
}

/** The rules a resource type has beyond its structure (dom-3, Bundle, terminology and conformance resources). */
export function checkResourceRules(
  w: WalkContext,
  res: JsonObject,
  rt: string,
  path: string,
  run: Run,
): void {
  if (w.validateContained && Array.isArray(res.contained) && res.contained.length) {
    for (const id of containedReferenced(res)) {
      run.add(
        'error',
        'invariant',
        `Constraint failed: dom-3: 'If the resource is contained in another resource, it SHALL be referred to from elsewhere in the resource or SHALL refer to the containing resource' (contained '${id}')`,
        path,
        'invariants',
      );
    }
  }
  if (rt === 'Bundle') checkBundle(res, path, run, w);
  if (rt === 'ValueSet') checkValueSetParameters(res, path, run);
  if (rt === 'SearchParameter') checkSearchParameter(res, path, run);
  if (rt === 'MeasureReport')
    checkMeasureReport(res, path, run, (url) => w.registry.canonical('Measure', url));
  if (rt === 'SearchParameter') {
    checkSearchParameterDerivation(res, path, run, (url) => searchParameterOf(w, url));
    checkCompositeComponents(res, path, run, (url) => searchParameterOf(w, url));
  }
  if (rt === 'CapabilityStatement')
    checkCapabilityStatementSearchParams(res, path, run, (url) => searchParameterOf(w, url));
  if (rt === 'OperationDefinition')
    checkOperationDefinitionProfiles(res, path, run, (url) => w.structures.get(url));
  if (rt === 'StructureDefinition' && isDifferentialOnly(res)) {
    // A differential-only profile must be usable: its snapshot is generated here as it would be on use.
    const problems: SnapshotProblem[] = [];
    try {
      generateSnapshot(res, w.registry, problems);
    } catch (e) {
      problems.push({ message: e instanceof Error ? e.message : String(e) });
    }
    for (const p of problems)
      if (p.location) run.add('error', 'value', p.message, p.location, 'conformance');
      else run.add('error', 'exception', `Error generating Snapshot: ${p.message}`, path, 'conformance');
  }
}

/** The profiles the resource claims, is given, or implies (vital signs), each walked over the whole resource. */
export function walkProfiles(
  w: WalkContext,
  res: JsonObject,
  rt: string,
  baseUrl: string,
  path: string,
  run: Run,
  frame: Frame,
  extraProfiles: string[],
): void {
  const metaProfiles = field(res.meta, 'profile');
  const claimed = Array.isArray(metaProfiles)
    ? metaProfiles.filter((p: unknown): p is string => typeof p === 'string')
    : [];
  const implied = rt === 'Observation' && w.vitalSigns ? vitalSignsProfiles(w, res) : [];
  const all = [...new Set([...claimed, ...extraProfiles, ...implied, ...globalProfiles(w, rt)])];
  for (const url of all) {
    const ps = w.structures.get(url);
    const idx = claimed.indexOf(url);
    const where = idx >= 0 ? `${path}.meta.profile[${idx}]` : path;
    if (!ps) {
      run.add(
        'warning',
        'structure',
        `Profile reference '${url}' has not been checked because it could not be found`,
        where,
        'structure',
      );
      continue;
    }
    if (ps.type !== rt || ps.kind !== 'resource') {
      run.add('error', 'structure', `Profile '${url}' is for ${ps.type}, not ${rt}`, where, 'structure');
      continue;
    }
    if (ps.url === baseUrl) continue;
    w.walkObject(res, ps.root, ps.root, rt, path, run, frame, true);
  }
}

/**
 * A StructureDefinition with a differential and a base but no snapshot. Only these fields are checked: snapshot
 * generation reads the rest as the walk left it, and what it cannot read is reported as a problem.
 */
function isDifferentialOnly(res: JsonObject): res is JsonObject & StructureDefinition {
  return (
    !res.snapshot &&
    Array.isArray(field(res.differential, 'element')) &&
    typeof res.baseDefinition === 'string'
  );
}

/**
 * The profiles a resource in an element (Bundle.entry.resource, contained, Parameters.parameter.resource) must
 * conform to: the element type's `profile` list, of which the resource must conform to at least one
 * (ElementDefinition.type.profile). One profile is walked with the resource; of several, the first the resource
 * conforms to is walked, and none is an error at the resource.
 */
export function resourceProfiles(
  w: WalkContext,
  value: unknown,
  type: TypeRef | undefined,
  path: string,
  container: JsonObject | undefined,
  run: Run,
): string[] {
  const profiles = type?.profiles.filter((p) => w.structures.get(p) !== undefined) ?? [];
  if (profiles.length <= 1) return profiles;
  for (const p of profiles) {
    const probe = probeRun(run);
    w.walkResource(value, path, container, probe, [p]);
    if (probe.errorCount === 0) return [p];
  }
  run.add(
    'error',
    'structure',
    `The resource does not conform to any of the profiles its element allows (${profiles.join(', ')})`,
    path,
    'structure',
  );
  return [];
}

/**
 * ImplementationGuide.global (R4 implementationguide.html#ImplementationGuide.global): "a profile that all
 * resources of the type must conform to" in the guide's context. Every ImplementationGuide the validator has loaded
 * (igPaths, or registered) applies its global profiles to every instance of their type.
 */
function globalProfiles(w: WalkContext, rt: string): string[] {
  const out: string[] = [];
  for (const ig of w.registry.canonicals('ImplementationGuide'))
    for (const g of arrayField(ig, 'global'))
      if (field(g, 'type') === rt && typeof field(g, 'profile') === 'string')
        out.push(field(g, 'profile') as string);
  return out;
}
