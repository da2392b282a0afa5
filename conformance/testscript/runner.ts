/**
 * Runs FHIR R4 TestScript resources (http://hl7.org/fhir/R4/testscript.html) against a FHIR base URL over HTTP and
 * reports each as a TestReport (http://hl7.org/fhir/R4/testreport.html).
 *
 * Served: fixtures (a file beside the script, or `#id` of a contained resource; autocreate, autodelete), variables
 * (defaultValue, FHIRPath `expression`, a simple JSON `path`, `headerField`, from a fixture or a response by
 * `sourceId`; `${name}` replaced in URLs, params, headers, fixture bodies and assert values), setup, tests and
 * teardown, operations (read, vread, create, update, updateCreate, delete, search, history, patch, batch,
 * transaction, capabilities, or any `method` + `url`/`params`), and asserts: response, responseCode, resource,
 * contentType, headerField, expression and path (with every R4 operator), compareToSourceId with
 * compareToSourceExpression/Path, minimumId, navigationLinks, requestMethod, requestURL, validateProfileId (the
 * server's `$validate`) and warningOnly. An XML answer is read into JSON (src/fhir/fhir-xml.ts) for FHIRPath.
 */
import fs from 'node:fs';
import path from 'node:path';
import fhirpath from 'fhirpath';
import r4Model from 'fhirpath/fhir-context/r4/index.js';
import { FhirXml } from '../../src/fhir/fhir-xml.js';
import { coreRegistry } from '../../src/fhir/definitions/definition-registry.js';

type Json = Record<string, any>;

/** A loaded TestScript: the resource and where its fixtures are read from. */
export interface LoadedScript {
  file: string;
  script: Json;
  /** Fixture id -> resource, for fixtures that resolved (file or contained). */
  fixtures: Map<string, Json>;
  /** Fixture ids whose resource could not be found (the official examples name files they do not ship). */
  missingFixtures: string[];
}

export type ActionResult = 'pass' | 'skip' | 'fail' | 'warning' | 'error';

export interface ActionOutcome {
  phase: 'setup' | 'test' | 'teardown';
  test?: string;
  kind: 'operation' | 'assert';
  label: string;
  result: ActionResult;
  message?: string;
}

export interface ScriptRun {
  file: string;
  name: string;
  report: Json;
  actions: ActionOutcome[];
  passed: boolean;
}

export interface RunOptions {
  /** FHIR base URL, no trailing slash. */
  baseUrl: string;
  /** Headers sent with every request (e.g. Authorization). */
  headers?: Record<string, string>;
}

const RESPONSE_CODES: Record<string, number> = {
  okay: 200,
  created: 201,
  noContent: 204,
  notModified: 304,
  bad: 400,
  forbidden: 403,
  notFound: 404,
  methodNotAllowed: 405,
  conflict: 409,
  gone: 410,
  preconditionFailed: 412,
  unprocessable: 422,
};

const MIME: Record<string, string> = {
  json: 'application/fhir+json',
  xml: 'application/fhir+xml',
  ttl: 'text/turtle',
  none: '',
};

let xmlConverter: FhirXml | undefined;
function xml(): FhirXml {
  return (xmlConverter ??= new FhirXml((type) => coreRegistry().typeDefinition(type)));
}

