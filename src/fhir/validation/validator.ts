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
  /** Settings of this validation that differ from the validator's (`$validate` parameters); absent ones are kept. */
  settings?: Partial<ValidationSettings>;
  /**
   * The rule families' levels this validation applies (docs/validation.md, "Rule families"): `write` (default) the
   * validator's write levels; `received`, for a record received from another member and verified against its
   * anchor, per family the more lenient of the write levels and the network's pinned levels; `reported`, the true
   * severities (`$validate`).
   */
  levels?: 'write' | 'received' | 'reported';
}

/**
 * The settings of the HL7 reference validator that one validation may choose (`$validate` parameters, the test
 * suite's manifest); the validator's own (FhirValidatorOptions) are the defaults.
 */
export interface ValidationSettings {
  /** A plain string carrying HTML tags is an error rather than information (security checks). */
  securityChecks: boolean;
  /** Accept example.org/acme.com extension URLs. */
  allowExampleUrls: boolean;
  /** Severity of an extension whose definition is unknown (unknown modifier extensions are always errors). */
  unknownExtensionSeverity: 'error' | 'warning' | 'information';
  /** URL prefixes under which unknown extensions are accepted without an issue. */
  allowedExtensionDomains: string[];
  /** Severity of HTML tags in a markdown value ('ignore': not checked). */
  htmlInMarkdown: 'ignore' | 'warning' | 'error';
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
