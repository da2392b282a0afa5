/**
 * Terminology operations on the loaded content (the official R4 CodeSystems, ValueSets and ConceptMaps, the
 * network's IG packages and those stored through the API):
 *
 *   GET|POST [base]/CodeSystem/$lookup        system, code (or coding), version -> Parameters (name, display, designation, property)
 *   GET|POST [base]/ValueSet/$expand          url (or ValueSet/[id]/$expand, or a valueSet in the body), filter, offset, count
 *   GET|POST [base]/ValueSet/$validate-code   url, code + system | coding | codeableConcept, display -> result, message, display
 *   GET|POST [base]/ConceptMap/$translate     url, system, code (or coding), source, target, reverse -> result, match*
 */
import { fhirError } from '../outcome.js';
import { parseFhirJson, toPlainJson, type FhirResource } from '../fhir-json.js';
import { parseRequestJson } from '../interactions/router.js';
import type { OperationRegistration } from '../interactions/fhir-registry.js';
import type { FhirContext, FhirRequest, InteractionHandler } from '../interactions/types.js';
import type { DefinitionRegistry } from '../definitions/definition-registry.js';
import type { Expansion, Terminology } from '../validation/terminology.js';

/** Untyped JSON, as before registry.ts stopped exporting `Json = any` (this file is not typed yet). */
type Json = any;

/** What terminology operations need from the validator: its definitions and terminology. */
export interface TerminologySource {
  registry: DefinitionRegistry;
  walker: { terminology: Terminology };
}

/** Operation input as name -> values, from the query string (GET) and a Parameters body (POST). */
export interface OperationInput {
  strings: Map<string, string[]>;
  /** Complex values (valueCoding, valueCodeableConcept, resource) by parameter name. */
  values: Map<string, Json[]>;
}

export function readOperationInput(request: FhirRequest): OperationInput {
  const strings = new Map<string, string[]>();
  const values = new Map<string, Json[]>();
  const push = <T>(m: Map<string, T[]>, k: string, v: T): void => {
    const list = m.get(k);
    if (list) list.push(v);
    else m.set(k, [v]);
  };
  for (const [k, vs] of Object.entries(request.query)) for (const v of vs) push(strings, k, v);
  let body: Json = request.resource ? toPlainJson(request.resource) : undefined;
  if (!body && request.body && request.body.trim()) {
    body = toPlainJson(parseRequestJson(request.body));
  }
  if (body && typeof body === 'object' && body.resourceType === 'Parameters') {
    for (const p of Array.isArray(body.parameter) ? body.parameter : []) {
      if (!p || typeof p.name !== 'string') continue;
      if (p.resource !== undefined) {
        push(values, p.name, p.resource);
        continue;
      }
      for (const k of Object.keys(p)) {
        if (!k.startsWith('value')) continue;
        const v = p[k];
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
          push(strings, p.name, String(v));
        else push(values, p.name, v);
      }
    }
  } else if (body && typeof body === 'object' && typeof body.resourceType === 'string') {
    push(values, '__resource', body);
  }
  return { strings, values };
}

const one = (input: OperationInput, name: string): string | undefined => input.strings.get(name)?.[0];

function parameters(parameter: Json[]): FhirResource {
  return { resourceType: 'Parameters', parameter } as FhirResource;
}

async function storedResource(
  request: FhirRequest,
  context: FhirContext,
  type: string,
): Promise<Json | undefined> {
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
    const system = one(input, 'system') ?? coding?.system;
    const code = one(input, 'code') ?? coding?.code;
    if (!system || !code) throw fhirError('parameter-missing', '$lookup needs system and code (or coding)');
    const cs = source.registry.codeSystem(system);
    if (!cs) throw fhirError('terminology-not-found', `CodeSystem '${system}' is not known to this server`);
    const concept = source.walker.terminology.codeSystemIndex(system)?.get(code);
    if (!concept) throw fhirError('terminology-not-found', `Code '${code}' is not in CodeSystem '${system}'`);
    const out: Json[] = [{ name: 'name', valueString: cs.name ?? cs.title ?? system }];
    if (cs.version) out.push({ name: 'version', valueString: cs.version });
    if (concept.display) out.push({ name: 'display', valueString: concept.display });
    if (concept.definition) out.push({ name: 'definition', valueString: concept.definition });
    for (const d of concept.designation ?? []) {
      const part: Json[] = [{ name: 'value', valueString: d.value }];
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
      const value = Object.entries(p).find(([k]) => k.startsWith('value'));
      out.push({
        name: 'property',
        part: [
          { name: 'code', valueCode: p.code },
          ...(value ? [{ name: 'value', [value[0]]: value[1] }] : []),
        ],
      });
    }
    return { status: 200, body: parameters(out) };
  };
}

