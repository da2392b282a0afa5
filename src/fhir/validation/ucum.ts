/**
 * UCUM unit conversion with the NLM's `@lhncbc/ucum-lhc` (the library fhirpath.js uses too), loaded on first use so
 * start-up does not pay for its unit tables when no bound compares different units.
 */
import { createRequire } from 'node:module';

export const UCUM_SYSTEM = 'http://unitsofmeasure.org';

interface UcumConversion {
  status: 'succeeded' | 'failed' | 'error';
  toVal: number | null;
}
interface UcumUtils {
  convertUnitTo(fromCode: string, fromValue: number, toCode: string): UcumConversion;
}

let utils: UcumUtils | undefined;

function ucum(): UcumUtils {
  if (!utils) {
    const pkg = createRequire(import.meta.url)('@lhncbc/ucum-lhc') as {
      UcumLhcUtils: { getInstance(): UcumUtils };
    };
    utils = pkg.UcumLhcUtils.getInstance();
  }
  return utils;
}

/** `value` in UCUM unit `from` expressed in UCUM unit `to`; undefined when a code is not UCUM or the units are not commensurable. */
export function convertUcum(value: number, from: string, to: string): number | undefined {
  if (from === to) return value;
  try {
    const r = ucum().convertUnitTo(from, value, to);
    return r.status === 'succeeded' && typeof r.toVal === 'number' && Number.isFinite(r.toVal)
      ? r.toVal
      : undefined;
  } catch {
    return undefined;
  }
}
