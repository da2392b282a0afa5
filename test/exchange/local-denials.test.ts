/** Local denials (docs/exchange.md): which security labels withhold a record from the network. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_WITHHOLD_LABELS, loadConfig } from '../../src/config/config.js';
import { withheldBy } from '../../src/exchange/local-denials.js';

const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const labelled = (...security: unknown[]) => ({ resourceType: 'Observation', meta: { security } });

describe('withheldBy', () => {
  it('by default withholds restricted, very restricted and the sensitive ActCodes, and nothing else', () => {
    const withheld = withheldBy(loadConfig({}, {}).networkWithholdLabels);
    expect(loadConfig({}, {}).networkWithholdLabels).toEqual(DEFAULT_WITHHOLD_LABELS);
    for (const code of ['R', 'V']) expect(withheld(labelled({ system: CONFIDENTIALITY, code }))).toBe(true);
    for (const code of ['HIV', 'PSY', 'SUD', 'ETH', 'SDV', 'SEX', 'STD'])
      expect(withheld(labelled({ system: ACT_CODE, code }))).toBe(true);
    expect(withheld(labelled({ system: CONFIDENTIALITY, code: 'N' }))).toBe(false);
    // The same code in another system is another label.
    expect(withheld(labelled({ system: 'http://example.org/labels', code: 'R' }))).toBe(false);
    expect(withheld(labelled({ code: 'HIV' }))).toBe(false);
    expect(withheld({ resourceType: 'Observation' })).toBe(false);
    // Malformed meta.security withholds nothing and throws nothing.
    expect(withheld(labelled(null, 'R', { code: 7 }))).toBe(false);
    expect(withheld({ meta: { security: 'R' } })).toBe(false);
  });

  it('a bare code withholds that code in any system; none withholds nothing', () => {
    const config = loadConfig({ networkWithholdLabels: `TABOO,${ACT_CODE}|HIV` }, {});
    const withheld = withheldBy(config.networkWithholdLabels);
    expect(withheld(labelled({ system: 'http://example.org/labels', code: 'TABOO' }))).toBe(true);
    expect(withheld(labelled({ code: 'TABOO' }))).toBe(true);
    expect(withheld(labelled({ system: ACT_CODE, code: 'HIV' }))).toBe(true);
    expect(withheld(labelled({ system: ACT_CODE, code: 'PSY' }))).toBe(false);
    expect(loadConfig({ networkWithholdLabels: 'none' }, {}).networkWithholdLabels).toEqual([]);
    expect(() => loadConfig({ networkWithholdLabels: 'a|b|c' }, {})).toThrow(/not a security label/);
  });
});
