/**
 * Terminology operations on the loaded content (the official R4 CodeSystems, ValueSets and ConceptMaps, the
 * network's IG packages and those stored through the API, and the big code systems loaded with `hie-ledger
 * terminology load`, docs/terminology.md):
 *
 *   GET|POST [base]/CodeSystem/$lookup        system, code (or coding), version -> Parameters (name, display, designation, property)
 *   GET|POST [base]/ValueSet/$expand          url (or ValueSet/[id]/$expand, or a valueSet in the body), filter, offset, count
 *   GET|POST [base]/ValueSet/$validate-code   url, code + system | coding | codeableConcept, display -> result, message, display
 *   GET|POST [base]/CodeSystem/$validate-code url (the system), code | coding | codeableConcept, display -> result, message, display
 *   GET|POST [base]/ConceptMap/$translate     url, system, code (or coding), source, target, reverse -> result, match*
 */
import type { CodeSystemConceptProperty, Coding, Parameters, ParametersParameter } from 'fhir/r4.js';
import { fhirError } from '../outcome.js';
import { parseFhirJson, toPlainJson, type FhirResource } from '../fhir-json.js';
import { parseRequestJson } from '../interactions/router.js';
import type { OperationRegistration, TerminologyCapabilitiesBuilder } from '../interactions/fhir-registry.js';
import type { FhirContext, FhirRequest, FhirResponse, InteractionHandler } from '../interactions/types.js';
import type { DefinitionRegistry } from '../definitions/definition-registry.js';
import { arrayField, field, isJsonObject, stringField } from '../definitions/json.js';
import type { Expansion, Terminology } from '../validation/terminology.js';
import type { LoadedCodeSystems } from '../terminology-port.js';

/** What terminology operations need from the validator: its definitions and terminology. */
export interface TerminologySource {
  registry: DefinitionRegistry;
  walker: { terminology: Terminology };
}

/** Operation input as name -> values, from the query string (GET) and a Parameters body (POST). */
export interface OperationInput {
  strings: Map<string, string[]>;
  /** Complex values (valueCoding, valueCodeableConcept, resource) by parameter name: untrusted, narrowed where read. */
  values: Map<string, unknown[]>;
}

export function readOperationInput(request: FhirRequest): OperationInput {
  const strings = new Map<string, string[]>();
  const values = new Map<string, unknown[]>();
  const push = <T>(m: Map<string, T[]>, k: string, v: T): void => {
    const list = m.get(k);
    if (list) list.push(v);
    else m.set(k, [v]);
  };
  for (const [k, vs] of Object.entries(request.query)) for (const v of vs) push(strings, k, v);
  let body: unknown = request.resource ? toPlainJson(request.resource) : undefined;
  if (!body && request.body && request.body.trim()) {
    body = toPlainJson(parseRequestJson(request.body));
  }
  if (isJsonObject(body) && body.resourceType === 'Parameters') {
    for (const p of arrayField(body, 'parameter')) {
      const name = stringField(p, 'name');
      if (!isJsonObject(p) || name === undefined) continue;
      if (p.resource !== undefined) {
        push(values, name, p.resource);
        continue;
      }
      for (const k of Object.keys(p)) {
        if (!k.startsWith('value')) continue;
        const v = p[k];
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
          push(strings, name, String(v));
        else push(values, name, v);
      }
    }
  } else if (isJsonObject(body) && typeof body.resourceType === 'string') {
    push(values, '__resource', body);
  }
  return { strings, values };
}

const one = (input: OperationInput, name: string): string | undefined => input.strings.get(name)?.[0];

/**
 * The system and code of a `coding` parameter (absent when it is no object). Either, when present, must be a string:
 * another type is refused rather than read as absent, which would widen a match to every system.
 */
function codingParts(coding: unknown, operation: string): { system?: string; code?: string } {
  const parts: { system?: string; code?: string } = {};
  for (const name of ['system', 'code'] as const) {
    const value = field(coding, name);
    if (typeof value === 'string') parts[name] = value;
    else if (value !== undefined && value !== null)
      throw fhirError('parameter-invalid', `${operation}: coding.${name} must be a string`, {
        expression: `coding.${name}`,
      });
  }
  return parts;
}