/** Reads a TestScript file and resolves its fixtures (missing ones are listed, not fatal: loading is checked). */
export function loadTestScript(file: string): LoadedScript {
  const script = JSON.parse(fs.readFileSync(file, 'utf8')) as Json;
  if (script.resourceType !== 'TestScript') throw new Error(`${file}: not a TestScript`);
  for (const key of ['url', 'name', 'status'])
    if (typeof script[key] !== 'string') throw new Error(`${file}: TestScript.${key} is required`);
  const fixtures = new Map<string, Json>();
  const missingFixtures: string[] = [];
  const contained = new Map<string, Json>(
    ((script.contained as Json[] | undefined) ?? []).map((r) => [String(r.id), r]),
  );
  for (const fixture of (script.fixture as Json[] | undefined) ?? []) {
    const reference: string | undefined = fixture.resource?.reference;
    let resource: Json | undefined;
    // A contained resource's id is local to the script: the fixture is the resource without it.
    if (reference?.startsWith('#')) {
      const found = contained.get(reference.slice(1));
      if (found) resource = Object.fromEntries(Object.entries(found).filter(([key]) => key !== 'id'));
    } else if (reference) {
      const candidate = path.resolve(path.dirname(file), reference);
      if (fs.existsSync(candidate) && fs.statSync(candidate).isFile())
        resource = candidate.endsWith('.xml')
          ? xml().toJson(fs.readFileSync(candidate, 'utf8'))
          : (JSON.parse(fs.readFileSync(candidate, 'utf8')) as Json);
    }
    if (resource) fixtures.set(String(fixture.id), resource);
    else missingFixtures.push(String(fixture.id));
  }
  // Every action must be an operation or an assert, every operation need a way to its URL.
  const phases = [
    script.setup?.action ?? [],
    ...((script.test as Json[] | undefined) ?? []).map((t) => t.action ?? []),
    script.teardown?.action ?? [],
  ] as Json[][];
  for (const actions of phases)
    for (const action of actions)
      if (!action.operation && !action.assert)
        throw new Error(`${file}: an action without operation or assert`);
  return { file, script, fixtures, missingFixtures };
}

interface Exchange {
  method: string;
  url: string;
  status: number;
  headers: Headers;
  /** The body as JSON (an XML answer converted), if any. */
  body?: Json;
  text: string;
}

class AssertFailure extends Error {}

/** One run of one script: its fixtures, variables and the last exchange. */
class ScriptExecution {
  private readonly responses = new Map<string, Exchange>();
  private readonly requests = new Map<string, Exchange>();
  private last?: Exchange;
  /** Fixture id -> the id the server gave it when it was created by this run. */
  private readonly createdIds = new Map<string, string>();
  readonly actions: ActionOutcome[] = [];

  constructor(
    private readonly loaded: LoadedScript,
    private readonly options: RunOptions,
  ) {}

  private get script(): Json {
    return this.loaded.script;
  }

  // ------------------------------------------------------------------ variables

  private variable(name: string): string | undefined {
    const declared = ((this.script.variable as Json[] | undefined) ?? []).find((v) => v.name === name);
    if (!declared) return undefined;
    const source = declared.sourceId ? this.sourceOf(declared.sourceId) : this.last;
    let value: string | undefined;
    if (declared.headerField && source && 'headers' in source)
      value = (source as Exchange).headers.get(declared.headerField) ?? undefined;
    else if (declared.expression || declared.path) {
      const body = source && 'headers' in source ? (source as Exchange).body : (source as Json | undefined);
      const found = declared.expression
        ? this.evaluate(body, this.substitute(declared.expression))
        : jsonPath(body, this.substitute(declared.path));
      if (found.length > 0) value = String(found[0]);
    }
    return value ?? declared.defaultValue;
  }

  /** `${name}` replaced by the variable's value (unknown names are left as written). */
  private substitute(text: string): string {
    return text.replace(/\$\{([A-Za-z0-9_-]+)\}/g, (whole, name: string) => this.variable(name) ?? whole);
  }

  /** A fixture (as loaded, variables applied) or a recorded request or response, by id. */
  private sourceOf(id: string): Exchange | Json | undefined {
    const response = this.responses.get(id) ?? this.requests.get(id);
    if (response) return response;
    const fixture = this.loaded.fixtures.get(id);
    return fixture ? (JSON.parse(this.substitute(JSON.stringify(fixture))) as Json) : undefined;
  }

  private bodyOf(id: string | undefined): Json | undefined {
    const source = id ? this.sourceOf(id) : this.last;
    if (id && source === undefined) throw new AssertFailure(`no fixture or response '${id}'`);
    return source && 'headers' in source ? (source as Exchange).body : (source as Json | undefined);
  }

  private evaluate(resource: unknown, expression: string): unknown[] {
    if (resource === undefined) return [];
    return fhirpath.evaluate(resource as object, expression, undefined, r4Model) as unknown[];
  }

  // ------------------------------------------------------------------ operations

