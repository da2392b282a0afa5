/**
 * Wires patient linking into the app (src/app/app.ts): the link store in the data directory, link tokens with this
 * member's service key (DATA/identity/exchange/key.pem, written by `hie-ledger member register`) and the member
 * directory on the ledger, and the three FHIR operations.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseFhirJson, type FhirResource } from '../fhir/fhir-json.js';
import type { FhirRegistry } from '../fhir/interactions/fhir-registry.js';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import type { Ledger } from '../ledger/ledger.js';
import { MemberDirectory } from './member-directory.js';
import {
  LinkTokens,
  PatientLinkStore,
  patientLinksFileIn,
  type PatientLinkStorage,
} from './patient-links.js';
import {
  PatientLinkService,
  registerPatientLinkOperations,
  type HomeNetworkIds,
} from './patient-link-service.js';
import type { WrongLinkSink } from './wrong-link-report.js';

export interface PatientLinksSetupOptions {
  dataDir: string;
  /** Where the links are kept (the PostgreSQL store's tables, shared by the replicas); absent: the data directory. */
  links?: PatientLinkStorage;
  /** This member's MSP id (the ledger identity's). */
  mspId: string;
  ledger: Ledger;
  store: ResourceStore;
  registry: FhirRegistry;
  home?: HomeNetworkIds;
  /** Lifetime of issued link tokens in seconds (default 600). */
  linkTokenSeconds?: number;
  /** Where reports of disclosures under a wrong link go (AuditEvent and ledger access records). */
  reports?: WrongLinkSink;
}

/** DATA/identity/exchange/key.pem: the member's service key (the same directory src/commands/member.ts writes). */
export function serviceKeyFileIn(dataDir: string): string {
  return join(dataDir, 'identity', 'exchange', 'key.pem');
}

/**
 * The service key, read when first needed and again when the file changes (`member register` may run while the
 * service does); undefined while there is none.
 */
export function serviceKeyLoader(file: string): () => KeyObject | undefined {
  let cached: { mtimeMs: number; key: KeyObject } | undefined;
  return () => {
    let mtimeMs: number;
    try {
      mtimeMs = statSync(file).mtimeMs;
    } catch {
      return undefined;
    }
    if (cached?.mtimeMs !== mtimeMs) cached = { mtimeMs, key: createPrivateKey(readFileSync(file, 'utf8')) };
    return cached.key;
  };
}

export function setupPatientLinks(options: PatientLinksSetupOptions): {
  service: PatientLinkService;
  close(): void | Promise<void>;
} {
  const store = options.links ?? new PatientLinkStore(patientLinksFileIn(options.dataDir));
  const tokens = new LinkTokens({
    mspId: options.mspId,
    serviceKey: serviceKeyLoader(serviceKeyFileIn(options.dataDir)),
    members: new MemberDirectory(options.ledger),
    spent: store,
    tokenSeconds: options.linkTokenSeconds,
  });
  const readPatient = async (id: string): Promise<FhirResource | undefined> => {
    const version = await options.store.read('Patient', id);
    return version && !version.deleted && version.json
      ? parseFhirJson<FhirResource>(version.json)
      : undefined;
  };
  const service = new PatientLinkService({
    mspId: options.mspId,
    store,
    tokens,
    readPatient,
    home: options.home,
    reports: options.reports,
  });
  registerPatientLinkOperations(options.registry, service);
  return { service, close: () => store.close() };
}
