/**
 * What the ResourceStore adapters share: the write rules (preconditions, version numbering, the stored text),
 * the history cursor, and the row shapes both SQL schemas use. Keeping them here keeps the adapters' answers
 * identical, which test/store/contract.ts checks.
 */
import type { FhirResource } from '../fhir-json.js';
import { stringifyFhirJson } from '../fhir-json.js';
import { decodeJson } from './json-codec.js';
import { fhirError } from '../outcome.js';
import type {
  AnchorReference,
  AnchorState,
  PendingAnchor,
  StoredVersion,
  StoredVersionBytes,
  WriteRequest,
} from './resource-store.js';

/** A resource_version row as both adapters select it (VERSION_COLUMNS). */
export interface VersionRow {
  seq: number;
  resource_type: string;
  id: string;
  version_id: number;
  last_updated: string;
  deleted: number | boolean;
  method: StoredVersion['method'];
  /** The text; SQLite keeps it deflated (a BLOB, json-codec.ts) since schema migration 7. */
  json: string | Uint8Array | null;
  custodian: string | null;
  patients: string | null;
}

export interface AnchorRow {
  a_resource_type: string | null;
  a_id: string;
  a_version_id: number;
  salt: string | null;
  leaf_hash: string;
  ledger_key: string;
  leaf_version: number | null;
  status: 'pending' | 'anchored' | 'erased';
  transaction_id: string | null;
  block_number: number | null;
  batch_id: string | null;
  batch_root: string | null;
  leaf_index: number | null;
  leaf_count: number | null;
}

export const VERSION_COLUMNS =
  'seq, resource_type, id, version_id, last_updated, deleted, method, json, custodian, patients';
export const ANCHOR_COLUMNS =
  'a.resource_type AS a_resource_type, a.id AS a_id, a.version_id AS a_version_id, a.salt, a.leaf_hash, a.ledger_key, a.leaf_version, ' +
  'a.status, a.transaction_id, a.block_number, a.batch_id, a.batch_root, a.leaf_index, a.leaf_count';
/** Rows per chunk of allVersions(). */
export const CHUNK = 500;
/** ISO instants outside years 0000-9999 do not sort as text; clamp query bounds into that range. */
export const MIN_INSTANT = '0000-01-01T00:00:00.000Z';
export const MAX_INSTANT = '9999-12-31T23:59:59.999Z';

/**
 * A version row whose text was selected as bytes (SQLite: `CAST(json AS BLOB)`, no UTF-8 decode), for vreadManyBytes.
 */
export function toStoredVersionBytes(
  row: Omit<VersionRow, 'json'> & { json: Uint8Array | null },
): StoredVersionBytes {
  const version: StoredVersionBytes = {
    resourceType: row.resource_type,
    id: row.id,
    versionId: row.version_id,
    lastUpdated: row.last_updated,
    deleted: row.deleted === true || row.deleted === 1,
    method: row.method,
  };
  if (row.json !== null) version.jsonBytes = row.json;
  if (row.custodian !== null) version.custodian = row.custodian;
  if (row.patients !== null) version.patients = JSON.parse(row.patients) as string[];
  return version;
}

/** vreadMany's versions as vreadManyBytes gives them (adapters that keep text as text: one encode each). */
export function withJsonBytes(version: StoredVersion | undefined): StoredVersionBytes | undefined {
  if (!version) return undefined;
  const { json, ...rest } = version;
  return json === undefined ? rest : { ...rest, jsonBytes: Buffer.from(json, 'utf8') };
}

export function toStoredVersion(row: VersionRow): StoredVersion {
  const version: StoredVersion = {
    resourceType: row.resource_type,
    id: row.id,
    versionId: row.version_id,
    lastUpdated: row.last_updated,
    deleted: row.deleted === true || row.deleted === 1,
    method: row.method,
  };
  if (row.json !== null) version.json = decodeJson(row.json);
  if (row.custodian !== null) version.custodian = row.custodian;
  if (row.patients !== null) version.patients = JSON.parse(row.patients) as string[];
  return version;
}

