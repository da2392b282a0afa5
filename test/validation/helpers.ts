import { createFhirValidatorSync, type FhirValidator } from '../../src/fhir/validation/index.js';

let shared: FhirValidator | undefined;
/** One validator per test file (the core definitions load once per process). */
export function validator(): FhirValidator {
  shared ??= createFhirValidatorSync();
  return shared;
}

export function errors(
  resource: unknown,
  profiles?: string[],
  v: FhirValidator = validator(),
): { expression: string; diagnostics: string; code: string }[] {
  return v
    .validate(resource, { profiles })
    .issues.filter((i) => i.severity === 'error' || i.severity === 'fatal')
    .map((i) => ({ expression: i.expression?.[0] ?? '', diagnostics: i.diagnostics ?? '', code: i.code }));
}

export function errorPaths(resource: unknown, profiles?: string[], v?: FhirValidator): string[] {
  return errors(resource, profiles, v).map((e) => e.expression);
}
