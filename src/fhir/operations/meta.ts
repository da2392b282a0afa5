/**
 * `$meta`, `$meta-add`, `$meta-delete` on one resource (http://hl7.org/fhir/R4/resource-operation-meta.html,
 * -meta-add.html, -meta-delete.html): its profiles, tags and security labels.
 *
 * `meta` is part of what is stored and hashed (each version's salted hash is anchored on the ledger), so, unlike the
 * spec's note that these operations leave the version as it is, `$meta-add` and `$meta-delete` write a new version
 * the way an update does: the caller's write rights, validation, index rows and anchor. A change that changes
 * nothing stores nothing. What the caller may not see is 404, as for a read.
 */
import { fhirError } from '../outcome.js';
import { parseFhirJson, type FhirResource } from '../fhir-json.js';
import {
  assertId,
  assertResourceType,
  parseResourceBody,
  validateResource,
  versionHeaders,
  visibleOr404,
  writeVersion,
} from '../interactions/common.js';
import type { FhirRegistry, OperationRegistration } from '../interactions/fhir-registry.js';
import type { FhirContext, FhirRequest, FhirResponse, InteractionHandler } from '../interactions/types.js';
import type { StoredVersion } from '../store/resource-store.js';

interface Coding {
  system?: string;
  code?: string;
  [key: string]: unknown;
}

interface Meta {
  profile?: string[];
  tag?: Coding[];
  security?: Coding[];
  [key: string]: unknown;
}

const codingKey = (coding: Coding): string => `${coding.system ?? ''}|${coding.code ?? ''}`;

function metaOf(resource: FhirResource): Meta {
  const meta = resource.meta;
  return meta !== null && typeof meta === 'object' && !Array.isArray(meta) ? (meta as Meta) : {};
}

function returnParameters(meta: Meta): FhirResource {
  return { resourceType: 'Parameters', parameter: [{ name: 'return', valueMeta: meta }] };
}

/** The current or named version, visible to the caller and not a deletion. */
async function target(request: FhirRequest, context: FhirContext): Promise<StoredVersion> {
  const resourceType = assertResourceType(context, request.resourceType);
  const id = assertId(request.id);
  let what = `${resourceType}/${id}`;
  let version: StoredVersion | undefined;
  if (request.versionId !== undefined) {
    what += `/_history/${request.versionId}`;
    if (!/^[1-9]\d{0,15}$/.test(request.versionId))
      throw fhirError('resource-not-found', `${what} is not known`);
    version = await context.store.vread(resourceType, id, Number(request.versionId));
  } else version = await context.store.read(resourceType, id);
  const visible = visibleOr404(context, version, what);
  if (visible.deleted)
    throw fhirError('resource-deleted', `${what} was deleted`, { headers: versionHeaders(visible) });
  return visible;
}

/** The `meta` parameter of a `$meta-add`/`$meta-delete` Parameters body. */
function metaParameter(request: FhirRequest): Meta {
  const body = parseResourceBody(request);
  if (body.resourceType !== 'Parameters')
    throw fhirError('body-not-resource', 'The body must be a Parameters resource', {
      expression: 'Parameters',
    });
  const parameters = Array.isArray(body.parameter)
    ? (body.parameter as { name?: unknown; valueMeta?: unknown }[])
    : [];
  const metas = parameters.filter((p) => p?.name === 'meta');
  if (metas.length !== 1)
    throw fhirError('parameter-missing', 'Exactly one parameter "meta" (valueMeta) is needed', {
      expression: 'Parameters.parameter',
    });
  const meta = metas[0].valueMeta;
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta))
    throw fhirError('parameter-invalid', 'Parameter "meta" needs a valueMeta', {
      expression: 'Parameters.parameter',
    });
  return meta as Meta;
}

/** `meta` with `change`'s profiles, tags and security labels added (add) or removed (delete). */
function changedMeta(meta: Meta, change: Meta, kind: 'add' | 'delete'): Meta {
  const out: Meta = { ...meta };
  const profiles = new Set(change.profile ?? []);
  const profile =
    kind === 'add'
      ? [...(meta.profile ?? []), ...[...profiles].filter((p) => !(meta.profile ?? []).includes(p))]
      : (meta.profile ?? []).filter((p) => !profiles.has(p));
  if (profile.length > 0) out.profile = profile;
  else delete out.profile;
  for (const field of ['tag', 'security'] as const) {
    const given = change[field] ?? [];
    const keys = new Set(given.map(codingKey));
    const current = meta[field] ?? [];
    const present = new Set(current.map(codingKey));
    const next =
      kind === 'add'
        ? [
            ...current,
            ...given.filter(
              (c, i) =>
                !present.has(codingKey(c)) && given.findIndex((g) => codingKey(g) === codingKey(c)) === i,
            ),
          ]
        : current.filter((c) => !keys.has(codingKey(c)));
    if (next.length > 0) out[field] = next;
    else delete out[field];
  }
  return out;
}

/** GET|POST [type]/[id]/$meta and [type]/[id]/_history/[vid]/$meta */
const meta: InteractionHandler = async (request, context) => {
  context.access.authorize('read', request.resourceType);
  const version = await target(request, context);
  const resource = parseFhirJson<FhirResource>(version.json!);
  return { status: 200, body: returnParameters(metaOf(resource)), headers: versionHeaders(version) };
};

function metaChange(kind: 'add' | 'delete'): InteractionHandler {
  return async (request, context): Promise<FhirResponse> => {
    const resourceType = assertResourceType(context, request.resourceType);
    context.access.authorize('update', resourceType);
    if (request.versionId !== undefined)
      throw fhirError('request-invalid', `$meta-${kind} changes the current version; it takes no _history`);
    const change = metaParameter(request);
    const existing = await target(request, context);
    const resource = parseFhirJson<FhirResource>(existing.json!);
    const next = changedMeta(metaOf(resource), change, kind);
    if (Object.keys(next).length > 0) resource.meta = next;
    else delete resource.meta;
    validateResource(context, resource, 'update');
    const version = await writeVersion(
      context,
      { resourceType, id: existing.id, resource, method: 'PUT' },
      existing,
    );
    const stored = parseFhirJson<FhirResource>(version.json!);
    return { status: 200, body: returnParameters(metaOf(stored)), headers: versionHeaders(version) };
  };
}

const BASE = 'http://hl7.org/fhir/OperationDefinition/';

export function metaOperations(): OperationRegistration[] {
  return [
    {
      name: 'meta',
      definition: `${BASE}Resource-meta`,
      levels: ['instance'],
      methods: ['GET', 'POST'],
      documentation: 'The profiles, tags and security labels of a resource or of one of its versions.',
      handler: meta,
    },
    {
      name: 'meta-add',
      definition: `${BASE}Resource-meta-add`,
      levels: ['instance'],
      methods: ['POST'],
      documentation:
        'Adds profiles, tags and security labels: a new version (meta is part of what is hashed and anchored).',
      handler: metaChange('add'),
    },
    {
      name: 'meta-delete',
      definition: `${BASE}Resource-meta-delete`,
      levels: ['instance'],
      methods: ['POST'],
      documentation:
        'Removes profiles, tags and security labels (matched by system and code, profiles by URL): a new version.',
      handler: metaChange('delete'),
    },
  ];
}

/** Registers `$meta`, `$meta-add` and `$meta-delete`. */
export function registerMetaOperations(registry: FhirRegistry): FhirRegistry {
  for (const operation of metaOperations()) registry.registerOperation(operation);
  return registry;
}
