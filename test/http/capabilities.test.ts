import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FhirRegistry } from '../../src/fhir/interactions/fhir-registry.js';
import { registerCoreInteractions } from '../../src/fhir/interactions/core.js';
import { buildCapabilityStatement } from '../../src/fhir/interactions/capabilities.js';
import { everythingOperation } from '../../src/fhir/operations/everything.js';
import {
  NETWORK_EVERYTHING_URL,
  NETWORK_QUERY_PARAMETERS,
  networkEverythingDefinition,
  networkEverythingOperation,
} from '../../src/exchange/network-everything.js';
import { send, FHIR_JSON, json, startTestApp, type TestApp } from './helpers.js';
import { expectErrorCode } from '../support/error-codes.js';
import type { LooseResource } from '../search/helpers.js';

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

describe('GET /metadata', () => {
  it('is a valid R4 CapabilityStatement listing every resource type the validator knows', async () => {
    const res = await send(app, { url: '/fhir/metadata' }, 200);
    const statement = json(res.body);
    expect(statement.resourceType).toBe('CapabilityStatement');
    expect(statement.fhirVersion).toBe('4.0.1');
    expect(statement.format).toContain('application/fhir+json');
    expect(statement.format).toContain('application/fhir+xml');
    expect(statement.format).toContain('xml');
    expect(statement.patchFormat).toEqual([
      'application/json-patch+json',
      'application/fhir+json',
      'application/xml-patch+xml',
    ]);
    const types = statement.rest[0].resource.map((r: any) => r.type);
    expect(types).toEqual([...app.validator.resourceTypes!].sort());
    expect(types).toContain('Patient');
    expect(types.length).toBeGreaterThan(140);
    const patient = statement.rest[0].resource.find((r: any) => r.type === 'Patient');
    const codes = patient.interaction.map((i: any) => i.code);
    for (const code of [
      'read',
      'vread',
      'update',
      'patch',
      'delete',
      'history-instance',
      'history-type',
      'create',
    ])
      expect(codes).toContain(code);
    expect(statement.rest[0].interaction.map((i: any) => i.code)).toContain('history-system');
    expect(statement.implementation.url).toBe('http://localhost:80/fhir');
    // The statement itself is valid R4 (warnings, e.g. dom-6's advice to carry a narrative, aside).
    const issues = app.validator
      .validate(statement)
      .issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
    expect(issues).toEqual([]);
  });

  it('is generated from the registry: what is not registered is not claimed', () => {
    const registry = registerCoreInteractions(new FhirRegistry(), {
      resourceTypes: ['Patient', 'Observation'],
    });
    const before = buildCapabilityStatement(
      { registry, resourceTypes: ['Patient', 'Observation'] },
      'http://x/fhir',
    ) as LooseResource;
    const patient = before.rest[0].resource.find((r: any) => r.type === 'Patient');
    expect(patient.interaction.map((i: any) => i.code)).not.toContain('search-type');
    expect(patient.conditionalCreate).toBe(false);
    expect(patient.operation).toBeUndefined();
    expect(before.rest[0].interaction.map((i: any) => i.code)).not.toContain('transaction');

    registry.registerInteraction('search-type', async () => ({ status: 200 }));
    registry.registerInteraction('transaction', async () => ({ status: 200 }));
    registry.declareSearchParams('Patient', [{ name: 'family', type: 'string' }]);
    registry.registerOperation({
      name: 'validate',
      levels: ['type', 'instance'],
      handler: async () => ({ status: 200 }),
    });
    registry.registerOperation({
      name: 'verify',
      levels: ['system'],
      definition: 'http://example.org/verify',
      handler: async () => ({ status: 200 }),
    });
    const after = buildCapabilityStatement(
      { registry, resourceTypes: ['Patient', 'Observation'] },
      'http://x/fhir',
    ) as LooseResource;
    const patientAfter = after.rest[0].resource.find((r: any) => r.type === 'Patient');
    expect(patientAfter.interaction.map((i: any) => i.code)).toContain('search-type');
    expect(patientAfter.conditionalCreate).toBe(true);
    expect(patientAfter.searchParam).toEqual([{ name: 'family', type: 'string' }]);
    expect(patientAfter.operation.map((o: any) => o.name)).toEqual(['validate']);
    expect(after.rest[0].interaction.map((i: any) => i.code)).toContain('transaction');
    // rest.operation lists every operation (any level); one registered without a canonical gets this service's own
    expect(after.rest[0].operation).toEqual([
      { name: 'validate', definition: 'https://hie-ledger.dev/fhir/OperationDefinition/validate' },
      { name: 'verify', definition: 'http://example.org/verify' },
    ]);
  });

  it("contains this server's own OperationDefinitions and points at them; the specification's stay canonical", () => {
    const registry = registerCoreInteractions(new FhirRegistry(), {
      resourceTypes: app.validator.resourceTypes!,
    });
    registry.registerOperation(everythingOperation());
    registry.registerOperation(networkEverythingOperation(async () => ({ status: 200 })));
    const statement = buildCapabilityStatement(
      { registry, resourceTypes: app.validator.resourceTypes! },
      'http://x/fhir',
    ) as LooseResource;
    const patient = statement.rest[0].resource.find((r: any) => r.type === 'Patient');
    expect(patient.operation).toEqual([
      {
        name: 'everything',
        definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything',
        documentation: expect.any(String),
      },
      {
        name: 'network-everything',
        definition: '#Patient-network-everything',
        documentation: expect.any(String),
      },
    ]);
    expect(statement.contained).toEqual([networkEverythingDefinition()]);
    expect(statement.contained[0]).toMatchObject({
      resourceType: 'OperationDefinition',
      url: NETWORK_EVERYTHING_URL,
      code: 'network-everything',
      resource: ['Patient'],
      instance: true,
      affectsState: false,
    });
    expect(
      statement.contained[0].parameter.filter((p: any) => p.use === 'in').map((p: any) => p.name),
    ).toEqual([...NETWORK_QUERY_PARAMETERS]);
    // Valid R4, the contained definition included (dom-3: it is referenced from the statement).
    const issues = app.validator
      .validate(statement)
      .issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
    expect(issues).toEqual([]);
  });

  it('routes registered operations and answers unknown ones with 404', async () => {
    app.registry.registerOperation({
      name: 'echo',
      levels: ['instance'],
      resourceTypes: ['Patient'],
      methods: ['POST'],
      handler: async (request) => ({
        status: 200,
        body: { resourceType: 'Parameters', parameter: [{ name: 'id', valueString: request.id }] },
      }),
    });
    const statement = json((await app.fastify.inject({ url: '/fhir/metadata' })).body);
    const patient = statement.rest[0].resource.find((r: any) => r.type === 'Patient');
    expect(patient.operation.map((o: any) => o.name)).toContain('echo');
    const observation = statement.rest[0].resource.find((r: any) => r.type === 'Observation');
    expect((observation.operation ?? []).map((o: any) => o.name)).not.toContain('echo');
    const ok = await send(
      app,
      { method: 'POST', url: '/fhir/Patient/abc/$echo', body: '{"resourceType":"Parameters"}' },
      200,
    );
    expect(json(ok.body).parameter[0].valueString).toBe('abc');
    const get = await send(app, { url: '/fhir/Patient/abc/$echo' }, 405);
    expect(get.headers.allow).toBe('POST');
    expect(
      (
        await app.fastify.inject({
          method: 'POST',
          url: '/fhir/Observation/abc/$echo',
          headers: FHIR_JSON,
          payload: '{}',
        })
      ).statusCode,
    ).toBe(404);
    expect(
      (await app.fastify.inject({ method: 'POST', url: '/fhir/$nothing', headers: FHIR_JSON, payload: '{}' }))
        .statusCode,
    ).toBe(404);
  });

  it('answers search and bundle endpoints that nothing registered with 404/405, never 500', async () => {
    const registry = registerCoreInteractions(new FhirRegistry(), {
      resourceTypes: app.validator.resourceTypes!,
    });
    const { createHttpServer } = await import('../../src/fhir/http/server.js');
    const { registerFhirRoutes } = await import('../../src/fhir/http/fhir-routes.js');
    const fastify = createHttpServer({ logLevel: 'silent', bodyLimit: 1 << 20 });
    await registerFhirRoutes(fastify, {
      prefix: '/fhir',
      registry,
      context: { store: app.store, validator: app.validator },
    });
    try {
      const search = await fastify.inject({ url: '/fhir/Patient?name=x' });
      expect(search.statusCode).toBe(405);
      expect(search.headers.allow).toBe('POST');
      const bundle = await fastify.inject({
        method: 'POST',
        url: '/fhir',
        headers: FHIR_JSON,
        payload: '{"resourceType":"Bundle","type":"transaction"}',
      });
      expect(bundle.statusCode).toBe(404);
      const conditional = await fastify.inject({
        method: 'POST',
        url: '/fhir/Patient',
        headers: { ...FHIR_JSON, 'if-none-exist': 'identifier=x|1' },
        payload: '{"resourceType":"Patient"}',
      });
      expectErrorCode(conditional, 'conditional-unavailable');
    } finally {
      await fastify.close();
    }
  });
});
