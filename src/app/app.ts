/**
 * Wiring: creates the adapters the configuration names and builds the HTTP app on them.
 * Other areas add their wiring here (ledger, access, operations), each as a few lines.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { ServeConfig } from '../config/config.js';
import { logIntegrityCheck } from '../fhir/store/sqlite/integrity-check.js';
import type { ResourceStore, StoredVersion } from '../fhir/store/resource-store.js';
import { parseFhirJson, type FhirResource } from '../fhir/fhir-json.js';
import type { Ledger } from '../ledger/ledger.js';
import { openConfiguredLedger } from './open-ledger.js';
import { openConfiguredCodeSystems, openConfiguredStore } from './open-store.js';
import { PostgresResourceStore } from '../fhir/store/postgres/postgres-store.js';
import { PostgresSharedState } from '../access/shared-state.js';
import { serveEmbeddedLedger } from '../ledger/embedded/gateway/serve-ledger.js';
import type { ResourceValidator } from '../fhir/validation/validator.js';
import {
  createValidatorFromSpec,
  defaultPoolSize,
  ValidationPool,
  type ValidatorSpec,
} from '../fhir/validation/validation-pool.js';
import { registerValidationOperations } from '../fhir/operations/validate.js';
import { FhirRegistry } from '../fhir/interactions/fhir-registry.js';
import { registerCoreInteractions } from '../fhir/interactions/core.js';
import { declareSearchParamsOf, registerSearch } from '../fhir/interactions/search.js';
import { registerBundles } from '../fhir/interactions/transaction.js';
import { extractIndex } from '../fhir/search/index-entries.js';
import { patientCompartments } from '../fhir/search/definitions.js';
import { CustomSearchParameters } from '../fhir/search/custom-parameters.js';
import { createHttpServer } from '../fhir/http/server.js';
import { registerFhirRoutes } from '../fhir/http/fhir-routes.js';
import { FhirXml } from '../fhir/fhir-xml.js';
import { coreRegistry } from '../fhir/definitions/definition-registry.js';
import { setupAccess, type AccessSetup } from '../access/setup.js';
import type { ConsentService } from '../consent/consent-service.js';
import { openIntegrity, type IntegrityService } from '../integrity/integrity-service.js';
import { verifyAnchorJournal } from '../integrity/journal-continuity.js';
import { verifyOperation } from '../integrity/verify-operation.js';
import { everythingOperation } from '../fhir/operations/everything.js';
import { registerMetaOperations } from '../fhir/operations/meta.js';
import { scheduleAudit } from '../integrity/scheduled-audit.js';
import { ServiceMetrics } from '../operator/metrics.js';
import { registerOperatorRoutes } from '../operator/operator-routes.js';
import { CertificateExpiryWatch, type CertificateSource } from '../operator/certificate-expiry.js';
import { mkdirPrivate, tightenDataDir } from '../platform/private-files.js';
import { lockDataDir } from '../platform/data-dir-lock.js';
import { setupPatientLinks } from '../exchange/patient-links-setup.js';
import type { PatientLinks } from '../exchange/patient-links.js';
import { PostgresPatientLinks } from '../exchange/postgres-patient-links.js';
import { Exchange, registerExchangeOperations } from '../exchange/exchange-setup.js';
import { loadFabricConfig } from '../ledger/fabric/config.js';
import { setupBulk, type Bulk } from '../bulk/bulk-setup.js';
import type { BulkHooks } from '../bulk/bulk-export.js';
import { CallerAccessPolicy } from '../access/caller-access-policy.js';
import { OpenAccess } from '../fhir/interactions/access-policy.js';
import type { FhirContext } from '../fhir/interactions/types.js';
import { collectEvidence, evidenceProvenanceText, versionUrl } from '../exchange/record-evidence.js';
import type { LoadedCodeSystems, TerminologyPort } from '../fhir/terminology-port.js';
import type { Terminology } from '../fhir/validation/terminology.js';

export const FHIR_PREFIX = '/fhir';

export interface App {
  fastify: FastifyInstance;
  store: ResourceStore;
  registry: FhirRegistry;
  validator: ResourceValidator;
  ledger?: Ledger;
  /** The integrity path: anchoring worker (status), verifier, audit (docs/integrity.md). */
  integrity?: IntegrityService;
  /** Patient identity across members: which local Patients are linked to which network patients. */
  patientLinks?: PatientLinks;
  /** The exchange: member directory, network tokens (both sides), calls to other members (docs/exchange.md). */
  exchange?: Exchange;
  /** Bulk data: `$export` jobs, their status and files (docs/bulk.md). */
  bulk?: Bulk;
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
  /** The audit's aggregation window (tests that must not depend on when AuditEvents are stored); default 1 s. */
  auditFlushMs?: number;
  /** Bulk jobs' test seams: a small page, a hook between pages (test/bulk/). */
  bulk?: { pageSize?: number; saveEvery?: number; hooks?: BulkHooks };
}

