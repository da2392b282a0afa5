/**
 * Rules on conformance resources beyond their StructureDefinitions.
 *
 * ValueSet parameters (FHIR tools IG, extension `valueset-parameter`): a compose filter value given as a
 * `cqf-expression` must be FHIRPath (`text/fhirpath`), must parse, and may only use declared parameters (`%name`).
 * Locations follow the reference validator: the filter's `_value` extensions are reported on the filter.
 */
import fhirpath from 'fhirpath';
import { arrayField, field, type JsonObject } from '../definitions/json.js';
import type { Run } from './walk-context.js';
import type { CompiledStructure } from './structure.js';

const PARAMETER_EXT = 'http://hl7.org/fhir/tools/StructureDefinition/valueset-parameter';
const EXPRESSION_EXT = 'http://hl7.org/fhir/StructureDefinition/cqf-expression';
const STANDARD_VARS = new Set([
  'resource',
  'rootResource',
  'context',
  'ucum',
  'sct',
  'loinc',
  'factory',
  'terminologies',
  'server',
]);

export function checkValueSetParameters(vs: JsonObject, path: string, run: Run): void {
  const declared = new Map<string, number>();
  arrayField(vs, 'extension').forEach((e, i) => {
    if (field(e, 'url') !== PARAMETER_EXT) return;
    const name = field(
      arrayField(e, 'extension').find((x) => field(x, 'url') === 'name'),
      'valueCode',
    );
    if (typeof name === 'string') declared.set(name, i);
  });
  const used = new Set<string>();
  for (const part of ['include', 'exclude'] as const) {
    arrayField(vs.compose, part).forEach((inc, i) => {
      arrayField(inc, 'filter').forEach((f, j) => {
        arrayField(field(f, '_value'), 'extension').forEach((ext, k) => {
          const valueExpression = field(ext, 'valueExpression');
          if (field(ext, 'url') !== EXPRESSION_EXT || !valueExpression) return;
          const where = `${path}.compose.${part}[${i}].filter[${j}].extension[${k}].value.ofType(Expression)`;
          checkParameterExpression(valueExpression, where, declared, used, run);
        });
      });
    });
  }
  for (const [name, i] of declared)
    if (!used.has(name))
      run.add(
        'warning',
        'informational',
        `The value set parameter '${name}' is not used`,
        `${path}.extension[${i}]`,
        'conformance',
      );
}

/** One filter value given as an expression: FHIRPath that parses and uses only declared parameters. */
function checkParameterExpression(
  valueExpression: unknown,
  where: string,
  declared: Map<string, number>,
  used: Set<string>,
  run: Run,
): void {
  const language = field(valueExpression, 'language');
  const expression = field(valueExpression, 'expression');
  if (language !== 'text/fhirpath') {
    run.add(
      'error',
      'invalid',
      `A ValueSet expression language must be 'text/fhirpath' not '${String(language)}'`,
      where,
      'conformance',
    );
    return;
  }
  if (typeof expression !== 'string') return;
  try {
    fhirpath.parse(expression);
  } catch (e) {
    run.add(
      'error',
      'exception',
      `The value of the expression '${expression}' is not a valid FHIRPath: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`,
      where,
      'conformance',
    );
    return;
  }
  for (const m of expression.matchAll(/%([A-Za-z][\w-]*)/g)) {
    const name = m[1];
    if (STANDARD_VARS.has(name) || name.startsWith('vs-') || name.startsWith('ext-')) continue;
    used.add(name);
    if (!declared.has(name))
      run.add(
        'error',
        'exception',
        `The filter parameter expression '${expression}' refers to the unknown parameter '${name}'`,
        where,
        'conformance',
      );
  }
}

/**
 * OperationDefinition `inputProfile`/`outputProfile`: a Parameters profile whose parameter slices must agree with
 * the declared parameters of that direction (same names, same cardinality). Reported on the parameter, at
 * `OperationDefinition.inputProfile.parameter[i]` as the reference validator does.
 */
