/**
 * Runs the HL7 validator test cases (a folder laid out like FHIR/fhir-test-cases `validator/`) against our validator
 * and compares with the Java reference validator's outcomes under `outcomes/java/`.
 *
 *   npm run conformance:validator -- [DIR] [--terminology-data-dir D]   (default ../shared/data/validator-r4)
 *
 * `--terminology-data-dir D`: the code systems loaded into D with `hie-ledger terminology load` (SNOMED CT, LOINC,
 * CVX...) are used as the service would use them, so cases that need their content (unknown codes, wrong displays)
 * can agree with the reference, whose terminology server has them.
 *
 * A run is a case's base validation, plus its `profile` validation where the case has one. Runs whose files are not
 * all present as JSON are listed as not run. Prints a table per module, writes conformance/reports/validator-r4.json,
 * prints each half of a fixed split of the cases (tune / measure, by a hash of the case name) with its false accepts
 * and false rejects, and ends with `agreement: valid/invalid X% (n/N), error locations Y% (m/M)`.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createFhirValidatorSync,
  type FhirValidator,
  type FhirValidatorOptions,
} from '../src/fhir/validation/index.js';
import type { ValidationSettings } from '../src/fhir/validation/validator.js';
import type { OperationOutcomeIssue } from '../src/fhir/outcome.js';
import type { LoadedCodeSystems } from '../src/fhir/terminology-port.js';
import { openLoadedCodeSystems } from '../src/terminology/terminology-store.js';
import { parseJsonLeniently } from '../src/fhir/validation/json-syntax.js';

type Json = any;

export interface RunResult {
  case: string;
  module: string;
  kind: 'base' | 'profile';
  /** The half of the split (by a hash of the case name): rules are tuned on `tune`, `measure` is only measured. */
  half: Half;
  expectedValid: boolean;
  actualValid: boolean;
  expectedErrors: number;
  actualErrors: number;
  /** Whether both report errors and the reference locates them (the location denominator). */
  bothErrors: boolean;
  /** Both report errors but the reference gives no location (outside the location denominator). */
  unlocated: boolean;
  /** Manifest options of the case that have no counterpart here. */
  unsupportedOptions: string[];
  locationAgrees: boolean;
  expectedLocations: string[];
  actualLocations: string[];
}

export interface NotRun {
  case: string;
  kind: 'base' | 'profile';
  reason: string;
}

export interface ConformanceReport {
  dir: string;
  runs: RunResult[];
  notRun: NotRun[];
  validAgree: number;
  locationAgree: number;
  locationRuns: number;
}

export type Half = 'tune' | 'measure';

/** A fixed split of the cases in two halves, by the first byte of the SHA-256 of the case name. */
export function halfOf(caseName: string): Half {
  return createHash('sha256').update(caseName).digest()[0] % 2 === 0 ? 'tune' : 'measure';
}

const isError = (i: { severity?: string }): boolean => i.severity === 'error' || i.severity === 'fatal';

