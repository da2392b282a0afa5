import { describe, expect, it } from 'vitest';
import { httpDate } from '../../src/fhir/interactions/common.js';

describe('httpDate', () => {
  it('formats stored instants exactly as Date#toUTCString does', () => {
    // Every day of several years (leap days, year ends) at varied times, as the store writes them.
    const start = Date.UTC(1999, 11, 25);
    for (let i = 0; i < 3 * 366 + 10; i++) {
      const instant = new Date(start + i * 86_400_123 + (i % 997) * 61_001).toISOString();
      expect(httpDate(instant)).toBe(new Date(instant).toUTCString());
    }
  });

  it('accepts other instant forms (offsets, no fraction) through Date', () => {
    expect(httpDate('2026-11-25T20:29:09+02:00')).toBe('Wed, 25 Nov 2026 18:29:09 GMT');
    expect(httpDate('2026-11-25T18:29:09Z')).toBe('Wed, 25 Nov 2026 18:29:09 GMT');
  });
});
