/**
 * patch: PATCH [base]/[type]/[id] (http://hl7.org/fhir/R4/http.html#patch) with either
 * - JSON Patch (RFC 6902, `application/json-patch+json`), applied by fast-json-patch, or
 * - FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): a Parameters body whose `operation`s
 *   (add, insert, delete, replace, move) find their targets with fhirpath and its R4 model, or
 * - XML Patch (RFC 5261, `application/xml-patch+xml`), applied by fhir/xml-patch.ts to the resource's FHIR XML
 *   form, which is then read back as JSON (numbers keep their written form both ways).
 * The result must keep its type and id and pass validation (else 422: the request was well-formed but cannot
 * be applied). It is written with If-Match on the version it was computed from, so a concurrent change is a 409
 * rather than a lost update.
 */
import jsonPatch, { type Operation as JsonPatchOperation } from 'fast-json-patch';
import fhirpath from 'fhirpath';
import r4Model from 'fhirpath/fhir-context/r4/index.js';
import { FhirError, fhirError } from '../outcome.js';
import {
  LosslessNumber,
  cloneFhirJson,
  parseFhirJson,
  toPlainJson,
  type FhirResource,
} from '../fhir-json.js';
import type { StoredVersion } from '../store/resource-store.js';
import {
  assertCanWrite,
  assertId,
  assertResourceType,
  checkIfMatch,
  ifMatchVersion,
  validateResource,
  visibleOr404,
  writeResponse,
  writeVersion,
} from './common.js';
import { parseRequestJson } from './router.js';
import type { FhirContext, InteractionHandler } from './types.js';
import { FHIR_JSON, JSON_PATCH, PLAIN_JSON, XML_PATCH } from '../media-types.js';
import { XmlPatchError, applyXmlPatch, asSerialisedAfterPatch } from '../xml-patch.js';
import type { FhirXml } from '../fhir-xml.js';

const RFC6902_OPS = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);

export const patch: InteractionHandler = async (request, context) => {
  const resourceType = assertResourceType(context, request.resourceType);
  context.access.authorize('patch', resourceType);
  const id = assertId(request.id);
  if (!request.body || request.body.trim() === '')
    throw fhirError(
      'body-missing',
      'PATCH needs a JSON Patch, a FHIRPath Patch Parameters body or an XML Patch',
    );
  const kind = patchKindOf(request.contentType, context.xml !== undefined);
  // An XML Patch stays text: it is applied to the resource's XML form.
  const document = kind === 'xml' ? request.body : parseRequestJson(request.body);

  const ifMatch = ifMatchVersion(request);
  // Visibility first (hidden is answered as unknown), then the write permission, then If-Match (RFC 9110 §13.2.1).
  const current = visibleOr404(context, await context.store.read(resourceType, id), `${resourceType}/${id}`);
  if (current.deleted)
    throw fhirError('resource-deleted', `${resourceType}/${id} was deleted; a patch needs a resource`);
  assertCanWrite(context, 'PATCH', resourceType, id, current, current.patients ?? []);
  checkIfMatch(ifMatch, current, resourceType, id);

  const original = parseFhirJson<FhirResource>(current.json!);
  const patched = applyPatchDocument(context, kind, original, document, resourceType, id);
  const issues = validateResource(context, patched, 'update', 'patch-result-invalid');

  let version: StoredVersion;
  try {
    version = await writeVersion(
      context,
      { resourceType, id, resource: patched, method: 'PATCH', ifMatch: current.versionId },
      current,
    );
  } catch (err) {
    // Our own If-Match failed: someone wrote in between. The client asked for no precondition, so this is a conflict.
    if (err instanceof FhirError && err.status === 412 && ifMatch === undefined) {
      throw fhirError(
        'concurrent-update',
        `${resourceType}/${id} changed while the patch was applied; read it again and retry`,
      );
    }
    throw err;
  }
  return writeResponse(
    request,
    version,
    200,
    issues.filter((i) => i.severity !== 'error' && i.severity !== 'fatal'),
    version.versionId === current.versionId,
  );
};

type PatchKind = 'json' | 'fhirpath' | 'xml';

/**
 * Which patch the body is, by its media type: JSON Patch, FHIRPath Patch (a Parameters resource), or XML Patch
 * (when this server converts XML).
 */
