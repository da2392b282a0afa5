/**
 * The LoadedCodeSystems contract (src/fhir/terminology-port.ts): what `hie-ledger terminology load` reads from each
 * owner's format (small excerpts made by the tests, excerpts.ts), read back through the port. Run on both adapters:
 * the data directory's terminology.sqlite (load.test.ts) and the PostgreSQL database (postgres.test.ts).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runTerminologyLoad } from '../../src/commands/terminology.js';
import type { LoadedCodeSystems } from '../../src/fhir/terminology-port.js';
import { SCT, type ExcerptPaths } from './excerpts.js';

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  return { stream, text: () => text };
}

/** Runs `hie-ledger terminology load` (in process) with these settings. */
export async function loadInto(
  settings: { dataDir: string; store?: 'sqlite' | 'postgres'; databaseUrl?: string },
  system: string,
  target: string,
): Promise<{ code: number; out: string; err: string }> {
  const out = capture();
  const err = capture();
  const code = await runTerminologyLoad({
    ...settings,
    system,
    path: target,
    out: out.stream,
    err: err.stream,
  });
  return { code, out: out.text(), err: err.text() };
}

export interface CodeSystemsUnderTest {
  /** Runs `hie-ledger terminology load` for this adapter. */
  load(system: string, target: string): Promise<{ code: number; out: string; err: string }>;
  /** Opens the adapter's port on what is loaded now. */
  open(): Promise<LoadedCodeSystems & { close(): void | Promise<void> }>;
  /** The excerpts' files, and a scratch directory. */
  files(): ExcerptPaths;
  dir(): string;
}

