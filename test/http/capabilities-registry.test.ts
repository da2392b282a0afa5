/**
 * The CapabilityStatement states exactly what is served (issue 16): every registered operation with a canonical,
 * every search parameter, _include and _revinclude the search applies (each checked by running it through the
 * search parser, which refuses what it cannot apply), and the conditional/versioning flags checked against what the
 * app answers over HTTP.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSearch } from '../../src/fhir/search/parse.js';
import { searchParametersOf, STORE_COLUMN_PARAMS } from '../../src/fhir/search/definitions.js';
import { OWN_OPERATION_DEFINITION_BASE } from '../../src/fhir/interactions/capabilities.js';
import { WHOLE_RESOURCE_PARAMS } from '../../src/fhir/interactions/search.js';
import { FHIR_JSON, json, send, startTestApp, type TestApp } from './helpers.js';

let app: TestApp;
let statement: any;
const q = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, [v]]));

beforeAll(async () => {
  app = await startTestApp();
  statement = json((await send(app, { url: '/fhir/metadata' }, 200)).body);
});
afterAll(async () => {
  await app?.stop();
});

describe('the CapabilityStatement against the registry', () => {
  it('rest.operation lists every registered operation with its definition canonical', () => {
    const registered = app.registry.operations();
    const listed = statement.rest[0].operation as { name: string; definition: string }[];
    expect(listed.map((o) => o.name).sort()).toEqual(registered.map((o) => o.name).sort());
    for (const operation of registered) {
      const entry = listed.find((o) => o.name === operation.name)!;
      if (operation.definitionResource) {
        // This server's own OperationDefinition, contained in the statement and referenced by its local id (dom-3).
        expect(entry.definition).toBe(`#${operation.definitionResource.id}`);
        const contained = (statement.contained as { id: string; resourceType: string }[]).find(
          (r) => `#${r.id}` === entry.definition,
        );
        expect(contained?.resourceType).toBe('OperationDefinition');
        continue;
      }
      expect(entry.definition).toBe(
        operation.definition ?? `${OWN_OPERATION_DEFINITION_BASE}${operation.name}`,
      );
      expect(entry.definition).toMatch(/^https?:\/\/[^/]+\/.+OperationDefinition\/./);
    }
    expect(listed.map((o) => o.name)).toEqual(expect.arrayContaining(['everything', 'validate', 'verify']));
  });

  it('rest.compartment names the compartment searches served', async () => {
    expect(statement.rest[0].compartment).toEqual(['http://hl7.org/fhir/CompartmentDefinition/patient']);
    expect((await app.fastify.inject({ url: '/fhir/Patient/x/Observation' })).statusCode).toBe(200);
    expect((await app.fastify.inject({ url: '/fhir/Encounter/x/Observation' })).statusCode).toBe(404);
  });

  it('searchParam per type: exactly the parameters the search applies, each documented', () => {
    for (const resource of statement.rest[0].resource) {
      const type: string = resource.type;
      const declared = [...app.registry.searchParams('Resource'), ...app.registry.searchParams(type)];
      expect(resource.searchParam.map((p: any) => p.name)).toEqual(declared.map((p) => p.name));
      const applied = [
        ...[...(searchParametersOf(type)?.values() ?? [])]
          .filter((d) => d.evaluate || STORE_COLUMN_PARAMS.has(d.code))
          .map((d) => d.code),
        ...WHOLE_RESOURCE_PARAMS.map((p) => p.name),
      ];
      expect(resource.searchParam.map((p: any) => p.name).sort(), type).toEqual([...new Set(applied)].sort());
      for (const param of resource.searchParam) {
        expect(param.documentation, `${type}.${param.name}`).toMatch(/\S/);
        if (param.name !== '_list')
          expect(param.definition, `${type}.${param.name}`).toMatch(
            /^http:\/\/hl7\.org\/fhir\/SearchParameter\//,
          );
        if (STORE_COLUMN_PARAMS.has(param.name)) continue;
        if (WHOLE_RESOURCE_PARAMS.some((p) => p.name === param.name)) {
          const compiled = parseSearch(q({ [param.name]: 'x' }), { resourceType: type });
          expect(compiled.filters, `${type}.${param.name}`).toHaveLength(1);
          continue;
        }
        // The default handling refuses what it cannot apply: an advertised parameter must parse.
        const compiled = parseSearch(q({ [`${param.name}:missing`]: 'true' }), { resourceType: type });
        expect(compiled.filters, `${type}.${param.name}`).toHaveLength(1);
      }
    }
  });

  it('rest.searchParam: the parameters a system search applies without _type', () => {
    const params = statement.rest[0].searchParam as { name: string; documentation: string }[];
    expect(params.map((p) => p.name)).toEqual(expect.arrayContaining(['_id', '_lastUpdated']));
    for (const param of params) {
      expect(param.documentation).toMatch(/\S/);
      const value = STORE_COLUMN_PARAMS.has(param.name)
        ? { [param.name]: param.name === '_id' ? 'x' : 'gt2020' }
        : WHOLE_RESOURCE_PARAMS.some((p) => p.name === param.name)
          ? { [param.name]: 'x' }
          : { [`${param.name}:missing`]: 'true' };
      expect(parseSearch(q(value), {}).filters, param.name).toHaveLength(1);
    }
  });

  it('searchInclude and searchRevInclude: every value listed is followed', () => {
    const patient = statement.rest[0].resource.find((r: any) => r.type === 'Patient');
    expect(patient.searchInclude).toContain('Patient:organization');
    expect(patient.searchRevInclude).toEqual(
      expect.arrayContaining(['Observation:subject', 'Encounter:patient']),
    );
    for (const resource of statement.rest[0].resource) {
      for (const value of resource.searchInclude ?? []) {
        const compiled = parseSearch(q({ _include: value }), { resourceType: resource.type });
        expect(compiled.include, `${resource.type} _include=${value}`).toHaveLength(1);
      }
      for (const value of resource.searchRevInclude ?? []) {
        const compiled = parseSearch(q({ _revinclude: value }), { resourceType: resource.type });
        expect(compiled.revinclude, `${resource.type} _revinclude=${value}`).toHaveLength(1);
      }
    }
  });

  it('conditional, versioning and history flags say what the app answers over HTTP', async () => {
    const patient = statement.rest[0].resource.find((r: any) => r.type === 'Patient');
    const identifier = { system: 'urn:test:capabilities', value: 'flags' };
    const body = { resourceType: 'Patient', identifier: [identifier] };
    const criteria = `identifier=${identifier.system}|${identifier.value}`;
    const inject = (
      method: 'PUT' | 'DELETE' | 'POST' | 'GET',
      url: string,
      headers = {},
      payload?: unknown,
    ) =>
      app.fastify.inject({
        method,
        url: `/fhir/${url}`,
        headers: { ...FHIR_JSON, ...headers },
        ...(payload ? { payload: JSON.stringify(payload) } : {}),
      });

    const created = await inject('POST', 'Patient', { 'if-none-exist': criteria }, body);
    expect(created.statusCode).toBe(201);
    const again = await inject('POST', 'Patient', { 'if-none-exist': criteria }, body);
    expect(patient.conditionalCreate).toBe(again.statusCode === 200);
    const id = json(created.body).id;

    const conditionalPut = await inject('PUT', `Patient?${criteria}`, {}, { ...body, gender: 'other' });
    expect(patient.conditionalUpdate, conditionalPut.body).toBe(conditionalPut.statusCode === 200);
    const conditionalDelete = await inject('DELETE', `Patient?${criteria}`);
    expect(patient.conditionalDelete === 'single', conditionalDelete.body).toBe(
      conditionalDelete.statusCode < 300,
    );

    const stale = await inject('PUT', `Patient/${id}`, { 'if-match': 'W/"999"' }, { ...body, id });
    expect(patient.versioning === 'versioned-update').toBe(stale.statusCode === 412);
    const vread = await inject('GET', `Patient/${id}/_history/1`);
    expect(patient.readHistory).toBe(vread.statusCode === 200);
    const newId = await inject(
      'PUT',
      'Patient/capabilities-new',
      {},
      { resourceType: 'Patient', id: 'capabilities-new' },
    );
    expect(patient.updateCreate).toBe(newId.statusCode === 201);
    expect(patient.conditionalRead).toBe('full-support');
    const notModified = await inject('GET', `Patient/${id}`, { 'if-none-match': 'W/"999"' });
    expect(notModified.statusCode).not.toBe(500);
  });
});
