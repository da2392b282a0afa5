/**
 * `hie-ledger verify --data-dir DIR`: re-checks every stored version of a data directory against the ledger
 * (src/integrity/verification.ts), with a progress bar on a terminal, and prints a summary naming every altered and
 * every missing version as `Type/id/_history/vid`. Exit code 0 when everything matches, 1 otherwise, 2 when the
 * audit could not run. The report is also written to DIR/audits/ (like the scheduled audit).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import type { AuditProgress, AuditReport } from '../integrity/verification.js';
import { writeAuditReport } from '../integrity/scheduled-audit.js';
import { addConfigOptions, loadSettings } from '../config/config.js';
import { DATA_DIR_SETTINGS, openDataDirIntegrity, type DataDirConfig } from './data-dir.js';

export interface VerifyCommandOptions extends DataDirConfig {
  /** Show a progress bar (default: when stderr is a terminal). */
  progress?: boolean;
  /** Write the report to DIR/audits/ (default true). */
  record?: boolean;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/** The human summary of an audit. */
export function formatAuditReport(report: AuditReport): string {
  const lines: string[] = [];
  lines.push(
    `Checked ${report.versions} stored versions and ${report.batches} anchored batches: ` +
      `${report.anchored} anchored, ${report.pending} pending, ${report.erased} erased.`,
  );
  if (report.leafFormat1 > 0) {
    lines.push(
      `${report.leafFormat1} versions are anchored in leaf format 1 (before custodians were anchored): ` +
        'their custodian is not covered.',
    );
  }
  for (const reference of report.altered) {
    const why = report.problems.find((p) => p.reference === reference && p.kind === 'altered')?.reason;
    lines.push(`ALTERED  ${reference}${why ? `  (${why})` : ''}`);
  }
  for (const reference of report.missing) {
    const root = report.problems.find((p) => p.reference === reference && p.kind === 'missing')?.root;
    lines.push(`MISSING  ${reference}${root ? `  (anchored in batch ${root}; no longer in the store)` : ''}`);
  }
  for (const reference of report.unanchored)
    lines.push(`UNANCHORED  ${reference}  (never queued for anchoring)`);
  for (const row of report.rows) {
    const why = report.problems.find((p) => p.kind === 'row' && p.row === row)?.reason;
    lines.push(`ROW  ${row}${why ? `  (${why})` : ''}`);
  }
  for (const p of report.problems) {
    if (p.kind === 'batch' || p.kind === 'unverifiable') {
      lines.push(
        `${p.kind === 'batch' ? 'BATCH' : 'UNVERIFIABLE'}  ${p.reference ?? p.root ?? ''}  (${p.reason})`,
      );
    }
  }
  lines.push(
    report.ok
      ? 'OK: every stored version matches the ledger.'
      : `FAILED: ${report.altered.length} altered, ${report.missing.length} missing, ${report.unanchored.length} unanchored, ` +
          `${report.rows.length} altered rows, ` +
          `${report.problems.filter((p) => p.kind === 'batch' || p.kind === 'unverifiable').length} other problems.`,
  );
  return lines.join('\n') + '\n';
}

function progressReporter(err: NodeJS.WritableStream): { update(p: AuditProgress): void; stop(): void } {
  const bars = new cliProgress.MultiBar(
    {
      stream: err as NodeJS.WriteStream,
      format: '{phase} [{bar}] {value}/{total}',
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  const byPhase = new Map<string, cliProgress.SingleBar>();
  return {
    update(p) {
      let bar = byPhase.get(p.phase);
      const phase =
        p.phase === 'versions'
          ? 'Stored versions'
          : p.phase === 'batches'
            ? 'Ledger batches '
            : 'Current rows   ';
      if (!bar) {
        bar = bars.create(p.total, 0, { phase });
        byPhase.set(p.phase, bar);
      }
      bar.setTotal(p.total);
      bar.update(p.done, { phase });
    },
    stop() {
      bars.stop();
    },
  };
}

/** Runs the audit of a data directory; returns the exit code. */
export async function runVerify(options: VerifyCommandOptions): Promise<number> {
  const out = options.out ?? process.stdout;
  const err = options.err ?? process.stderr;
  const dataDir = path.resolve(options.dataDir);
  if (!existsSync(dataDir)) {
    err.write(`hie-ledger verify: no data directory at ${dataDir}\n`);
    return 2;
  }
  let opened;
  try {
    opened = await openDataDirIntegrity({
      dataDir,
      mspId: options.mspId,
      ledger: options.ledger,
      fabricConfig: options.fabricConfig,
      store: options.store,
      databaseUrl: options.databaseUrl,
      startWorker: false,
    });
  } catch (e) {
    err.write(`hie-ledger verify: cannot open ${dataDir}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  const showProgress = options.progress ?? Boolean((err as NodeJS.WriteStream).isTTY);
  const progress = showProgress ? progressReporter(err) : undefined;
  try {
    const report = await opened.integrity.audit(progress ? (p) => progress.update(p) : undefined);
    progress?.stop();
    if (options.record !== false) await writeAuditReport(dataDir, report);
    out.write(formatAuditReport(report));
    return report.ok ? 0 : 1;
  } catch (e) {
    progress?.stop();
    err.write(`hie-ledger verify: the audit could not run: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  } finally {
    await opened.close();
  }
}

/** Registers `verify` on the CLI program (src/cli.ts). */
export function registerVerifyCommand(program: Command): void {
  const command = program
    .command('verify')
    .description(
      're-check every stored version against the ledger; names every altered or missing version and every ' +
        'altered custodian, compartment or search index row',
    );
  addConfigOptions(command, DATA_DIR_SETTINGS)
    .option('--no-progress', 'no progress bar')
    .action(async (opts: { progress: boolean } & Record<string, unknown>) => {
      process.exitCode = await runVerify({
        ...loadSettings(DATA_DIR_SETTINGS, opts),
        progress: opts.progress === false ? false : undefined,
      });
    });
}
