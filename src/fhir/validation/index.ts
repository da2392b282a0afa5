/**
 * The full FHIR validator (ResourceValidator port): StructureDefinition-driven structure, primitive formats,
 * FHIRPath invariants, terminology bindings and profiles, over the official R4 definitions plus the network's
 * shared profiles (`igPaths`) and conformance resources stored through the API (`registerResource`).
 */
import type {
  ResourceValidator,
  ValidationOptions,
  ValidationResult,
  ValidationSettings,
} from './validator.js';
import type { OperationOutcomeIssue } from '../outcome.js';
import { coreRegistry, DefinitionRegistry } from '../definitions/definition-registry.js';
import { field } from '../definitions/json.js';
import { Run, StructureWalker } from './walker.js';
import type { RunSettings } from './walk-context.js';
import type { LoadedCodeSystems } from '../terminology-port.js';
import {
  DEFAULT_FAMILY_LEVELS,
  lenientFamilyLevels,
  sameFamilyLevels,
  withFamilyLevels,
  type FamilyLevel,
  type FamilyLevels,
} from './rule-families.js';

export interface FhirValidatorOptions {
  /** Where to keep the compact core definitions between runs (e.g. `${dataDir}/cache`); none when absent. */
  definitionsCacheDir?: string;
  /** Extra packages: folders of JSON or FHIR package .tgz files. */
  igPaths?: string[];
  /** Profiles every resource of a type must conform to, e.g. { Patient: ['http://example.org/fhir/StructureDefinition/patient'] }. */
  requiredProfiles?: Record<string, string[]>;
  /** Optional schema validator run first (a cheap structural gate); its issues are reported as-is. */
  schema?: ResourceValidator;
  /** Severity of extensions with no known definition (default 'warning'; the reference validator uses 'error'). */
  unknownExtensionSeverity?: 'error' | 'warning' | 'information';
  /** Accept example.org/acme.com extension URLs (as the specification's own examples do). */
  allowExampleUrls?: boolean;
  /**
   * URL prefixes under which extensions without a definition are accepted without an issue (the reference
   * validator's extension domains, e.g. a national base's `https://fhir.nhs.uk/StructureDefinition`).
   */
  allowedExtensionDomains?: string[];
  /**
   * Time budget (ms) for FHIRPath invariants per validation (default 2000): some core invariants are quadratic on
   * huge definitional resources; past the budget the rest are skipped with a warning instead of stalling a write.
   */
  invariantBudgetMs?: number;
  /** Severity of unknown codes in loaded CodeSystems outside required bindings (default 'error'). */
  unknownCodeSeverity?: 'error' | 'warning';
  /** Apply the R4 vital signs profiles to Observations by LOINC code (default true, as R4 requires). */
  vitalSigns?: boolean;
  /**
   * Security checks (default false): a plain string that carries HTML tags is an error instead of information
   * (the reference validator's security-checks mode).
   */
  securityChecks?: boolean;
  /** Severity of HTML tags in markdown values (default 'warning'; 'ignore': not checked). */
  htmlInMarkdown?: 'ignore' | 'warning' | 'error';
  /** Validate contained resources (default true; the reference validator's validateContains=IGNORE is false). */
  validateContained?: boolean;
  /** The big code systems loaded into the terminology store (LOINC, SNOMED CT ...): their codes are checked. */
  codeSystems?: LoadedCodeSystems;
  /**
   * The rule families' levels on writes (rule-families.ts: family name, or `all`, to `warn|error`); absent families
   * keep the default (today's rules). Throws FamilyLevelsError for an unknown family.
   */
  familyLevels?: Readonly<Record<string, FamilyLevel>>;
  /**
   * The levels the network pins for records received from other members and verified against their anchors
   * (ValidationOptions.levels `received`): such a record is never refused by a family the network has at `warn`.
   */
  networkFamilyLevels?: Readonly<Record<string, FamilyLevel>>;
}

export interface FhirValidator extends ResourceValidator {
  readonly registry: DefinitionRegistry;
  readonly walker: StructureWalker;
  /** Adds or replaces a StructureDefinition/ValueSet/CodeSystem/ConceptMap (e.g. after a write through the API). */
  registerResource(resource: unknown): boolean;
}