  private async operation(op: Json): Promise<void> {
    const code: string | undefined = op.type?.code;
    const method = (op.method ?? defaultMethod(code)).toUpperCase();
    const url = this.requestUrl(op, code);
    const headers: Record<string, string> = { ...this.options.headers };
    const accept = MIME[op.accept ?? 'json'];
    if (accept) headers.accept = accept;
    for (const h of (op.requestHeader as Json[] | undefined) ?? [])
      headers[String(h.field).toLowerCase()] = this.substitute(String(h.value));
    let body: string | undefined;
    if (op.sourceId) {
      const source = this.sourceOf(op.sourceId);
      if (source === undefined)
        throw new AssertFailure(`sourceId '${op.sourceId}' names no fixture or response`);
      let resource = 'headers' in source ? (source as Exchange).body : source;
      // A create sends no id (the server assigns it; a contained fixture's id is local to the script).
      if (code === 'create' && resource?.id !== undefined) resource = { ...resource, id: undefined };
      const contentType = op.contentType ?? 'json';
      headers['content-type'] ??= MIME[contentType] || MIME.json;
      body = contentType === 'xml' ? xml().toXml(resource) : JSON.stringify(resource);
    }
    const response = await fetch(url, { method, headers, body });
    const text = method === 'HEAD' ? '' : await response.text();
    const exchange: Exchange = {
      method,
      url,
      status: response.status,
      headers: response.headers,
      text,
      body: parseBody(text, response.headers.get('content-type')),
    };
    this.last = exchange;
    if (op.responseId) this.responses.set(op.responseId, exchange);
    if (op.requestId)
      this.requests.set(op.requestId, { ...exchange, body: body ? JSON.parse(body) : undefined });
    // A created fixture's server id, for targetId and autodelete.
    if (op.sourceId && response.status === 201) {
      const id =
        exchange.body?.id ?? /\/([^/]+)\/_history\//.exec(response.headers.get('location') ?? '')?.[1];
      if (typeof id === 'string') this.createdIds.set(op.sourceId, id);
    }
  }

  private requestUrl(op: Json, code: string | undefined): string {
    const base = this.options.baseUrl;
    if (op.url) {
      const url = this.substitute(op.url);
      return /^https?:/.test(url) ? url : `${base}/${url.replace(/^\//, '')}`;
    }
    const type: string | undefined = op.resource ?? this.targetType(op.targetId);
    if (code === 'capabilities') return `${base}/metadata`;
    if ((code === 'transaction' || code === 'batch') && !op.params) return base;
    if (op.params) return `${base}${type ? `/${type}` : ''}${this.substitute(op.params)}`;
    if (op.targetId) {
      const id = this.targetIdOf(op.targetId);
      if (code === 'vread') {
        const version = this.responses
          .get(op.targetId)
          ?.headers.get('etag')
          ?.replace(/^W\/"|"$/g, '');
        return `${base}/${type}/${id}/_history/${version ?? '1'}`;
      }
      if (code === 'history') return `${base}/${type}/${id}/_history`;
      return `${base}/${type}/${id}`;
    }
    if (code === 'update' || code === 'updateCreate') {
      const resource = op.sourceId ? this.bodyOf(op.sourceId) : undefined;
      return `${base}/${type ?? resource?.resourceType}/${resource?.id ?? ''}`;
    }
    if (code === 'create' && !type && op.sourceId) return `${base}/${this.bodyOf(op.sourceId)?.resourceType}`;
    if (code === 'history') return `${base}${type ? `/${type}` : ''}/_history`;
    return `${base}${type ? `/${type}` : ''}`;
  }

  private targetType(targetId: string | undefined): string | undefined {
    if (!targetId) return undefined;
    const body = this.bodyOf(targetId);
    return typeof body?.resourceType === 'string' ? body.resourceType : undefined;
  }