function parameters(parameter: ParametersParameter[]): FhirResource {
  return { resourceType: 'Parameters', parameter } satisfies Parameters;
}

/** The stored instance the URL names (parsed, not yet narrowed), or undefined for a type-level request. */
async function storedResource(request: FhirRequest, context: FhirContext, type: string): Promise<unknown> {
  if (!request.id) return undefined;
  const version = await context.store.read(type, request.id);
  if (!version || version.deleted || !version.json || !context.access.canRead(version))
    throw fhirError('resource-not-found', `${type}/${request.id} is not known`);
  return toPlainJson(parseFhirJson(version.json));
}

// ------------------------------------------------------------------ CodeSystem/$lookup

export function lookupHandler(source: TerminologySource): InteractionHandler {
  return async (request) => {
    const input = readOperationInput(request);
    const coding = input.values.get('coding')?.[0];
    const given = codingParts(coding, '$lookup');
    const system = one(input, 'system') ?? given.system;
    const code = one(input, 'code') ?? given.code;
    if (!system || !code) throw fhirError('parameter-missing', '$lookup needs system and code (or coding)');
    const cs = source.registry.codeSystem(system);
    const index = source.walker.terminology.codeSystemIndex(system);
    const loaded = source.walker.terminology.loadedCodeSystems();
    if (!index && loaded?.system(system)) return loadedLookup(loaded, system, code);
    if (!cs) throw fhirError('terminology-not-found', `CodeSystem '${system}' is not known to this server`);
    const concept = index?.get(code);
    if (!concept) throw fhirError('terminology-not-found', `Code '${code}' is not in CodeSystem '${system}'`);
    const out: ParametersParameter[] = [{ name: 'name', valueString: cs.name ?? cs.title ?? system }];
    if (cs.version) out.push({ name: 'version', valueString: cs.version });
    if (concept.display) out.push({ name: 'display', valueString: concept.display });
    if (concept.definition) out.push({ name: 'definition', valueString: concept.definition });
    for (const d of concept.designation ?? []) {
      const part: ParametersParameter[] = [{ name: 'value', valueString: d.value }];
      if (d.language) part.unshift({ name: 'language', valueCode: d.language });
      if (d.use) part.push({ name: 'use', valueCoding: d.use });
      out.push({ name: 'designation', part });
    }
    if (concept.parent)
      out.push({
        name: 'property',
        part: [
          { name: 'code', valueCode: 'parent' },
          { name: 'value', valueCode: concept.parent },
        ],
      });
    for (const p of concept.property ?? []) {
      const value = propertyValue(p);
      out.push({
        name: 'property',
        part: [{ name: 'code', valueCode: p.code }, ...(value ? [value] : [])],
      });
    }
    return { status: 200, body: parameters(out) };
  };
}

/** $lookup of a code of a big code system loaded into the terminology store. */
function loadedLookup(loaded: LoadedCodeSystems, system: string, code: string): FhirResponse {
  const info = loaded.system(system)!;
  const concept = loaded.concept(system, code);
  if (!concept) throw fhirError('terminology-not-found', `Code '${code}' is not in CodeSystem '${system}'`);
  const out: ParametersParameter[] = [{ name: 'name', valueString: info.name }];
  if (info.version) out.push({ name: 'version', valueString: info.version });
  if (concept.display) out.push({ name: 'display', valueString: concept.display });
  for (const d of concept.designations) {
    const part: ParametersParameter[] = [{ name: 'value', valueString: d.value }];
    if (d.language) part.unshift({ name: 'language', valueCode: d.language });
    if (d.use) part.push({ name: 'use', valueCoding: { code: d.use } });
    out.push({ name: 'designation', part });
  }
  const property = (name: string, value: ParametersParameter): void => {
    out.push({ name: 'property', part: [{ name: 'code', valueCode: name }, value] });
  };
  property('inactive', { name: 'value', valueBoolean: !concept.active });
  for (const parent of concept.parents) property('parent', { name: 'value', valueCode: parent });
  for (const p of concept.properties) property(p.code, { name: 'value', valueString: p.value });
  return { status: 200, body: parameters(out) };
}