type Closer = () => Promise<void>;

/** What the phases of buildApp share once the HTTP server exists; `closers` close what they opened, in reverse. */
interface AppWiring {
  config: ServeConfig;
  overrides: AppOverrides;
  closers: Closer[];
  store: ResourceStore;
  validator: ResourceValidator;
  registry: FhirRegistry;
  fastify: FastifyInstance;
  metrics: ServiceMetrics;
  /** Replay cache and rate limits in the database, shared by the replicas (a PostgreSQL store only). */
  shared?: PostgresSharedState;
  /** The code systems loaded into the data directory (none loaded: undefined). */
  codeSystems?: LoadedCodeSystems;
}

/** The ledger, the integrity path on it, and the integrity operations and audit schedule. */
interface IntegrityWiring {
  ledger: Ledger;
  integrity: IntegrityService;
}

export async function buildApp(config: ServeConfig, overrides: AppOverrides = {}): Promise<App> {
  // Data directory 0700, its files 0600, those of older versions too (src/platform/private-files.ts).
  mkdirPrivate(config.dataDir);
  // One process owns a data directory for its whole life (src/platform/data-dir-lock.ts); released last.
  const lock = lockDataDir(config.dataDir, 'serve');
  const closers: Closer[] = [() => Promise.resolve(lock.release())];
  try {
    const tightened = tightenDataDir(config.dataDir);
    const store = openStore(config, overrides);
    await store.init();
    closers.push(() => store.close());
    // The code systems `hie-ledger terminology load` put in the data directory (docs/terminology.md).
    const codeSystems = await openConfiguredCodeSystems(config);
    if (codeSystems) closers.push(async () => await codeSystems.close());
    const validator = await openValidator(config, overrides, codeSystems);
    const registry = buildRegistry(config, validator);
    const { fastify, metrics } = createServer(config, overrides, tightened, store);
    // A PostgreSQL terminology store's lookups block the thread on a cache miss: a body's codes are read first.
    const prefetch = codeSystems?.prefetch?.bind(codeSystems);
    if (prefetch)
      fastify.addHook('preHandler', async (request) => {
        if (typeof request.body === 'string') await prefetch(request.body);
      });
    const shared =
      store instanceof PostgresResourceStore ? new PostgresSharedState(store.pool, store.schema) : undefined;
    const wiring: AppWiring = {
      config,
      overrides,
      closers,
      store,
      validator,
      registry,
      fastify,
      metrics,
      shared,
      codeSystems,
    };
    const customParameters = await wireCustomSearchParameters(wiring);
    // Index rows a migration asked to re-extract (docs/store.md, "Index rebuilds"), before the first search; after
    // the custom search parameters are known, so their rows are extracted too.
    await store.rebuildIndex?.((json) => extractIndex(parseFhirJson(json)));
    const { ledger, integrity } = await openIntegrityPath(wiring);
    const exchange = openExchange(wiring, ledger);
    const access = await wireAccess(wiring, ledger, integrity, exchange);
    const patientLinks = wirePatientLinks(wiring, ledger, access, integrity);
    wireExchange(wiring, exchange, { ledger, integrity, access, patientLinks });
    const context = {
      store: access.store,
      validator: metrics.countingValidator(validator),
      terminology: terminologyOf(validator),
      indexEntries: extractIndex,
      patientsOf: patientCompartments,
      anchor: config.anchoring === false ? undefined : integrity.anchorer.anchorFor,
      searchParameterWritten: (version: StoredVersion, resource: FhirResource | undefined) =>
        customParameters.written(version, resource),
    };
    const bulk = wireBulk(wiring, access, context, integrity, customParameters);
    await registerFhirRoutes(fastify, {
      prefix: FHIR_PREFIX,
      registry,
      publicBaseUrl: config.baseUrl,
      accessFor: access.accessFor,
      // FHIR XML: element order and types from the core R4 definitions (loaded on the first XML request).
      xml: new FhirXml((type) =>
        coreRegistry({ cacheDir: definitionsCacheDir(config) }).typeDefinition(type),
      ),
      context,
    });
    const certificates = watchCertificates(wiring, access);
    registerReadiness(wiring, ledger, access.consent, certificates);
    observeBacklogs(wiring, integrity, access, certificates);
    await fastify.ready();
    integrity.anchorer.start(); // drains what a previous run left pending, then follows the writes
    bulk.start(); // resumes the bulk jobs a previous run left unfinished

    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        await fastify.close();
        for (const closer of closers.reverse()) await closer();
      })());
    return { fastify, store, registry, validator, ledger, integrity, patientLinks, exchange, bulk, close };
  } catch (err) {
    for (const closer of closers.reverse()) await closer().catch(() => undefined);
    throw err;
  }
}

