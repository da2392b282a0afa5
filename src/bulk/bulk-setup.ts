/**
 * Wires bulk data into the app (src/app/app.ts calls it): the job store (BULK/jobs.sqlite, or the PostgreSQL store's
 * `bulk_job` table shared by the replicas; BULK is --bulk-dir or DATA/bulk), `$export` in the
 * registry, the status and file routes, the resumption of unfinished jobs at start and the deletion of finished
 * jobs' files after the retention time (docs/bulk.md).
 */
import { join } from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AccessPolicy } from '../fhir/interactions/access-policy.js';
import type { FhirRegistry } from '../fhir/interactions/fhir-registry.js';
import type { FhirContext } from '../fhir/interactions/types.js';
import type { ResourceStore } from '../fhir/store/resource-store.js';
import type pg from 'pg';
import { SqliteBulkJobStore, type BulkJobStore } from './job-store.js';
import { PostgresBulkJobStore } from './postgres-job-store.js';
import { BulkExports, type BulkExportOptions, type BulkHooks } from './bulk-export.js';
import { registerBulkRoutes } from './bulk-routes.js';
import { BulkImports, type BulkImportOptions } from './bulk-import.js';
import type { ImportSourcePolicy } from './import-fetch.js';
import type { JobAccess } from './job-access.js';
import { Reindexing, type ReindexOptions } from './reindex.js';

export interface BulkSetupOptions {
  dataDir: string;
  /** Where the jobs' files are (--bulk-dir); absent: DATA/bulk. */
  bulkDir?: string;
  /** A PostgreSQL store's database: the job records there, shared by the replicas (docs/replicas.md). */
  database?: { pool: pg.Pool; schema: string; leaseSeconds: number };
  store: ResourceStore;
  access: JobAccess;
  /** How long a finished job's files are kept (--bulk-retention). */
  retentionSeconds: number;
  /** Resources per page and between saves of a job's progress (tests make them small). */
  pageSize?: number;
  saveEvery?: number;
  hooks?: BulkHooks;
  /** Integrity evidence of exported versions (`includeAssociatedData=_integrity`); absent: refused. */
  evidence?: BulkExportOptions['evidence'];
  /** `$import`: the FhirContext its engine writes through (the caller's policy added per job) and its sources. */
  imports: {
    context: Omit<FhirContext, 'access' | 'log' | 'registry'>;
    registry: FhirRegistry;
    sources: ImportSourcePolicy;
    validationPool?: BulkImportOptions['validationPool'];
  };
  /** `$reindex` (src/bulk/reindex.ts): the store itself, the custom parameters, the pacing. */
  reindex: Omit<ReindexOptions, 'jobs' | 'retentionMs' | 'log'>;
  log: {
    info(obj: object | string, msg?: string): void;
    warn(obj: object | string, msg?: string): void;
    error(obj: object | string, msg?: string): void;
    debug(obj: object | string, msg?: string): void;
  };
}

export interface Bulk {
  exports: BulkExports;
  imports: BulkImports;
  reindexing: Reindexing;
  registerOperations(registry: FhirRegistry): void;
  install(
    fastify: FastifyInstance,
    prefix: string,
    accessFor: (request: FastifyRequest) => AccessPolicy,
  ): void;
  /** Resumes unfinished jobs and starts the retention sweep (once the app serves). */
  start(): void;
  close(): Promise<void>;
}

export function setupBulk(options: BulkSetupOptions): Bulk {
  const dir = options.bulkDir ?? join(options.dataDir, 'bulk');
  const jobs: BulkJobStore = options.database
    ? new PostgresBulkJobStore({ ...options.database, dir, log: options.log })
    : new SqliteBulkJobStore(dir);
  const retentionMs = options.retentionSeconds * 1000;
  const exports = new BulkExports({
    jobs,
    store: options.store,
    access: options.access,
    retentionMs,
    pageSize: options.pageSize,
    saveEvery: options.saveEvery,
    hooks: options.hooks,
    evidence: options.evidence,
    log: options.log,
  });
  const imports = new BulkImports({
    jobs,
    access: options.access,
    context: options.imports.context,
    registry: options.imports.registry,
    sources: options.imports.sources,
    validationPool: options.imports.validationPool,
    progressSaveEvery: options.saveEvery,
    retentionMs,
    log: options.log,
  });
  const reindexing = new Reindexing({ ...options.reindex, jobs, retentionMs, log: options.log });
  let sweeper: NodeJS.Timeout | undefined;
  const sweep = () =>
    void exports
      .sweep()
      .catch((err: unknown) =>
        options.log.warn({ err }, 'deleting expired bulk jobs failed (tried again later)'),
      );
  return {
    exports,
    imports,
    reindexing,
    registerOperations(registry) {
      registry.registerOperation(exports.operation());
      registry.registerOperation(imports.operation());
      registry.registerOperation(reindexing.operation());
    },
    install(fastify, prefix, accessFor) {
      registerBulkRoutes(fastify, {
        prefix,
        kinds: { export: exports, import: imports, reindex: reindexing },
        accessFor,
      });
    },
    start() {
      sweep();
      sweeper = setInterval(sweep, Math.min(retentionMs, 60_000));
      sweeper.unref();
      exports.start();
      imports.start();
      reindexing.start();
    },
    async close() {
      if (sweeper) clearInterval(sweeper);
      await exports.close();
      await imports.close();
      await reindexing.close();
      await jobs.close();
    },
  };
}
