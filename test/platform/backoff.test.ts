/** The retriers' one backoff: doubling from the first delay up to the ceiling, back to the first after a success. */
import { describe, expect, it } from 'vitest';
import { DoublingBackoff } from '../../src/platform/backoff.js';

describe('DoublingBackoff', () => {
  it('gives the first delay, then doubles each time up to the ceiling', () => {
    const backoff = new DoublingBackoff(250, 5_000);
    expect(Array.from({ length: 7 }, () => backoff.next())).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000]);
  });

  it('lengthen() doubles without taking a delay; currentMs reads it', () => {
    const backoff = new DoublingBackoff(200, 30_000);
    expect(backoff.currentMs).toBe(200);
    backoff.lengthen();
    backoff.lengthen();
    expect(backoff.currentMs).toBe(800);
    expect(backoff.next()).toBe(800);
    expect(backoff.currentMs).toBe(1600);
  });

  it('starts over at the first delay after reset()', () => {
    const backoff = new DoublingBackoff(1000, 30_000);
    backoff.next();
    backoff.next();
    backoff.reset();
    expect(backoff.next()).toBe(1000);
  });
});