/** The value[x] names of CodeSystem.concept.property (R4); a property has exactly one. */
const PROPERTY_VALUE_KEYS = [
  'valueCode',
  'valueCoding',
  'valueString',
  'valueInteger',
  'valueBoolean',
  'valueDateTime',
  'valueDecimal',
] as const;

/** A concept property's value as a `value` part, under its own value[x] name. */
function propertyValue(property: CodeSystemConceptProperty): ParametersParameter | undefined {
  for (const key of PROPERTY_VALUE_KEYS)
    if (property[key] !== undefined) return { name: 'value', [key]: property[key] };
  return undefined;
}

// ------------------------------------------------------------------ ValueSet/$expand

export function expandHandler(source: TerminologySource): InteractionHandler {
  return async (request, context) => {
    const input = readOperationInput(request);
    const vs = await valueSetToExpand(source, request, context, input);
    const whole = wholeLoadedSystem(source, vs);
    if (whole) return { status: 200, body: loadedSystemExpansion(vs, whole, input) };
    const expansion = await expansionOf(source, vs);
    return { status: 200, body: expandedValueSet(vs, expansion, input) };
  };
}

/**
 * The value set named by the request: in the body, stored (ValueSet/[id]), or known by `url`. Not narrowed: one
 * from the body is checked only by the registry taking it (`expansionOf`).
 */
async function valueSetToExpand(
  source: TerminologySource,
  request: FhirRequest,
  context: FhirContext,
  input: OperationInput,
): Promise<unknown> {
  let vs: unknown = input.values.get('valueSet')?.[0] ?? (await storedResource(request, context, 'ValueSet'));
  const url = one(input, 'url');
  if (!vs && url) vs = source.registry.valueSet(url);
  if (!vs)
    throw url
      ? fhirError('terminology-not-found', `ValueSet '${url}' is not known to this server`)
      : fhirError('parameter-missing', '$expand needs url, a valueSet, or a ValueSet id');
  return vs;
}

/** Its complete expansion: from the registry, or in a scratch layer for a value set not in it (422 when incomplete). */
async function expansionOf(source: TerminologySource, vs: unknown): Promise<Expansion> {
  const terminology = source.walker.terminology;
  const url = stringField(vs, 'url');
  let expansion =
    url !== undefined && source.registry.valueSet(url) === vs ? terminology.expand(url) : undefined;
  if (!expansion) {
    // A value set not in the registry (in the body, or stored): expand it in a scratch registry layer.
    const { DefinitionRegistry } = await import('../definitions/definition-registry.js');
    const { Terminology } = await import('../validation/terminology.js');
    const scratch = new DefinitionRegistry(source.registry);
    // Only an object can be a ValueSet: anything else is refused by registerResource and so not expanded.
    const copy = { ...(isJsonObject(vs) ? vs : {}), url: url ?? 'urn:scratch:valueset' };
    scratch.registerResource(copy);
    const scratchTerminology = new Terminology(scratch);
    scratchTerminology.useLoadedCodeSystems(terminology.loadedCodeSystems());
    expansion = scratchTerminology.expand(copy.url);
  }
  if (!expansion || !expansion.complete) {
    throw new (await import('../outcome.js')).FhirError(422, [
      {
        severity: 'error',
        code: 'too-costly',
        diagnostics: `ValueSet '${String(field(vs, 'url') ?? '')}' cannot be expanded here (it draws on code systems not loaded on this server)`,
      },
    ]);
  }
  return expansion;
}

/**
 * A value set that is all of one big code system loaded into the terminology store (one include naming only the
 * system): expanded page by page from the store rather than as a whole.
 */
function wholeLoadedSystem(
  source: TerminologySource,
  vs: unknown,
): { loaded: LoadedCodeSystems; system: string } | undefined {
  const compose = field(vs, 'compose');
  const includes = arrayField(compose, 'include');
  if (includes.length !== 1 || arrayField(compose, 'exclude').length > 0) return undefined;
  const include = includes[0];
  const system = stringField(include, 'system');
  if (system === undefined || !isJsonObject(include)) return undefined;
  if (Object.keys(include).some((k) => k !== 'system' && k !== 'version')) return undefined;
  const loaded = source.walker.terminology.loadedCodeSystems();
  if (!loaded?.system(system) || source.walker.terminology.codeSystemIndex(system)) return undefined;
  return { loaded, system };
}

