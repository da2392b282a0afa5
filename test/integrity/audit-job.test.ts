/** The scheduled audit: validates its schedule, can be disabled, and records each run as a JSON report. */
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isAuditDisabled, scheduleAudit } from '../../src/integrity/scheduled-audit.js';
import type { AuditReport } from '../../src/integrity/verification.js';
import { observation, openFixture, type Fixture } from './helpers.js';

let fixture: Fixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

const logger = () => {
  const lines: { level: string; obj: object | string; msg?: string }[] = [];
  return {
    lines,
    info: (obj: object | string, msg?: string) => lines.push({ level: 'info', obj, msg }),
    error: (obj: object | string, msg?: string) => lines.push({ level: 'error', obj, msg }),
  };
};

describe('scheduled integrity audit', () => {
  it('is off for off/empty, and refuses an invalid cron expression', () => {
    expect(isAuditDisabled('off')).toBe(true);
    expect(isAuditDisabled('')).toBe(true);
    expect(
      scheduleAudit({
        cron: 'off',
        dataDir: '/nonexistent',
        audit: async () => ({}) as AuditReport,
        log: logger(),
      }),
    ).toBeUndefined();
    expect(() =>
      scheduleAudit({
        cron: '61 * * * *',
        dataDir: '/nonexistent',
        audit: async () => ({}) as AuditReport,
        log: logger(),
      }),
    ).toThrow(/audit-cron/);
  });

  it('runs the audit, logs it and writes its report to dataDir/audits', async () => {
    fixture = await openFixture({ batchSize: 10 });
    const f = fixture;
    for (let i = 0; i < 3; i++) await f.write(observation(`a${i}`, '1.0'));
    await f.integrity.anchorer.drain();
    const log = logger();
    const job = scheduleAudit({ cron: '0 3 * * *', dataDir: f.dir, audit: () => f.integrity.audit(), log })!;
    try {
      const run = await job.runNow();
      expect(run.report?.ok).toBe(true);
      expect(run.report?.anchored).toBe(3);
      const files = await readdir(path.join(f.dir, 'audits'));
      expect(files).toHaveLength(1);
      const saved = JSON.parse(await readFile(path.join(f.dir, 'audits', files[0]), 'utf8')) as AuditReport;
      expect(saved).toMatchObject({ ok: true, versions: 3, anchored: 3, altered: [], missing: [] });
      expect(log.lines).toEqual([expect.objectContaining({ level: 'info', msg: 'integrity audit passed' })]);

      // A failing audit is logged as an error naming what is wrong.
      f.ledger.down = true;
      const failed = await job.runNow();
      expect(failed.error).toMatch(/unavailable/);
      expect(log.lines[1]).toMatchObject({ level: 'error', msg: 'integrity audit could not run' });
    } finally {
      f.ledger.down = false;
      await job.stop();
    }
  });

  it('logs a failed audit with counts, not the ids of the versions (the report names them)', async () => {
    fixture = await openFixture({ batchSize: 10 });
    const f = fixture;
    await f.write(observation('MRN4471093', '2.50'));
    await f.integrity.anchorer.drain();
    f.store.db
      .prepare(
        `UPDATE resource_version SET json = replace(hie_decode_json(json), '2.50', '2.51') WHERE resource_type = 'Observation' AND id = 'MRN4471093'`,
      )
      .run();
    const log = logger();
    const job = scheduleAudit({ cron: '0 3 * * *', dataDir: f.dir, audit: () => f.integrity.audit(), log })!;
    try {
      const run = await job.runNow();
      expect(run.report?.ok).toBe(false);
      expect(run.report?.altered).toEqual(['Observation/MRN4471093/_history/1']);
      expect(log.lines).toEqual([
        expect.objectContaining({
          level: 'error',
          obj: expect.objectContaining({ altered: 1, missing: 0 }),
        }),
      ]);
      expect(JSON.stringify(log.lines)).not.toContain('MRN4471093');
    } finally {
      await job.stop();
    }
  });
});
