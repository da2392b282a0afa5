/**
 * The bulk import's check workers (check-worker.ts): a ValidationPool whose workers also extract the search index
 * entries, with the same custom search parameters as the importing process.
 */
import type {
  CustomSearchParameters,
  CustomParameterDefinition,
} from '../../fhir/search/custom-parameters.js';
import { ValidationPool, type ValidatorSpec } from '../../fhir/validation/validation-pool.js';

/** A custom search parameter as the main thread has it installed (`ready`: searchable, not only indexed). */
export interface InstalledCustomParameter {
  definition: CustomParameterDefinition;
  ready: boolean;
}

/** `size` check workers building the validator `spec` describes. */
export function startCheckPool(spec: ValidatorSpec, size: number): ValidationPool {
  return ValidationPool.start(spec, size, { base: import.meta.url, name: 'check-worker' });
}

/**
 * The workers index with `parameters` as installed in this process now (the import's writes do not change them:
 * the CLI refreshes nothing meanwhile).
 */
export function indexWithCustomParameters(pool: ValidationPool, parameters: CustomSearchParameters): void {
  pool.configure(
    parameters.definitions.map((definition): InstalledCustomParameter => ({
      definition,
      ready: parameters.isReady(definition),
    })),
  );
}