/** The page of a whole loaded code system that `filter`, `offset` and `count` ask for. */
function loadedSystemExpansion(
  vs: unknown,
  { loaded, system }: { loaded: LoadedCodeSystems; system: string },
  input: OperationInput,
): FhirResource {
  const { filter, offset, count } = pageParameters(input);
  const page = loaded.page(system, { text: filter, offset, count });
  return expansionResource(
    vs,
    page.total,
    page.concepts.map((c) => ({ system, ...c })),
    { filter, offset, count },
  );
}

/** `filter` (lower case), `offset` and `count` of an $expand (count 1000 when absent, at most 10,000). */
function pageParameters(input: OperationInput): { filter?: string; offset: number; count: number } {
  const filter = one(input, 'filter')?.toLowerCase() || undefined;
  const offset = Math.max(0, Number(one(input, 'offset') ?? 0) || 0);
  const countParam = one(input, 'count');
  const count = countParam === undefined ? 1000 : Math.max(0, Math.min(10_000, Number(countParam) || 0));
  return { filter, offset, count };
}

/** The expanded ValueSet: the page of matches that `filter`, `offset` and `count` ask for. */
function expandedValueSet(vs: unknown, expansion: Expansion, input: OperationInput): FhirResource {
  const { filter, offset, count } = pageParameters(input);
  const matches = filter
    ? expansion.concepts.filter(
        (c) => c.code.toLowerCase().includes(filter) || (c.display ?? '').toLowerCase().includes(filter),
      )
    : expansion.concepts;
  return expansionResource(vs, matches.length, matches.slice(offset, offset + count), {
    filter,
    offset,
    count,
  });
}

/** The ValueSet with one page of its expansion. */
function expansionResource(
  vs: unknown,
  total: number,
  page: { system: string; code: string; display?: string }[],
  { filter, offset, count }: { filter?: string; offset: number; count: number },
): FhirResource {
  const params: ParametersParameter[] = [
    { name: 'offset', valueInteger: offset },
    { name: 'count', valueInteger: count },
  ];
  if (filter) params.push({ name: 'filter', valueString: filter });
  // The value set's own elements as it has them (one from the body is echoed; an id only when it is a string).
  const [id, url, version, name] = [
    stringField(vs, 'id'),
    field(vs, 'url'),
    field(vs, 'version'),
    field(vs, 'name'),
  ];
  return {
    resourceType: 'ValueSet',
    ...(id ? { id } : {}),
    ...(url ? { url } : {}),
    ...(version ? { version } : {}),
    ...(name ? { name } : {}),
    status: field(vs, 'status') ?? 'active',
    expansion: {
      identifier: `urn:uuid:${crypto.randomUUID()}`,
      timestamp: new Date().toISOString(),
      total,
      offset,
      parameter: params,
      ...(page.length
        ? {
            contains: page.map((c) => ({
              system: c.system,
              code: c.code,
              ...(c.display ? { display: c.display } : {}),
            })),
          }
        : {}),
    },
  };
}

// ------------------------------------------------------------------ ValueSet/$validate-code

