/**
 * A member below the HTTP layer, for the exchange tests that need stored, anchored records and no app: its own
 * SQLite store in `dir`, its integrity service on `ledger` (versions anchored as written), writes as this custodian,
 * and a FhirContext over them for a given access policy (the network's interactions take one).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import type { AccessPolicy } from '../../src/fhir/interactions/access-policy.js';
import type { FhirContext } from '../../src/fhir/interactions/types.js';
import { patientCompartments } from '../../src/fhir/search/definitions.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import type { ResourceValidator } from '../../src/fhir/validation/validator.js';
import { openIntegrity, type IntegrityService } from '../../src/integrity/integrity-service.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { validator } from '../validation/helpers.js';

export interface StoreMember {
  dir: string;
  store: SqliteResourceStore;
  ledger: Ledger;
  integrity: IntegrityService;
  /** PUTs this resource text (its id kept) as the member's custodian, anchored. */
  write(json: string): Promise<StoredVersion>;
  /** A FhirContext over the store for this caller (the shared validator unless one is given). */
  context(access: AccessPolicy, validatorHere?: ResourceValidator): FhirContext;
  close(): Promise<void>;
}

export async function openStoreMember(dir: string, ledger: Ledger, custodian: string): Promise<StoreMember> {
  await mkdir(dir, { recursive: true });
  const store = new SqliteResourceStore({ file: path.join(dir, 'resources.sqlite') });
  await store.init();
  const integrity = await openIntegrity({ dataDir: dir, store, ledger });
  return {
    dir,
    store,
    ledger,
    integrity,
    write(json) {
      const resource = parseFhirJson<FhirResource>(json);
      return store.write({
        resourceType: resource.resourceType,
        id: resource.id!,
        resource,
        method: 'PUT',
        patients: patientCompartments(resource),
        index: extractIndex(resource),
        custodian,
        anchor: integrity.anchorer.anchorFor,
      });
    },
    context(access, validatorHere) {
      return {
        store,
        validator: validatorHere ?? validator(),
        access,
        log: { info() {}, warn() {}, error() {}, debug() {} },
        indexEntries: extractIndex,
        patientsOf: patientCompartments,
        anchor: integrity.anchorer.anchorFor,
      };
    },
    async close() {
      await integrity.close();
      await store.close();
    },
  };
}
