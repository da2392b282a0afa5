/**
 * The scheduled integrity audit: the same checks as `hie-ledger verify` (src/integrity/verification.ts), on a cron
 * schedule (node-cron; default daily at 03:00, `--audit-cron`, `off` disables it). Each run is logged and its
 * report written to `dataDir/audits/audit-<timestamp>.json`; a failed audit is logged as an error counting the
 * altered and missing versions, which the report names (ids stay out of the logs).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import type { AuditReport } from './verification.js';

interface Logger {
  info(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
}

export interface AuditJobOptions {
  /** Cron expression (node-cron, 5 or 6 fields), or 'off' / '' to disable. */
  cron: string;
  dataDir: string;
  /** Runs the audit (IntegrityService.audit). */
  audit: () => Promise<AuditReport>;
  log: Logger;
  timezone?: string;
}

export interface AuditJob {
  /** Runs an audit now (also what the schedule calls); never throws: failures are logged and recorded. */
  runNow(): Promise<{ report?: AuditReport; file?: string; error?: string }>;
  stop(): Promise<void>;
}

export function isAuditDisabled(expression: string): boolean {
  return expression.trim() === '' || /^(off|false|none|disabled)$/i.test(expression.trim());
}

/** Where the report of an audit is kept. */
export function auditReportPath(dataDir: string, report: Pick<AuditReport, 'startedAt'>): string {
  return path.join(dataDir, 'audits', `audit-${report.startedAt.replace(/[:.]/g, '-')}.json`);
}

export async function writeAuditReport(dataDir: string, report: AuditReport): Promise<string> {
  const file = auditReportPath(dataDir, report);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, JSON.stringify(report, null, 2) + '\n', { mode: 0o600 });
  return file;
}

/** Schedules the audit; returns undefined when disabled. Throws for an invalid cron expression (at start-up). */
export function scheduleAudit(options: AuditJobOptions): AuditJob | undefined {
  if (isAuditDisabled(options.cron)) return undefined;
  if (!cron.validate(options.cron)) throw new Error(`Invalid --audit-cron expression '${options.cron}'`);
  let running: Promise<{ report?: AuditReport; file?: string; error?: string }> | undefined;

  const runNow = () => {
    // One audit at a time: a second trigger joins the running one.
    running ??= (async () => {
      try {
        const report = await options.audit();
        const file = await writeAuditReport(options.dataDir, report);
        const summary = {
          file,
          versions: report.versions,
          anchored: report.anchored,
          pending: report.pending,
          erased: report.erased,
          // Counts: the references name resources by id (ids can be record numbers); the report file (0600) lists them.
          altered: report.altered.length,
          missing: report.missing.length,
          rows: report.rows.length,
          problems: report.problems.length,
        };
        if (report.ok) options.log.info(summary, 'integrity audit passed');
        else options.log.error(summary, 'integrity audit FAILED: stored versions do not match the ledger');
        return { report, file };
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        options.log.error({ err: error }, 'integrity audit could not run');
        return { error };
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  const task: ScheduledTask = cron.schedule(
    options.cron,
    async () => {
      await runNow();
    },
    { name: 'integrity-audit', noOverlap: true, timezone: options.timezone },
  );
  return {
    runNow,
    async stop() {
      await task.destroy();
      await running;
    },
  };
}