function openStore(config: ServeConfig, overrides: AppOverrides): ResourceStore {
  return overrides.store ?? openConfiguredStore(config);
}

/** The write path's validator as the configuration names it (also `hie-ledger import`'s: the same rules). */
export async function openValidator(
  config: Parameters<typeof validatorSpec>[0],
  overrides: Pick<AppOverrides, 'validator'> = {},
  codeSystems?: LoadedCodeSystems,
): Promise<ResourceValidator> {
  if (overrides.validator && codeSystems)
    terminologyOf(overrides.validator)?.useLoadedCodeSystems(codeSystems);
  return overrides.validator ?? (await createValidatorFromSpec(validatorSpec(config), codeSystems));
}

/** What the write path's validator is built from, as plain data (validation worker threads build the same). */
export function validatorSpec(
  config: Pick<ServeConfig, 'validation' | 'cacheDir' | 'dataDir' | 'igPaths' | 'requiredProfiles'> &
    Partial<Pick<ServeConfig, 'validationLevels' | 'networkValidationLevels'>>,
): ValidatorSpec {
  return config.validation === 'schema'
    ? { kind: 'schema', cacheDir: config.cacheDir }
    : {
        kind: 'full',
        options: {
          definitionsCacheDir: definitionsCacheDir(config),
          igPaths: config.igPaths,
          requiredProfiles: config.requiredProfiles,
          // EHRs send local extensions the network has not published: accepted with a warning, as are
          // example.org URLs (the specification's own examples use them).
          unknownExtensionSeverity: 'warning',
          allowExampleUrls: true,
          familyLevels: config.validationLevels,
          networkFamilyLevels: config.networkValidationLevels,
        },
      };
}

/**
 * Where the compact core definitions are kept (they depend on the installed packages only): the cache directory when
 * one is configured, else the data directory's `cache/`.
 */
function definitionsCacheDir(config: Pick<ServeConfig, 'cacheDir' | 'dataDir'>): string {
  return config.cacheDir ?? join(config.dataDir, 'cache');
}

/** The full validator's terminology (the TerminologyPort search uses); none for schema-only validation. */
function terminologyOf(validator: ResourceValidator): (TerminologyPort & Terminology) | undefined {
  const walker = (validator as { walker?: { terminology?: Terminology } }).walker;
  return walker?.terminology;
}

/** The FHIR interactions and the operations that need nothing but the validator. */
function buildRegistry(config: ServeConfig, validator: ResourceValidator): FhirRegistry {
  const registry = registerCoreInteractions(
    new FhirRegistry(),
    {
      resourceTypes: validator.resourceTypes ?? [],
      started: new Date(),
      // The token endpoint sits beside the FHIR base: http://host/fhir -> http://host/auth/token.
      tokenUrl:
        config.auth === 'smart'
          ? (fhirBase) => `${fhirBase.slice(0, fhirBase.length - FHIR_PREFIX.length)}/auth/token`
          : undefined,
    },
    // DELETE [type]?criteria with several matches: admins, capped (docs/configuration.md).
    { deleteMultiple: config.conditionalDeleteMultiple ? { max: config.conditionalDeleteMax } : undefined },
  );
  // The token modifiers answered from terminology are served (and stated) where the validator has terminology.
  registerSearch(registry, { terminology: terminologyOf(validator) !== undefined });
  registerBundles(registry);
  registry.registerOperation(everythingOperation());
  registerValidationOperations(registry, validator);
  registerMetaOperations(registry);
  return registry;
}

