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
        const results = chunk.texts.map((text): CheckedText | null => {
          try {
            const digest = validationDigest(text, chunk.options);
            const result = validator.validate(JSON.parse(text) as unknown, chunk.options);
            let derived: unknown;
            // Its own parse of the text: the validator may have kept or annotated what it was given.
            if (chunk.extra && extra && result.valid)
              try {
                derived = extra.derive(JSON.parse(text) as unknown);
              } catch {
                derived = undefined; // the main thread derives it on its own (and meets the same fault there)
              }
            return { digest, result, extra: derived };
          } catch {
            return null;
          }
        });
        port.postMessage({ id: chunk.id, results } satisfies ValidationAnswer);
      },
      (err: unknown) =>
        port.postMessage({
          id: chunk.id,
          error: err instanceof Error ? err.message : String(err),
        } satisfies ValidationAnswer),
    );
  });
}
