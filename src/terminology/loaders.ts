/**
 * Loaders of the big code systems from their owners' distribution files (docs/terminology.md), each streaming its
 * file(s) line by line into a TerminologyWriter (nothing is held in memory but the current line, and for ICD-10-CM
 * the chain of codes above it):
 *
 * - loinc:   the LOINC table, `Loinc.csv` (quoted CSV with a header: LOINC_NUM, COMPONENT, ..., STATUS, ...,
 *            LONG_COMMON_NAME); display LONG_COMMON_NAME, the six axes, CLASS and STATUS as properties.
 * - snomed:  an RF2 Snapshot: `sct2_Concept_Snapshot*.txt`, `sct2_Description_Snapshot*.txt`,
 *            `sct2_Relationship_Snapshot*.txt` (tab-separated); active 116680003 |Is a| relationships are the
 *            hierarchy; display the active FSN without its semantic tag, or the US English preferred term when a
 *            Language refset snapshot (`der2_cRefset_Language*Snapshot*.txt`) is present.
 * - rxnorm:  `RXNCONSO.RRF` (pipe-delimited); the RXNORM source's atoms, one concept per RXCUI.
 * - icd10cm: the CMS order file `icd10cm_order_YYYY.txt` (fixed width); codes with their dot, parents by prefix.
 * - cvx:     CDC's `cvx.txt` (pipe-delimited): code, short description (display), full name, notes, status.
 */
import { createReadStream, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parse } from 'csv-parse';
import type { TerminologyWriter } from './terminology-store.js';

export const SYSTEMS = {
  loinc: { url: 'http://loinc.org', name: 'LOINC', hierarchical: false },
  snomed: { url: 'http://snomed.info/sct', name: 'SNOMED CT', hierarchical: true },
  rxnorm: { url: 'http://www.nlm.nih.gov/research/umls/rxnorm', name: 'RxNorm', hierarchical: false },
  icd10cm: { url: 'http://hl7.org/fhir/sid/icd-10-cm', name: 'ICD-10-CM', hierarchical: true },
  cvx: { url: 'http://hl7.org/fhir/sid/cvx', name: 'CVX', hierarchical: false },
} as const;
export type SystemName = keyof typeof SYSTEMS;

export function isSystemName(name: string): name is SystemName {
  return Object.hasOwn(SYSTEMS, name);
}

/** A distribution file that is not what its format says, named with its line. */
export class TerminologyFormatError extends Error {}

/** What a load wrote. */
export interface LoadResult {
  url: string;
  name: string;
  version?: string;
  count: number;
  files: string[];
}

/** The files under `root` (a file or a directory, searched recursively) whose name matches `pattern`. */
export function findFiles(root: string, pattern: RegExp): string[] {
  const stat = statSync(root);
  if (stat.isFile()) return pattern.test(path.basename(root)) ? [root] : [];
  const out: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 8) return;
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full, depth + 1);
      else if (entry.isFile() && pattern.test(entry.name)) out.push(full);
    }
  };
  walk(root, 0);
  return out;
}

function oneFile(root: string, pattern: RegExp, what: string): string {
  const files = findFiles(root, pattern);
  if (files.length === 0) throw new TerminologyFormatError(`no ${what} under ${root}`);
  if (files.length > 1)
    throw new TerminologyFormatError(`more than one ${what} under ${root}: ${files.join(', ')}`);
  return files[0]!;
}

/** The lines of a text file, streamed (a BOM and CR line ends removed), with their numbers. */
async function* lines(file: string): AsyncGenerator<[string, number]> {
  const reader = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  let n = 0;
  for await (const raw of reader) {
    n++;
    yield [n === 1 ? raw.replace(/^\uFEFF/, '') : raw, n];
  }
}