/** The HTTP server with its metrics, and the start-up log lines about the data directory and the store. */
function createServer(
  config: ServeConfig,
  overrides: AppOverrides,
  tightened: number,
  store: ResourceStore,
): { fastify: FastifyInstance; metrics: ServiceMetrics } {
  const fastify = createHttpServer({
    logLevel: config.logLevel,
    bodyLimit: config.bodyLimit,
    logValues: config.logValues,
    logStream: overrides.logStream,
  });
  // Prometheus metrics (GET /metrics): every response counted; the ledger's calls and the validations too.
  const metrics = new ServiceMetrics();
  metrics.install(fastify);
  if (tightened > 0)
    fastify.log.warn({ entries: tightened }, 'data directory entries made private (0700/0600)');
  // The store's start-up integrity check (docs/store.md): its time, and where, if it fails in the background.
  if (store.integrityChecked)
    logIntegrityCheck(store.integrityChecked(), fastify.log.child({ component: 'store' }));
  return { fastify, metrics };
}

/** The ledger, then the integrity path on it: anchoring, the journal's continuity, `$verify`, the scheduled audit. */
async function openIntegrityPath(wiring: AppWiring): Promise<IntegrityWiring> {
  const { config, overrides, closers, store, registry, fastify, metrics } = wiring;
  // The ledger adapter (embedded by default, or Fabric: --ledger fabric --fabric-config FILE).
  const openedLedger =
    overrides.ledger ?? (await openConfiguredLedger(config, fastify.log.child({ component: 'ledger' })));
  const ledger = metrics.countingLedger(openedLedger);
  if (!overrides.ledger) closers.push(() => ledger.close());
  // --serve-ledger: the embedded ledger served to other members on loopback (demos, tests; docs/ledger.md).
  if (config.serveLedger !== undefined) {
    const served = await serveEmbeddedLedger(openedLedger, {
      dataDir: config.dataDir,
      mspId: config.mspId,
      host: config.serveLedger.host,
      port: config.serveLedger.port,
      membersFile: config.ledgerMembers,
      log: fastify.log.child({ component: 'ledger-gateway' }),
    });
    closers.push(() => served.close());
  }
  // The integrity path: every write queues its anchor, a worker commits Merkle batches; $verify; the scheduled audit.
  const integrity = await openIntegrity({
    dataDir: config.dataDir,
    store,
    ledger,
    anchoring: {
      batchSize: config.anchorBatchSize,
      intervalMs: config.anchorIntervalMs,
      maxInFlight: config.anchorInFlight,
    },
    log: fastify.log.child({ component: 'anchoring' }),
  });
  closers.push(() => integrity.close());
  // A lost or replaced ledger refuses the start (src/ledger/ledger-continuity.ts; the consent checkpoint likewise).
  await verifyAnchorJournal(ledger, integrity.journal, integrity.journalLocation, fastify.log);
  registry.registerOperation(verifyOperation(integrity.verifier));
  const auditJob = scheduleAudit({
    cron: config.auditCron,
    dataDir: config.dataDir,
    audit: () => integrity.audit(),
    log: fastify.log.child({ component: 'audit' }),
  });
  if (auditJob) closers.push(() => auditJob.stop());
  return { ledger, integrity };
}

