/**
 * SNOMED CT codes without SNOMED CT content (R4 snomedct.html: "Concept IDs and SNOMED CT Expressions ... are valid
 * in the code element ... Description Identifiers are not"; the SNOMED CT Technical Implementation Guide's SCTID
 * rules: 6-18 digits, a Verhoeff check digit, a partition identifier).
 */
import { describe, expect, it } from 'vitest';
import { conceptIdProblem, verhoeffValid } from '../../src/fhir/validation/sctid.js';
import { createFhirValidatorSync } from '../../src/fhir/validation/index.js';
import { errors } from './helpers.js';

const condition = (code: string) => ({
  resourceType: 'Condition',
  subject: { reference: 'Patient/1' },
  code: { coding: [{ system: 'http://snomed.info/sct', code }] },
});

describe('SCTID syntax (SNOMED CT TIG: check digit, partition identifier)', () => {
  it('computes the Verhoeff check digit (the scheme’s published examples)', () => {
    expect(verhoeffValid('2363')).toBe(true);
    expect(verhoeffValid('1428570')).toBe(true);
    expect(verhoeffValid('2364')).toBe(false);
    // Any one digit changed, or two neighbours swapped, is caught.
    expect(verhoeffValid('1248570')).toBe(false);
  });

  it('accepts concept ids of the International Edition and of extensions', () => {
    // 404684003 |Clinical finding|, 138875005 |SNOMED CT Concept|, 22298006 |Myocardial infarction|
    for (const code of ['404684003', '138875005', '22298006']) expect(conceptIdProblem(code)).toBeUndefined();
    // long format (partition 10): the US extension's 428191000124101 |Documentation of current medications|
    expect(conceptIdProblem('428191000124101')).toBeUndefined();
  });

  it('refuses a wrong check digit, a description id, a leading zero and a wrong length', () => {
    expect(conceptIdProblem('404684004')).toMatch(/check digit/);
    // Partition 01 names a description (given a valid check digit here).
    const descriptionId = withCheckDigit('68433601');
    expect(conceptIdProblem(descriptionId)).toMatch(/a description, not a concept/);
    expect(conceptIdProblem('0404684003')).toMatch(/no leading zero/);
    expect(conceptIdProblem('12345')).toMatch(/6 to 18 digits/);
  });

  it('leaves codes with other characters alone (they may be expressions)', () => {
    expect(conceptIdProblem('71341001:272741003=7771000')).toBeUndefined();
  });
});

describe('SNOMED CT codes in a Coding (snomedct.html)', () => {
  it('reports an impossible concept id at .code as an unknown code', () => {
    expect(errors(condition('404684004'))).toEqual([
      expect.objectContaining({
        expression: 'Condition.code.coding[0].code',
        code: 'code-invalid',
        diagnostics: expect.stringContaining('Verhoeff'),
      }),
    ]);
    expect(errors(condition('404684003'))).toEqual([]);
  });

  it('follows unknownCodeSeverity (warning for imperfect bulk data)', () => {
    const lenient = createFhirValidatorSync({ unknownCodeSeverity: 'warning' });
    expect(errors(condition('404684004'), undefined, lenient)).toEqual([]);
  });
});

/** The digits followed by their Verhoeff check digit. */
function withCheckDigit(digits: string): string {
  for (let d = 0; d <= 9; d++) if (verhoeffValid(`${digits}${d}`)) return `${digits}${d}`;
  throw new Error('no check digit');
}