function patchKindOf(contentType: string | undefined, xml: boolean): PatchKind {
  const kind =
    contentType === JSON_PATCH
      ? 'json'
      : contentType === FHIR_JSON || contentType === PLAIN_JSON
        ? 'fhirpath'
        : contentType === XML_PATCH && xml
          ? 'xml'
          : undefined;
  if (!kind) {
    throw fhirError(
      'media-type-unsupported',
      `PATCH takes application/json-patch+json (JSON Patch), application/fhir+json (FHIRPath Patch)${xml ? ` or ${XML_PATCH} (XML Patch)` : ''}, not '${contentType ?? 'none'}'`,
    );
  }
  return kind;
}

/** The patched resource; its type and id must stay those of the resource patched. */
function applyPatchDocument(
  context: FhirContext,
  kind: PatchKind,
  original: FhirResource,
  document: unknown,
  resourceType: string,
  id: string,
): FhirResource {
  if (kind === 'fhirpath') {
    // The Parameters body is a FHIR resource like any other: the validator checks its shape first.
    const shape = context.validator.validate(toPlainJson(document));
    if (!shape.valid) throw new FhirError('patch-invalid', shape.issues);
  }
  const patched =
    kind === 'json'
      ? applyJsonPatch(original, document)
      : kind === 'xml'
        ? applyXmlPatchToResource(context.xml!, original, document as string)
        : applyFhirPathPatch(original, document);
  if (
    patched === null ||
    typeof patched !== 'object' ||
    patched.resourceType !== resourceType ||
    patched.id !== id
  ) {
    throw fhirError(
      'patch-not-applicable',
      `The patch changes the resource's type or id; it must stay ${resourceType}/${id}`,
      { expression: `${resourceType}.id` },
    );
  }
  return patched;
}

// ---- XML Patch --------------------------------------------------------------------------------------------

/** The largest resource (as XML text) an XML Patch is applied to. */
const MAX_XML_PATCH_DOCUMENT = 1024 * 1024;

/** The resource as FHIR XML, patched, read back as JSON: an error in the diff is 400, one that does not fit 422. */
export function applyXmlPatchToResource(xml: FhirXml, resource: FhirResource, diff: string): FhirResource {
  const documentXml = xml.toXml(resource);
  // The XML DOM costs about 4 ms per kB of XML: a resource larger than this is patched with JSON or FHIRPath Patch.
  if (documentXml.length > MAX_XML_PATCH_DOCUMENT)
    throw fhirError(
      'patch-not-applicable',
      `XML Patch applies to resources up to ${MAX_XML_PATCH_DOCUMENT / 1024} kB in XML; use JSON Patch or FHIRPath Patch for this one`,
    );
  let patchedXml: string;
  try {
    patchedXml = applyXmlPatch(documentXml, diff);
  } catch (err) {
    if (!(err instanceof XmlPatchError)) throw err;
    throw fhirError(err.kind === 'invalid' ? 'patch-invalid' : 'patch-not-applicable', err.message);
  }
  let patched: FhirResource;
  try {
    patched = xml.toJson(patchedXml) as FhirResource;
  } catch (err) {
    // The diff was applied but left something that is not FHIR XML (an element outside the FHIR namespace, ...).
    if (err instanceof FhirError)
      throw fhirError(
        'patch-not-applicable',
        `The XML Patch result is not FHIR XML: ${err.outcome.issue.map((i) => i.diagnostics).join('; ')}`,
      );
    throw err;
  }
  keepUntouchedNarratives(resource, patched);
  return patched;
}

/**
 * Narrative divs the patch did not touch keep their stored text: the XML DOM writes XHTML in its own way (`<p/>`
 * as `<p></p>`), which must not turn into a change of a div nobody patched.
 */
function keepUntouchedNarratives(original: FhirResource, patched: FhirResource): void {
  const before = new Map<string, string>();
  forEachDiv(original, (div) => {
    const serialised = asSerialisedAfterPatch(
      div.includes('xmlns') ? div : div.replace(/<div/, `<div xmlns="http://www.w3.org/1999/xhtml"`),
    );
    if (serialised !== undefined && serialised !== div) before.set(serialised, div);
  });
  if (before.size === 0) return;
  forEachDiv(patched, (div, holder) => {
    const stored = before.get(div);
    if (stored !== undefined) holder.div = stored;
  });
}

