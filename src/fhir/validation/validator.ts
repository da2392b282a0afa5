/**
 * The ResourceValidator port: every write passes through `validate` before anything is stored.
 * Implementations (src/fhir/validation/): the R4 JSON schema (ajv, compiled per resource type at start-up),
 * then StructureDefinition-driven structure, FHIRPath invariants and terminology bindings.
 */
import type { OperationOutcomeIssue } from '../outcome.js';

export interface ValidationOptions {
  /** Extra profiles (canonical URLs) to validate against, besides those the resource claims. */
  profiles?: string[];
  /** `$validate` mode. */
  mode?: 'create' | 'update' | 'delete' | 'profile';
  /**
   * Severity of the checks of a conformance resource against others (a SearchParameter against the one it is
   * derived from, a CapabilityStatement's search parameters against their definitions, a MeasureReport against its
   * Measure). 'warning' by default, so writes do not depend on the order resources arrive; `$validate` asks 'error'.
   */
  crossResourceSeverity?: 'error' | 'warning';
}

export interface ValidationResult {
  /** False when any issue has severity error or fatal. */
  valid: boolean;
  issues: OperationOutcomeIssue[];
}

export interface ResourceValidator {
  /** True for resource types of FHIR R4 (concrete, non-abstract). */
  isResourceType(type: string): boolean;
  /** Every type isResourceType accepts (the CapabilityStatement lists them). */
  readonly resourceTypes?: string[];
  /** Validate a plain-JSON resource (numbers as JS numbers). Never throws for bad input. */
  validate(resource: unknown, options?: ValidationOptions): ValidationResult;
}
