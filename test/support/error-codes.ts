/**
 * Tests assert a refusal's catalogue code (docs/errors.md), not its prose: `expectErrorCode(res, 'version-conflict')`
 * checks that the answer is an OperationOutcome whose every error issue carries that code in details.coding, and,
 * given an inject answer, that its status is the code's status.
 */
import { expect } from 'vitest';
import { ERROR_CATALOGUE, ERROR_CODE_SYSTEM, type ErrorCode } from '../../src/fhir/error-catalogue.js';
import type { OperationOutcome } from '../../src/fhir/outcome.js';

interface Answer {
  statusCode: number;
  body: string;
}

function isAnswer(value: unknown): value is Answer {
  return typeof value === 'object' && value !== null && 'statusCode' in value && 'body' in value;
}

/** The catalogue codes an OperationOutcome's issues carry, in issue order (undefined for an uncoded issue). */
export function errorCodes(outcome: OperationOutcome): (string | undefined)[] {
  return outcome.issue.map((i) => i.details?.coding?.find((c) => c.system === ERROR_CODE_SYSTEM)?.code);
}

/**
 * Asserts the refusal's code: `target` is an inject answer, its body text, or a parsed OperationOutcome. Returns the
 * OperationOutcome for further checks.
 */
export function expectErrorCode(target: Answer | string | object, code: ErrorCode): OperationOutcome {
  let context = '';
  let outcome: OperationOutcome;
  if (isAnswer(target)) {
    context = `${target.statusCode} ${target.body}`;
    expect(target.statusCode, context).toBe(ERROR_CATALOGUE[code].status);
    outcome = JSON.parse(target.body) as OperationOutcome;
  } else if (typeof target === 'string') {
    context = target;
    outcome = JSON.parse(target) as OperationOutcome;
  } else {
    outcome = target as OperationOutcome;
    context = JSON.stringify(outcome);
  }
  expect(outcome.resourceType, context).toBe('OperationOutcome');
  const errors = outcome.issue.filter((i) => i.severity === 'error' || i.severity === 'fatal');
  expect(errors.length, context).toBeGreaterThan(0);
  expect(errorCodes({ ...outcome, issue: errors }), context).toEqual(errors.map(() => code));
  return outcome;
}
