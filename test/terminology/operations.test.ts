/**
 * The terminology operations and the validator over the big code systems loaded with `hie-ledger terminology load`
 * (excerpts in the owners' formats, made by the tests), through the app: the data directory's terminology store is
 * opened at start. Before the load: the codes are not checked, and say so where a required binding needs them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { createFhirValidatorSync, type FhirValidator } from '../../src/fhir/validation/index.js';
import { runTerminologyLoad } from '../../src/commands/terminology.js';
import { bootApp, send, FHIR_JSON, type BootedApp } from '../support/app-harness.js';
import {
  DIABETES_PROFILE,
  DIABETES_VALUE_SET,
  DIABETES_VALUE_SET_URL,
  diabetesCondition,
  SNOMED,
} from '../support/diabetes-profile.js';
import { SCT, writeExcerpts, type ExcerptPaths } from './excerpts.js';

const LOINC = 'http://loinc.org';

const atCode = (issues: { severity: string; expression?: string[]; diagnostics: string }[]) =>
  issues
    .filter((i) => i.expression?.[0]?.startsWith('Condition.code'))
    .map((i) => [i.severity, i.diagnostics]);

let booted: BootedApp;
let validator: FhirValidator;
let releases: string;
let files: ExcerptPaths;

const inject = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown) =>
  booted.app.fastify.inject({
    method,
    url,
    headers: FHIR_JSON,
    ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
  });
const bodyOf = (res: { body: string }) => JSON.parse(res.body);
const param = (out: { parameter: { name: string }[] }, name: string) =>
  out.parameter.find((p) => p.name === name) as Record<string, any> | undefined;

const observation = (code: string, display?: string) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: LOINC, code, ...(display ? { display } : {}) }] },
  subject: { reference: 'Patient/p1' },
  valueQuantity: { value: 5.4, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
});

async function validate(
  resource: unknown,
): Promise<{ severity: string; expression?: string[]; diagnostics: string }[]> {
  const res = await inject(
    'POST',
    `/fhir/${(resource as { resourceType: string }).resourceType}/$validate`,
    resource,
  );
  expect(res.statusCode).toBe(200);
  return bodyOf(res).issue;
}

beforeAll(async () => {
  releases = mkdtempSync(path.join(tmpdir(), 'hie-terms-ops-'));
  files = writeExcerpts(releases);
  validator = createFhirValidatorSync();
  validator.registerResource(structuredClone(DIABETES_VALUE_SET));
  validator.registerResource(structuredClone(DIABETES_PROFILE));
  booted = await bootApp({ logLevel: 'warn', auth: 'dev-open' }, { validator }, 'hie-terms-app-');
});

afterAll(async () => {
  await booted?.stop();
  rmSync(releases, { recursive: true, force: true });
});

async function loadAll(): Promise<void> {
  await booted.restart({ validator }, async () => {
    for (const system of ['loinc', 'snomed', 'cvx'] as const) {
      const out = new PassThrough();
      const err = new PassThrough();
      const code = await runTerminologyLoad({
        dataDir: booted.dataDir,
        system,
        path: files[system],
        out,
        err,
      });
      expect(code).toBe(0);
    }
  });
}

describe('before any code system is loaded', () => {
  it('a required binding on SNOMED CT says once that it is not checked', async () => {
    expect(atCode(await validate(diabetesCondition(SCT.disease)))).toEqual([
      [
        'information',
        `CodeSystem '${SNOMED}' is not loaded on this server: the code is not checked against '${DIABETES_VALUE_SET_URL}'`,
      ],
    ]);
  });

  it('a write says it too (Prefer: return=OperationOutcome), and is stored', async () => {
    const res = await booted.app.fastify.inject({
      method: 'POST',
      url: '/fhir/Condition',
      headers: { ...FHIR_JSON, prefer: 'return=OperationOutcome' },
      payload: JSON.stringify(diabetesCondition(SCT.disease)),
    });
    expect(res.statusCode).toBe(201);
    // Not left for the searches below.
    const id = /Condition\/([^/]+)\//.exec(String(res.headers.location))![1];
    expect((await inject('DELETE', `/fhir/Condition/${id}`)).statusCode).toBeLessThan(300);
    expect(atCode(bodyOf(res).issue)).toEqual([
      [
        'information',
        `CodeSystem '${SNOMED}' is not loaded on this server: the code is not checked against '${DIABETES_VALUE_SET_URL}'`,
      ],
    ]);
  });

  it('does not check LOINC codes, and refuses operations and searches that need them', async () => {
    const issues = await validate(observation('9999-9'));
    expect(issues.filter((i) => i.severity === 'error')).toEqual([]);
    const lookup = await inject('GET', `/fhir/CodeSystem/$lookup?system=${LOINC}&code=29463-7`);
    expect(lookup.statusCode).toBe(404);
    const below = await inject(
      'GET',
      `/fhir/Condition?code:below=${encodeURIComponent(`${SNOMED}|${SCT.diabetes}`)}`,
    );
    expect(below.statusCode).toBe(400);
    expect(below.body).toContain('not loaded');
  });
});

describe('with LOINC, SNOMED CT and CVX loaded', () => {
  beforeAll(async () => {
    await loadAll();
    // Known to the server by its URL as the network's packages are (above); stored too, to be expanded by its id.
    expect((await inject('PUT', '/fhir/ValueSet/diabetes', DIABETES_VALUE_SET)).statusCode).toBeLessThan(300);
  });

  it('the validator: an unknown code is an error, a wrong display a warning, a synonym is right', async () => {
    const unknown = await validate(observation('9999-9'));
    expect(
      unknown.filter((i) => i.severity === 'error').map((i) => [i.expression?.[0], i.diagnostics]),
    ).toEqual([['Observation.code.coding[0].code', `Unknown code '9999-9' in the CodeSystem '${LOINC}'`]]);
    const wrong = await validate(observation('2345-7', 'Glucose in urine'));
    expect(wrong.filter((i) => i.severity === 'error')).toEqual([]);
    expect(wrong.filter((i) => i.severity === 'warning').map((i) => i.expression?.[0])).toContain(
      'Observation.code.coding[0].display',
    );
    const right = await validate(observation('2345-7', 'Glucose [Mass/volume] in Serum or Plasma'));
    expect(right.filter((i) => i.expression?.[0]?.startsWith('Observation.code'))).toEqual([]);
    const shortName = await validate(observation('2345-7', 'Glucose SerPl-mCnc'));
    expect(shortName.filter((i) => i.expression?.[0]?.startsWith('Observation.code'))).toEqual([]);
  });

  it('a required binding on the loaded SNOMED CT is checked: in the value set, not in it, unknown code', async () => {
    expect(atCode(await validate(diabetesCondition(SCT.type2)))).toEqual([]);
    expect(atCode(await validate(diabetesCondition(SCT.disease)))).toEqual([
      ['error', `None of the codings provided are in the value set '${DIABETES_VALUE_SET_URL}'`],
    ]);
    // 22298006 |Myocardial infarction| is a well-formed concept id (check digit, partition) the excerpt lacks.
    const unknown = atCode(await validate(diabetesCondition('22298006')));
    expect(unknown).toContainEqual(['error', `Unknown code '22298006' in the CodeSystem '${SNOMED}'`]);
  });

  it('CodeSystem/$lookup, GET and POST: display, designations, properties, parents', async () => {
    const got = bodyOf(await inject('GET', `/fhir/CodeSystem/$lookup?system=${LOINC}&code=29463-7`));
    expect(param(got, 'name')?.valueString).toBe('LOINC');
    expect(param(got, 'display')?.valueString).toBe('Body weight');
    expect(JSON.stringify(got)).toContain('"valueString":"Weight"');
    expect(JSON.stringify(got)).toContain('COMPONENT');
    const posted = await inject('POST', '/fhir/CodeSystem/$lookup', {
      resourceType: 'Parameters',
      parameter: [{ name: 'coding', valueCoding: { system: SNOMED, code: SCT.type2 } }],
    });
    expect(posted.statusCode).toBe(200);
    const out = bodyOf(posted);
    expect(param(out, 'display')?.valueString).toBe('Type 2 diabetes mellitus');
    expect(
      out.parameter
        .filter((p: { name: string }) => p.name === 'property')
        .map((p: any) => p.part[0].valueCode),
    ).toEqual(['inactive', 'parent']);
    const missing = await inject('GET', `/fhir/CodeSystem/$lookup?system=${LOINC}&code=9999-9`);
    expect(missing.statusCode).toBe(404);
    expect(bodyOf(missing).resourceType).toBe('OperationOutcome');
  });

  it('CodeSystem/$validate-code: known code, display checked against the names, unknown code', async () => {
    const ok = bodyOf(
      await inject('GET', `/fhir/CodeSystem/$validate-code?url=${SNOMED}&code=${SCT.type2}&display=NIDDM`),
    );
    expect(param(ok, 'result')?.valueBoolean).toBe(true);
    expect(param(ok, 'message')).toBeUndefined();
    const wrong = bodyOf(
      await inject('GET', `/fhir/CodeSystem/$validate-code?url=${SNOMED}&code=${SCT.type2}&display=Asthma`),
    );
    expect(param(wrong, 'result')?.valueBoolean).toBe(true);
    expect(param(wrong, 'message')?.valueString).toContain('Asthma');
    const unknown = await inject('POST', '/fhir/CodeSystem/$validate-code', {
      resourceType: 'Parameters',
      parameter: [
        { name: 'url', valueUri: 'http://hl7.org/fhir/sid/cvx' },
        { name: 'code', valueCode: '999' },
      ],
    });
    expect(param(bodyOf(unknown), 'result')?.valueBoolean).toBe(false);
    const notKnown = await inject(
      'GET',
      '/fhir/CodeSystem/$validate-code?url=http://example.org/none&code=1',
    );
    expect(notKnown.statusCode).toBe(404);
  });

  it('ValueSet/$validate-code and $expand (filter, count, offset) on a value set over a loaded hierarchy', async () => {
    const inVs = bodyOf(
      await inject(
        'GET',
        `/fhir/ValueSet/$validate-code?url=${DIABETES_VALUE_SET_URL}&system=${SNOMED}&code=${SCT.type1}`,
      ),
    );
    expect(param(inVs, 'result')?.valueBoolean).toBe(true);
    const outVs = bodyOf(
      await inject(
        'GET',
        `/fhir/ValueSet/$validate-code?url=${DIABETES_VALUE_SET_URL}&system=${SNOMED}&code=${SCT.disease}`,
      ),
    );
    expect(param(outVs, 'result')?.valueBoolean).toBe(false);
    const expanded = bodyOf(await inject('GET', `/fhir/ValueSet/$expand?url=${DIABETES_VALUE_SET_URL}`));
    expect(expanded.expansion.total).toBe(3);
    expect(expanded.expansion.contains.map((c: { code: string }) => c.code).sort()).toEqual(
      [SCT.diabetes, SCT.type1, SCT.type2].sort(),
    );
    const filtered = bodyOf(await inject('GET', `/fhir/ValueSet/diabetes/$expand?filter=type%202`));
    expect(filtered.expansion.contains.map((c: { code: string }) => c.code)).toEqual([SCT.type2]);
    const paged = bodyOf(
      await inject('POST', '/fhir/ValueSet/$expand', {
        resourceType: 'Parameters',
        parameter: [
          { name: 'url', valueUri: DIABETES_VALUE_SET_URL },
          { name: 'offset', valueInteger: 1 },
          { name: 'count', valueInteger: 1 },
        ],
      }),
    );
    expect([paged.expansion.total, paged.expansion.offset, paged.expansion.contains.length]).toEqual([
      3, 1, 1,
    ]);
  });

  it('ValueSet/$expand of a whole loaded code system pages from the store', async () => {
    const res = await inject('POST', '/fhir/ValueSet/$expand', {
      resourceType: 'Parameters',
      parameter: [
        {
          name: 'valueSet',
          resource: { resourceType: 'ValueSet', status: 'active', compose: { include: [{ system: LOINC }] } },
        },
        { name: 'filter', valueString: 'body' },
        { name: 'count', valueInteger: 1 },
      ],
    });
    expect(res.statusCode).toBe(200);
    const out = bodyOf(res);
    expect(out.expansion.total).toBe(2);
    expect(out.expansion.contains).toEqual([{ system: LOINC, code: '29463-7', display: 'Body weight' }]);
  });

  it('metadata?mode=terminology lists the loaded systems, with subsumption where they have a hierarchy', async () => {
    const caps = bodyOf(await inject('GET', '/fhir/metadata?mode=terminology'));
    const systems = new Map(
      caps.codeSystem.map((c: { uri: string; subsumption: boolean }) => [c.uri, c.subsumption]),
    );
    expect(systems.get(SNOMED)).toBe(true);
    expect(systems.get(LOINC)).toBe(false);
    expect(systems.has('http://hl7.org/fhir/sid/cvx')).toBe(true);
  });

  it('search: :below and :in over HTTP against the loaded hierarchy', async () => {
    for (const [id, code] of [
      ['c1', SCT.type2],
      ['c2', SCT.disease],
    ])
      await send(
        booted.app,
        {
          method: 'PUT',
          url: `/fhir/Condition/${id}`,
          body: {
            resourceType: 'Condition',
            id,
            subject: { reference: 'Patient/p1' },
            code: { coding: [{ system: SNOMED, code }] },
          },
        },
        201,
      );
    const below = bodyOf(
      await inject('GET', `/fhir/Condition?code:below=${encodeURIComponent(`${SNOMED}|${SCT.diabetes}`)}`),
    );
    expect(below.entry.map((e: any) => e.resource.id)).toEqual(['c1']);
    const inVs = bodyOf(
      await inject('GET', `/fhir/Condition?code:not-in=${encodeURIComponent(DIABETES_VALUE_SET_URL)}`),
    );
    expect(inVs.entry.map((e: any) => e.resource.id)).toEqual(['c2']);
  });
});