/** Loads `system` from `root` into the writer (one transaction: all or nothing). */
export async function loadCodeSystem(
  system: SystemName,
  root: string,
  writer: TerminologyWriter,
): Promise<LoadResult> {
  const { url, name, hierarchical } = SYSTEMS[system];
  writer.begin(url);
  try {
    const { files, version } = await LOADERS[system](root, writer, url);
    const count = writer.commit({ url, name, version, hierarchical, source: files.join(', ') });
    return { url, name, ...(version ? { version } : {}), count, files };
  } catch (e) {
    writer.rollback();
    throw e;
  }
}

type Loader = (
  root: string,
  writer: TerminologyWriter,
  url: string,
) => Promise<{ files: string[]; version?: string }>;

const LOADERS: Record<SystemName, Loader> = {
  loinc: loadLoinc,
  snomed: loadSnomed,
  rxnorm: loadRxnorm,
  icd10cm: loadIcd10cm,
  cvx: loadCvx,
};

// ------------------------------------------------------------------ LOINC

/** The LOINC table's columns kept as properties (the six axes, CLASS, STATUS). */
const LOINC_PROPERTIES = [
  'COMPONENT',
  'PROPERTY',
  'TIME_ASPCT',
  'SYSTEM',
  'SCALE_TYP',
  'METHOD_TYP',
  'CLASS',
  'STATUS',
];

async function loadLoinc(root: string, writer: TerminologyWriter, url: string): Promise<{ files: string[] }> {
  const file = oneFile(root, /^Loinc\.csv$/i, 'LOINC table (Loinc.csv)');
  const parser = createReadStream(file).pipe(parse({ columns: true, bom: true, relax_column_count: true }));
  let row = 1;
  for await (const record of parser as AsyncIterable<Record<string, string | undefined>>) {
    row++;
    const code = record.LOINC_NUM?.trim();
    if (!code)
      throw new TerminologyFormatError(`${file} record ${row}: no LOINC_NUM (is this the LOINC table?)`);
    const status = record.STATUS?.trim();
    writer.concept(url, {
      code,
      display: record.LONG_COMMON_NAME?.trim() || undefined,
      // DEPRECATED codes are no longer to be used; DISCOURAGED and TRIAL are still valid codes.
      active: status !== 'DEPRECATED',
    });
    const shortName = record.SHORTNAME?.trim();
    if (shortName) writer.designation(url, code, shortName, 'SHORTNAME');
    for (const property of LOINC_PROPERTIES) {
      const value = record[property]?.trim();
      if (value) writer.property(url, code, property, value);
    }
  }
  return { files: [file] };
}

// ------------------------------------------------------------------ SNOMED CT (RF2)

const SNOMED = {
  isA: '116680003',
  fsn: '900000000000003001',
  preferred: '900000000000548007',
  usEnglish: '900000000000509007',
} as const;

/** The tab-separated rows of an RF2 file, checked against its header's first columns. */
async function* rf2Rows(file: string, header: string[]): AsyncGenerator<string[]> {
  for await (const [line, n] of lines(file)) {
    if (line === '') continue;
    const cells = line.split('\t');
    if (n === 1) {
      if (header.some((h, i) => cells[i] !== h))
        throw new TerminologyFormatError(
          `${file}: not an RF2 file of this kind (header ${header.join(', ')})`,
        );
      continue;
    }
    if (cells.length < header.length)
      throw new TerminologyFormatError(
        `${file} line ${n}: ${cells.length} columns, expected ${header.length}`,
      );
    yield cells;
  }
}