/** Every Narrative div (`text.div`, in contained resources and Bundle entries too) with the object holding it. */
function forEachDiv(value: unknown, visit: (div: string, holder: Record<string, unknown>) => void): void {
  if (value === null || typeof value !== 'object' || value instanceof LosslessNumber) return;
  if (Array.isArray(value)) {
    for (const item of value) forEachDiv(item, visit);
    return;
  }
  const record = value as Record<string, unknown>;
  if (typeof record.div === 'string') visit(record.div, record);
  for (const key of Object.keys(record)) if (key !== 'div') forEachDiv(record[key], visit);
}

// ---- JSON Patch -------------------------------------------------------------------------------------------

function applyJsonPatch(resource: FhirResource, document: unknown): FhirResource {
  if (!Array.isArray(document))
    throw fhirError('patch-invalid', 'A JSON Patch body is an array of operations');
  const operations = document as JsonPatchOperation[];
  // fast-json-patch also runs its own `_get` op (a no-op): only RFC 6902's six are a JSON Patch.
  operations.forEach((operation, i) => {
    const op = (operation as { op?: unknown } | null)?.op;
    if (typeof op !== 'string' || !RFC6902_OPS.has(op))
      throw fhirError(
        'patch-invalid',
        `JSON Patch operation ${i}: 'op' must be one of ${[...RFC6902_OPS].join(', ')}`,
      );
  });
  const target = cloneFhirJson(resource);
  const structural = jsonPatch.validate(operations, undefined);
  if (structural)
    throw fhirError(
      'patch-invalid',
      `JSON Patch operation ${structural.index}: ${structural.message.split('\n')[0]}`,
    );
  try {
    // Mutate our own clone: fast-json-patch's own cloning goes through JSON and would flatten LosslessNumbers.
    jsonPatch.applyPatch(target, operations, true, true, true);
  } catch (err) {
    if (err instanceof jsonPatch.JsonPatchError) {
      throw fhirError(
        'patch-not-applicable',
        `JSON Patch operation ${err.index ?? '?'} cannot be applied: ${err.message.split('\n')[0]}`,
      );
    }
    // fast-json-patch refuses paths through __proto__ / constructor.prototype with a plain Error.
    if (err instanceof Error && /banned/.test(err.message))
      throw fhirError('patch-invalid', `JSON Patch: ${err.message}`);
    throw err;
  }
  return reviveLosslessNumbers(target) as FhirResource;
}

/** `copy` clones through JSON, turning LosslessNumbers into plain objects: turn them back. */
function reviveLosslessNumbers(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || value instanceof LosslessNumber) return value;
  if (Array.isArray(value)) return value.map(reviveLosslessNumbers);
  const record = value as Record<string, unknown>;
  if (
    record.isLosslessNumber === true &&
    typeof record.value === 'string' &&
    Object.keys(record).length === 2
  ) {
    return new LosslessNumber(record.value);
  }
  for (const key of Object.keys(record)) record[key] = reviveLosslessNumbers(record[key]);
  return record;
}

// ---- FHIRPath Patch ---------------------------------------------------------------------------------------

interface ParametersPart {
  name?: string;
  part?: ParametersPart[];
  [valueX: string]: unknown;
}

interface PatchOperation {
  type: 'add' | 'insert' | 'delete' | 'replace' | 'move';
  path: string;
  name?: string;
  value?: unknown;
  /** The `value[x]` type suffix (e.g. `String`), for choice elements. */
  valueType?: string;
  index?: number;
  source?: number;
  destination?: number;
}

interface Target {
  /** The JSON object holding the element. */
  parent: Record<string, unknown>;
  /** Its JSON key (choice elements resolved, e.g. `deceasedBoolean`). */
  key: string;
  /** Position in the array, when the element repeats. */
  index: number | null;
  /** FHIR paths the model knows the element's parent by (its type, e.g. `HumanName`, and its path, e.g. `Patient.name`). */
  parentTypePaths: string[];
  /** The same for the element itself (where add puts children). */
  typePaths: string[];
}

const model = r4Model as unknown as {
  choiceTypePaths: Record<string, string[]>;
  path2Repeating?: Record<string, boolean>;
};

/**
 * Sets a member named by the client: `__proto__` becomes an own member (which validation then refuses like any
 * unknown element) instead of changing the object's prototype and vanishing.
 */
