/**
 * `hie-ledger validate --dry-run [--family-levels L]`: what a stricter rule-family setting (docs/validation.md, "Rule
 * families") would refuse, over every stored current version, before it is enforced. Validates each with the write
 * path's validator (the same IGs, required profiles and loaded code systems) at the levels given (absent: every
 * family at `error`) and prints, per family and per resource type, how many stored resources would be refused: ids,
 * issue codes and locations only, never a value (stdout). The first `--max-issues` issues that would refuse go to an
 * NDJSON file (type, id, version, family, code, FHIRPath location and the diagnostics; written 0600).
 *
 * Reads only: SQLite is opened read-only and not migrated, without the data directory's lock, so it runs beside the
 * service; `--store postgres` reads the database as a replica does. Exit 0 when nothing would be refused, 1 when
 * something would, 2 for a bad configuration or a store that cannot be opened.
 */
import { createWriteStream, existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { addConfigOptions, loadSettings, type Config } from '../config/config.js';
import type { ResourceStore, VersionKey } from '../fhir/store/resource-store.js';
import type { OperationOutcomeIssue } from '../fhir/outcome.js';
import {
  familyOfIssue,
  FamilyLevelsError,
  parseFamilyLevels,
  RULE_FAMILIES,
  STRICT_FAMILY_LEVELS,
  type FamilyLevels,
  type IssueFamily,
} from '../fhir/validation/rule-families.js';

/** The settings `validate` reads: where the data is, and what the write path's validator is built from. */
export const VALIDATE_SETTINGS = [
  'dataDir',
  'store',
  'databaseUrl',
  'cacheDir',
  'igPaths',
  'requiredProfiles',
] as const;
export type ValidateSettings = Pick<Config, (typeof VALIDATE_SETTINGS)[number]>;

export interface ValidateCommandOptions extends ValidateSettings {
  /** Only the dry run exists (a validation that changes nothing). */
  dryRun: boolean;
  /** `family=warn|error,...` over the defaults; absent: every family at error. */
  familyLevels?: string;
  /** The NDJSON file of the issues that would refuse (default ./validate-dry-run.ndjson). */
  issues?: string;
  /** Most issues written to it (default 1000). */
  maxIssues?: number;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/** What the dry run found: counts only (printed as JSON on stdout). */
export interface DryRunSummary {
  levels: FamilyLevels;
  validated: number;
  wouldRefuse: number;
  /** Resources with at least one refusing issue of the family. */
  byFamily: Partial<Record<IssueFamily, number>>;
  byType: Record<string, { validated: number; wouldRefuse: number }>;
  issuesFile: string;
  issuesWritten: number;
}

const READ_CHUNK = 256;

/** Runs the dry run; returns the exit code. */
export async function runValidate(options: ValidateCommandOptions): Promise<number> {
  const out = options.out ?? process.stdout;
  const err = options.err ?? process.stderr;
  const fail = (message: string) => {
    err.write(`hie-ledger validate: ${message}\n`);
    return 2;
  };
  if (!options.dryRun) return fail('only --dry-run is supported (a validation that changes nothing)');
  let levels: FamilyLevels;
  try {
    levels =
      options.familyLevels === undefined
        ? { ...STRICT_FAMILY_LEVELS }
        : parseFamilyLevels(options.familyLevels);
  } catch (e) {
    if (e instanceof FamilyLevelsError) return fail(`--family-levels: ${e.message}`);
    throw e;
  }
  const maxIssues = options.maxIssues ?? 1000;
  if (!Number.isInteger(maxIssues) || maxIssues < 0) return fail('--max-issues must be a whole number');
  const dataDir = path.resolve(options.dataDir);
  if (options.store !== 'postgres' && !existsSync(path.join(dataDir, 'resources.sqlite')))
    return fail(`no store at ${dataDir} (--data-dir or HIE_DATA_DIR)`);

  // Loaded when used: the validator and the stores are most of the CLI's start-up time.
  const [{ openConfiguredStore, openConfiguredCodeSystems }, { validatorSpec }, { createValidatorFromSpec }] =
    await Promise.all([
      import('../app/open-store.js'),
      import('../app/app.js'),
      import('../fhir/validation/validation-pool.js'),
    ]);
  const selection = { store: options.store, databaseUrl: options.databaseUrl, dataDir, readOnly: true };
  let store: ResourceStore;
  try {
    store = openConfiguredStore(selection);
    await store.init();
  } catch (e) {
    return fail(`cannot open the store: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  const codeSystems = await openConfiguredCodeSystems(selection).catch(() => undefined);
  try {
    const validator = await createValidatorFromSpec(
      validatorSpec({
        validation: 'full',
        cacheDir: options.cacheDir,
        dataDir,
        igPaths: options.igPaths,
        requiredProfiles: options.requiredProfiles,
        validationLevels: levels,
      }),
      codeSystems,
    );
    const issuesFile = path.resolve(options.issues ?? 'validate-dry-run.ndjson');
    const summary = await dryRun(store, levels, maxIssues, issuesFile, (resource) =>
      validator.validate(resource, { mode: 'update' }),
    );
    out.write(JSON.stringify(summary, null, 2) + '\n');
    return summary.wouldRefuse > 0 ? 1 : 0;
  } finally {
    await codeSystems?.close();
    await store.close();
  }
}

/** Phase 1: the current (not deleted) version of every resource. Phase 2: each validated at `levels`. */
async function dryRun(
  store: ResourceStore,
  levels: FamilyLevels,
  maxIssues: number,
  issuesFile: string,
  validate: (resource: unknown) => { valid: boolean; issues: OperationOutcomeIssue[] },
): Promise<DryRunSummary> {
  const current = new Map<string, { key: VersionKey; deleted: boolean }>();
  for await (const { version } of store.allVersions()) {
    const name = `${version.resourceType}/${version.id}`;
    const seen = current.get(name);
    if (!seen || seen.key.versionId < version.versionId)
      current.set(name, {
        key: { resourceType: version.resourceType, id: version.id, versionId: version.versionId },
        deleted: version.deleted,
      });
  }
  const keys = [...current.values()].filter((c) => !c.deleted).map((c) => c.key);

  const summary: DryRunSummary = {
    levels,
    validated: 0,
    wouldRefuse: 0,
    byFamily: {},
    byType: {},
    issuesFile,
    issuesWritten: 0,
  };
  const file = createWriteStream(issuesFile, { mode: 0o600 });
  const write = async (line: string) => {
    if (!file.write(line)) await new Promise<void>((r) => file.once('drain', () => r()));
  };
  try {
    for (let start = 0; start < keys.length; start += READ_CHUNK) {
      const chunk = keys.slice(start, start + READ_CHUNK);
      const versions = await store.vreadMany(chunk);
      for (const version of versions) {
        if (!version?.json) continue;
        const result = validate(JSON.parse(version.json));
        const tally = (summary.byType[version.resourceType] ??= { validated: 0, wouldRefuse: 0 });
        summary.validated++;
        tally.validated++;
        if (result.valid) continue;
        summary.wouldRefuse++;
        tally.wouldRefuse++;
        const refusing = result.issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
        const families = new Set(refusing.map((i) => familyOfIssue(i) ?? 'resource'));
        for (const family of families) summary.byFamily[family] = (summary.byFamily[family] ?? 0) + 1;
        for (const issue of refusing) {
          if (summary.issuesWritten >= maxIssues) break;
          summary.issuesWritten++;
          await write(
            JSON.stringify({
              resourceType: version.resourceType,
              id: version.id,
              versionId: version.versionId,
              family: familyOfIssue(issue) ?? 'resource',
              severity: issue.severity,
              code: issue.code,
              expression: issue.expression?.[0],
              diagnostics: issue.diagnostics,
            }) + '\n',
          );
        }
      }
    }
  } finally {
    await new Promise<void>((resolve, reject) => file.end((e?: Error | null) => (e ? reject(e) : resolve())));
  }
  // Families in their order, each present (0 when nothing of it would refuse).
  const byFamily: Partial<Record<IssueFamily, number>> = {};
  for (const family of [...RULE_FAMILIES, 'resource' as const])
    if (family !== 'resource' || summary.byFamily.resource) byFamily[family] = summary.byFamily[family] ?? 0;
  summary.byFamily = byFamily;
  return summary;
}

/** Registers `validate` on the CLI program (src/cli.ts). */
export function registerValidateCommand(program: Command): void {
  const command = program
    .command('validate')
    .description(
      'dry run: which stored resources a stricter rule-family setting would refuse (per family and type; reads only)',
    );
  addConfigOptions(command, VALIDATE_SETTINGS)
    .option('--dry-run', 'validate every stored current version; change nothing (required)')
    .option(
      '--family-levels <levels>',
      'family=warn|error,... (all= for every family) over the defaults; absent: every family at error',
    )
    .option('--issues <file>', 'NDJSON of the issues that would refuse (default ./validate-dry-run.ndjson)')
    .option('--max-issues <n>', 'most issues written to the NDJSON file (default 1000)')
    .action(
      async (
        opts: { dryRun?: boolean; familyLevels?: string; issues?: string; maxIssues?: string } & Record<
          string,
          unknown
        >,
      ) => {
        process.exitCode = await runValidate({
          ...loadSettings(VALIDATE_SETTINGS, opts),
          dryRun: opts.dryRun === true,
          familyLevels: opts.familyLevels,
          issues: opts.issues,
          maxIssues: opts.maxIssues === undefined ? undefined : Number(opts.maxIssues),
        });
      },
    );
}