export function checkOperationDefinitionProfiles(
  op: JsonObject,
  path: string,
  run: Run,
  structureOf: (url: string) => CompiledStructure | undefined,
): void {
  const params = arrayField(op, 'parameter');
  for (const [prop, use] of [
    ['inputProfile', 'in'],
    ['outputProfile', 'out'],
  ] as const) {
    const url = op[prop];
    if (typeof url !== 'string') continue;
    const profile = structureOf(url);
    if (!profile) continue;
    const slices = parameterSlices(profile);
    if (!slices) continue;
    params.forEach((p, i) => {
      const name = field(p, 'name');
      if (field(p, 'use') !== use || typeof name !== 'string') return;
      const min = field(p, 'min');
      const max = field(p, 'max');
      const where = `${path}.${prop}.parameter[${i}]`;
      const slice = slices.get(name);
      if (!slice) {
        run.add(
          'warning',
          'unknown',
          `The '${use}' profile does not have a parameter '${name}' but it is in the parameters list in the operation definition`,
          where,
          'conformance',
        );
        return;
      }
      const declaredMax = max === '*' ? Infinity : Number(max);
      if (typeof min === 'number' && min !== slice.min)
        run.add(
          'error',
          'unknown',
          `The parameter '${name}' has a value for 'min' of '${slice.min}' in the '${use}' profile that is different to '${min}' which is the value in the parameter definition in the operation definition`,
          where,
          'conformance',
        );
      if (Number.isFinite(declaredMax) || max === '*') {
        if (declaredMax !== slice.max)
          run.add(
            'error',
            'unknown',
            `The parameter '${name}' has a value for 'max' of '${slice.max === Infinity ? '*' : slice.max}' in the '${use}' profile that is different to '${max}' which is the value in the parameter definition in the operation definition`,
            where,
            'conformance',
          );
      }
    });
  }
}

/** The parameter slices of a Parameters profile by fixed name, with their cardinality. */
function parameterSlices(profile: CompiledStructure): Map<string, { min: number; max: number }> | undefined {
  const parameterEl = profile.root.children.find((c) => c.name === 'parameter');
  if (!parameterEl) return undefined;
  const slices = new Map<string, { min: number; max: number }>();
  for (const s of parameterEl.slices) {
    const nameEl = s.children.find((c) => c.name === 'name');
    const name =
      typeof nameEl?.fixed === 'string'
        ? nameEl.fixed
        : typeof nameEl?.pattern === 'string'
          ? nameEl.pattern
          : undefined;
    if (name) slices.set(name, { min: s.min, max: s.max });
  }
  return slices;
}

/**
 * MeasureReport against its Measure (when the Measure is known here): a cohort measure has no measureScore
 * (http://hl7.org/fhir/R4/measurereport.html, scoring); groups, populations and stratifiers are those of the
 * Measure (checkReportGroups). Cross-resource rules: at `run.crossResourceSeverity`.
 */
export function checkMeasureReport(
  report: JsonObject,
  path: string,
  run: Run,
  measureOf: (url: string) => JsonObject | undefined,
): void {
  if (typeof report.measure !== 'string') return;
  const measure = measureOf(report.measure);
  if (!measure) return;
  const scoring = field(
    arrayField(measure.scoring, 'coding').find(
      (c) => field(c, 'system') === 'http://terminology.hl7.org/CodeSystem/measure-scoring',
    ),
    'code',
  );
  checkReportGroups(report, measure, path, run);
  if (scoring !== 'cohort') return;
  arrayField(report, 'group').forEach((g, i) => {
    if (g && field(g, 'measureScore') !== undefined)
      run.add(
        run.crossResourceSeverity,
        'business-rule',
        `No measureScore when the scoring of the message is 'cohort'`,
        `${path}.group[${i}].measureScore`,
        'conformance',
      );
  });
}

/**
 * SearchParameter: every `Type.path` term of the expression starts with one of the parameter's base types (or
 * Resource/DomainResource).
 */