/** Authentication, the caller's access policy on every FhirContext, consent grants and the audit (docs/access.md). */
async function wireAccess(
  wiring: AppWiring,
  ledger: Ledger,
  integrity: IntegrityService,
  exchange: Exchange,
): Promise<AccessSetup> {
  const { config, overrides, closers, store, registry, fastify } = wiring;
  const access = await setupAccess({
    dataDir: config.dataDir,
    mode: config.auth,
    host: config.host,
    mspId: config.mspId,
    ledgerMspId: config.ledger === 'fabric' ? loadFabricConfig(config.fabricConfig!).mspId : config.mspId,
    organization: config.organization,
    fhirBaseUrl: config.baseUrl,
    tokenRateLimit: config.tokenRateLimit,
    tokenSeconds: config.tokenSeconds,
    fhirPrefix: FHIR_PREFIX,
    store,
    ledger,
    indexEntries: extractIndex,
    anchor: config.anchoring === false ? undefined : integrity.anchorer.anchorFor,
    auditFlushMs: overrides.auditFlushMs,
    log: fastify.log.child({ component: 'access' }),
    network: exchange.networkTokens,
    shared: wiring.shared,
  });
  closers.push(() => access.close());
  access.registerOperations(registry);
  access.install(fastify);
  return access;
}

/** Linking local Patients to network patients: `$network-link-token`, `$network-link`, `$network-unlink`. */
function wirePatientLinks(
  wiring: AppWiring,
  ledger: Ledger,
  access: AccessSetup,
  integrity: IntegrityService,
): PatientLinks {
  const { config, closers, store, registry, fastify } = wiring;
  const consent = access.consent;
  const links = setupPatientLinks({
    dataDir: config.dataDir,
    // On PostgreSQL the links are the replicas' (docs/replicas.md, "Patient links at every replica").
    links:
      store instanceof PostgresResourceStore ? new PostgresPatientLinks(store.pool, store.schema) : undefined,
    mspId: ledgerMspId(config),
    ledger,
    store,
    registry,
    home: access.networkIds,
    linkTokenSeconds: config.linkTokenSeconds,
    // Reports of disclosures made under a wrong link (docs/exchange.md, "Wrong links"): need the ledger.
    reports: consent && {
      store,
      indexEntries: extractIndex,
      anchor: config.anchoring === false ? undefined : integrity.anchorer.anchorFor,
      organization: config.organization,
      recordAccess: (record) => consent.recordAccess(record),
      flushAccess: () => consent.flushAccess(),
    },
  });
  closers.push(() => Promise.resolve(links.close()));
  // A report a stop cut short is made at the next start.
  links.service
    .reportPending()
    .catch((err: unknown) =>
      fastify.log.warn({ err }, 'wrong-link reports still pending (made again at the next start)'),
    );
  return links.service;
}

/** This member's MSP id: its ledger identity's (the Fabric connection's, or --msp-id on the embedded ledger). */
function ledgerMspId(config: ServeConfig): string {
  return config.ledger === 'fabric' ? loadFabricConfig(config.fabricConfig!).mspId : config.mspId;
}

/** The exchange's shared parts, before access: setupAccess hands its network token service to /auth/token. */
function openExchange(wiring: AppWiring, ledger: Ledger): Exchange {
  const { config, closers } = wiring;
  const exchange = new Exchange({
    dataDir: config.dataDir,
    mspId: ledgerMspId(config),
    ledger,
    settings: config,
    replay: wiring.shared?.replayGuard('member'),
  });
  closers.push(() => Promise.resolve(exchange.close()));
  return exchange;
}

/** The network operations (`$network-locate`, `$network-records`, ...): docs/exchange.md. */
function wireExchange(
  wiring: AppWiring,
  exchange: Exchange,
  parts: { ledger: Ledger; integrity: IntegrityService; access: AccessSetup; patientLinks: PatientLinks },
): void {
  const { config, store, registry, fastify } = wiring;
  registerExchangeOperations(exchange, registry, {
    store,
    ledger: parts.ledger,
    journal: parts.integrity.journal,
    anchor: config.anchoring === false ? undefined : parts.integrity.anchorer.anchorFor,
    indexEntries: extractIndex,
    consent: parts.access.consent,
    networkIds: parts.access.networkIds,
    patientLinks: parts.patientLinks,
    participants: parts.access.participants,
    organization: config.organization,
    log: fastify.log.child({ component: 'exchange' }),
  });
}

/**
 * Custom search parameters (stored SearchParameters): read from the store before the app serves, then kept in step
 * (own writes at once, other replicas' every --search-param-refresh); the CapabilityStatement follows them.
 */