export function validateCodeHandler(source: TerminologySource): InteractionHandler {
  const inCodeSystem = codeSystemValidateCodeHandler(source);
  return async (request, context) => {
    if (request.resourceType === 'CodeSystem') return inCodeSystem(request, context);
    const input = readOperationInput(request);
    const vs = input.values.get('valueSet')?.[0] ?? (await storedResource(request, context, 'ValueSet'));
    const url = one(input, 'url') ?? stringField(vs, 'url');
    if (!url) throw fhirError('parameter-missing', '$validate-code needs url (or a ValueSet id or valueSet)');
    if (!source.registry.valueSet(url) && !vs)
      throw fhirError('terminology-not-found', `ValueSet '${url}' is not known to this server`);
    // Untrusted: each coding is narrowed below (one without a string code is skipped).
    let codings: unknown[] = [];
    const code = one(input, 'code');
    const codingValues = input.values.get('coding');
    const concepts = input.values.get('codeableConcept');
    if (code) codings = [{ system: one(input, 'system'), code, display: one(input, 'display') }];
    else if (codingValues) codings = codingValues;
    else if (concepts) codings = arrayField(concepts[0], 'coding');
    if (!codings.length)
      throw fhirError('parameter-missing', '$validate-code needs code, coding or codeableConcept');
    const terminology = source.walker.terminology;
    let unknown = false;
    for (const c of codings) {
      const codingCode = stringField(c, 'code');
      if (codingCode === undefined) continue;
      const system = stringField(c, 'system');
      const m = terminology.member(url, system, codingCode);
      if (m === 'yes') {
        const display =
          system !== undefined ? terminology.codeInSystem(system, codingCode).display : undefined;
        const out: ParametersParameter[] = [{ name: 'result', valueBoolean: true }];
        if (display) out.push({ name: 'display', valueString: display });
        const given = stringField(c, 'display');
        if (display && given !== undefined && given.trim().toLowerCase() !== display.toLowerCase())
          out.push({
            name: 'message',
            valueString: `The display '${given}' is not the display of ${system}#${codingCode} ('${display}')`,
          });
        return { status: 200, body: parameters(out) };
      }
      if (m === 'unknown') unknown = true;
    }
    const message = unknown
      ? `The code cannot be checked against ValueSet '${url}' here (it draws on code systems not loaded on this server)`
      : `The code is not in ValueSet '${url}'`;
    return {
      status: 200,
      body: parameters([
        { name: 'result', valueBoolean: false },
        { name: 'message', valueString: message },
      ]),
    };
  };
}

// ------------------------------------------------------------------ CodeSystem/$validate-code

/** The codings a $validate-code names: code (+ system, display), coding, or codeableConcept (untrusted). */
function codingsOf(input: OperationInput, system: string | undefined): unknown[] {
  const code = one(input, 'code');
  if (code) return [{ system, code, display: one(input, 'display') }];
  const codings = input.values.get('coding');
  if (codings) return codings;
  const concepts = input.values.get('codeableConcept');
  return concepts ? arrayField(concepts[0], 'coding') : [];
}

/** Is a code in a code system (loaded CodeSystem resources and the loaded big code systems), its display right? */
export function codeSystemValidateCodeHandler(source: TerminologySource): InteractionHandler {
  return async (request, context) => {
    const input = readOperationInput(request);
    const stored =
      input.values.get('codeSystem')?.[0] ?? (await storedResource(request, context, 'CodeSystem'));
    const url = one(input, 'url') ?? one(input, 'system') ?? stringField(stored, 'url');
    if (!url)
      throw fhirError('parameter-missing', 'CodeSystem/$validate-code needs url (or a CodeSystem id)');
    const terminology = source.walker.terminology;
    if (!terminology.knowsSystem(url))
      throw fhirError('terminology-not-found', `CodeSystem '${url}' is not known to this server`);
    const codings = codingsOf(input, url);
    if (!codings.length)
      throw fhirError('parameter-missing', '$validate-code needs code, coding or codeableConcept');
    const version = one(input, 'version');
    let message = `The code is not in CodeSystem '${url}'`;
    for (const c of codings) {
      const code = stringField(c, 'code');
      const system: string = stringField(c, 'system') ?? url;
      if (code === undefined || system !== url) continue;
      const { result, display, concept } = terminology.codeInSystem(url, code, version);
      if (result === 'unknown') {
        message = `The codes of CodeSystem '${url}' are not known here (not loaded, or another version)`;
        continue;
      }
      if (result === 'no') {
        message = `Unknown code '${code.slice(0, 100)}' in CodeSystem '${url}'`;
        continue;
      }
      const out: ParametersParameter[] = [{ name: 'result', valueBoolean: true }];
      if (display) out.push({ name: 'display', valueString: display });
      const given = stringField(c, 'display');
      const names = [display, ...(concept?.designation ?? []).map((d) => d.value)]
        .filter((n): n is string => typeof n === 'string')
        .map((n) => n.trim().toLowerCase());
      if (display && given !== undefined && !names.includes(given.trim().toLowerCase()))
        out.push({
          name: 'message',
          valueString: `The display '${given}' is not the display of ${url}#${code} ('${display}')`,
        });
      return { status: 200, body: parameters(out) };
    }
    return {
      status: 200,
      body: parameters([
        { name: 'result', valueBoolean: false },
        { name: 'message', valueString: message },
      ]),
    };
  };
}