export function checkSearchParameter(sp: JsonObject, path: string, run: Run): void {
  const expression = sp.expression;
  if (typeof expression !== 'string' || !Array.isArray(sp.base)) return;
  const bases = new Set(sp.base.filter((b: unknown): b is string => typeof b === 'string'));
  if (bases.has('Resource') || bases.has('DomainResource')) return;
  for (const term of splitTopLevelUnion(expression)) {
    const m = /^\(*\s*([A-Z][A-Za-z]+)(\.|\s|$)/.exec(term.trim());
    if (!m) continue;
    const type = m[1];
    if (bases.has(type) || type === 'Resource' || type === 'DomainResource') continue;
    run.add(
      'error',
      'invalid',
      `Error in search expression '${expression.slice(0, 200)}': The name '${type}' is not valid for any of the possible types: [${[...bases].join(', ')}]`,
      `${path}.expression`,
      'conformance',
    );
    return;
  }
}

function splitTopLevelUnion(expression: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quote = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === "'" && expression[i - 1] !== '\\') quote = !quote;
    else if (quote) continue;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      out.push(expression.slice(start, i));
      start = i + 1;
    }
  }
  out.push(expression.slice(start));
  return out;
}

/** The `coding` system|code keys of a CodeableConcept, and its text. */
function conceptKeys(cc: unknown): string[] {
  const keys = arrayField(cc, 'coding')
    .map((c) => `${String(field(c, 'system') ?? '')}|${String(field(c, 'code') ?? '')}`)
    .filter((k) => k !== '|');
  const text = field(cc, 'text');
  if (typeof text === 'string') keys.push(`text:${text}`);
  return keys;
}

function sameConcept(a: unknown, b: unknown): boolean {
  const keys = new Set(conceptKeys(a));
  return conceptKeys(b).some((k) => keys.has(k));
}

/**
 * A MeasureReport reports the Measure's groups (MeasureReport.group.code "the meaning of the population group as
 * defined in the measure definition"), their populations and their stratifiers: a report group, population or
 * stratifier whose code the Measure's matching group does not define is reported. Groups are matched by code; a
 * Measure with one uncoded group matches report groups positionally.
 */
function checkReportGroups(report: JsonObject, measure: JsonObject, path: string, run: Run): void {
  const measureGroups = arrayField(measure, 'group');
  arrayField(report, 'group').forEach((g, i) => {
    const where = `${path}.group[${i}]`;
    const code = field(g, 'code');
    let mg: unknown;
    if (code !== undefined) {
      mg = measureGroups.find((m) => sameConcept(field(m, 'code'), code));
      if (!mg) {
        run.add(
          run.crossResourceSeverity,
          'business-rule',
          `The group code does not match any group of the Measure ${String(report.measure).slice(0, 100)}`,
          `${where}.code`,
          'conformance',
        );
        return;
      }
    } else if (measureGroups.length === 1 && field(measureGroups[0], 'code') === undefined)
      mg = measureGroups[0];
    else if (measureGroups.length > 1) {
      run.add(
        run.crossResourceSeverity,
        'business-rule',
        'The Measure has several groups: a report group needs the code of the group it reports',
        where,
        'conformance',
      );
      return;
    }
    if (!mg) return;
    for (const [part, label] of [
      ['population', 'population'],
      ['stratifier', 'stratifier'],
    ] as const) {
      const defined = arrayField(mg, part);
      arrayField(g, part).forEach((x, j) => {
        // A stratifier's code is a list in the report (MeasureReport.group.stratifier.code 0..*).
        const raw = field(x, 'code');
        const codes = Array.isArray(raw) ? raw : raw === undefined ? [] : [raw];
        if (!codes.length || defined.some((d) => codes.some((c) => sameConcept(field(d, 'code'), c)))) return;
        run.add(
          run.crossResourceSeverity,
          'business-rule',
          `The ${label} code does not match any ${label} of the Measure's group`,
          `${where}.${part}[${j}].code`,
          'conformance',
        );
      });
    }
  });
}

/**
 * SearchParameter.derivedFrom (searchparameter.html): "the details in the search parameter must be consistent with
 * the definition from which it is defined": the same type (cross-resource severity) and bases the original has
 * (a warning, as the reference validator reports it). Checked when the original is loaded.
 */
