/**
 * The error catalogue and its documentation agree (as fastify's test/internals/errors.test.js checks its
 * docs/Reference/Errors.md): docs/errors.md lists exactly the catalogue's codes, with the same status and issue
 * code; codes are unique kebab-case; and a FhirError carries its code in every issue.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ERROR_CATALOGUE,
  ERROR_CODE_SYSTEM,
  GENERIC_ERROR_CODE,
  isErrorCode,
  OUTCOME_CATALOGUE,
  OUTCOME_CODE_SYSTEM,
} from '../../src/fhir/error-catalogue.js';
import {
  badRequest,
  errorCodeOf,
  FhirError,
  fhirError,
  hasOutcomeCode,
  notFound,
  operationOutcome,
  outcomeIssue,
} from '../../src/fhir/outcome.js';
import { expectErrorCode } from '../support/error-codes.js';

const ROOT = join(import.meta.dirname, '..', '..');
const docs = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8');

/** The rows of the table in docs/errors.md: `| \`code\` | status | \`issue\` | meaning |`. */
function documentedCodes(): { code: string; status: number; issue: string }[] {
  const rows: { code: string; status: number; issue: string }[] = [];
  for (const line of docs.split('\n')) {
    const m = /^\|\s*`([^`]+)`\s*\|\s*(\d{3})\s*\|\s*`([^`]+)`\s*\|\s*\S/.exec(line);
    if (m) rows.push({ code: m[1], status: Number(m[2]), issue: m[3] });
  }
  return rows;
}