/** The reference's location with its `/*Type/id*\/` comments removed. */
export function normaliseLocation(s: string): string {
  return s.replace(/\/\*.*?\*\//g, '').trim();
}

/** The locations of a list of issues (OperationOutcome issues, or the manifest's inline `output`). */
function errorLocations(issues: Json[]): string[] {
  return issues
    .filter(isError)
    .flatMap((i: Json) =>
      (i.expression ?? i.location ?? (typeof i.path === 'string' ? [i.path] : [])).map((l: string) =>
        normaliseLocation(l),
      ),
    );
}

/**
 * The reference's outcome for a run: a file under `outcomes/`, or written inline in the manifest
 * (`{ errorCount, output? }`, output being the issues with their locations when the suite records them).
 */
function expectation(dir: string, java: Json): { errors: number; locations: string[] } | undefined {
  if (java && typeof java === 'object' && typeof java.errorCount === 'number')
    return {
      errors: java.errorCount,
      locations: Array.isArray(java.output) ? errorLocations(java.output) : [],
    };
  if (typeof java !== 'string') return undefined;
  const file = path.join(dir, 'outcomes', java);
  if (!fs.existsSync(file)) return undefined;
  const oo = JSON.parse(fs.readFileSync(file, 'utf8'));
  const issues: Json[] = oo.issue ?? [];
  return { errors: issues.filter(isError).length, locations: errorLocations(issues) };
}

/**
 * The manifest's per-case options of the reference validator (its test runner's keys) as our settings. Keys with
 * no counterpart here are listed per run (`unsupportedOptions`) so a reader sees what the run could not mirror.
 */
export interface CaseOptions {
  validator: FhirValidatorOptions;
  settings: Partial<ValidationSettings>;
  allowComments: boolean;
  unsupported: string[];
}

const UNSUPPORTED_OPTIONS = [
  'assumeValidRestReferences',
  'best-practice',
  'no-experimental-content',
  'r5-bundle-relative-reference-policy',
  'crumb-trail',
  'for-publication',
  'language',
  'sct',
  'no-tx',
  'bundle-param',
  'ips',
  'packages',
  'advisor',
  'fetcher',
  'certificate',
  'wrong-displays',
  'default-version',
];

export function caseOptions(c: Json): CaseOptions {
  const domains: string[] = [
    ...(typeof c['allowed-extension-domain'] === 'string' ? [c['allowed-extension-domain']] : []),
    ...(Array.isArray(c['allowed-extension-domains']) ? c['allowed-extension-domains'] : []),
  ];
  return {
    // What the validator is built with (contained resources are walked or not).
    validator: { validateContained: c.validateContains !== 'IGNORE' },
    // The reference's test settings: unknown extensions are errors, example URLs allowed unless `examples: false`,
    // security checks only where asked, HTML in markdown a warning unless `noHtmlInMarkdown`.
    settings: {
      unknownExtensionSeverity: 'error',
      allowExampleUrls: c.examples !== false,
      securityChecks: c['security-checks'] === true,
      htmlInMarkdown: c.noHtmlInMarkdown !== undefined ? 'error' : 'warning',
      allowedExtensionDomains: domains,
    },
    allowComments: c['allow-comments'] === true,
    unsupported: UNSUPPORTED_OPTIONS.filter((k) => c[k] !== undefined),
  };
}

function parseFile(file: string): { ok: true; value: Json } | { ok: false; message: string } {
  try {
    return { ok: true, value: JSON.parse(fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '')) };
  } catch (e) {
    return { ok: false, message: e instanceof Error ? e.message : String(e) };
  }
}

function validateRun(
  validator: FhirValidator,
  file: string,
  profiles: string[],
  options: CaseOptions,
): OperationOutcomeIssue[] {
  // Like the reference validator: syntax problems are reported where they are, and what can be read is validated.
  const parsed = parseJsonLeniently(fs.readFileSync(file, 'utf8'), { allowComments: options.allowComments });
  if (parsed.value === undefined) return parsed.issues;
  // The reference validator reports cross-resource rules as errors, as `$validate` does here.
  return [
    ...parsed.issues,
    ...validator.validate(parsed.value, {
      profiles,
      crossResourceSeverity: 'error',
      settings: options.settings,
    }).issues,
  ];
}

export interface ConformanceOptions {
  /** Loaded big code systems (`hie-ledger terminology load`), used by every run's validator. */
  codeSystems?: LoadedCodeSystems;
}

