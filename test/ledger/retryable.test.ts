/**
 * Which invalidations are worth endorsing again: one definition in the Ledger port (src/ledger/ledger.ts), used by
 * the embedded and the Fabric adapter alike (their behaviour: embedded-chain.test.ts, test/fabric/faults.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { isRetryableValidationCode } from '../../src/ledger/ledger.js';

describe('isRetryableValidationCode', () => {
  it('read conflicts are retryable: the same transaction, endorsed again, may succeed', () => {
    expect(isRetryableValidationCode('MVCC_READ_CONFLICT')).toBe(true);
    expect(isRetryableValidationCode('PHANTOM_READ_CONFLICT')).toBe(true);
  });

  it('refusals and duplicates are not', () => {
    for (const code of [
      'VALID',
      'DUPLICATE_TXID',
      'ENDORSEMENT_POLICY_FAILURE',
      'BAD_PAYLOAD',
      'CHAINCODE_ERROR',
    ])
      expect(isRetryableValidationCode(code)).toBe(false);
  });
});