// ------------------------------------------------------------------ ConceptMap/$translate

export function translateHandler(source: TerminologySource): InteractionHandler {
  return async (request, context) => {
    const input = readOperationInput(request);
    const coding =
      input.values.get('coding')?.[0] ?? arrayField(input.values.get('codeableConcept')?.[0], 'coding')[0];
    const given = codingParts(coding, '$translate');
    const system = one(input, 'system') ?? given.system;
    const code = one(input, 'code') ?? given.code;
    if (!code) throw fhirError('parameter-missing', '$translate needs code (with system) or coding');
    const reverse = one(input, 'reverse') === 'true';
    const maps = await conceptMapsFor(source, request, context, input, reverse);
    const matches = translationMatches(maps, {
      system,
      code,
      reverse,
      targetSystem: one(input, 'targetsystem'),
    });
    const ok = matches.some((m) => !NO_MATCH.has(m.part?.[0]?.valueCode ?? ''));
    return {
      status: 200,
      body: parameters([
        { name: 'result', valueBoolean: ok },
        {
          name: 'message',
          valueString: ok ? `${matches.length} match(es)` : `No mapping found for ${system ?? ''}#${code}`,
        },
        ...matches,
      ]),
    };
  };
}

/** The equivalences that say a code does not map. */
const NO_MATCH = new Set(['unmatched', 'disjoint']);

/** The concept maps to translate with: stored, in the body, known by `url`, or every one from `source` to `target`. */
async function conceptMapsFor(
  source: TerminologySource,
  request: FhirRequest,
  context: FhirContext,
  input: OperationInput,
  reverse: boolean,
): Promise<unknown[]> {
  const sourceVs = one(input, 'source');
  const targetVs = one(input, 'target');
  // Untrusted when from the body: translationMatches narrows each.
  let maps: unknown[];
  const stored = await storedResource(request, context, 'ConceptMap');
  const url = one(input, 'url');
  if (stored) maps = [stored];
  else if (input.values.get('conceptMap')) maps = input.values.get('conceptMap')!;
  else if (url) {
    const cm = source.registry.conceptMap(url);
    if (!cm) throw fhirError('terminology-not-found', `ConceptMap '${url}' is not known to this server`);
    maps = [cm];
  } else {
    maps = source.registry.all('ConceptMap').filter((cm) => {
      const s = cm.sourceUri ?? cm.sourceCanonical;
      const t = cm.targetUri ?? cm.targetCanonical;
      return (!sourceVs || (reverse ? t : s) === sourceVs) && (!targetVs || (reverse ? s : t) === targetVs);
    });
  }
  return maps;
}

/** The `match` parameters of a code in the maps' groups (target to source when `reverse`). */
function translationMatches(
  maps: unknown[],
  {
    system,
    code,
    reverse,
    targetSystem,
  }: { system?: string; code: string; reverse: boolean; targetSystem?: string },
): ParametersParameter[] {
  const matches: ParametersParameter[] = [];
  for (const cm of maps) {
    const mapUrl = stringField(cm, 'url');
    for (const group of arrayField(cm, 'group')) {
      // The systems are compared as given (one that is not a string matches no system asked for).
      const from = field(group, reverse ? 'target' : 'source');
      const to = field(group, reverse ? 'source' : 'target');
      if (system && from && from !== system) continue;
      if (targetSystem && to && to !== targetSystem) continue;
      for (const el of arrayField(group, 'element')) {
        for (const t of arrayField(el, 'target')) {
          const hit = reverse ? field(t, 'code') === code : field(el, 'code') === code;
          if (!hit) continue;
          const mapped = reverse
            ? codingOf(stringField(group, 'source'), stringField(el, 'code'), stringField(el, 'display'))
            : codingOf(stringField(group, 'target'), stringField(t, 'code'), stringField(t, 'display'));
          matches.push({
            name: 'match',
            part: [
              { name: 'equivalence', valueCode: stringField(t, 'equivalence') ?? 'equivalent' },
              ...(mapped.code ? [{ name: 'concept', valueCoding: mapped }] : []),
              ...(mapUrl ? [{ name: 'source', valueUri: mapUrl }] : []),
            ],
          });
        }
      }
    }
  }
  return matches;
}

