/** Test fixtures of the integrity path: a real SQLite store and a real embedded ledger in a temporary data dir. */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import type { StoredVersion, WriteRequest } from '../../src/fhir/store/resource-store.js';
import { openEmbeddedLedger } from '../../src/ledger/embedded/index.js';
import { openIntegrity, type IntegrityService } from '../../src/integrity/integrity-service.js';
import type { AnchoringOptions } from '../../src/integrity/anchorer.js';
import {
  LedgerTransactionError,
  type EventStream,
  type Ledger,
  type SubmitResult,
  type TransactionStatus,
} from '../../src/ledger/ledger.js';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';
import { patientCompartments } from '../../src/fhir/search/definitions.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import { loadSettings } from '../../src/config/config.js';
import { DATA_DIR_SETTINGS, type DataDirConfig } from '../../src/commands/data-dir.js';

/** The organisation the fixture writes as (the custodian of its versions). */
export const CUSTODIAN = 'Organization/org1';

export const MSP_ID = 'Org1MSP';

/**
 * Fault injection around a real ledger (the failures a network produces: unavailable, reply lost after commit).
 * Everything else goes to the real embedded chain.
 */
export class FaultyLedger implements Ledger {
  readonly kind = 'embedded' as const;
  /** Refuse submissions as an unreachable network would. */
  down = false;
  /** Commit, then lose the reply this many times (the client sees an error although the batch is on the chain). */
  loseReplies = 0;
  submits = 0;
  private readonly reachableListeners = new Set<() => void>();

  constructor(readonly inner: Ledger) {}

  onReachable(listener: () => void): () => void {
    this.reachableListeners.add(listener);
    return () => this.reachableListeners.delete(listener);
  }

  /** As a network ledger reports its connection back (FabricLedger: the gRPC channel is READY again). */
  reportReachable(): void {
    for (const listener of [...this.reachableListeners]) listener();
  }

  /** Submissions wait for this before reaching the chain (a slow network: several can be in flight). */
  gate: Promise<void> = Promise.resolve();
  inFlight = 0;
  mostInFlight = 0;

  async submit(transaction: string, args: string[]): Promise<SubmitResult> {
    this.submits++;
    if (this.down)
      throw new LedgerTransactionError('ledger unavailable (injected)', 'UNAVAILABLE', undefined, true);
    this.inFlight++;
    this.mostInFlight = Math.max(this.mostInFlight, this.inFlight);
    let result: SubmitResult;
    try {
      await this.gate;
      result = await this.inner.submit(transaction, args);
    } finally {
      this.inFlight--;
    }
    if (this.loseReplies > 0) {
      this.loseReplies--;
      throw new LedgerTransactionError(
        'connection reset after commit (injected)',
        'UNAVAILABLE',
        undefined,
        true,
      );
    }
    return result;
  }

  evaluate(transaction: string, args: string[]): Promise<string> {
    if (this.down)
      return Promise.reject(
        new LedgerTransactionError('ledger unavailable (injected)', 'UNAVAILABLE', undefined, true),
      );
    return this.inner.evaluate(transaction, args);
  }

  events(startBlock?: number): EventStream {
    return this.inner.events(startBlock);
  }

  height(): Promise<number> {
    if (this.down)
      return Promise.reject(
        new LedgerTransactionError('ledger unavailable (injected)', 'UNAVAILABLE', undefined, true),
      );
    return this.inner.height();
  }

  transactionStatus(transactionId: string): Promise<TransactionStatus | undefined> {
    if (this.down)
      return Promise.reject(
        new LedgerTransactionError('ledger unavailable (injected)', 'UNAVAILABLE', undefined, true),
      );
    return this.inner.transactionStatus(transactionId);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface Fixture {
  dir: string;
  store: SqliteResourceStore;
  ledger: FaultyLedger;
  integrity: IntegrityService;
  /** Reopen the integrity service (a restart of the worker over the same files). */
  reopenIntegrity(options?: Partial<AnchoringOptions>): Promise<IntegrityService>;
  write(resource: FhirResource, method?: WriteRequest['method'], patients?: string[]): Promise<StoredVersion>;
  remove(resourceType: string, id: string): Promise<StoredVersion>;
  close(): Promise<void>;
}

export async function openFixture(anchoring: Partial<AnchoringOptions> = {}, dir?: string): Promise<Fixture> {
  const dataDir = dir ?? (await mkdtemp(path.join(os.tmpdir(), 'hie-integrity-')));
  const store = new SqliteResourceStore({ file: path.join(dataDir, 'resources.sqlite') });
  await store.init();
  const ledger = new FaultyLedger(await openEmbeddedLedger({ dataDir, mspId: MSP_ID }));
  const open = (options: Partial<AnchoringOptions>) =>
    openIntegrity({ dataDir, store, ledger, anchoring: { ...anchoring, ...options } });
  const fixture: Fixture = {
    dir: dataDir,
    store,
    ledger,
    integrity: await open({}),
    async reopenIntegrity(options = {}) {
      await fixture.integrity.close();
      fixture.integrity = await open(options);
      return fixture.integrity;
    },
    // As the write path stores a version (interactions/common.ts writeVersion): compartments, index rows and
    // custodian derived the same way.
    write(resource, method = 'PUT', patients) {
      return store.write({
        resourceType: resource.resourceType,
        id: resource.id!,
        resource,
        method,
        patients: patients ?? patientCompartments(resource),
        index: extractIndex(resource),
        custodian: CUSTODIAN,
        anchor: fixture.integrity.anchorer.anchorFor,
      });
    },
    async remove(resourceType, id) {
      return store.write({
        resourceType,
        id,
        method: 'DELETE',
        patients: (await store.read(resourceType, id))?.patients ?? [],
        custodian: CUSTODIAN,
        anchor: fixture.integrity.anchorer.anchorFor,
      });
    },
    async close() {
      await fixture.integrity.close();
      await ledger.close();
      await store.close();
      if (!dir) await rm(dataDir, { recursive: true, force: true });
    },
  };
  return fixture;
}

/** Polls until `check` holds (for background work); fails with `what` after `timeoutMs`. */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The settings of `verify` and `erase` over this data directory, the rest at their defaults. */
export function dataDirConfig(dataDir: string): DataDirConfig {
  return loadSettings(DATA_DIR_SETTINGS, { dataDir }, {});
}

export function observation(id: string, value: string, subject?: string): FhirResource {
  // Lossless: the value keeps its written digits (e.g. 1.50).
  const about = subject === undefined ? '' : `"subject":{"reference":"${subject}"},`;
  return parseFhirJson<FhirResource>(
    `{"resourceType":"Observation","id":"${id}","status":"final","code":{"text":"weight"},${about}"valueQuantity":{"value":${value},"unit":"kg"}}`,
  );
}
