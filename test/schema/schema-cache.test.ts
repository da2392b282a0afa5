/** The compiled schema cache keeps one validator: a new schema or ajv version's file replaces the old ones. */
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'hie-schema-cache-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('schema validator cache', () => {
  it('writes its compiled validator and prunes those of other versions', async () => {
    writeFileSync(join(dir, 'fhir-schema-0000000000000000.cjs'), 'module.exports = null;');
    const staleTemporary = join(dir, 'fhir-schema-1111111111111111.cjs.99.tmp');
    writeFileSync(staleTemporary, 'half');
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    utimesSync(staleTemporary, twoHoursAgo, twoHoursAgo);
    writeFileSync(join(dir, 'fhir-schema-2222222222222222.cjs.98.tmp'), 'another start, still writing');
    writeFileSync(join(dir, 'unrelated.txt'), 'not ours');

    vi.resetModules();
    const { createSchemaValidator } = await import('../../src/fhir/validation/schema.js');
    const validator = await createSchemaValidator({ cacheDir: dir });
    expect(validator.validate({ resourceType: 'Patient', active: true }).valid).toBe(true);

    const files = readdirSync(dir).sort();
    const compiled = files.filter((f) => f.endsWith('.cjs'));
    expect(compiled).toHaveLength(1);
    expect(compiled[0]).not.toBe('fhir-schema-0000000000000000.cjs');
    expect(files).toContain('fhir-schema-2222222222222222.cjs.98.tmp');
    expect(files).toContain('unrelated.txt');
    expect(files).not.toContain('fhir-schema-1111111111111111.cjs.99.tmp');

    // The next start loads that file instead of compiling again.
    vi.resetModules();
    const again = await import('../../src/fhir/validation/schema.js');
    expect(
      (await again.createSchemaValidator({ cacheDir: dir })).validate({ resourceType: 'Patient', active: 1 })
        .valid,
    ).toBe(false);
    expect(readdirSync(dir).filter((f) => f.endsWith('.cjs'))).toEqual(compiled);
  }, 120_000);
});