export function runConformance(dir: string, runOptions: ConformanceOptions = {}): ConformanceReport {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  const cases: Json[] = manifest['test-cases'] ?? [];
  const runs: RunResult[] = [];
  const notRun: NotRun[] = [];
  const present = (f: string): boolean => f.endsWith('.json') && fs.existsSync(path.join(dir, f));
  for (const c of cases) {
    if (c['use-test'] === false) continue;
    const name: string = c.name ?? c.file;
    // `supporting5` holds definitions the case needs too (published in R5 form): without them it cannot be run.
    const supporting: string[] = [...(c.profiles ?? []), ...(c.supporting ?? []), ...(c.supporting5 ?? [])];
    const baseFiles = [c.file, ...supporting];
    const missing = baseFiles.filter((f) => !present(f));
    const kinds: { kind: 'base' | 'profile'; files: string[]; java: Json; profileSource?: string }[] = [
      { kind: 'base', files: baseFiles, java: c.java },
    ];
    if (c.profile) {
      const extra: string[] = c.profile.supporting ?? [];
      kinds.push({
        kind: 'profile',
        files: [...baseFiles, c.profile.source, ...extra],
        java: c.profile.java,
        profileSource: c.profile.source,
      });
    }
    for (const k of kinds) {
      const miss = k.kind === 'base' ? missing : k.files.filter((f) => typeof f !== 'string' || !present(f));
      if (miss.length) {
        notRun.push({ case: name, kind: k.kind, reason: `not present as JSON: ${miss.join(', ')}` });
        continue;
      }
      const expected = expectation(dir, k.java);
      if (!expected) {
        notRun.push({ case: name, kind: k.kind, reason: 'no reference outcome' });
        continue;
      }
      // Per-case settings of the manifest: the validator's construction, and the run's settings.
      const options = caseOptions(c);
      const validator = createFhirValidatorSync({
        ...options.validator,
        ...(runOptions.codeSystems ? { codeSystems: runOptions.codeSystems } : {}),
      });
      for (const f of k.files.slice(1)) {
        const parsed = parseFile(path.join(dir, f));
        if (parsed.ok) {
          const res = parsed.value;
          for (const r of res?.resourceType === 'Bundle'
            ? (res.entry ?? []).map((e: Json) => e?.resource)
            : [res])
            validator.registerResource(r);
        }
      }
      let profiles: string[] = [];
      if (k.profileSource) {
        const p = parseFile(path.join(dir, k.profileSource));
        if (p.ok && typeof p.value.url === 'string') profiles = [p.value.url];
      }
      const issues = validateRun(validator, path.join(dir, c.file), profiles, options);
      const errors = issues.filter(isError);
      const actualLocations = errors.flatMap((i) => i.expression ?? i.location ?? []);
      // Locations compare only where the reference gives some (a fatal parse error, or an inline outcome without
      // its issues, has none): such runs are outside the location denominator and counted apart.
      const bothErrors = errors.length > 0 && expected.errors > 0 && expected.locations.length > 0;
      const expectedSet = new Set(expected.locations);
      runs.push({
        case: name,
        module: c.module ?? 'general',
        kind: k.kind,
        half: halfOf(name),
        expectedValid: expected.errors === 0,
        actualValid: errors.length === 0,
        expectedErrors: expected.errors,
        actualErrors: errors.length,
        bothErrors,
        unlocated: errors.length > 0 && expected.errors > 0 && expected.locations.length === 0,
        unsupportedOptions: options.unsupported,
        locationAgrees: bothErrors && actualLocations.some((l) => expectedSet.has(l)),
        expectedLocations: expected.locations,
        actualLocations,
      });
    }
  }
  const validAgree = runs.filter((r) => r.expectedValid === r.actualValid).length;
  const locRuns = runs.filter((r) => r.bothErrors);
  return {
    dir,
    runs,
    notRun,
    validAgree,
    locationAgree: locRuns.filter((r) => r.locationAgrees).length,
    locationRuns: locRuns.length,
  };
}

const pct = (n: number, d: number): string => (d === 0 ? '-' : `${((100 * n) / d).toFixed(1)}%`);