function setMember(record: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__')
    Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
  else record[key] = value;
}

function valueOf(part: ParametersPart): { value: unknown; valueType?: string } | undefined {
  for (const key of Object.keys(part)) {
    if (key.startsWith('value') && key.length > 5) return { value: part[key], valueType: key.slice(5) };
  }
  if (Array.isArray(part.part)) {
    // A complex value given as parts: each part is one element of the value.
    const value: Record<string, unknown> = {};
    for (const sub of part.part) {
      if (sub === null || typeof sub !== 'object' || typeof sub.name !== 'string') continue;
      const inner = valueOf(sub);
      if (inner) setMember(value, sub.name, inner.value);
    }
    return { value };
  }
  return undefined;
}

function parseOperations(document: unknown): PatchOperation[] {
  const parameters = document as { resourceType?: unknown; parameter?: ParametersPart[] };
  if (!parameters || typeof parameters !== 'object' || parameters.resourceType !== 'Parameters') {
    throw fhirError('patch-invalid', 'A FHIRPath Patch body is a Parameters resource', {
      expression: 'resourceType',
    });
  }
  const operations: PatchOperation[] = [];
  if (parameters.parameter !== undefined && !Array.isArray(parameters.parameter)) {
    throw fhirError('patch-invalid', 'Parameters.parameter must be an array', {
      expression: 'Parameters.parameter',
    });
  }
  (parameters.parameter ?? []).forEach((parameter, i) => operations.push(parseOperation(parameter, i)));
  return operations;
}

/** One `operation` parameter: its type, path and the parts that type needs. */
function parseOperation(parameter: ParametersPart, i: number): PatchOperation {
  if (parameter === null || typeof parameter !== 'object') {
    throw fhirError('patch-invalid', 'Each parameter must be an object', {
      expression: `Parameters.parameter[${i}]`,
    });
  }
  const where = `Parameters.parameter[${i}]`;
  if (parameter.name !== 'operation')
    throw fhirError('patch-invalid', `Unknown FHIRPath Patch parameter '${String(parameter.name)}'`, {
      expression: `${where}.name`,
    });
  const parts = new Map<string, ParametersPart>();
  for (const part of Array.isArray(parameter.part) ? parameter.part : []) {
    if (part !== null && typeof part === 'object' && typeof part.name === 'string')
      parts.set(part.name, part);
  }
  const text = (name: string) => {
    const part = parts.get(name);
    const v = part && (part.valueCode ?? part.valueString ?? part.valueUri);
    return typeof v === 'string' ? v : undefined;
  };
  const integer = (name: string) => {
    const v = parts.get(name)?.valueInteger;
    const n = v instanceof LosslessNumber ? Number(v.value) : v;
    return typeof n === 'number' && Number.isInteger(n) ? n : undefined;
  };
  const type = text('type');
  if (!type || !['add', 'insert', 'delete', 'replace', 'move'].includes(type)) {
    throw fhirError(
      'patch-invalid',
      `Operation type must be add, insert, delete, replace or move, not '${type ?? ''}'`,
      { expression: `${where}.part` },
    );
  }
  const path = text('path');
  if (!path)
    throw fhirError('patch-invalid', 'Every FHIRPath Patch operation needs a path', {
      expression: `${where}.part`,
    });
  const value = parts.has('value') ? valueOf(parts.get('value')!) : undefined;
  const op: PatchOperation = {
    type: type as PatchOperation['type'],
    path,
    name: text('name'),
    value: value?.value,
    valueType: value?.valueType,
    index: integer('index'),
    source: integer('source'),
    destination: integer('destination'),
  };
  const need = (ok: boolean, what: string) => {
    if (!ok)
      throw fhirError('patch-invalid', `A FHIRPath Patch '${type}' operation needs ${what}`, {
        expression: `${where}.part`,
      });
  };
  if (type === 'add') need(op.name !== undefined && value !== undefined, 'a name and a value');
  if (op.name !== undefined && !/^[a-z][A-Za-z0-9]*$/.test(op.name)) {
    throw fhirError('patch-invalid', `'${op.name}' is not a FHIR element name`, {
      expression: `${where}.part`,
    });
  }
  if (type === 'insert') need(op.index !== undefined && value !== undefined, 'an index and a value');
  if (type === 'replace') need(value !== undefined, 'a value');
  if (type === 'move')
    need(op.source !== undefined && op.destination !== undefined, 'a source and a destination');
  return op;
}

