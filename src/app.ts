/**
 * Wiring: creates the adapters the configuration names and builds the HTTP app on them.
 * Other areas add their wiring here (ledger, access, operations), each as a few lines.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Config } from './config.js';
import { SqliteResourceStore } from './fhir/store/sqlite/sqlite-store.js';
import { logIntegrityCheck } from './fhir/store/sqlite/integrity-check.js';
import type { ResourceStore } from './fhir/store/resource-store.js';
import type { Ledger } from './ledger/ledger.js';
import { openConfiguredLedger } from './ledger/open-ledger.js';
import type { ResourceValidator } from './fhir/validation/validator.js';
import { createSchemaValidator } from './fhir/validation/schema.js';
import { createFhirValidator } from './fhir/validation/index.js';
import { registerValidationOperations } from './fhir/operations/validate.js';
import { FhirRegistry } from './fhir/interactions/registry.js';
import { registerCoreInteractions } from './fhir/interactions/core.js';
import { registerSearch } from './fhir/interactions/search.js';
import { registerBundles } from './fhir/interactions/transaction.js';
import { extractIndex } from './fhir/search/index-entries.js';
import { patientCompartments } from './fhir/search/definitions.js';
import { createHttpServer } from './fhir/http/server.js';
import { registerFhirRoutes } from './fhir/http/fhir-routes.js';
import { setupAccess } from './access/setup.js';
import { openIntegrity, type IntegrityService } from './ledger/integrity-service.js';
import { verifyOperation } from './fhir/operations/verify.js';
import { everythingOperation } from './fhir/operations/everything.js';
import { DEFAULT_AUDIT_CRON, scheduleAudit } from './jobs/audit.js';

export const FHIR_PREFIX = '/fhir';

export interface App {
  fastify: FastifyInstance;
  store: ResourceStore;
  registry: FhirRegistry;
  validator: ResourceValidator;
  ledger?: Ledger;
  /** The integrity path: anchoring worker (status), verifier, audit (docs/integrity.md). */
  integrity?: IntegrityService;
  /** Stop accepting, finish in-flight requests, close the adapters. Idempotent. */
  close(): Promise<void>;
}

export interface AppOverrides {
  /** Use this store instead of the one the configuration names (tests). */
  store?: ResourceStore;
  validator?: ResourceValidator;
  /** Where logs go (tests); stdout when absent. */
  logStream?: NodeJS.WritableStream;
  /** Use this ledger instead of the one the configuration names (tests). */
  ledger?: Ledger;
}

export async function buildApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  mkdirSync(config.dataDir, { recursive: true });
  const store =
    overrides.store ??
    new SqliteResourceStore({
      file: join(config.dataDir, 'resources.sqlite'),
      readCacheBytes: config.readCache,
    });
  await store.init();
  const closers: (() => Promise<void>)[] = [() => store.close()];
  try {
    const validator =
      overrides.validator ??
      (config.validation === 'schema'
        ? await createSchemaValidator()
        : await createFhirValidator({
            definitionsCacheDir: join(config.dataDir, 'cache'),
            igPaths: config.igPaths,
            requiredProfiles: config.requiredProfiles,
            // EHRs send local extensions the network has not published: accepted with a warning, as are
            // example.org URLs (the specification's own examples use them).
            unknownExtensionSeverity: 'warning',
            allowExampleUrls: true,
          }));
    const registry = registerCoreInteractions(new FhirRegistry(), {
      resourceTypes: validator.resourceTypes ?? [],
      started: new Date(),
      // The token endpoint sits beside the FHIR base: http://host/fhir -> http://host/auth/token.
      tokenUrl:
        (config.auth ?? 'smart') === 'smart'
          ? (fhirBase) => `${fhirBase.slice(0, fhirBase.length - FHIR_PREFIX.length)}/auth/token`
          : undefined,
    });
    registerSearch(registry);
    registerBundles(registry);
    registry.registerOperation(everythingOperation());
    registerValidationOperations(registry, validator);

    const fastify = createHttpServer({
      logLevel: config.logLevel,
      bodyLimit: config.bodyLimit,
      logStream: overrides.logStream,
    });
    // The store's start-up integrity check (docs/store.md): its time, and where, if it fails in the background.
    if (store instanceof SqliteResourceStore)
      logIntegrityCheck(store.integrityChecked(), fastify.log.child({ component: 'store' }));
    // The ledger adapter (embedded by default, or Fabric: --ledger fabric --fabric-config FILE).
    const ledger =
      overrides.ledger ?? (await openConfiguredLedger(config, fastify.log.child({ component: 'ledger' })));
    if (!overrides.ledger) closers.push(() => ledger.close());
    // The integrity path: every write queues its anchor, a worker commits Merkle batches; $verify; the scheduled audit.
    const integrity = await openIntegrity({
      dataDir: config.dataDir,
      store,
      ledger,
      anchoring: { batchSize: config.anchorBatchSize ?? 1000, intervalMs: config.anchorIntervalMs ?? 1000 },
      log: fastify.log.child({ component: 'anchoring' }),
    });
    closers.push(() => integrity.close());
    registry.registerOperation(verifyOperation(integrity.verifier));
    const auditJob = scheduleAudit({
      cron: config.auditCron ?? DEFAULT_AUDIT_CRON,
      dataDir: config.dataDir,
      audit: () => integrity.audit(),
      log: fastify.log.child({ component: 'audit' }),
    });
    if (auditJob) closers.push(() => auditJob.stop());
    // Authentication, the caller's access policy on every FhirContext, consent grants and the audit (docs/access.md).
    const access = await setupAccess({
      dataDir: config.dataDir,
      mode: config.auth ?? 'smart',
      host: config.host,
      fhirBaseUrl: config.baseUrl,
      fhirPrefix: FHIR_PREFIX,
      store,
      ledger,
      indexEntries: extractIndex,
      anchor: config.anchoring === false ? undefined : integrity.anchorer.anchorFor,
      log: fastify.log.child({ component: 'access' }),
    });
    closers.push(() => access.close());
    access.registerOperations(registry);
    access.install(fastify);
    await registerFhirRoutes(fastify, {
      prefix: FHIR_PREFIX,
      registry,
      publicBaseUrl: config.baseUrl,
      accessFor: access.accessFor,
      context: {
        store: access.store,
        validator,
        indexEntries: extractIndex,
        patientsOf: patientCompartments,
        anchor: config.anchoring === false ? undefined : integrity.anchorer.anchorFor,
      },
    });
    await fastify.ready();
    integrity.anchorer.start(); // drains what a previous run left pending, then follows the writes

    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        await fastify.close();
        for (const closer of closers.reverse()) await closer();
      })());
    return { fastify, store, registry, validator, ledger, integrity, close };
  } catch (err) {
    for (const closer of closers.reverse()) await closer().catch(() => undefined);
    throw err;
  }
}
