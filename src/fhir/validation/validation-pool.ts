/**
 * Validation on worker threads (the bulk import's check pass: parsing and validation spread over the cores).
 *
 * A validator is described by a plain `ValidatorSpec` (what the write path's validator is built from), so each
 * worker builds the same validator as the main thread: `createValidatorFromSpec`. Resources travel as JSON text
 * (the exact plain JSON the main thread would give its own validator) and come back as ValidationResults, in
 * chunks to keep the messages few. Each worker validates one chunk at a time; a chunk goes to the worker with
 * the fewest chunks in flight.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { createFhirValidator, type FhirValidatorOptions } from './index.js';
import { createSchemaValidator } from './schema.js';
import type { ResourceValidator, ValidationOptions, ValidationResult } from './validator.js';
import type { LoadedCodeSystems } from '../terminology-port.js';

/** What a validator is built from: plain data, so that a worker thread builds the same one. */
export type ValidatorSpec =
  { kind: 'schema'; cacheDir?: string } | { kind: 'full'; options: Omit<FhirValidatorOptions, 'schema'> };

/** The validator a spec describes; `codeSystems` (the loaded code systems: main thread only) join a full one. */
export async function createValidatorFromSpec(
  spec: ValidatorSpec,
  codeSystems?: LoadedCodeSystems,
): Promise<ResourceValidator> {
  return spec.kind === 'schema'
    ? createSchemaValidator({ cacheDir: spec.cacheDir })
    : createFhirValidator({ ...spec.options, codeSystems });
}

/** A chunk to a worker: JSON texts, validated with `options`. */
export interface ValidationChunk {
  id: number;
  texts: string[];
  options: ValidationOptions;
}

/** A worker's answer: one result per text (null: the validator threw, so no verdict: validate it elsewhere). */
export type ValidationAnswer =
  { id: number; results: (ValidationResult | null)[] } | { id: number; error: string } | { ready: true };

interface PoolWorker {
  worker: Worker;
  inFlight: Map<number, { resolve: (r: (ValidationResult | null)[]) => void; reject: (e: Error) => void }>;
}

/** The worker's entry: the built file beside this one, or the TypeScript source through tsx (tests, tsx runs). */
function workerSource(): { source: string | URL; eval: boolean } {
  const here = import.meta.url;
  if (here.endsWith('.js')) return { source: new URL('./validation-worker.js', here), eval: false };
  const entry = new URL('./validation-worker.ts', here).href;
  // tsx as the sources are run (vitest, `tsx src/cli.ts`): resolved from the working directory, the repository's.
  return {
    source: `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(entry)}); })`,
    eval: true,
  };
}

/** The cores but one (at least one): the main thread parses, rewrites and writes while the others validate. */
export function defaultPoolSize(): number {
  return Math.max(1, availableParallelism() - 1);
}

export class ValidationPool {
  private readonly workers: PoolWorker[];
  private nextId = 1;
  private failure: Error | undefined;

  private constructor(spec: ValidatorSpec, size: number) {
    const { source, eval: isEval } = workerSource();
    this.workers = Array.from({ length: size }, () => {
      const worker = new Worker(source, { eval: isEval, workerData: { spec } });
      const entry: PoolWorker = { worker, inFlight: new Map() };
      worker.on('message', (answer: ValidationAnswer) => {
        if ('ready' in answer) return;
        const pending = entry.inFlight.get(answer.id);
        if (!pending) return;
        entry.inFlight.delete(answer.id);
        if ('error' in answer) pending.reject(new Error(`validation worker: ${answer.error}`));
        else pending.resolve(answer.results);
      });
      const fail = (error: Error) => {
        this.failure ??= error;
        for (const pending of entry.inFlight.values()) pending.reject(error);
        entry.inFlight.clear();
      };
      worker.on('error', fail);
      worker.on('exit', (code) => {
        if (entry.inFlight.size > 0) fail(new Error(`validation worker exited with code ${code}`));
      });
      // The pool never keeps the process alive on its own.
      worker.unref();
      return entry;
    });
  }

  /** `size` workers (at least 1), each building the validator `spec` describes. */
  static start(spec: ValidatorSpec, size: number): ValidationPool {
    return new ValidationPool(spec, Math.max(1, Math.floor(size)));
  }

  get size(): number {
    return this.workers.length;
  }

  /** Chunks in flight over all workers. */
  get inFlight(): number {
    return this.workers.reduce((sum, w) => sum + w.inFlight.size, 0);
  }

  /** Validates each JSON text (plain JSON of one resource) with `options`; results in the same order. */
  validate(texts: string[], options: ValidationOptions): Promise<(ValidationResult | null)[]> {
    if (this.failure) return Promise.reject(this.failure);
    const target = this.workers.reduce((best, w) => (w.inFlight.size < best.inFlight.size ? w : best));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      target.inFlight.set(id, { resolve, reject });
      target.worker.ref();
      const chunk: ValidationChunk = { id, texts, options };
      target.worker.postMessage(chunk);
    }).finally(() => {
      if (target.inFlight.size === 0) target.worker.unref();
    }) as Promise<(ValidationResult | null)[]>;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
