import { describe, expect, it } from 'vitest';
import { newResourceId } from '../../src/fhir/interactions/ids.js';

describe('server-assigned ids', () => {
  it('are UUIDv7, valid FHIR ids, strictly increasing in creation order', () => {
    const ids = Array.from({ length: 10_000 }, () => newResourceId());
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(id).toMatch(/^[A-Za-z0-9\-.]{1,64}$/);
    }
    for (let i = 1; i < ids.length; i++) expect(ids[i] > ids[i - 1]).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    // The first 48 bits are the creation time in milliseconds.
    const ms = parseInt(ids[0].replace(/-/g, '').slice(0, 12), 16);
    expect(Math.abs(ms - Date.now())).toBeLessThan(60_000);
  });
});