  /** The id a targetId stands for: what the server gave a fixture this run created, else the resource's own id. */
  private targetIdOf(targetId: string): string {
    const created = this.createdIds.get(targetId);
    if (created) return created;
    const response = this.responses.get(targetId);
    const location = response?.headers.get('location');
    const fromLocation = location ? /\/([^/]+)\/_history\//.exec(location)?.[1] : undefined;
    const id = fromLocation ?? this.bodyOf(targetId)?.id;
    if (typeof id !== 'string') throw new AssertFailure(`targetId '${targetId}' has no id`);
    return id;
  }

  // ------------------------------------------------------------------ asserts

  private async assert(a: Json): Promise<string | undefined> {
    const exchange = a.sourceId ? this.responses.get(a.sourceId) : this.last;
    const needExchange = (): Exchange => {
      if (!exchange) throw new AssertFailure('no response to assert on');
      return exchange;
    };
    const value = a.value === undefined ? undefined : this.substitute(String(a.value));
    const operator: string = a.operator ?? 'equals';
    if (a.response !== undefined || a.responseCode !== undefined) {
      const expected = a.response !== undefined ? String(RESPONSE_CODES[a.response]) : String(a.responseCode);
      const got = needExchange();
      try {
        return compare(
          String(got.status),
          operator,
          expected,
          a.response ? `response ${a.response}` : 'responseCode',
        );
      } catch (err) {
        // The server's own reason, when it gave one, says why.
        const issues = (got.body?.issue as Json[] | undefined)?.map((i) => i.diagnostics).filter(Boolean);
        if (err instanceof AssertFailure && issues?.length)
          throw new AssertFailure(`${err.message}: ${issues.join('; ')}`);
        throw err;
      }
    }
    if (a.contentType !== undefined) {
      const got = needExchange().headers.get('content-type') ?? '';
      return compare(got.split(';')[0], 'contains', MIME[a.contentType] || a.contentType, 'contentType');
    }
    if (a.headerField !== undefined) {
      const got = needExchange().headers.get(a.headerField) ?? '';
      return compare(got, operator, value ?? '', `header ${a.headerField}`);
    }
    if (a.resource !== undefined)
      return compare(String(this.bodyOf(a.sourceId)?.resourceType ?? ''), 'equals', a.resource, 'resource');
    if (a.requestMethod !== undefined)
      return compare(needExchange().method.toLowerCase(), operator, String(a.requestMethod), 'requestMethod');
    if (a.requestURL !== undefined)
      return compare(needExchange().url, operator, this.substitute(a.requestURL), 'requestURL');
    if (a.minimumId !== undefined) {
      const minimum = this.bodyOf(a.minimumId);
      const body = this.bodyOf(a.sourceId);
      const missing = minimumMissing(minimum, body, '');
      if (missing) throw new AssertFailure(`minimumId ${a.minimumId}: ${missing}`);
      return undefined;
    }
    if (a.navigationLinks !== undefined) {
      const links = ((this.bodyOf(a.sourceId)?.link as Json[] | undefined) ?? []).map((l) => l.relation);
      const has = ['first', 'last', 'next'].some((r) => links.includes(r)) && links.includes('self');
      if (has !== (a.navigationLinks === true))
        throw new AssertFailure(`navigationLinks: the Bundle's links are [${links.join(', ')}]`);
      return undefined;
    }
    if (a.validateProfileId !== undefined) return this.validateProfile(a);
    if (a.expression !== undefined || a.path !== undefined) {
      const body = this.bodyOf(a.sourceId);
      const found = a.expression
        ? this.evaluate(body, this.substitute(a.expression))
        : jsonPath(body, this.substitute(a.path));
      if (a.compareToSourceId !== undefined)
        return compareFound(found, operator, this.compareSource(a), a.expression ?? a.path);
      if (value === undefined && a.operator === undefined) {
        // No value: the expression must hold (a boolean true) or find something.
        const holds = found.length > 0 && !(found.length === 1 && found[0] === false);
        if (!holds) throw new AssertFailure(`${a.expression ?? a.path} does not hold`);
        return undefined;
      }
      return compareFound(found, operator, value, a.expression ?? a.path);
    }
    if (a.compareToSourceId !== undefined) {
      // compareToSource* alone: the last response against the source, by the same expression.
      const expression = a.compareToSourceExpression;
      if (!expression) throw new AssertFailure('compareToSourceId without compareToSourceExpression');
      const found = this.evaluate(this.bodyOf(undefined), this.substitute(expression));
      return compareFound(found, operator, this.compareSource(a), expression);
    }
    throw new AssertFailure('an assert this runner does not understand');
  }