/** JSON key of element `name` in `parent` (choice elements: `deceased` -> `deceasedBoolean`). */
function jsonKey(parent: Record<string, unknown>, name: string): string {
  if (name in parent) return name;
  for (const key of Object.keys(parent)) {
    if (key.startsWith(name) && key.length > name.length && /[A-Z]/.test(key[name.length])) return key;
  }
  return name;
}

interface FhirPathNode {
  parentResNode: FhirPathNode | null;
  propName: string | null;
  index: number | null;
  path: string | null;
  fhirNodeDataType?: string | null;
}

/** Evaluate `path` and map each result back to its place in `resource` (which may hold LosslessNumbers). */
function locate(resource: FhirResource, path: string, opIndex: number): Target[] {
  let nodes: unknown[];
  try {
    nodes = fhirpath.evaluate(toPlainJson(resource), path, {}, r4Model, {
      resolveInternalTypes: false,
    }) as unknown[];
  } catch (err) {
    throw fhirError(
      'patch-invalid',
      `Operation ${opIndex}: the path '${path}' is not a FHIRPath expression this server evaluates: ${(err as Error).message}`,
      { expression: `Parameters.parameter[${opIndex}]` },
    );
  }
  return nodes.map((node) => {
    const chain: FhirPathNode[] = [];
    for (let n = node as FhirPathNode | null; n?.parentResNode; n = n.parentResNode) chain.unshift(n);
    // The resource itself (path `Patient`): a holder whose only element is the resource, so add works at the top.
    if (chain.length === 0) {
      return {
        parent: { resource },
        key: 'resource',
        index: null,
        parentTypePaths: [],
        typePaths: [resource.resourceType],
      };
    }
    let parent = resource as Record<string, unknown>;
    for (let i = 0; i < chain.length; i++) {
      const step = chain[i];
      const key = jsonKey(parent, step.propName!);
      if (i === chain.length - 1) {
        return {
          parent,
          key,
          index: step.index,
          parentTypePaths: typePathsOf(step.parentResNode!),
          typePaths: typePathsOf(step),
        };
      }
      const child = parent[key];
      parent = (step.index !== null && Array.isArray(child) ? child[step.index] : child) as Record<
        string,
        unknown
      >;
    }
    throw new Error('unreachable');
  });
}

function typePathsOf(node: FhirPathNode): string[] {
  return [node.fhirNodeDataType, node.path].filter((p): p is string => typeof p === 'string' && p !== '');
}

function single(targets: Target[], op: PatchOperation, i: number): Target {
  if (targets.length !== 1) {
    throw fhirError(
      'patch-not-applicable',
      `Operation ${i} (${op.type}): '${op.path}' matches ${targets.length} elements; it must match exactly one`,
      { expression: `Parameters.parameter[${i}]` },
    );
  }
  return targets[0];
}

function isRepeating(typePaths: string[], name: string): boolean {
  return typePaths.some((p) => model.path2Repeating?.[`${p}.${name}`] === true);
}

function isChoice(typePaths: string[], name: string): boolean {
  return typePaths.some((p) => model.choiceTypePaths[`${p}.${name}`] !== undefined);
}

function applyFhirPathPatch(resource: FhirResource, document: unknown): FhirResource {
  const operations = parseOperations(document);
  const target = cloneFhirJson(resource);
  operations.forEach((op, i) => {
    switch (op.type) {
      case 'add':
        patchAdd(target, op, i);
        break;
      case 'insert':
        patchInsert(target, op, i);
        break;
      case 'move':
        patchMove(target, op, i);
        break;
      case 'delete':
        patchDelete(target, op, i);
        break;
      case 'replace':
        patchReplace(target, op, i);
        break;
    }
  });
  return target;
}