async function wireCustomSearchParameters(wiring: AppWiring): Promise<CustomSearchParameters> {
  const { config, closers, store, registry, fastify } = wiring;
  const parameters = new CustomSearchParameters(store, fastify.log.child({ component: 'search' }), (types) =>
    declareSearchParamsOf(registry, types),
  );
  await parameters.start(config.searchParameterRefreshSeconds * 1000);
  closers.push(() => Promise.resolve(parameters.close()));
  return parameters;
}

/**
 * Bulk data (`$export`): jobs decide as their kick-off's caller with that caller's access policy, made again for
 * every job run (also after a restart), and what they disclose goes to the access audit as `$export`.
 */
function wireBulk(
  wiring: AppWiring,
  access: AccessSetup,
  context: Omit<FhirContext, 'access' | 'log' | 'registry'>,
  integrity: IntegrityService,
  customParameters: CustomSearchParameters,
): Bulk {
  const { config, overrides, closers, registry, fastify } = wiring;
  const store = wiring.store;
  const bulk = setupBulk({
    dataDir: config.dataDir,
    bulkDir: config.bulkDir,
    // On PostgreSQL the job records are the replicas' (docs/replicas.md, "Bulk jobs at every replica").
    database:
      store instanceof PostgresResourceStore
        ? { pool: store.pool, schema: store.schema, leaseSeconds: config.bulkLeaseSeconds }
        : undefined,
    store: access.store,
    reindex: {
      store: wiring.store,
      parameters: customParameters,
      indexEntries: extractIndex,
      settleMs: config.searchParameterRefreshSeconds * 1000,
      pauseMs: config.reindexPauseMs,
      pageSize: overrides.bulk?.pageSize,
    },
    retentionSeconds: config.bulkRetentionSeconds,
    pageSize: overrides.bulk?.pageSize,
    saveEvery: overrides.bulk?.saveEvery,
    hooks: overrides.bulk?.hooks,
    // includeAssociatedData=_integrity: each version's evidence as the exchange sends it (docs/exchange.md).
    evidence:
      config.anchoring === false
        ? undefined
        : async (versions, baseUrl) => {
            const custodian = {
              mspId: ledgerMspId(config),
              organization: config.organization ?? ledgerMspId(config),
            };
            const evidence = await collectEvidence(versions, {
              store: wiring.store,
              journal: integrity.journal,
            });
            return versions.map((v, i) =>
              evidenceProvenanceText(
                {
                  fullUrl: versionUrl(baseUrl, v.resourceType, v.id, v.versionId),
                  lastUpdated: v.lastUpdated,
                },
                custodian,
                evidence[i],
              ),
            );
          },
    imports: {
      context,
      registry,
      sources: { root: config.importRoot, allow: config.importAllow, maxBytes: config.importMaxBytes },
      // Workers build the validator from the settings: not when a test gave the app a validator of its own, nor
      // when code systems are loaded (a worker's validator would not have them: the check runs on this thread).
      validationPool:
        overrides.validator || wiring.codeSystems
          ? undefined
          : () => ValidationPool.start(validatorSpec(config), defaultPoolSize()),
    },
    log: fastify.log.child({ component: 'bulk' }),
    access: {
      snapshot: (policy) => ({
        caller: policy.caller,
        reason: policy instanceof CallerAccessPolicy ? policy.facts.reason : undefined,
      }),
      policyFor: (saved) =>
        saved.caller.role === 'open'
          ? new OpenAccess(saved.caller)
          : access.control.policyFor(saved.caller, { reason: saved.reason }),
      recordDisclosure: (saved, policy, path) => {
        if (!(policy instanceof CallerAccessPolicy)) return;
        const entry = { caller: saved.caller, interaction: 'operation', method: 'GET', path, status: 200 };
        // What it disclosed, per patient and custodian (the patients' and custodians' AuditEvents) ...
        access.audit.record({ ...entry, touched: policy.touched, refused: false, reason: saved.reason });
        // ... and the export itself, naming no patient (service admins read it): an export of everything shows.
        access.audit.record({ ...entry, touched: new Map(), refused: false, reason: saved.reason });
      },
    },
  });
  closers.push(() => bulk.close());
  bulk.registerOperations(registry);
  bulk.install(fastify, FHIR_PREFIX, access.accessFor);
  return bulk;
}