export function checkSearchParameterDerivation(
  sp: JsonObject,
  path: string,
  run: Run,
  searchParameterOf: (url: string) => JsonObject | undefined,
): void {
  if (typeof sp.derivedFrom !== 'string') return;
  const original = searchParameterOf(sp.derivedFrom);
  if (!original) return;
  if (typeof sp.type === 'string' && typeof original.type === 'string' && sp.type !== original.type)
    run.add(
      run.crossResourceSeverity,
      'business-rule',
      `The type '${sp.type}' is different to the type '${original.type}' in the derivedFrom SearchParameter`,
      `${path}.type`,
      'conformance',
    );
  const originalBases = arrayField(original, 'base').filter((b): b is string => typeof b === 'string');
  if (originalBases.includes('Resource') || originalBases.includes('DomainResource')) return;
  arrayField(sp, 'base').forEach((b, i) => {
    if (typeof b === 'string' && !originalBases.includes(b))
      run.add(
        'warning',
        'business-rule',
        `The resource type ${b} is not listed as a base in the SearchParameter this is derived from (${sp.derivedFrom as string})`,
        `${path}.base[${i}]`,
        'conformance',
      );
  });
}

/**
 * A composite SearchParameter's components (searchparameter.html#SearchParameter.component; search.html#composite):
 * each `definition` is the SearchParameter that describes that part, so it resolves (to a core parameter or a
 * loaded one; one not known here is not checked, an information issue) and applies to every resource type the
 * composite is on (its `base` has them, or Resource/DomainResource): else the part is defined for other resources
 * than the ones it is extracted from (cross-resource severity).
 */
export function checkCompositeComponents(
  sp: JsonObject,
  path: string,
  run: Run,
  searchParameterOf: (url: string) => JsonObject | undefined,
): void {
  if (sp.type !== 'composite') return;
  const bases = arrayField(sp, 'base').filter((b): b is string => typeof b === 'string');
  arrayField(sp, 'component').forEach((component, i) => {
    const definition = field(component, 'definition');
    if (typeof definition !== 'string') return;
    const where = `${path}.component[${i}].definition`;
    const part = searchParameterOf(definition);
    if (!part) {
      run.add(
        'information',
        'not-found',
        `The SearchParameter ${definition.slice(0, 100)} of this component is not known here, so the component is not checked against it`,
        where,
        'conformance',
      );
      return;
    }
    const partBases = arrayField(part, 'base').filter((b): b is string => typeof b === 'string');
    if (partBases.includes('Resource') || partBases.includes('DomainResource')) return;
    const outside = bases.filter((b) => b !== 'Resource' && b !== 'DomainResource' && !partBases.includes(b));
    if (outside.length)
      run.add(
        run.crossResourceSeverity,
        'business-rule',
        `The component's SearchParameter ${definition.slice(0, 100)} does not apply to ${outside.join(', ')} (its base: ${partBases.join(', ')})`,
        where,
        'conformance',
      );
  });
}

/**
 * CapabilityStatement.rest.resource.searchParam (capabilitystatement.html): a parameter with a `definition` is
 * that SearchParameter: its type is the definition's (cross-resource severity), and the definition applies to the
 * resource type (a warning). Checked when the definition is loaded.
 */
export function checkCapabilityStatementSearchParams(
  cs: JsonObject,
  path: string,
  run: Run,
  searchParameterOf: (url: string) => JsonObject | undefined,
): void {
  arrayField(cs, 'rest').forEach((rest, r) => {
    arrayField(rest, 'resource').forEach((resource, k) => {
      const resourceType = field(resource, 'type');
      arrayField(resource, 'searchParam').forEach((param, j) => {
        const definition = field(param, 'definition');
        if (typeof definition !== 'string') return;
        const sp = searchParameterOf(definition);
        if (!sp) return;
        const where = `${path}.rest[${r}].resource[${k}].searchParam[${j}]`;
        const type = field(param, 'type');
        if (typeof type === 'string' && typeof sp.type === 'string' && type !== sp.type)
          run.add(
            run.crossResourceSeverity,
            'business-rule',
            `Type mismatch: the search parameter type is '${type}' but its definition ${definition.slice(0, 100)} says '${sp.type}'`,
            `${where}.type`,
            'conformance',
          );
        const bases = arrayField(sp, 'base').filter((b): b is string => typeof b === 'string');
        if (
          typeof resourceType === 'string' &&
          bases.length &&
          !bases.some((b) => b === resourceType || b === 'Resource' || b === 'DomainResource')
        )
          run.add(
            'warning',
            'business-rule',
            `The search parameter definition ${definition.slice(0, 100)} does not apply to ${resourceType} (base: ${bases.join(', ')})`,
            where,
            'conformance',
          );
      });
    });
  });
}