/** `add`: a new child `name` of the element at `path` (appended when it repeats; an error when it has a value). */
function patchAdd(target: FhirResource, op: PatchOperation, i: number): void {
  const owner = single(locate(target, op.path, i), op, i);
  const element =
    owner.index !== null ? (owner.parent[owner.key] as unknown[])[owner.index] : owner.parent[owner.key];
  if (element === null || typeof element !== 'object' || Array.isArray(element)) {
    throw fhirError(
      'patch-not-applicable',
      `Operation ${i} (add): '${op.path}' is not an element that can have children`,
      { expression: `Parameters.parameter[${i}]` },
    );
  }
  const container = element as Record<string, unknown>;
  const key = isChoice(owner.typePaths, op.name!) && op.valueType ? `${op.name}${op.valueType}` : op.name!;
  // Own members only: `constructor` or `toString` is not already there.
  const existing = Object.hasOwn(container, key) ? container[key] : undefined;
  if (Array.isArray(existing)) existing.push(op.value);
  else if (existing === undefined)
    setMember(container, key, isRepeating(owner.typePaths, op.name!) ? [op.value] : op.value);
  else
    throw fhirError(
      'patch-not-applicable',
      `Operation ${i} (add): ${op.path}.${op.name} already has a value; use replace`,
      { expression: `Parameters.parameter[${i}]` },
    );
}

/** `insert`: `value` at `index` of the list at `path`. */
function patchInsert(target: FhirResource, op: PatchOperation, i: number): void {
  const list = listOf(locate(target, op.path, i), op, i);
  if (op.index! < 0 || op.index! > list.items.length) {
    throw fhirError(
      'patch-not-applicable',
      `Operation ${i} (insert): index ${op.index} is outside 0..${list.items.length}`,
      { expression: `Parameters.parameter[${i}]` },
    );
  }
  list.items.splice(op.index!, 0, op.value);
}

/** `move`: the item at `source` of the list at `path` to `destination`. */
function patchMove(target: FhirResource, op: PatchOperation, i: number): void {
  const list = listOf(locate(target, op.path, i), op, i);
  const n = list.items.length;
  if (op.source! < 0 || op.source! >= n || op.destination! < 0 || op.destination! >= n) {
    throw fhirError(
      'patch-not-applicable',
      `Operation ${i} (move): source and destination must be within 0..${n - 1}`,
      { expression: `Parameters.parameter[${i}]` },
    );
  }
  const [moved] = list.items.splice(op.source!, 1);
  list.items.splice(op.destination!, 0, moved);
}

/** `delete`: the element at `path`; nothing there changes nothing. */
function patchDelete(target: FhirResource, op: PatchOperation, i: number): void {
  const targets = locate(target, op.path, i);
  if (targets.length === 0) return; // deleting what is not there changes nothing (fhirpatch.html)
  const one = single(targets, op, i);
  if (one.index !== null && Array.isArray(one.parent[one.key])) {
    const items = one.parent[one.key] as unknown[];
    items.splice(one.index, 1);
    if (items.length === 0) delete one.parent[one.key];
  } else {
    delete one.parent[one.key];
  }
}

/** `replace`: the value at `path` (a choice element may change its type). */
function patchReplace(target: FhirResource, op: PatchOperation, i: number): void {
  const one = single(locate(target, op.path, i), op, i);
  if (one.index !== null && Array.isArray(one.parent[one.key])) {
    (one.parent[one.key] as unknown[])[one.index] = op.value;
  } else {
    // A choice element may change type: valueString -> valueQuantity.
    const base = one.key.replace(/[A-Z][A-Za-z0-9]*$/, '');
    if (isChoice(one.parentTypePaths, base) && op.valueType && one.key !== `${base}${op.valueType}`) {
      delete one.parent[one.key];
      one.parent[`${base}${op.valueType}`] = op.value;
    } else {
      one.parent[one.key] = op.value;
    }
  }
}

/** The array an insert/move works on: `path` names the (repeating) element itself. */
function listOf(targets: Target[], op: PatchOperation, i: number): { items: unknown[] } {
  if (targets.length === 0) {
    throw fhirError('patch-not-applicable', `Operation ${i} (${op.type}): '${op.path}' matches nothing`, {
      expression: `Parameters.parameter[${i}]`,
    });
  }
  const first = targets[0];
  const items = first.parent[first.key];
  if (!Array.isArray(items) || targets.some((t) => t.parent !== first.parent || t.key !== first.key)) {
    throw fhirError('patch-not-applicable', `Operation ${i} (${op.type}): '${op.path}' is not one list`, {
      expression: `Parameters.parameter[${i}]`,
    });
  }
  return { items };
}