// ------------------------------------------------------------------ ValueSet/$expand

export function expandHandler(source: TerminologySource): InteractionHandler {
  return async (request, context) => {
    const input = readOperationInput(request);
    const vs = await valueSetToExpand(source, request, context, input);
    const expansion = await expansionOf(source, vs);
    return { status: 200, body: expandedValueSet(vs, expansion, input) };
  };
}

/** The value set named by the request: in the body, stored (ValueSet/[id]), or known by `url`. */
async function valueSetToExpand(
  source: TerminologySource,
  request: FhirRequest,
  context: FhirContext,
  input: OperationInput,
): Promise<Json> {
  let vs: Json | undefined =
    input.values.get('valueSet')?.[0] ?? (await storedResource(request, context, 'ValueSet'));
  const url = one(input, 'url');
  if (!vs && url) vs = source.registry.valueSet(url);
  if (!vs)
    throw url
      ? fhirError('terminology-not-found', `ValueSet '${url}' is not known to this server`)
      : fhirError('parameter-missing', '$expand needs url, a valueSet, or a ValueSet id');
  return vs;
}

/** Its complete expansion: from the registry, or in a scratch layer for a value set not in it (422 when incomplete). */
async function expansionOf(source: TerminologySource, vs: Json): Promise<Expansion> {
  const terminology = source.walker.terminology;
  let expansion =
    typeof vs.url === 'string' && source.registry.valueSet(vs.url) === vs
      ? terminology.expand(vs.url)
      : undefined;
  if (!expansion) {
    // A value set not in the registry (in the body, or stored): expand it in a scratch registry layer.
    const { DefinitionRegistry } = await import('../definitions/definition-registry.js');
    const { Terminology } = await import('../validation/terminology.js');
    const scratch = new DefinitionRegistry(source.registry);
    const copy = { ...vs, url: typeof vs.url === 'string' ? vs.url : 'urn:scratch:valueset' };
    scratch.registerResource(copy);
    expansion = new Terminology(scratch).expand(copy.url);
  }
  if (!expansion || !expansion.complete) {
    throw new (await import('../outcome.js')).FhirError(422, [
      {
        severity: 'error',
        code: 'too-costly',
        diagnostics: `ValueSet '${vs.url ?? ''}' cannot be expanded here (it draws on code systems not loaded on this server)`,
      },
    ]);
  }
  return expansion;
}