/** A Coding with only the elements given. */
function codingOf(system?: string, code?: string, display?: string): Coding {
  return {
    ...(system !== undefined ? { system } : {}),
    ...(code !== undefined ? { code } : {}),
    ...(display !== undefined ? { display } : {}),
  };
}

/**
 * What the terminology operations serve, for `metadata?mode=terminology` (TerminologyCapabilities, R4): the loaded
 * CodeSystems that have their concepts here ($lookup, $validate-code, expansions draw on them), and a section per
 * registered operation stating what its handler above does: $expand pages with offset/count, filters by a
 * case-insensitive substring of code or display, answers flat lists and refuses incomplete expansions (422);
 * $validate-code does not translate; $translate uses every loaded map from source to target when none is named.
 */
export function terminologyCapabilities(source: TerminologySource): TerminologyCapabilitiesBuilder {
  return (_baseUrl, serves) => {
    const versions = new Map<string, Set<string>>();
    for (const cs of source.registry.all('CodeSystem')) {
      if (typeof cs.url !== 'string' || cs.content === 'not-present') continue;
      const known = versions.get(cs.url) ?? new Set<string>();
      if (typeof cs.version === 'string') known.add(cs.version);
      versions.set(cs.url, known);
    }
    // The big code systems loaded from their owners' files (their hierarchy answers :below/:above and is-a filters).
    const hierarchical = new Set<string>();
    for (const loaded of source.walker.terminology.loadedCodeSystems()?.systems() ?? []) {
      if (versions.has(loaded.url)) continue;
      versions.set(loaded.url, new Set(loaded.version ? [loaded.version] : []));
      if (loaded.hierarchical) hierarchical.add(loaded.url);
    }
    const codeSystem = [...versions.keys()].sort().map((uri) => {
      const known = [...versions.get(uri)!].sort();
      return {
        uri,
        // The registry answers a URL without a version with the one loaded last under it.
        ...(known.length > 0 ? { version: known.map((code) => ({ code })) } : {}),
        subsumption: hierarchical.has(uri),
      };
    });
    return {
      ...(codeSystem.length > 0 ? { codeSystem } : {}),
      ...(serves('expand')
        ? {
            expansion: {
              hierarchical: false,
              paging: true,
              incomplete: false,
              parameter: ['url', 'valueSet', 'filter', 'offset', 'count'].map((name) => ({ name })),
              textFilter:
                'filter: a case-insensitive substring of the code or the display; no other text matching',
            },
          }
        : {}),
      ...(serves('validate-code') ? { validateCode: { translations: false } } : {}),
      ...(serves('translate') ? { translation: { needsMap: false } } : {}),
    };
  };
}

/** The four terminology operations, ready for `registry.registerOperation`. */
export function terminologyOperations(source: TerminologySource): OperationRegistration[] {
  const base = 'http://hl7.org/fhir/OperationDefinition/';
  return [
    {
      name: 'lookup',
      definition: `${base}CodeSystem-lookup`,
      levels: ['type'],
      resourceTypes: ['CodeSystem'],
      documentation: 'Details of a code in a loaded CodeSystem.',
      handler: lookupHandler(source),
    },
    {
      name: 'expand',
      definition: `${base}ValueSet-expand`,
      levels: ['type', 'instance'],
      resourceTypes: ['ValueSet'],
      documentation: 'Expands a loaded or given ValueSet (filter, offset, count).',
      handler: expandHandler(source),
    },
    {
      name: 'validate-code',
      definition: `${base}ValueSet-validate-code`,
      levels: ['type', 'instance'],
      resourceTypes: ['ValueSet', 'CodeSystem'],
      documentation:
        'Is a code in a ValueSet (ValueSet/$validate-code) or in a CodeSystem (CodeSystem/$validate-code), and is its display right.',
      handler: validateCodeHandler(source),
    },
    {
      name: 'translate',
      definition: `${base}ConceptMap-translate`,
      levels: ['type', 'instance'],
      resourceTypes: ['ConceptMap'],
      documentation: 'Translates a code with the loaded ConceptMaps.',
      handler: translateHandler(source),
    },
  ];
}
