/**
 * The walk context: what every rule family of the StructureDefinition walker works with. `Run` collects one
 * validation's issues; `Frame` is the resource being walked; `WalkContext` is the walker as the rule families see it
 * (definitions, terminology, settings, and the walk itself for nested values).
 */
import type { IssueCode, IssueSeverity, OperationOutcomeIssue } from '../outcome.js';
import type { DefinitionRegistry } from '../definitions/definition-registry.js';
import type { JsonObject } from '../definitions/json.js';
import type { StructureCache, ElementNode, TypeRef } from './structure.js';
import type { Terminology } from './terminology.js';
import type { ValidationSettings } from './validator.js';
import {
  RULE_FAMILY_EXTENSION,
  severityAtLevel,
  type FamilyLevels,
  type IssueFamily,
} from './rule-families.js';

export const MAX_DEPTH = 64;
const MAX_ISSUES = 500;

/** An object being walked: the container of the extensions it holds (their context is checked against it). */
export interface Container {
  obj: JsonObject;
  /** The path of its element in the definition (`Patient.contact`, `Observation.value[x]`). */
  elementPath: string;
  /** The path of the element it constrains in the base definition (`HumanName.family` in a profile's `Patient.name.family`). */
  basePath: string | undefined;
  /** The element whose children it has: a `contentReference` target (`Questionnaire.item` for `item.item`). */
  ownerPath: string;
  /** Its type (`HumanName`, `date`, `Patient`), or its element path for backbone elements. */
  typeName: string;
  /** Its FHIRPath location in the instance. */
  path: string;
}

export interface Frame {
  resource: JsonObject;
  /** The resource holding `contained` for references `#id` (the container, or the resource itself). */
  rootResource: JsonObject;
}

/** The settings one validation may choose (ValidationOptions.settings); the validator's own are the defaults. */
export type RunSettings = ValidationSettings;

/** One validation run: issues deduplicated (base and profile walks overlap). */
export class Run {
  readonly issues: OperationOutcomeIssue[] = [];
  /** Keys of the listed issues, made once the list is long (below that a scan is cheaper than building keys). */
  private seen: Set<string> | undefined;
  depth = 0;
  truncated = false;
  /** Severity of cross-resource checks of conformance resources (ValidationOptions.crossResourceSeverity). */
  crossResourceSeverity: 'error' | 'warning' = 'warning';
  /** This run's settings where they differ from the validator's (undefined: the validator's). */
  settings: RunSettings | undefined;
  /**
   * The rule families' levels of this run (rule-families.ts), undefined for the true severities (`$validate`, and
   * writes under the default levels). Probe runs never have them: slices match by the true severities.
   */
  levels: FamilyLevels | undefined;
  /** When set, only whether an error occurred matters (slice matching by profile). */
  errorsOnly = false;
  errorCount = 0;
  /** performance.now() after which FHIRPath invariants are skipped (a bound on pathological inputs). */
  invariantDeadline = Infinity;
  invariantsSkipped = false;
  /** Internal narrative hyperlinks (`href="#x"`) by div path, and the anchors (id/name) of every narrative walked. */
  narrativeLinks: Map<string, Set<string>> | undefined;
  narrativeAnchors: Set<string> | undefined;
  /** The objects being walked, outermost first (extension contexts are checked against the innermost). */
  readonly containers: Container[] = [];

  private listedErrors = 0;

  add(
    severity: IssueSeverity,
    code: IssueCode,
    message: string,
    expression: string,
    family: IssueFamily,
  ): void {
    if (this.levels !== undefined) {
      const atLevel = severityAtLevel(severity, family, this.levels);
      if (atLevel !== severity) {
        message = `${message} (rule family '${family}' is at ${this.levels[family as keyof FamilyLevels]} on this server)`;
        severity = atLevel;
      }
    }
    const isError = severity === 'error' || severity === 'fatal';
    if (isError) this.errorCount++;
    if (this.errorsOnly) return;
    if (this.isListed(severity, message, expression)) return;
    // Past the cap, the first error is still listed, so an invalid verdict always shows a reason.
    if (this.issues.length >= MAX_ISSUES && !(isError && this.listedErrors === 0)) {
      if (!this.truncated) {
        this.truncated = true;
        this.issues.push({
          severity: 'information',
          code: 'too-costly',
          diagnostics: `More than ${MAX_ISSUES} issues; the rest are not reported`,
          expression: [expression],
        });
      }
      return;
    }
    if (isError) this.listedErrors++;
    this.issues.push({
      extension: [{ url: RULE_FAMILY_EXTENSION, valueCode: family }],
      severity,
      code,
      diagnostics: message,
      expression: [expression],
    });
  }

  /** Whether the same issue is listed already (base and profile walks report the same problems). */
  private isListed(severity: IssueSeverity, message: string, expression: string): boolean {
    const issues = this.issues;
    if (issues.length < 16 && this.seen === undefined) {
      for (const issue of issues) {
        if (
          issue.severity === severity &&
          issue.diagnostics === message &&
          issue.expression?.[0] === expression
        )
          return true;
      }
      return false;
    }
    const keyOf = (s: string, m: string, e: string) => `${s}|${e}|${m}`;
    this.seen ??= new Set(issues.map((i) => keyOf(i.severity, i.diagnostics ?? '', i.expression?.[0] ?? '')));
    const key = keyOf(severity, message, expression);
    if (this.seen.has(key)) return true;
    this.seen.add(key);
    return false;
  }
}

/** The walker as its rule families see it: definitions, settings, and the walk for nested values. */
export interface WalkContext extends RunSettings {
  readonly registry: DefinitionRegistry;
  readonly structures: StructureCache;
  readonly terminology: Terminology;
  unknownCodeSeverity: 'error' | 'warning';
  vitalSigns: boolean;
  validateContained: boolean;
  isResourceType(type: string): boolean;
  childOwner(node: ElementNode, type: TypeRef | undefined): ElementNode | undefined;
  walkResource(
    res: unknown,
    path: string,
    container: JsonObject | undefined,
    run: Run,
    extraProfiles?: string[],
  ): void;
  walkObject(
    obj: unknown,
    node: ElementNode,
    owner: ElementNode | undefined,
    typeName: string,
    path: string,
    run: Run,
    frame: Frame,
    isResourceRoot?: boolean,
  ): void;
  walkValue(
    value: unknown,
    node: ElementNode,
    type: TypeRef | undefined,
    path: string,
    run: Run,
    frame: Frame,
  ): void;
}

/** The settings in force for a run: its own, else the validator's. */
export function settingsOf(w: WalkContext, run: Run): RunSettings {
  return run.settings ?? w;
}

/** A probe run (errors only) with the settings of the run it serves. */
export function probeRun(run: Run): Run {
  const probe = new Run();
  probe.errorsOnly = true;
  probe.settings = run.settings;
  return probe;
}

export function upperFirst(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** The FHIRPath of a child element (a choice type as `.ofType(T)`). */
export function elementPath(path: string, child: ElementNode, type: TypeRef | undefined): string {
  return child.choice && type ? `${path}.${child.name}.ofType(${type.code})` : `${path}.${child.name}`;
}