export function describeLoadedCodeSystemsContract(name: string, subject: CodeSystemsUnderTest): void {
  async function withStore<T>(work: (s: LoadedCodeSystems) => T): Promise<T> {
    const store = await subject.open();
    try {
      return work(store);
    } finally {
      await store.close();
    }
  }
  const load = (system: string, target: string) => subject.load(system, target);

  describe(`LoadedCodeSystems contract: ${name}`, () => {
    it('records each system with its count and release', async () => {
      await withStore((s) => {
        expect(s.systems().map((x) => [x.url, x.count])).toEqual([
          ['http://hl7.org/fhir/sid/cvx', 3],
          ['http://hl7.org/fhir/sid/icd-10-cm', 6],
          ['http://loinc.org', 5],
          ['http://snomed.info/sct', 7],
          ['http://www.nlm.nih.gov/research/umls/rxnorm', 3],
        ]);
        expect(s.system('http://snomed.info/sct')?.version).toBe(
          'http://snomed.info/sct/900000000000207008/version/20230131',
        );
        expect(s.system('http://hl7.org/fhir/sid/icd-10-cm')?.version).toBe('2024');
      });
    });

    it('LOINC: LONG_COMMON_NAME as display, SHORTNAME a designation, axes and STATUS as properties (quoted CSV)', async () => {
      await withStore((s) => {
        const c = s.concept('http://loinc.org', '29463-7')!;
        expect(c.display).toBe('Body weight');
        expect(c.active).toBe(true);
        expect(c.designations).toEqual([{ value: 'Weight', use: 'SHORTNAME' }]);
        expect(s.property('http://loinc.org', '29463-7', 'COMPONENT')).toEqual(['Body weight']);
        expect(s.property('http://loinc.org', '29463-7', 'CLASS')).toEqual(['BDYWGT.ATOM']);
        expect(s.concept('http://loinc.org', '1234-5')?.active).toBe(false);
        expect(s.concept('http://loinc.org', '9999-9')).toBeUndefined();
      });
    });

    it('SNOMED CT: preferred term as display, active descriptions as designations, active is-a as hierarchy', async () => {
      await withStore((s) => {
        const sct = 'http://snomed.info/sct';
        const type2 = s.concept(sct, SCT.type2)!;
        expect(type2.display).toBe('Type 2 diabetes mellitus');
        expect(type2.designations.map((d) => d.value).sort()).toEqual([
          'Diabetes mellitus type 2 (disorder)',
          'NIDDM',
          'Type 2 diabetes mellitus',
        ]);
        expect(type2.parents).toEqual([SCT.diabetes]);
        // no language refset entry: the FSN without its semantic tag
        expect(s.concept(sct, SCT.type1)?.display).toBe('Diabetes mellitus type 1');
        expect(s.concept(sct, SCT.type1)?.designations.map((d) => d.value)).toEqual([
          'Diabetes mellitus type 1 (disorder)',
        ]);
        expect(s.concept(sct, SCT.retired)?.active).toBe(false);
        expect(s.subsumes(sct, SCT.disease, SCT.type2)).toBe(true);
        expect(s.subsumes(sct, SCT.type2, SCT.type2)).toBe(true);
        expect(s.subsumes(sct, SCT.type2, SCT.disease)).toBe(false);
        // the inactive is-a (type 1 -> root) is no hierarchy, nor the attribute relationship
        expect(s.concept(sct, SCT.type1)?.parents).toEqual([SCT.diabetes]);
        expect(s.descendants(sct, SCT.diabetes, 10).sort()).toEqual([SCT.type2, SCT.type1].sort());
        expect(s.descendants(sct, SCT.finding, 10).sort()).toEqual(
          [SCT.disease, SCT.diabetes, SCT.type2, SCT.type1].sort(),
        );
        expect(s.descendants(sct, SCT.finding, 2)).toHaveLength(3);
        expect(s.ancestors(sct, SCT.type2, 10).sort()).toEqual(
          [SCT.root, SCT.finding, SCT.disease, SCT.diabetes].sort(),
        );
      });
    });

    it('RxNorm: one concept per RXCUI of the RXNORM source, the best term type as display', async () => {
      await withStore((s) => {
        const rx = 'http://www.nlm.nih.gov/research/umls/rxnorm';
        const c = s.concept(rx, '1049502')!;
        expect(c.display).toBe('12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet');
        expect(c.designations.map((d) => d.use).sort()).toEqual(['SCD', 'SY']);
        expect(s.concept(rx, '7804')?.display).toBe('Oxycodone');
      });
    });

    it('ICD-10-CM: codes with their dot, headings flagged, parents by the order file', async () => {
      await withStore((s) => {
        const icd = 'http://hl7.org/fhir/sid/icd-10-cm';
        expect(s.concept(icd, 'E11.65')?.display).toBe('Type 2 diabetes mellitus with hyperglycemia');
        expect(s.concept(icd, 'E11.65')?.parents).toEqual(['E11.6']);
        expect(s.concept(icd, 'E11.9')?.parents).toEqual(['E11']);
        expect(s.concept(icd, 'I10')?.parents).toEqual([]);
        expect(s.property(icd, 'E11', 'header')).toEqual(['true']);
        expect(s.property(icd, 'E11.9', 'header')).toEqual(['false']);
        expect(s.subsumes(icd, 'E11', 'E11.65')).toBe(true);
        expect(s.subsumes(icd, 'E08', 'E11.65')).toBe(false);
        expect(s.concept(icd, 'E1165')).toBeUndefined();
      });
    });

    it('CVX: the short description as display, the full name a designation', async () => {
      await withStore((s) => {
        const cvx = 'http://hl7.org/fhir/sid/cvx';
        expect(s.concept(cvx, '08')?.display).toBe('Hep B, adolescent or pediatric');
        expect(s.concept(cvx, '08')?.designations[0]?.value).toBe(
          'hepatitis B vaccine, pediatric or pediatric/adolescent dosage',
        );
        expect(s.property(cvx, '140', 'status')).toEqual(['Inactive']);
        expect(s.page(cvx, { text: 'covid', offset: 0, count: 10 })).toEqual({
          total: 1,
          concepts: [{ code: '208', display: 'COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose' }],
        });
      });
    });

    it('a load replaces the system, and a file not in the format leaves the previous content (exit 2)', async () => {
      const bad = path.join(subject.dir(), 'bad', 'cvx.txt');
      mkdirSync(path.dirname(bad), { recursive: true });
      writeFileSync(bad, '08|Hep B|hepatitis B||Active|1|False|5/28/2010\nnot a cvx line\n');
      const result = await load('cvx', bad);
      expect(result.code).toBe(2);
      expect(result.err).toContain('line 2');
      await withStore((s) => expect(s.system('http://hl7.org/fhir/sid/cvx')?.count).toBe(3));
      const fewer = path.join(subject.dir(), 'fewer', 'cvx.txt');
      mkdirSync(path.dirname(fewer), { recursive: true });
      writeFileSync(fewer, '08|Hep B|hepatitis B||Active|1|False|5/28/2010\n');
      expect((await load('cvx', fewer)).code).toBe(0);
      await withStore((s) => {
        expect(s.system('http://hl7.org/fhir/sid/cvx')?.count).toBe(1);
        expect(s.concept('http://hl7.org/fhir/sid/cvx', '208')).toBeUndefined();
      });
      // reload the excerpt for the other tests
      expect((await load('cvx', subject.files().cvx)).code).toBe(0);
    });
  });
}