async function loadSnomed(
  root: string,
  writer: TerminologyWriter,
  url: string,
): Promise<{ files: string[]; version?: string }> {
  const conceptFile = oneFile(
    root,
    /^sct2_Concept_.*Snapshot.*\.txt$/,
    'RF2 concept snapshot (sct2_Concept_Snapshot*.txt)',
  );
  const descriptionFile = oneFile(
    root,
    /^sct2_Description_.*Snapshot.*\.txt$/,
    'RF2 description snapshot (sct2_Description_Snapshot*.txt)',
  );
  const relationshipFile = oneFile(
    root,
    /^sct2_Relationship_Snapshot.*\.txt$/,
    'RF2 relationship snapshot (sct2_Relationship_Snapshot*.txt)',
  );
  const languageFiles = findFiles(root, /^der2_cRefset_Language.*Snapshot.*\.txt$/);
  let version: string | undefined;
  for await (const cells of rf2Rows(conceptFile, [
    'id',
    'effectiveTime',
    'active',
    'moduleId',
    'definitionStatusId',
  ])) {
    const [id, effectiveTime, active] = cells as [string, string, string];
    if (!version || effectiveTime > version) version = effectiveTime;
    writer.concept(url, { code: id, active: active === '1' });
  }
  // The US English preferred terms, when a language refset is there: their description ids first (kept in the
  // store's scratch table, not in memory), so that the descriptions pass can pick each concept's display.
  for (const file of languageFiles) {
    for await (const cells of rf2Rows(file, [
      'id',
      'effectiveTime',
      'active',
      'moduleId',
      'refsetId',
      'referencedComponentId',
      'acceptabilityId',
    ])) {
      const [, , active, , refsetId, descriptionId, acceptability] = cells as string[];
      if (active === '1' && refsetId === SNOMED.usEnglish && acceptability === SNOMED.preferred)
        writer.markPreferred(descriptionId!);
    }
  }
  // Descriptions: every active term is a designation; the display is the preferred term, else the FSN without
  // its semantic tag.
  for await (const cells of rf2Rows(descriptionFile, [
    'id',
    'effectiveTime',
    'active',
    'moduleId',
    'conceptId',
    'languageCode',
    'typeId',
    'term',
  ])) {
    const [id, , active, , conceptId, languageCode, typeId, term] = cells as string[];
    if (active !== '1') continue;
    const fsn = typeId === SNOMED.fsn;
    writer.designation(url, conceptId!, term!, fsn ? 'fsn' : 'synonym', languageCode);
    if (fsn) writer.display(url, conceptId!, term!.replace(/\s+\([^()]*\)$/, ''), 1);
    else if (languageFiles.length > 0 && writer.isPreferred(id!)) writer.display(url, conceptId!, term!, 0);
  }
  for await (const cells of rf2Rows(relationshipFile, [
    'id',
    'effectiveTime',
    'active',
    'moduleId',
    'sourceId',
    'destinationId',
    'relationshipGroup',
    'typeId',
  ])) {
    const [, , active, , sourceId, destinationId, , typeId] = cells as string[];
    if (active === '1' && typeId === SNOMED.isA) writer.parent(url, sourceId!, destinationId!);
  }
  return {
    files: [conceptFile, descriptionFile, relationshipFile, ...languageFiles],
    ...(version ? { version: `http://snomed.info/sct/900000000000207008/version/${version}` } : {}),
  };
}

// ------------------------------------------------------------------ RxNorm (RRF)

/** RxNorm term types, best display first (the clinical and branded drugs, then ingredients, then the rest). */
const RXNORM_DISPLAY_RANK = [
  'SCD',
  'SBD',
  'GPCK',
  'BPCK',
  'IN',
  'PIN',
  'MIN',
  'BN',
  'SCDC',
  'SBDC',
  'SCDF',
  'SBDF',
  'SCDG',
  'SBDG',
  'DF',
  'DFG',
  'PSN',
  'SY',
  'TMSY',
  'ET',
];

async function loadRxnorm(
  root: string,
  writer: TerminologyWriter,
  url: string,
): Promise<{ files: string[] }> {
  const file = oneFile(root, /^RXNCONSO\.RRF$/i, 'RxNorm concept file (RXNCONSO.RRF)');
  for await (const [line, n] of lines(file)) {
    if (line === '') continue;
    // RXCUI|LAT|TS|LUI|STT|SUI|ISPREF|RXAUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|
    const cells = line.split('|');
    if (cells.length < 18)
      throw new TerminologyFormatError(
        `${file} line ${n}: ${cells.length} fields, expected 18 (RXNCONSO.RRF)`,
      );
    const [rxcui, , , , , , , , , , , sab, tty, , str, , suppress] = cells as string[];
    if (sab !== 'RXNORM' || !rxcui || !str) continue;
    const rank = RXNORM_DISPLAY_RANK.indexOf(tty!);
    // Suppressed atoms (O obsolete, Y, E) are kept as names only.
    const suppressed = suppress === 'O' || suppress === 'Y' || suppress === 'E';
    writer.concept(url, {
      code: rxcui,
      display: str,
      active: !suppressed,
      displayRank: (suppressed ? 1000 : 0) + (rank < 0 ? RXNORM_DISPLAY_RANK.length : rank),
    });
    writer.designation(url, rxcui, str, tty);
  }
  return { files: [file] };
}