  private compareSource(a: Json): string {
    const source = this.bodyOf(a.compareToSourceId);
    const found = a.compareToSourceExpression
      ? this.evaluate(source, this.substitute(a.compareToSourceExpression))
      : jsonPath(source, this.substitute(a.compareToSourcePath ?? '$'));
    return found.map(String).join(',');
  }

  private async validateProfile(a: Json): Promise<undefined> {
    const profile = ((this.script.profile as Json[] | undefined) ?? []).find(
      (p) => p.id === a.validateProfileId,
    );
    if (!profile?.reference)
      throw new AssertFailure(`validateProfileId '${a.validateProfileId}' names no profile`);
    const body = this.bodyOf(a.sourceId);
    if (!body?.resourceType) throw new AssertFailure('validateProfileId: no resource to validate');
    const url = `${this.options.baseUrl}/${body.resourceType}/$validate?profile=${encodeURIComponent(profile.reference)}`;
    const response = await fetch(url, {
      method: 'POST',
      headers: { ...this.options.headers, 'content-type': MIME.json, accept: MIME.json },
      body: JSON.stringify(body),
    });
    const outcome = (await response.json()) as Json;
    const errors = ((outcome.issue as Json[] | undefined) ?? []).filter(
      (i) => i.severity === 'error' || i.severity === 'fatal',
    );
    if (response.status !== 200 || errors.length > 0)
      throw new AssertFailure(
        `not valid against ${profile.reference}: ${errors.map((i) => i.diagnostics).join('; ') || response.status}`,
      );
    return undefined;
  }

  // ------------------------------------------------------------------ phases

  private async runActions(
    actions: Json[],
    phase: ActionOutcome['phase'],
    test: string | undefined,
    reportActions: Json[],
  ): Promise<boolean> {
    let ok = true;
    for (const action of actions) {
      if (!ok && phase !== 'teardown') {
        this.record(action, phase, test, 'skip', 'an earlier action failed', reportActions);
        continue;
      }
      try {
        if (action.operation) {
          await this.operation(action.operation);
          this.record(action, phase, test, 'pass', undefined, reportActions);
        } else {
          const note = await this.assert(action.assert);
          this.record(action, phase, test, 'pass', note, reportActions);
        }
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        const warningOnly = action.assert?.warningOnly === true;
        const result: ActionResult = warningOnly
          ? 'warning'
          : err instanceof AssertFailure
            ? 'fail'
            : 'error';
        this.record(action, phase, test, result, message, reportActions);
        if (!warningOnly) ok = false;
      }
    }
    return ok;
  }

  private record(
    action: Json,
    phase: ActionOutcome['phase'],
    test: string | undefined,
    result: ActionResult,
    message: string | undefined,
    reportActions: Json[],
  ): void {
    const kind = action.operation ? 'operation' : 'assert';
    const detail = action.operation ?? action.assert;
    const label = String(detail.label ?? detail.description ?? detail.type?.code ?? kind);
    this.actions.push({ phase, test, kind, label, result, ...(message ? { message } : {}) });
    reportActions.push({ [kind]: { result, ...(message ? { message } : {}) } });
  }