export function createFhirValidatorSync(options: FhirValidatorOptions = {}): FhirValidator {
  const registry = new DefinitionRegistry(coreRegistry({ cacheDir: options.definitionsCacheDir }));
  for (const p of options.igPaths ?? []) registry.loadPath(p);
  const walker = new StructureWalker(registry);
  walker.allowExampleUrls = !!options.allowExampleUrls;
  walker.allowedExtensionDomains = [...(options.allowedExtensionDomains ?? [])];
  walker.validateContained = options.validateContained ?? true;
  walker.vitalSigns = options.vitalSigns ?? true;
  walker.securityChecks = !!options.securityChecks;
  if (options.htmlInMarkdown) walker.htmlInMarkdown = options.htmlInMarkdown;
  if (options.unknownCodeSeverity) walker.unknownCodeSeverity = options.unknownCodeSeverity;
  if (options.unknownExtensionSeverity) walker.unknownExtensionSeverity = options.unknownExtensionSeverity;
  if (options.codeSystems) walker.terminology.useLoadedCodeSystems(options.codeSystems);
  const required = options.requiredProfiles ?? {};
  const writeLevels = withFamilyLevels(options.familyLevels ?? {});
  const receivedLevels = lenientFamilyLevels(
    writeLevels,
    withFamilyLevels(options.networkFamilyLevels ?? {}),
  );
  // Undefined: the default levels, which are the true severities (nothing to change per issue).
  const levelsOf = (levels: FamilyLevels) =>
    sameFamilyLevels(levels, DEFAULT_FAMILY_LEVELS) ? undefined : levels;
  const runLevels = {
    write: levelsOf(writeLevels),
    received: levelsOf(receivedLevels),
    reported: undefined,
  };
  const resourceTypes = registry
    .all('StructureDefinition')
    .filter(
      (sd) =>
        sd.kind === 'resource' &&
        sd.derivation === 'specialization' &&
        !sd.abstract &&
        sd.url === `http://hl7.org/fhir/StructureDefinition/${sd.id}`,
    )
    .map((sd) => sd.type)
    .sort();
  return {
    registry,
    walker,
    resourceTypes,
    registerResource: (res) => registry.registerResource(res),
    isResourceType: (type) => walker.isResourceType(type),
    validate(resource: unknown, opts: ValidationOptions = {}): ValidationResult {
      const issues: OperationOutcomeIssue[] = [];
      let errorCount = 0;
      try {
        if (options.schema) {
          const gate = options.schema.validate(resource, opts);
          if (!gate.valid) return gate;
        }
        const type = field(resource, 'resourceType');
        const profiles = [
          ...(opts.profiles ?? []),
          ...(typeof type === 'string' ? (required[type] ?? []) : []),
        ];
        const run = new Run();
        if (opts.crossResourceSeverity) run.crossResourceSeverity = opts.crossResourceSeverity;
        run.levels = runLevels[opts.levels ?? 'write'];
        if (opts.settings) run.settings = runSettings(walker, opts.settings);
        const budget = options.invariantBudgetMs ?? 2000;
        if (Number.isFinite(budget)) run.invariantDeadline = performance.now() + budget;
        walker.validate(resource, profiles, run);
        errorCount = run.errorCount;
        issues.push(...run.issues);
      } catch (e) {
        // Never throw for bad input: an internal failure is reported as an exception issue.
        issues.push({
          severity: 'error',
          code: 'exception',
          diagnostics: `Validation failed: ${e instanceof Error ? e.message : String(e)}`,
        });
      }
      const valid = errorCount === 0 && !issues.some((i) => i.severity === 'error' || i.severity === 'fatal');
      return { valid, issues };
    },
  };
}

/** The validator's settings with a run's overrides (undefined fields keep the validator's). */
function runSettings(defaults: RunSettings, overrides: Partial<ValidationSettings>): RunSettings {
  return {
    securityChecks: overrides.securityChecks ?? defaults.securityChecks,
    allowExampleUrls: overrides.allowExampleUrls ?? defaults.allowExampleUrls,
    unknownExtensionSeverity: overrides.unknownExtensionSeverity ?? defaults.unknownExtensionSeverity,
    allowedExtensionDomains: overrides.allowedExtensionDomains ?? defaults.allowedExtensionDomains,
    htmlInMarkdown: overrides.htmlInMarkdown ?? defaults.htmlInMarkdown,
  };
}

export async function createFhirValidator(options: FhirValidatorOptions = {}): Promise<FhirValidator> {
  return createFhirValidatorSync(options);
}
