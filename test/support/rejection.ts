/**
 * The error a promise is rejected with, checked to be of the expected kind (a refusal's class: FhirError,
 * LedgerTransactionError ...), for the tests that then look at its code or text. A promise that resolves fails
 * the test.
 */
import { expect } from 'vitest';

export async function rejectionOf<E>(
  promise: Promise<unknown>,
  kind: abstract new (...args: never[]) => E,
): Promise<E> {
  const resolved = Symbol('resolved');
  const error = await promise.then(
    () => resolved,
    (caught: unknown) => caught,
  );
  expect(error, 'expected a rejection').not.toBe(resolved);
  expect(error).toBeInstanceOf(kind);
  return error as E;
}