  async run(): Promise<ScriptRun> {
    const script = this.script;
    const report: Json = {
      resourceType: 'TestReport',
      name: script.name,
      status: 'completed',
      testScript: { reference: script.url },
      result: 'pending',
      tester: 'hie-ledger conformance:testscript',
      issued: new Date().toISOString(),
      participant: [{ type: 'server', uri: this.options.baseUrl }],
    };
    // Fixtures this run creates first, as part of setup.
    const setupActions: Json[] = [];
    let setupOk = true;
    for (const fixture of (script.fixture as Json[] | undefined) ?? [])
      if (fixture.autocreate === true)
        setupOk &&= await this.runActions(
          [
            // responseId: the fixture's id then stands for it as the server has it (its server id, for variables).
            {
              operation: {
                type: { code: 'create' },
                sourceId: fixture.id,
                responseId: fixture.id,
                label: `autocreate ${fixture.id}`,
              },
            },
            { assert: { response: 'created', label: `autocreate ${fixture.id} created` } },
          ],
          'setup',
          undefined,
          setupActions,
        );
    if (setupOk && script.setup)
      setupOk = await this.runActions(script.setup.action ?? [], 'setup', undefined, setupActions);
    if (setupActions.length > 0) report.setup = { action: setupActions };
    const tests: Json[] = [];
    for (const test of (script.test as Json[] | undefined) ?? []) {
      const reportActions: Json[] = [];
      const name = String(test.name ?? test.id ?? `test ${tests.length + 1}`);
      if (setupOk) await this.runActions(test.action ?? [], 'test', name, reportActions);
      else
        for (const action of test.action ?? [])
          this.record(action, 'test', name, 'skip', 'setup failed', reportActions);
      tests.push({ name, action: reportActions });
    }
    if (tests.length > 0) report.test = tests;
    const teardownActions: Json[] = [];
    if (script.teardown)
      await this.runActions(script.teardown.action ?? [], 'teardown', undefined, teardownActions);
    for (const fixture of (script.fixture as Json[] | undefined) ?? [])
      if (fixture.autodelete === true && this.createdIds.has(fixture.id))
        await this.runActions(
          [
            {
              operation: {
                type: { code: 'delete' },
                targetId: fixture.id,
                label: `autodelete ${fixture.id}`,
              },
            },
          ],
          'teardown',
          undefined,
          teardownActions,
        );
    if (teardownActions.length > 0)
      report.teardown = { action: teardownActions.map((a) => ({ operation: a.operation })) };
    const counted = this.actions.filter((a) => a.kind === 'assert' && a.result !== 'skip');
    const passed =
      setupOk &&
      this.actions.every((a) => a.result !== 'fail' && a.result !== 'error' && a.result !== 'skip');
    report.result = passed ? 'pass' : 'fail';
    report.score =
      counted.length === 0
        ? 0
        : Math.round((100 * counted.filter((a) => a.result === 'pass').length) / counted.length);
    return { file: this.loaded.file, name: String(script.name), report, actions: this.actions, passed };
  }
}

function defaultMethod(code: string | undefined): string {
  switch (code) {
    case 'create':
    case 'transaction':
    case 'batch':
      return 'post';
    case 'update':
    case 'updateCreate':
      return 'put';
    case 'delete':
      return 'delete';
    case 'patch':
      return 'patch';
    default:
      return 'get';
  }
}

function parseBody(text: string, contentType: string | null): Json | undefined {
  if (!text) return undefined;
  try {
    if (contentType?.includes('xml')) return xml().toJson(text);
    return JSON.parse(text) as Json;
  } catch {
    return undefined;
  }
}

/** A JSON path as TestScripts write them for JSON: `$.a.b[0].c` or `a.b` (XPath is not served). */
function jsonPath(value: unknown, expression: string): unknown[] {
  if (expression.includes('/') || expression.includes(':'))
    throw new AssertFailure(`path '${expression}' is XPath: use expression (FHIRPath) or a JSON path`);
  const steps = expression
    .replace(/^\$\.?/, '')
    .split(/\.|\[(\d+)\]/)
    .filter((s) => s !== undefined && s !== '');
  let current: unknown[] = value === undefined ? [] : [value];
  for (const step of steps) {
    const next: unknown[] = [];
    for (const item of current) {
      if (item === null || typeof item !== 'object') continue;
      const child = /^\d+$/.test(step) && Array.isArray(item) ? item[Number(step)] : (item as Json)[step];
      if (Array.isArray(child) && !/^\d+$/.test(step)) next.push(...child);
      else if (child !== undefined) next.push(child);
    }
    current = next;
  }
  return current;
}