/** The rows of the outcome table in docs/errors.md: `| \`code\` | \`issue\` | meaning |` (no status column). */
function documentedOutcomeCodes(): { code: string; issue: string }[] {
  const rows: { code: string; issue: string }[] = [];
  for (const line of docs.split('\n')) {
    const m = /^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|\s*\S/.exec(line);
    if (m) rows.push({ code: m[1], issue: m[2] });
  }
  return rows;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

describe('the error catalogue', () => {
  const catalogue = Object.entries(ERROR_CATALOGUE);

  it('docs/errors.md names the code system and lists every code with its status and issue code', () => {
    expect(docs).toContain(ERROR_CODE_SYSTEM);
    const documented = documentedCodes();
    for (const [code, entry] of catalogue) {
      const row = documented.find((r) => r.code === code);
      expect(row, `${code} is not in docs/errors.md`).toBeDefined();
      expect({ status: row!.status, issue: row!.issue }, code).toEqual({
        status: entry.status,
        issue: entry.issue,
      });
    }
  });

  it('docs/errors.md lists no code the catalogue does not have, and none twice', () => {
    const documented = documentedCodes().map((r) => r.code);
    expect(documented.filter((code) => !isErrorCode(code))).toEqual([]);
    expect(new Set(documented).size).toBe(documented.length);
    expect(documented.length).toBe(catalogue.length);
  });

  it('codes are kebab-case, statuses are errors, and each entry has a meaning', () => {
    for (const [code, entry] of catalogue) {
      expect(code).toMatch(/^[a-z]+(-[a-z]+)*$/);
      expect(entry.status).toBeGreaterThanOrEqual(400);
      expect(entry.status).toBeLessThan(600);
      expect(entry.meaning.length).toBeGreaterThan(10);
    }
  });

  it('the generic code of a status has that status', () => {
    for (const [status, code] of Object.entries(GENERIC_ERROR_CODE)) {
      expect(ERROR_CATALOGUE[code].status, code).toBe(Number(status));
    }
  });

  it('src/ throws only coded refusals: no per-status constructor, no FhirError built from a bare status', () => {
    const legacy = new Set(
      'badRequest unauthorized forbidden notFound methodNotAllowed notAcceptable conflict gone preconditionFailed payloadTooLarge unsupportedMediaType unprocessable tooManyRequests notImplemented serviceUnavailable'.split(
        ' ',
      ),
    );
    const offenders: string[] = [];
    for (const file of sourceFiles(join(ROOT, 'src'))) {
      if (file.endsWith(join('fhir', 'outcome.ts'))) continue;
      const text = readFileSync(file, 'utf8');
      // Only the names imported from outcome.js (a file may have a function of its own by such a name).
      const imported = /import \{([^}]*)\} from '[./]+(?:fhir\/)?outcome\.js'/.exec(text)?.[1] ?? '';
      const used = imported
        .split(',')
        .map((name) => name.trim())
        .filter((name) => legacy.has(name));
      if (used.length > 0) offenders.push(`${file} imports ${used.join(', ')}`);
      if (/new FhirError\(\d/.test(text)) offenders.push(`${file} builds a FhirError from a bare status`);
    }
    expect(offenders).toEqual([]);
  });
});

describe('the outcome codes of successful answers', () => {
  it('docs/errors.md names their code system and lists exactly the outcome catalogue, with its issue codes', () => {
    expect(docs).toContain(OUTCOME_CODE_SYSTEM);
    expect(OUTCOME_CODE_SYSTEM).not.toBe(ERROR_CODE_SYSTEM);
    const expected = Object.entries(OUTCOME_CATALOGUE).map(([code, entry]) => ({ code, issue: entry.issue }));
    expect(documentedOutcomeCodes()).toEqual(expected);
  });

  it('outcome codes are kebab-case, informational, with a meaning, and no error code has the same name', () => {
    for (const [code, entry] of Object.entries(OUTCOME_CATALOGUE)) {
      expect(code).toMatch(/^[a-z]+(-[a-z]+)*$/);
      expect(entry.issue).toBe('informational');
      expect(entry.meaning.length).toBeGreaterThan(10);
      expect(isErrorCode(code), code).toBe(false);
    }
  });

  it('an outcome issue carries its code, read back by hasOutcomeCode and never taken for an error code', () => {
    const outcome = operationOutcome([outcomeIssue('write-unchanged', 'Patient/p version 1 unchanged')]);
    expect(outcome.issue[0]).toMatchObject({ severity: 'information', code: 'informational' });
    expect(hasOutcomeCode(outcome, 'write-unchanged')).toBe(true);
    expect(errorCodeOf(outcome)).toBeUndefined();
    // The same prose without the code is not the code.
    const uncoded = operationOutcome([
      { severity: 'information', code: 'informational', diagnostics: 'Patient/p version 1 unchanged' },
    ]);
    expect(hasOutcomeCode(uncoded, 'write-unchanged')).toBe(false);
  });
});

describe('FhirError carries its code', () => {
  it('fhirError takes status and issue code from the catalogue and puts the code in details.coding', () => {
    const err = fhirError('version-conflict', 'If-Match W/"1" does not match', { expression: 'Patient.id' });
    expect(err.status).toBe(412);
    expect(err.code).toBe('version-conflict');
    expect(err.outcome.issue).toEqual([
      {
        severity: 'error',
        code: 'conflict',
        diagnostics: 'If-Match W/"1" does not match',
        expression: ['Patient.id'],
        details: { coding: [{ system: ERROR_CODE_SYSTEM, code: 'version-conflict' }] },
      },
    ]);
    expectErrorCode(err.outcome, 'version-conflict');
  });

  it('a refusal of many issues codes each issue without a code of ours, keeping details.text and other codings', () => {
    const shared = {
      severity: 'error' as const,
      code: 'required' as const,
      diagnostics: 'Patient.name: minimum 1',
      details: { text: 'cardinality', coding: [{ system: 'http://example.org/x', code: 'x' }] },
    };
    const alreadyCoded = {
      severity: 'error' as const,
      code: 'invalid' as const,
      details: { coding: [{ system: ERROR_CODE_SYSTEM, code: 'id-invalid' }] },
    };
    const err = new FhirError('resource-invalid', [shared, alreadyCoded]);
    expect(err.status).toBe(400);
    expect(err.outcome.issue[0].details).toEqual({
      text: 'cardinality',
      coding: [
        { system: 'http://example.org/x', code: 'x' },
        { system: ERROR_CODE_SYSTEM, code: 'resource-invalid' },
      ],
    });
    expect(err.outcome.issue[1]).toBe(alreadyCoded);
    // The validator's issue objects are not changed (they may be shared).
    expect(shared.details.coding).toHaveLength(1);
    expect(errorCodeOf(err.outcome)).toBe('resource-invalid');
  });

  it('the older per-status constructors still work, with the generic code of their status', () => {
    expect(badRequest('x').code).toBe('request-invalid');
    expect(badRequest('x').status).toBe(400);
    expect(notFound('x').code).toBe('resource-not-found');
    expect(new FhirError(409, [{ severity: 'error', code: 'conflict', diagnostics: 'x' }]).code).toBe(
      'concurrent-update',
    );
  });

  it('an error given by status keeps the code its issues carry when that code has the status', () => {
    const entry = fhirError('resource-not-found', 'Patient/x is not known');
    expect(new FhirError(404, entry.outcome).code).toBe('resource-not-found');
    expect(new FhirError(400, entry.outcome).code).toBe('request-invalid');
  });
});
