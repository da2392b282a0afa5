/** The one query-string parser (src/fhir/query.ts): maps, names for the logs, the transaction's rewrite. */
import { describe, expect, it } from 'vitest';
import { parseQuery, queryNames, rewriteQueryValues } from '../../src/fhir/query.js';

describe('query parser', () => {
  it('maps without a prototype, repeated names in order, malformed escapes as text', () => {
    const query = parseQuery('constructor=1&a=x&a=y&b=%E0');
    expect(Object.getPrototypeOf(query)).toBeNull();
    expect(query.constructor).toEqual(['1']);
    expect(query.a).toEqual(['x', 'y']);
    expect(query.b).toEqual(['\uFFFD']);
  });

  it('names: distinct as labelled, first use first, at most the limit', () => {
    expect(queryNames('b=1&a=2&b=3&c=4', 10)).toEqual(['b', 'a', 'c']);
    expect(queryNames('b=1&a=2&c=4', 2)).toEqual(['b', 'a']);
    expect(queryNames('abc=1&abd=2&x=3', 10, (name) => name.slice(0, 2))).toEqual(['ab', 'x']);
  });

  it('rewrite: values replaced with names and order kept; undefined when nothing changed', () => {
    const map = new Map([['urn:uuid:1', 'Patient/p1']]);
    const rewrite = (value: string) => map.get(value) ?? value;
    expect(rewriteQueryValues('subject=urn%3Auuid%3A1&code=x&subject=y', rewrite)).toBe(
      'subject=Patient%2Fp1&code=x&subject=y',
    );
    expect(rewriteQueryValues('code=x', rewrite)).toBeUndefined();
  });
});