function compareFound(
  found: unknown[],
  operator: string,
  value: string | undefined,
  what: string,
): undefined {
  if (operator === 'empty' || operator === 'notEmpty') {
    if ((found.length === 0) !== (operator === 'empty'))
      throw new AssertFailure(`${what}: expected ${operator}, found [${found.join(', ')}]`);
    return undefined;
  }
  if (operator === 'eval') {
    if (!(found.length === 1 && found[0] === true)) throw new AssertFailure(`${what} is not true`);
    return undefined;
  }
  const got = found.map((f) => (typeof f === 'object' ? JSON.stringify(f) : String(f))).join(',');
  return compare(got, operator, value ?? '', what);
}

/** The R4 assert operators over text (numbers compared as numbers). */
function compare(got: string, operator: string, expected: string, what: string): undefined {
  const list = expected.split(',').map((s) => s.trim());
  const holds = (() => {
    switch (operator) {
      case 'equals':
        return got === expected;
      case 'notEquals':
        return got !== expected;
      case 'in':
        return list.includes(got);
      case 'notIn':
        return !list.includes(got);
      case 'greaterThan':
        return Number(got) > Number(expected);
      case 'lessThan':
        return Number(got) < Number(expected);
      case 'empty':
        return got === '';
      case 'notEmpty':
        return got !== '';
      case 'contains':
        return got.includes(expected);
      case 'notContains':
        return !got.includes(expected);
      default:
        throw new AssertFailure(`operator '${operator}' is not an R4 assert operator`);
    }
  })();
  if (!holds) throw new AssertFailure(`${what}: '${got}' ${operator} '${expected}' does not hold`);
  return undefined;
}

/** Where `actual` lacks something of `minimum` (every element of the minimum, array items matched anywhere), if so. */
function minimumMissing(minimum: unknown, actual: unknown, at: string): string | undefined {
  if (minimum === null || typeof minimum !== 'object')
    return minimum === actual
      ? undefined
      : `${at || 'value'}: expected ${JSON.stringify(minimum)}, got ${JSON.stringify(actual)}`;
  if (Array.isArray(minimum)) {
    if (!Array.isArray(actual)) return `${at}: expected a list`;
    for (const [i, item] of minimum.entries())
      if (!actual.some((candidate) => minimumMissing(item, candidate, '') === undefined))
        return `${at}[${i}]: no matching item`;
    return undefined;
  }
  if (actual === null || typeof actual !== 'object') return `${at}: missing`;
  for (const [key, value] of Object.entries(minimum)) {
    // The server sets these: a fixture's own are not expected back.
    if (at === '' && (key === 'id' || key === 'meta')) continue;
    const missing = minimumMissing(value, (actual as Json)[key], at ? `${at}.${key}` : key);
    if (missing) return missing;
  }
  return undefined;
}

export async function runTestScript(loaded: LoadedScript, options: RunOptions): Promise<ScriptRun> {
  return new ScriptExecution(loaded, options).run();
}

/** The summary table: one row per script (asserts passed/failed/warned), then each failure. */
export function summaryTable(runs: ScriptRun[]): string {
  const rows = runs.map((run) => {
    const asserts = run.actions.filter((a) => a.kind === 'assert');
    const count = (r: ActionResult) => asserts.filter((a) => a.result === r).length;
    const tests = new Set(run.actions.filter((a) => a.test).map((a) => a.test)).size;
    const ran = asserts.filter((a) => a.result !== 'skip').length;
    return [
      run.name,
      String(tests),
      String(count('pass')),
      String(count('fail') + count('error')),
      String(count('warning')),
      String(count('skip')),
      ran === 0 ? '-' : `${Math.round((100 * count('pass')) / asserts.length)}%`,
      run.passed ? 'pass' : 'FAIL',
    ];
  });
  const header = ['script', 'tests', 'passed', 'failed', 'warnings', 'skipped', 'pass rate', 'result'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ');
  const out = [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  for (const run of runs)
    for (const a of run.actions)
      if (a.result === 'fail' || a.result === 'error')
        out.push(
          `  ${run.name} ${a.phase}${a.test ? ` "${a.test}"` : ''}: ${a.kind} "${a.label}" ${a.result}: ${a.message ?? ''}`,
        );
  return out.join('\n');
}