/** The expanded ValueSet: the page of matches that `filter`, `offset` and `count` ask for. */
function expandedValueSet(vs: Json, expansion: Expansion, input: OperationInput): FhirResource {
  const filter = one(input, 'filter')?.toLowerCase();
  const offset = Math.max(0, Number(one(input, 'offset') ?? 0) || 0);
  const countParam = one(input, 'count');
  const count = countParam === undefined ? 1000 : Math.max(0, Math.min(10_000, Number(countParam) || 0));
  const matches = filter
    ? expansion.concepts.filter(
        (c) => c.code.toLowerCase().includes(filter) || (c.display ?? '').toLowerCase().includes(filter),
      )
    : expansion.concepts;
  const page = matches.slice(offset, offset + count);
  const params: Json[] = [
    { name: 'offset', valueInteger: offset },
    { name: 'count', valueInteger: count },
  ];
  if (filter) params.push({ name: 'filter', valueString: filter });
  const body = {
    resourceType: 'ValueSet',
    ...(vs.id ? { id: vs.id } : {}),
    ...(vs.url ? { url: vs.url } : {}),
    ...(vs.version ? { version: vs.version } : {}),
    ...(vs.name ? { name: vs.name } : {}),
    status: vs.status ?? 'active',
    expansion: {
      identifier: `urn:uuid:${crypto.randomUUID()}`,
      timestamp: new Date().toISOString(),
      total: matches.length,
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
  return body as FhirResource;
}

// ------------------------------------------------------------------ ValueSet/$validate-code

export function validateCodeHandler(source: TerminologySource): InteractionHandler {
  return async (request, context) => {
    const input = readOperationInput(request);
    const vs: Json | undefined =
      input.values.get('valueSet')?.[0] ?? (await storedResource(request, context, 'ValueSet'));
    const url = one(input, 'url') ?? vs?.url;
    if (!url) throw fhirError('parameter-missing', '$validate-code needs url (or a ValueSet id or valueSet)');
    if (!source.registry.valueSet(url) && !vs)
      throw fhirError('terminology-not-found', `ValueSet '${url}' is not known to this server`);
    let codings: Json[] = [];
    const code = one(input, 'code');
    if (code) codings = [{ system: one(input, 'system'), code, display: one(input, 'display') }];
    else if (input.values.get('coding')) codings = input.values.get('coding')!;
    else if (input.values.get('codeableConcept'))
      codings = input.values.get('codeableConcept')![0]?.coding ?? [];
    if (!codings.length)
      throw fhirError('parameter-missing', '$validate-code needs code, coding or codeableConcept');
    const terminology = source.walker.terminology;
    let unknown = false;
    for (const c of codings) {
      if (!c || typeof c.code !== 'string') continue;
      const m = terminology.member(url, typeof c.system === 'string' ? c.system : undefined, c.code);
      if (m === 'yes') {
        const display =
          typeof c.system === 'string' ? terminology.codeInSystem(c.system, c.code).display : undefined;
        const out: Json[] = [{ name: 'result', valueBoolean: true }];
        if (display) out.push({ name: 'display', valueString: display });
        if (
          display &&
          typeof c.display === 'string' &&
          c.display.trim().toLowerCase() !== display.toLowerCase()
        )
          out.push({
            name: 'message',
            valueString: `The display '${c.display}' is not the display of ${c.system}#${c.code} ('${display}')`,
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

// ------------------------------------------------------------------ ConceptMap/$translate

export function translateHandler(source: TerminologySource): InteractionHandler {
  return async (request, context) => {
    const input = readOperationInput(request);
    const coding = input.values.get('coding')?.[0] ?? input.values.get('codeableConcept')?.[0]?.coding?.[0];
    const system = one(input, 'system') ?? coding?.system;
    const code = one(input, 'code') ?? coding?.code;
    if (!code) throw fhirError('parameter-missing', '$translate needs code (with system) or coding');
    const reverse = one(input, 'reverse') === 'true';
    const maps = await conceptMapsFor(source, request, context, input, reverse);
    const matches = translationMatches(maps, {
      system,
      code,
      reverse,
      targetSystem: one(input, 'targetsystem'),
    });
    const ok = matches.some((m) => !['unmatched', 'disjoint'].includes(m.part[0].valueCode));
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

/** The concept maps to translate with: stored, in the body, known by `url`, or every one from `source` to `target`. */
async function conceptMapsFor(
  source: TerminologySource,
  request: FhirRequest,
  context: FhirContext,
  input: OperationInput,
  reverse: boolean,
): Promise<Json[]> {
  const sourceVs = one(input, 'source');
  const targetVs = one(input, 'target');
  let maps: Json[];
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
  maps: Json[],
  {
    system,
    code,
    reverse,
    targetSystem,
  }: { system?: string; code: string; reverse: boolean; targetSystem?: string },
): Json[] {
  const matches: Json[] = [];
  for (const cm of maps) {
    for (const group of cm.group ?? []) {
      const from = reverse ? group.target : group.source;
      const to = reverse ? group.source : group.target;
      if (system && from && from !== system) continue;
      if (targetSystem && to && to !== targetSystem) continue;
      for (const el of group.element ?? []) {
        for (const t of el.target ?? []) {
          const hit = reverse ? t.code === code : el.code === code;
          if (!hit) continue;
          const mapped = reverse
            ? { system: group.source, code: el.code, display: el.display }
            : { system: group.target, code: t.code, display: t.display };
          matches.push({
            name: 'match',
            part: [
              { name: 'equivalence', valueCode: t.equivalence ?? 'equivalent' },
              ...(mapped.code
                ? [
                    {
                      name: 'concept',
                      valueCoding: Object.fromEntries(
                        Object.entries(mapped).filter(([, v]) => v !== undefined),
                      ),
                    },
                  ]
                : []),
              ...(cm.url ? [{ name: 'source', valueUri: cm.url }] : []),
            ],
          });
        }
      }
    }
  }
  return matches;
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
      resourceTypes: ['ValueSet'],
      documentation: 'Is a code in a ValueSet.',
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