/**
 * The enrolment certificates whose end the service warns of (src/operator/certificate-expiry.ts): its ledger identity
 * (the Fabric connection's, or the embedded ledger's DIR/identity/service), its embedded CA, the enrolled
 * participants'. Files are read at each probe: a certificate replaced on disk counts at once. Logs a warning at start
 * when one is near its end.
 */
function watchCertificates(wiring: AppWiring, access: AccessSetup): CertificateExpiryWatch {
  const { config, fastify } = wiring;
  const identityPath =
    config.ledger === 'fabric'
      ? loadFabricConfig(config.fabricConfig!).identity.certPath
      : join(config.dataDir, 'identity', 'service', 'cert.pem');
  const sources: CertificateSource[] = [
    { name: 'service-identity', critical: true, read: () => pemFileIfAny(identityPath) },
    {
      name: 'ca',
      critical: true,
      read: () => pemFileIfAny(join(config.dataDir, 'identity', 'ca', 'ca-cert.pem')),
    },
    { name: 'participants', critical: false, read: () => access.participants.enrolledCertificates() },
  ];
  const watch = new CertificateExpiryWatch(sources, config.certExpiryWarnDays);
  const log = fastify.log.child({ component: 'certificates' });
  watch.assess(Date.now()).then(
    (result) => result && log.warn({ reason: result.degraded }, 'an enrolment certificate expires soon'),
    (err: Error) => log.warn({ reason: err.message }, 'an enrolment certificate has expired'),
  );
  return watch;
}

function pemFileIfAny(path: string): string[] {
  try {
    return [readFileSync(path, 'utf8')];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** GET /healthz, /readyz (the anchor backlog is a metric, not readiness), /metrics: docs/configuration.md. */
function registerReadiness(
  wiring: AppWiring,
  ledger: Ledger,
  consent: ConsentService | undefined,
  certificates: CertificateExpiryWatch,
): void {
  const { config, store, validator, fastify, metrics } = wiring;
  registerOperatorRoutes(fastify, {
    checks: [
      certificates.readinessCheck(),
      { name: 'store', check: async () => void (await store.pendingAnchors(1)) },
      {
        // A large store is checked for corrupt pages in the background at start (docs/store.md).
        name: 'store-integrity',
        check: () => {
          const status = store.integrityStatus?.();
          if (status === 'checking') throw new Error('the start-up integrity check is running');
          if (typeof status === 'object') throw new Error('the start-up integrity check failed');
        },
      },
      { name: 'ledger', check: async () => void (await ledger.height()) },
      {
        name: 'validator',
        check: () => {
          if (!validator.isResourceType('Patient')) throw new Error('no R4 definitions loaded');
        },
      },
      {
        name: 'consent',
        check: async () => {
          const lag = consent ? await consent.lag() : undefined;
          if (consent?.ledgerMismatch)
            throw new Error('the ledger does not hold what this service committed');
          if (lag && !lag.following) throw new Error('the consent event feed stopped');
          if (lag && lag.behind > config.readyConsentLag)
            throw new Error(`the consent cache is ${lag.behind} blocks behind the ledger`);
        },
      },
    ],
    metrics,
    metricsAllow: config.metricsAllow,
    log: fastify.log.child({ component: 'readiness' }),
  });
}

/** The backlogs /metrics shows: anchors, the audit, the ledger's access records, consent decisions. */
function observeBacklogs(
  wiring: AppWiring,
  integrity: IntegrityService,
  access: AccessSetup,
  certificates: CertificateExpiryWatch,
): void {
  const { store, metrics } = wiring;
  const consent = access.consent;
  metrics.observe({
    certificateExpiries: () => certificates.expiries(),
    anchorBacklog: () => integrity.anchorer.pendingCount(10_000),
    oldestPendingAnchor: async () => {
      const [oldest] = await store.pendingAnchors(1);
      const version = oldest && (await store.vread(oldest.resourceType, oldest.id, oldest.versionId));
      return version ? Date.parse(version.lastUpdated) : undefined;
    },
    consentDecisions: consent && (() => consent.decisions),
    auditBacklog: () => access.audit.backlog,
    accessRecordBacklog: consent && (() => consent.accessBacklog),
  });
}