// ------------------------------------------------------------------ ICD-10-CM (order file)

/**
 * The CMS order file's fixed columns (icd10cm_order_YYYY.txt, its description file): order number 1-5, code 7-13,
 * header flag 15 (0: a heading, not valid for HIPAA transactions; 1: valid), short description 17-76, long 78-.
 */
async function loadIcd10cm(
  root: string,
  writer: TerminologyWriter,
  url: string,
): Promise<{ files: string[]; version?: string }> {
  const file = oneFile(
    root,
    /^icd10cm[-_]order[-_].*\.txt$/i,
    'ICD-10-CM order file (icd10cm_order_YYYY.txt)',
  );
  // The codes above the current one (the file lists each heading before the codes under it).
  const chain: string[] = [];
  for await (const [line, n] of lines(file)) {
    if (line.trim() === '') continue;
    const order = line.slice(0, 5);
    const raw = line.slice(6, 13).trim();
    const flag = line.slice(14, 15);
    if (!/^\d{5}$/.test(order) || !/^[A-Z][0-9A-Z]{2,6}$/.test(raw) || (flag !== '0' && flag !== '1'))
      throw new TerminologyFormatError(
        `${file} line ${n}: not an ICD-10-CM order file line (order 1-5, code 7-13, header flag 15)`,
      );
    const code = raw.length > 3 ? `${raw.slice(0, 3)}.${raw.slice(3)}` : raw;
    const shortName = line.slice(16, 76).trim();
    const longName = line.slice(77).trim();
    writer.concept(url, { code, display: longName || shortName });
    if (shortName && shortName !== longName) writer.designation(url, code, shortName, 'short');
    writer.property(url, code, 'header', flag === '0' ? 'true' : 'false');
    while (chain.length > 0 && !raw.startsWith(chain[chain.length - 1]!)) chain.pop();
    const parent = chain[chain.length - 1];
    if (parent !== undefined)
      writer.parent(url, code, parent.length > 3 ? `${parent.slice(0, 3)}.${parent.slice(3)}` : parent);
    chain.push(raw);
  }
  const year = /(\d{4})/.exec(path.basename(file))?.[1];
  return { files: [file], ...(year ? { version: year } : {}) };
}

// ------------------------------------------------------------------ CVX

/** cvx.txt: CVX Code|CVX Short Description|Full Vaccine Name|Notes|VaccineStatus|internalID|nonvaccine|update date */
async function loadCvx(root: string, writer: TerminologyWriter, url: string): Promise<{ files: string[] }> {
  const file = oneFile(root, /^cvx\.txt$/i, "CDC's CVX file (cvx.txt)");
  for await (const [line, n] of lines(file)) {
    if (line.trim() === '') continue;
    const cells = line.split('|').map((c) => c.trim());
    const [code, shortName, fullName, , status] = cells;
    if (cells.length < 5 || !code || !/^\d{1,3}$/.test(code)) {
      // The header line of some downloads names the columns.
      if (n === 1 && /cvx/i.test(line)) continue;
      throw new TerminologyFormatError(
        `${file} line ${n}: not a CVX line (code|short description|full name|notes|status)`,
      );
    }
    writer.concept(url, {
      code,
      display: shortName || fullName || undefined,
      active: status !== 'Inactive' && status !== 'Never Active',
    });
    if (fullName && fullName !== shortName) writer.designation(url, code, fullName, 'full');
    if (status) writer.property(url, code, 'status', status);
  }
  return { files: [file] };
}
