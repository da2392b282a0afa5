/**
 * A validation worker thread (validation-pool.ts): builds the validator its `workerData.spec` describes, then
 * answers each chunk of JSON texts with their ValidationResults, in order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import {
  createValidatorFromSpec,
  type ValidationAnswer,
  type ValidationChunk,
  type ValidatorSpec,
} from './validation-pool.js';
import type { ValidationResult } from './validator.js';

const port = parentPort!;
const validatorReady = createValidatorFromSpec((workerData as { spec: ValidatorSpec }).spec);

port.on('message', (chunk: ValidationChunk) => {
  validatorReady.then(
    (validator) => {
      const results = chunk.texts.map((text): ValidationResult | null => {
        try {
          return validator.validate(JSON.parse(text) as unknown, chunk.options);
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