export function toAnchorState(row: AnchorRow): AnchorState {
  const resourceType = row.a_resource_type!;
  if (row.status === 'erased')
    return { resourceType, id: row.a_id, versionId: row.a_version_id, status: 'erased' };
  // One object per state, members in the order they always had (no spread copies: a custodian reads hundreds).
  const state = {
    resourceType,
    id: row.a_id,
    versionId: row.a_version_id,
    salt: row.salt ?? '',
    leafHash: row.leaf_hash,
    ledgerKey: row.ledger_key,
  } as PendingAnchor & { status: 'pending' | 'anchored'; anchor?: AnchorReference };
  if (row.leaf_version === 2) state.leafVersion = 2;
  state.status = row.status === 'pending' ? 'pending' : 'anchored';
  if (state.status === 'pending') return state as PendingAnchor & { status: 'pending' };
  state.anchor = {
    transactionId: row.transaction_id!,
    blockNumber: row.block_number!,
    batchId: row.batch_id!,
    leafIndex: row.leaf_index!,
    leafCount: row.leaf_count!,
    root: row.batch_root!,
  };
  return state as PendingAnchor & { status: 'anchored'; anchor: AnchorReference };
}

/** A query instant (_since, _at) as the stored text form, for comparison with last_updated. */
export function instantBound(value: string, name: string): string {
  const ms = Date.parse(value);
  if (Number.isNaN(ms))
    throw fhirError('parameter-invalid', `History parameter ${name} is not a valid instant: '${value}'`);
  if (ms < Date.parse(MIN_INSTANT)) return MIN_INSTANT;
  if (ms > Date.parse(MAX_INSTANT)) return MAX_INSTANT;
  return new Date(ms).toISOString();
}

/** History paging state: rows with seq in [lo, min(hi, after - 1)], total fixed by the first page. */
export interface HistoryCursor {
  after: number;
  lo: number;
  hi: number;
  total: number;
}

export function encodeCursor(c: HistoryCursor): string {
  return Buffer.from(`${c.after}.${c.lo}.${c.hi}.${c.total}`).toString('base64url');
}

export function decodeCursor(text: string): HistoryCursor {
  const parts = Buffer.from(text, 'base64url').toString('latin1').split('.');
  const numbers = parts.map((p) => (/^\d{1,15}$/.test(p) ? Number(p) : NaN));
  if (numbers.length !== 4 || numbers.some(Number.isNaN))
    throw fhirError('page-cursor-invalid', `Invalid history page cursor '${text}'`);
  const [after, lo, hi, total] = numbers as [number, number, number, number];
  return { after, lo, hi, total };
}

export type HistoryLevel = 'system' | 'type' | 'instance';

/** lastUpdated of a new version: the wall clock, or 1 ms after the store's last instant if that is not later. */
export function nextInstant(last: string | null): string {
  let ms = Date.now();
  if (last !== null) {
    const lastMs = Date.parse(last);
    if (ms <= lastMs) ms = lastMs + 1;
  }
  return new Date(ms).toISOString();
}

export function finiteOrNull(n: number | undefined): number | null {
  return n !== undefined && Number.isFinite(n) ? n : null;
}

/**
 * The stored text of a version: resourceType, id and meta first (meta with versionId and lastUpdated first),
 * then the other elements in their given order. Only the top level and meta are copied: the caller's object
 * is never modified, and nested values are only read by the serialiser.
 */
export function serialiseVersion(
  resource: FhirResource,
  id: string,
  versionId: number,
  lastUpdated: string,
): string {
  const { resourceType, id: _id, meta, ...rest } = resource;
  const { versionId: _v, lastUpdated: _l, ...otherMeta } = meta ?? {};
  return stringifyFhirJson({
    resourceType,
    id,
    meta: { versionId: String(versionId), lastUpdated, ...otherMeta },
    ...rest,
  });
}

