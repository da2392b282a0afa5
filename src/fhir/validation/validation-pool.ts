/**
 * Validation on worker threads (the bulk import's check pass: parsing and validation spread over the cores).
 *
 * A validator is described by a plain `ValidatorSpec` (what the write path's validator is built from), so each
 * worker builds the same validator as the main thread: `createValidatorFromSpec`. Resources travel as JSON text
 * (the exact plain JSON the main thread would give its own validator) and come back as ValidationResults, in
 * chunks to keep the messages few. Each worker validates one chunk at a time; a chunk goes to the worker with
 * the fewest chunks in flight.
 *
 * `check` also answers, per text, the digest of what was validated (`validationDigest`) and, when asked, what
 * the worker's `extra` function derives from the same text (a worker entry of another layer gives one: the bulk
 * import's extracts the search index entries, src/bulk/import/check-worker.ts): the import's write answers its own
 * validation and index extraction from them, for exactly the same input only (docs/import.md).
 */
import { createHash } from 'node:crypto';
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

/**
 * What a verdict is kept for: the validation options and the exact plain JSON text the validator was given (the
 * validator is a function of these two alone). The same function on both sides of the pool.
 */
export function validationDigest(plainText: string, options: ValidationOptions | undefined): Buffer {
  return createHash('sha256')
    .update(JSON.stringify(options ?? {}))
    .update('\n')
    .update(plainText)
    .digest();
}

/** One text checked by a worker: its digest (`validationDigest`) and the verdict. */
export interface CheckedText {
  digest: Buffer;
  result: ValidationResult;
}

/** A message to a worker: a chunk of JSON texts validated with `options` (`extra`: derived too), or settings. */
export type PoolMessage =
  { id: number; texts: string[]; options: ValidationOptions; extra?: boolean } | { settings: unknown };

/**
 * A worker entry module: `name` (without extension) beside the module at `base` (its `import.meta.url`): the
 * built `.js` file, or the TypeScript source through tsx.
 */
export interface WorkerEntry {
  base: string;
  name: string;
}

/** The validation-only worker (validation-worker.ts). */
const VALIDATION_WORKER: WorkerEntry = { base: import.meta.url, name: 'validation-worker' };

/** A worker's answer: one result per text (null: the validator threw, so no verdict: validate it elsewhere). */
export type ValidationAnswer =
  | { id: number; results: (CheckedText | null)[] }
  /** A chunk's extras, sent after its verdicts: one per text (undefined: none, derive it elsewhere). */
  | { id: number; extras: unknown[] }
  | { id: number; error: string }
  | { ready: true };

interface PoolWorker {
  worker: Worker;
  inFlight: Map<number, { resolve: (r: (CheckedText | null)[]) => void; reject: (e: Error) => void }>;
  /** Chunks of this worker whose extras are still to come (the worker is kept referenced meanwhile). */
  extrasPending: number;
}

/** The worker's entry: the built file, or the TypeScript source through tsx (tests, tsx runs). */
function workerSource({ base, name }: WorkerEntry): { source: string | URL; eval: boolean } {
  if (base.endsWith('.js')) return { source: new URL(`./${name}.js`, base), eval: false };
  const entry = new URL(`./${name}.ts`, base).href;
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
  /** Chunks whose extras are still to come: who takes them. */
  private readonly extrasWanted = new Map<number, (extras: unknown[]) => void>();
  private failure: Error | undefined;

  private constructor(spec: ValidatorSpec, size: number, entry: WorkerEntry) {
    const { source, eval: isEval } = workerSource(entry);
    this.workers = Array.from({ length: size }, () => {
      const worker = new Worker(source, { eval: isEval, workerData: { spec } });
      const entry: PoolWorker = { worker, inFlight: new Map(), extrasPending: 0 };
      worker.on('message', (answer: ValidationAnswer) => {
        if ('ready' in answer) return;
        if ('extras' in answer) {
          this.extrasWanted.get(answer.id)?.(answer.extras);
          this.extrasWanted.delete(answer.id);
          entry.extrasPending--;
          if (entry.inFlight.size === 0 && entry.extrasPending === 0) worker.unref();
          return;
        }
        const pending = entry.inFlight.get(answer.id);
        if (!pending) return;
        entry.inFlight.delete(answer.id);
        if ('error' in answer) pending.reject(new Error(`validation worker: ${answer.error}`));
        // A Buffer arrives as a plain Uint8Array (structured clone): a Buffer view of the same bytes again.
        else
          pending.resolve(
            answer.results.map(
              (checked) =>
                checked && {
                  ...checked,
                  digest: Buffer.from(
                    checked.digest.buffer,
                    checked.digest.byteOffset,
                    checked.digest.byteLength,
                  ),
                },
            ),
          );
      });
      const fail = (error: Error) => {
        this.failure ??= error;
        // No extras will come: each waiting taker hears none (it derives them on its own).
        for (const take of this.extrasWanted.values()) take([]);
        this.extrasWanted.clear();
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

  /**
   * `size` workers (at least 1), each building the validator `spec` describes; `entry`: a worker module that runs
   * `answerChunks` (validation-worker-loop.ts) with an `extra` of its own (default: validation only).
   */
  static start(spec: ValidatorSpec, size: number, entry: WorkerEntry = VALIDATION_WORKER): ValidationPool {
    return new ValidationPool(spec, Math.max(1, Math.floor(size)), entry);
  }

  get size(): number {
    return this.workers.length;
  }

  /** Chunks in flight over all workers. */
  get inFlight(): number {
    return this.workers.reduce((sum, w) => sum + w.inFlight.size, 0);
  }

  /** Validates each JSON text (plain JSON of one resource) with `options`; results in the same order. */
  async validate(texts: string[], options: ValidationOptions): Promise<(ValidationResult | null)[]> {
    return (await this.check(texts, options)).map((checked) => checked?.result ?? null);
  }

  /**
   * Validates each JSON text with `options`: its digest and verdict, in the same order. With `onExtras`: what the
   * worker entry's `extra` derives from each valid text (with the settings last given to `configure`) is given to
   * it later, once the worker has no chunk to validate (never, if the pool closes first).
   */
  check(
    texts: string[],
    options: ValidationOptions,
    onExtras?: (extras: unknown[]) => void,
  ): Promise<(CheckedText | null)[]> {
    if (this.failure) return Promise.reject(this.failure);
    const target = this.workers.reduce((best, w) => (w.inFlight.size < best.inFlight.size ? w : best));
    const id = this.nextId++;
    if (onExtras) {
      this.extrasWanted.set(id, onExtras);
      target.extrasPending++;
    }
    return new Promise((resolve, reject) => {
      target.inFlight.set(id, { resolve, reject });
      target.worker.ref();
      target.worker.postMessage({ id, texts, options, extra: onExtras !== undefined } satisfies PoolMessage);
    }).finally(() => {
      if (target.inFlight.size === 0 && target.extrasPending === 0) target.worker.unref();
    }) as Promise<(CheckedText | null)[]>;
  }

  /**
   * Settings for the worker entry's `extra` (plain data): every chunk sent after this call is answered with them
   * (a worker's messages arrive in order).
   */
  configure(settings: unknown): void {
    for (const w of this.workers) w.worker.postMessage({ settings } satisfies PoolMessage);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
