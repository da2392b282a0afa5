import { beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { createFhirValidatorSync, type FhirValidator } from '../../src/fhir/validation/index.js';
import { KNOWN_BAD_EXAMPLES } from '../support/known-bad-examples.js';
import { suiteCacheDir } from '../support/cli-build.js';

// Every official R4 instance example (hl7.fhir.r4.examples; definitional resources excluded) validates with no
// errors, except these, where the example itself breaks a rule of the specification.
const KNOWN_BAD = KNOWN_BAD_EXAMPLES;

const DEFINITIONAL =
  /^(StructureDefinition|ValueSet|CodeSystem|ConceptMap|SearchParameter|OperationDefinition|CompartmentDefinition|ImplementationGuide|NamingSystem|CapabilityStatement)-/;

const DIR = path.dirname(createRequire(import.meta.url).resolve('hl7.fhir.r4.examples/package.json'));

/**
 * The examples in PARTS tests of about equal bytes (largest first, each to the lightest part: deterministic), so
 * that no one test holds the whole corpus (about 20 s on a quiet machine, near the timeout on a busy one).
 */
const PARTS = 4;

function partsOf(files: string[]): string[][] {
  const parts = Array.from({ length: PARTS }, () => ({ bytes: 0, files: [] as string[] }));
  const sized = files.map((f) => ({ f, size: fs.statSync(path.join(DIR, f)).size }));
  sized.sort((a, b) => b.size - a.size || a.f.localeCompare(b.f));
  for (const { f, size } of sized) {
    const lightest = parts.reduce((min, p) => (p.bytes < min.bytes ? p : min));
    lightest.files.push(f);
    lightest.bytes += size;
  }
  // Each part in directory order, as the whole corpus was validated before it was split.
  return parts.map((p) => files.filter((f) => p.files.includes(f)));
}

describe('official R4 examples', () => {
  const files = fs
    .readdirSync(DIR)
    .filter(
      (f) => f.endsWith('.json') && f !== 'package.json' && f !== 'ig-r4.json' && !DEFINITIONAL.test(f),
    );
  const parts = partsOf(files);
  let v: FhirValidator;
  beforeAll(() => {
    // The specification's examples use example.org extension URLs (the reference validator's "examples" mode).
    v = createFhirValidatorSync({ allowExampleUrls: true, definitionsCacheDir: suiteCacheDir() });
  });

  it('are several hundred, each in one part', () => {
    expect(files.length).toBeGreaterThan(700);
    expect(parts.flat().sort()).toEqual([...files].sort());
  });

  parts.forEach((part, k) => {
    it(`validate with no errors, known bad examples listed with the reason (part ${k + 1} of ${PARTS})`, () => {
      const failing: Record<string, string[]> = {};
      for (const f of part) {
        const out = v.validate(JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8')));
        const errs = out.issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
        if (errs.length) failing[f] = errs.slice(0, 3).map((e) => `${e.expression?.[0]}: ${e.diagnostics}`);
      }
      const unexpected = Object.fromEntries(Object.entries(failing).filter(([f]) => !KNOWN_BAD[f]));
      expect(unexpected).toEqual({});
      // Every listed exception of this part still fails (so the list stays honest).
      expect(Object.keys(KNOWN_BAD).filter((f) => part.includes(f) && !failing[f])).toEqual([]);
    });
  });
});