/** The current version of the resource a write targets, as the adapter read it under its write lock. */
export interface CurrentVersion {
  versionId: number;
  deleted: boolean;
}

export type WritePlan =
  /** Deleting a deleted resource: store nothing, answer with the deletion already stored (this version). */
  /** Or a write found identical to the current version (WriteRequest.unchanged). */
  | { kind: 'unchanged'; versionId: number }
  /** Store this version (json set unless it is a deletion). */
  | { kind: 'write'; version: StoredVersion };

/**
 * Checks a write against the current version (If-Match, ifNoneExist, delete of nothing) and builds the new
 * version: next version id, lastUpdated after `lastInstant` (the store's newest) unless the store allocated
 * `instant` itself (PostgreSQL's write clock), and the stored text.
 * Throws the FhirError the contract names (412, 404, 400).
 */
export function planWrite(
  request: WriteRequest,
  current: CurrentVersion | undefined,
  lastInstant: string | null,
  instant?: string,
): WritePlan {
  const { resourceType, id } = request;
  const isDelete = request.method === 'DELETE';
  if (request.ifMatch !== undefined) {
    if (!current) {
      throw fhirError(
        'version-conflict',
        `Version conflict: If-Match expects version ${request.ifMatch} of ${resourceType}/${id}, but the resource does not exist`,
      );
    }
    if (current.versionId !== request.ifMatch) {
      throw fhirError(
        'version-conflict',
        `Version conflict: If-Match expects version ${request.ifMatch} of ${resourceType}/${id}, but the current version is ${current.versionId}`,
      );
    }
  }
  if (request.unchanged) {
    if (request.ifMatch === undefined || !current || current.deleted || isDelete)
      throw new Error(
        `write ${request.method} ${resourceType}/${id}: unchanged needs ifMatch on a current version`,
      );
    return { kind: 'unchanged', versionId: current.versionId };
  }
  if (request.ifNoneExist && current && !current.deleted) {
    throw fhirError('resource-exists', `${resourceType}/${id} already exists (version ${current.versionId})`);
  }
  if (isDelete) {
    if (!current) throw fhirError('resource-not-found', `${resourceType}/${id} does not exist`);
    if (current.deleted) return { kind: 'unchanged', versionId: current.versionId };
  } else {
    if (!request.resource)
      throw new Error(`write ${request.method} ${resourceType}/${id} without a resource`);
    if (request.resource.resourceType !== resourceType) {
      throw fhirError(
        'resource-type-mismatch',
        `Resource type '${request.resource.resourceType}' does not match the target type '${resourceType}'`,
        { expression: 'resourceType' },
      );
    }
  }
  const versionId = current ? current.versionId + 1 : 1;
  const lastUpdated = instant ?? nextInstant(lastInstant);
  const version: StoredVersion = {
    resourceType,
    id,
    versionId,
    lastUpdated,
    deleted: isDelete,
    method: request.method,
  };
  if (!isDelete) version.json = serialiseVersion(request.resource!, id, versionId, lastUpdated);
  if (request.custodian !== undefined) version.custodian = request.custodian;
  if (request.patients !== undefined) version.patients = request.patients;
  return { kind: 'write', version };
}

/** Runs the write's anchor callback on the version about to be committed, checking it anchors that version. */
export function anchorOf(
  request: WriteRequest,
  version: StoredVersion,
  keyEpoch?: number,
): PendingAnchor | undefined {
  const pending = keyEpoch ? request.anchor?.(version, keyEpoch) : request.anchor?.(version);
  if (
    pending &&
    (pending.resourceType !== version.resourceType ||
      pending.id !== version.id ||
      pending.versionId !== version.versionId)
  ) {
    throw new Error(
      `anchor callback returned ${pending.resourceType}/${pending.id}/_history/${pending.versionId} for ` +
        `${version.resourceType}/${version.id}/_history/${version.versionId}`,
    );
  }
  return pending;
}