function main(): void {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const args = process.argv.slice(2);
  const flag = args.indexOf('--terminology-data-dir');
  const terminologyDir = flag >= 0 ? args[flag + 1] : undefined;
  const positional = args.filter((_, i) => flag < 0 || (i !== flag && i !== flag + 1));
  const dir = path.resolve(positional[0] ?? path.join(root, '../shared/data/validator-r4'));
  const codeSystems = terminologyDir ? openLoadedCodeSystems(path.resolve(terminologyDir)) : undefined;
  if (terminologyDir && !codeSystems) {
    console.error(`no code systems loaded in ${terminologyDir} (hie-ledger terminology load)`);
    process.exit(2);
  }
  const report = runConformance(dir, { codeSystems });
  codeSystems?.close();
  const modules = [...new Set(report.runs.map((r) => r.module))].sort();
  const rows = modules.map((m) => {
    const rs = report.runs.filter((r) => r.module === m);
    const lr = rs.filter((r) => r.bothErrors);
    return {
      module: m,
      runs: rs.length,
      validAgree: rs.filter((r) => r.expectedValid === r.actualValid).length,
      loc: `${lr.filter((r) => r.locationAgrees).length}/${lr.length}`,
    };
  });
  console.log(
    'module'.padEnd(14) + 'runs'.padStart(6) + 'valid/invalid'.padStart(16) + 'locations'.padStart(12),
  );
  for (const r of rows)
    console.log(
      r.module.padEnd(14) +
        String(r.runs).padStart(6) +
        `${r.validAgree} (${pct(r.validAgree, r.runs)})`.padStart(16) +
        r.loc.padStart(12),
    );
  console.log(
    'total'.padEnd(14) +
      String(report.runs.length).padStart(6) +
      `${report.validAgree} (${pct(report.validAgree, report.runs.length)})`.padStart(16) +
      `${report.locationAgree}/${report.locationRuns}`.padStart(12),
  );
  // Each half separately: agreement, false accepts (valid where the reference finds errors) and false rejects,
  // both as a share of the half's runs, and error locations.
  for (const half of ['tune', 'measure'] as const) {
    const rs = report.runs.filter((r) => r.half === half);
    const agree = rs.filter((r) => r.expectedValid === r.actualValid).length;
    const falseAccepts = rs.filter((r) => !r.expectedValid && r.actualValid).length;
    const falseRejects = rs.filter((r) => r.expectedValid && !r.actualValid).length;
    const lr = rs.filter((r) => r.bothErrors);
    const la = lr.filter((r) => r.locationAgrees).length;
    const unlocated = rs.filter((r) => r.unlocated).length;
    console.log(
      `${half.padEnd(8)} runs ${rs.length}: valid/invalid ${pct(agree, rs.length)} (${agree}/${rs.length}), false accepts ${pct(falseAccepts, rs.length)} (${falseAccepts}), false rejects ${pct(falseRejects, rs.length)} (${falseRejects}), error locations ${pct(la, lr.length)} (${la}/${lr.length}; ${unlocated} unlocated by the reference)`,
    );
  }
  const misses = report.runs.filter((r) => r.expectedValid !== r.actualValid);
  if (misses.length) {
    console.log('\nvalid/invalid disagreements:');
    for (const r of misses)
      console.log(
        `  ${r.case} (${r.kind}, ${r.half}): expected ${r.expectedValid ? 'valid' : `${r.expectedErrors} error(s)`}, got ${r.actualValid ? 'valid' : `${r.actualErrors} error(s)`}${r.actualValid ? '' : ` at ${r.actualLocations.slice(0, 3).join(', ')}`}`,
      );
  }
  const locMisses = report.runs.filter((r) => r.bothErrors && !r.locationAgrees);
  if (locMisses.length) {
    console.log('\nerror location disagreements:');
    for (const r of locMisses)
      console.log(
        `  ${r.case} (${r.kind}, ${r.half}): expected ${r.expectedLocations.slice(0, 3).join(', ')}; got ${r.actualLocations.slice(0, 3).join(', ')}`,
      );
  }
  const partial = report.runs.filter((r) => r.unsupportedOptions.length);
  if (partial.length) {
    console.log('\nruns with manifest options not mirrored here:');
    for (const r of partial) console.log(`  ${r.case} (${r.kind}): ${r.unsupportedOptions.join(', ')}`);
  }
  console.log(`\nnot run: ${report.notRun.length}`);
  for (const n of report.notRun) console.log(`  ${n.case} (${n.kind}): ${n.reason}`);
  const out = path.join(root, 'conformance/reports/validator-r4.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  console.log(`report: ${path.relative(process.cwd(), out)}`);
  console.log(
    `agreement: valid/invalid ${pct(report.validAgree, report.runs.length)} (${report.validAgree}/${report.runs.length}), error locations ${pct(report.locationAgree, report.locationRuns)} (${report.locationAgree}/${report.locationRuns})`,
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
