/**
 * The loop of a validation worker thread (validation-pool.ts): builds the validator its `workerData.spec`
 * describes, then answers each chunk of JSON texts with their digests and ValidationResults, in order, and, when
 * the chunk asks, what `extra` derives from each valid text (a worker entry of another layer supplies it).
 */
import { parentPort, workerData } from 'node:worker_threads';
import {
  createValidatorFromSpec,
  validationDigest,
  type CheckedText,
  type PoolMessage,
  type ValidationAnswer,
  type ValidatorSpec,
} from './validation-pool.js';

export interface WorkerExtra {
  /** What the worker derives from a valid text besides its verdict (given its own parse of the text). */
  derive(value: unknown): unknown;
  /** Settings the main thread sent (`ValidationPool.configure`). */
  configure?(settings: unknown): void;
}

/** Chunks whose verdicts were sent and whose extras are still to derive, in order. */
const derivations: { id: number; texts: string[]; valid: boolean[]; derive: WorkerExtra['derive'] }[] = [];

/** One chunk's extras (each from its own parse of a valid text), then the next on a later turn of the loop. */
function deriveNext(): void {
  const job = derivations.shift();
  if (!job) return;
  const extras = job.texts.map((text, i) => {
    if (!job.valid[i]) return undefined;
    try {
      return job.derive(JSON.parse(text) as unknown);
    } catch {
      return undefined; // the main thread derives it on its own (and meets the same fault there)
    }
  });
  parentPort!.postMessage({ id: job.id, extras } satisfies ValidationAnswer);
  // A turn of the event loop between chunks: a chunk to validate that came meanwhile goes first.
  if (derivations.length > 0) setImmediate(deriveNext);
}

export function answerChunks(extra?: WorkerExtra): void {
  const port = parentPort!;
  const validatorReady = createValidatorFromSpec((workerData as { spec: ValidatorSpec }).spec);
  port.on('message', (message: PoolMessage) => {
    if ('settings' in message) {
      extra?.configure?.(message.settings);
      return;
    }
    const chunk = message;
    validatorReady.then(
      (validator) => {
        const valid: boolean[] = [];
        const results = chunk.texts.map((text): CheckedText | null => {
          try {
            const digest = validationDigest(text, chunk.options);
            const result = validator.validate(JSON.parse(text) as unknown, chunk.options);
            valid.push(result.valid);
            return { digest, result };
          } catch {
            valid.push(false);
            return null;
          }
        });
        port.postMessage({ id: chunk.id, results } satisfies ValidationAnswer);
        // The verdicts first (the check waits for them); the extras later, when no chunk waits.
        if (chunk.extra && extra) {
          derivations.push({ id: chunk.id, texts: chunk.texts, valid, derive: extra.derive });
          if (derivations.length === 1) setImmediate(deriveNext);
        }
      },
      (err: unknown) =>
        port.postMessage({
          id: chunk.id,
          error: err instanceof Error ? err.message : String(err),
        } satisfies ValidationAnswer),
    );
  });
}
