/**
 * Small excerpts of the code systems' distribution files, in their owners' formats, written by the tests (a
 * handful of well-known codes each; never the licensed bulk files). `writeExcerpts(dir)` writes one folder per
 * system under `dir` and returns their paths.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const LOINC_HEADER = [
  'LOINC_NUM',
  'COMPONENT',
  'PROPERTY',
  'TIME_ASPCT',
  'SYSTEM',
  'SCALE_TYP',
  'METHOD_TYP',
  'CLASS',
  'VersionLastChanged',
  'CHNG_TYPE',
  'DefinitionDescription',
  'STATUS',
  'CONSUMER_NAME',
  'CLASSTYPE',
  'FORMULA',
  'EXMPL_ANSWERS',
  'SURVEY_QUEST_TEXT',
  'SURVEY_QUEST_SRC',
  'UNITSREQUIRED',
  'RELATEDNAMES2',
  'SHORTNAME',
  'ORDER_OBS',
  'HL7_FIELD_SUBFIELD_ID',
  'EXTERNAL_COPYRIGHT_NOTICE',
  'EXAMPLE_UNITS',
  'LONG_COMMON_NAME',
];

function loincRow(
  code: string,
  component: string,
  property: string,
  system: string,
  scale: string,
  klass: string,
  status: string,
  shortName: string,
  longName: string,
): string {
  const cells: Record<string, string> = {
    LOINC_NUM: code,
    COMPONENT: component,
    PROPERTY: property,
    TIME_ASPCT: 'Pt',
    SYSTEM: system,
    SCALE_TYP: scale,
    METHOD_TYP: '',
    CLASS: klass,
    VersionLastChanged: '2.73',
    CHNG_TYPE: 'MIN',
    // a quoted comma and a quoted line break, as the real table has
    DefinitionDescription: `${component}, measured.\nSee the LOINC users' guide.`,
    STATUS: status,
    SHORTNAME: shortName,
    LONG_COMMON_NAME: longName,
  };
  return LOINC_HEADER.map((h) => `"${(cells[h] ?? '').replace(/"/g, '""')}"`).join(',');
}

export const LOINC_CSV = [
  LOINC_HEADER.map((h) => `"${h}"`).join(','),
  loincRow('8867-4', 'Heart rate', 'NRat', 'XXX', 'Qn', 'HRTRATE.ATOM', 'ACTIVE', 'Heart rate', 'Heart rate'),
  loincRow(
    '29463-7',
    'Body weight',
    'Mass',
    '^Patient',
    'Qn',
    'BDYWGT.ATOM',
    'ACTIVE',
    'Weight',
    'Body weight',
  ),
  loincRow(
    '8310-5',
    'Body temperature',
    'Temp',
    '^Patient',
    'Qn',
    'BDYTMP.ATOM',
    'ACTIVE',
    'Body temperature',
    'Body temperature',
  ),
  loincRow(
    '2345-7',
    'Glucose',
    'MCnc',
    'Ser/Plas',
    'Qn',
    'CHEM',
    'ACTIVE',
    'Glucose SerPl-mCnc',
    'Glucose [Mass/volume] in Serum or Plasma',
  ),
  loincRow(
    '1234-5',
    'Old test',
    'MCnc',
    'Ser',
    'Qn',
    'CHEM',
    'DEPRECATED',
    'Old',
    'Old test [Mass/volume] in Serum',
  ),
].join('\r\n');

const tsv = (rows: string[][]) => rows.map((r) => r.join('\t')).join('\r\n') + '\r\n';

export const SCT = {
  root: '138875005',
  finding: '404684003',
  disease: '64572001',
  diabetes: '73211009',
  type2: '44054006',
  type1: '46635009',
  retired: '190372001',
};

const conceptRows = [
  ['id', 'effectiveTime', 'active', 'moduleId', 'definitionStatusId'],
  [SCT.root, '20020131', '1', '900000000000207008', '900000000000074008'],
  [SCT.finding, '20020131', '1', '900000000000207008', '900000000000074008'],
  [SCT.disease, '20020131', '1', '900000000000207008', '900000000000074008'],
  [SCT.diabetes, '20020131', '1', '900000000000207008', '900000000000074008'],
  [SCT.type2, '20230131', '1', '900000000000207008', '900000000000073002'],
  [SCT.type1, '20020131', '1', '900000000000207008', '900000000000073002'],
  [SCT.retired, '20020731', '0', '900000000000207008', '900000000000074008'],
];

const FSN = '900000000000003001';
const SYN = '900000000000013009';
const descriptionRows = [
  [
    'id',
    'effectiveTime',
    'active',
    'moduleId',
    'conceptId',
    'languageCode',
    'typeId',
    'term',
    'caseSignificanceId',
  ],
  [
    '1',
    '20020131',
    '1',
    '900000000000207008',
    SCT.root,
    'en',
    FSN,
    'SNOMED CT Concept (SNOMED RT+CTV3)',
    '900000000000448009',
  ],
  [
    '2',
    '20020131',
    '1',
    '900000000000207008',
    SCT.finding,
    'en',
    FSN,
    'Clinical finding (finding)',
    '900000000000448009',
  ],
  [
    '3',
    '20020131',
    '1',
    '900000000000207008',
    SCT.disease,
    'en',
    FSN,
    'Disease (disorder)',
    '900000000000448009',
  ],
  [
    '4',
    '20020131',
    '1',
    '900000000000207008',
    SCT.diabetes,
    'en',
    FSN,
    'Diabetes mellitus (disorder)',
    '900000000000448009',
  ],
  [
    '5',
    '20020131',
    '1',
    '900000000000207008',
    SCT.type2,
    'en',
    FSN,
    'Diabetes mellitus type 2 (disorder)',
    '900000000000448009',
  ],
  [
    '6',
    '20020131',
    '1',
    '900000000000207008',
    SCT.type2,
    'en',
    SYN,
    'Type 2 diabetes mellitus',
    '900000000000448009',
  ],
  ['7', '20020131', '1', '900000000000207008', SCT.type2, 'en', SYN, 'NIDDM', '900000000000448009'],
  [
    '8',
    '20020131',
    '1',
    '900000000000207008',
    SCT.type1,
    'en',
    FSN,
    'Diabetes mellitus type 1 (disorder)',
    '900000000000448009',
  ],
  [
    '9',
    '20020131',
    '0',
    '900000000000207008',
    SCT.type1,
    'en',
    SYN,
    'Juvenile diabetes (old name)',
    '900000000000448009',
  ],
  [
    '10',
    '20020131',
    '1',
    '900000000000207008',
    SCT.retired,
    'en',
    FSN,
    'Retired concept (disorder)',
    '900000000000448009',
  ],
];

const languageRows = [
  ['id', 'effectiveTime', 'active', 'moduleId', 'refsetId', 'referencedComponentId', 'acceptabilityId'],
  ['a1', '20020131', '1', '900000000000207008', '900000000000509007', '6', '900000000000548007'],
  ['a2', '20020131', '1', '900000000000207008', '900000000000509007', '7', '900000000000549004'],
];

const IS_A = '116680003';
const relationshipRows = [
  [
    'id',
    'effectiveTime',
    'active',
    'moduleId',
    'sourceId',
    'destinationId',
    'relationshipGroup',
    'typeId',
    'characteristicTypeId',
    'modifierId',
  ],
  [
    'r1',
    '20020131',
    '1',
    '900000000000207008',
    SCT.finding,
    SCT.root,
    '0',
    IS_A,
    '900000000000011006',
    '900000000000451002',
  ],
  [
    'r2',
    '20020131',
    '1',
    '900000000000207008',
    SCT.disease,
    SCT.finding,
    '0',
    IS_A,
    '900000000000011006',
    '900000000000451002',
  ],
  [
    'r3',
    '20020131',
    '1',
    '900000000000207008',
    SCT.diabetes,
    SCT.disease,
    '0',
    IS_A,
    '900000000000011006',
    '900000000000451002',
  ],
  [
    'r4',
    '20020131',
    '1',
    '900000000000207008',
    SCT.type2,
    SCT.diabetes,
    '0',
    IS_A,
    '900000000000011006',
    '900000000000451002',
  ],
  [
    'r5',
    '20020131',
    '1',
    '900000000000207008',
    SCT.type1,
    SCT.diabetes,
    '0',
    IS_A,
    '900000000000011006',
    '900000000000451002',
  ],
  // an inactive is-a and an attribute relationship: neither is hierarchy
  [
    'r6',
    '20020131',
    '0',
    '900000000000207008',
    SCT.type1,
    SCT.root,
    '0',
    IS_A,
    '900000000000011006',
    '900000000000451002',
  ],
  [
    'r7',
    '20020131',
    '1',
    '900000000000207008',
    SCT.type2,
    SCT.finding,
    '1',
    '363698007',
    '900000000000011006',
    '900000000000451002',
  ],
];

/** RXNCONSO.RRF rows: RXCUI|LAT|TS|LUI|STT|SUI|ISPREF|RXAUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF| */
function rrf(rxcui: string, sab: string, tty: string, str: string, suppress = 'N'): string {
  return [
    rxcui,
    'ENG',
    '',
    '',
    '',
    '',
    '',
    `A${rxcui}${tty}`,
    '',
    '',
    '',
    sab,
    tty,
    rxcui,
    str,
    '',
    suppress,
    '4096',
    '',
  ].join('|');
}

export const RXNCONSO = [
  rrf('1049502', 'RXNORM', 'SY', 'oxycodone HCl 10 MG 12HR ER Tab'),
  rrf('1049502', 'RXNORM', 'SCD', '12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet'),
  rrf('1049502', 'MTHSPL', 'DP', 'Oxycodone ER 10 mg (other source)'),
  rrf('7804', 'RXNORM', 'IN', 'Oxycodone'),
  rrf('313782', 'RXNORM', 'SCD', 'Acetaminophen 325 MG Oral Tablet'),
].join('\n');

function orderLine(order: number, code: string, header: 0 | 1, short: string, long: string): string {
  return `${String(order).padStart(5, '0')} ${code.padEnd(7)} ${header} ${short.padEnd(60)} ${long}`;
}

export const ICD10CM_ORDER = [
  orderLine(
    1,
    'E08',
    0,
    'Diabetes mellitus due to underlying condition',
    'Diabetes mellitus due to underlying condition',
  ),
  orderLine(2, 'E11', 0, 'Type 2 diabetes mellitus', 'Type 2 diabetes mellitus'),
  orderLine(
    3,
    'E116',
    0,
    'Type 2 diabetes mellitus with other specified complications',
    'Type 2 diabetes mellitus with other specified complications',
  ),
  orderLine(
    4,
    'E1165',
    1,
    'Type 2 diabetes mellitus with hyperglycemia',
    'Type 2 diabetes mellitus with hyperglycemia',
  ),
  orderLine(
    5,
    'E119',
    1,
    'Type 2 diabetes mellitus without complications',
    'Type 2 diabetes mellitus without complications',
  ),
  orderLine(6, 'I10', 1, 'Essential (primary) hypertension', 'Essential (primary) hypertension'),
].join('\r\n');

export const CVX_TXT = [
  '08|Hep B, adolescent or pediatric|hepatitis B vaccine, pediatric or pediatric/adolescent dosage||Active|1|False|5/28/2010',
  '140|Influenza, seasonal, injectable, preservative free|Influenza, seasonal, injectable, preservative free||Inactive|131|False|7/17/2020',
  '208|COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose|SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose||Active|213|False|9/11/2023',
].join('\r\n');

export interface ExcerptPaths {
  loinc: string;
  snomed: string;
  rxnorm: string;
  icd10cm: string;
  cvx: string;
}

export function writeExcerpts(dir: string): ExcerptPaths {
  const at = (...parts: string[]) => {
    const file = path.join(dir, ...parts);
    mkdirSync(path.dirname(file), { recursive: true });
    return file;
  };
  writeFileSync(at('Loinc_2.73', 'LoincTable', 'Loinc.csv'), '\uFEFF' + LOINC_CSV);
  const rf2 = ['SnomedCT_InternationalRF2_PRODUCTION_20230131T120000Z', 'Snapshot'];
  writeFileSync(at(...rf2, 'Terminology', 'sct2_Concept_Snapshot_INT_20230131.txt'), tsv(conceptRows));
  writeFileSync(
    at(...rf2, 'Terminology', 'sct2_Description_Snapshot-en_INT_20230131.txt'),
    tsv(descriptionRows),
  );
  writeFileSync(
    at(...rf2, 'Terminology', 'sct2_Relationship_Snapshot_INT_20230131.txt'),
    tsv(relationshipRows),
  );
  writeFileSync(
    at(...rf2, 'Refset', 'Language', 'der2_cRefset_LanguageSnapshot-en_INT_20230131.txt'),
    tsv(languageRows),
  );
  writeFileSync(at('RxNorm_full', 'rrf', 'RXNCONSO.RRF'), RXNCONSO);
  writeFileSync(at('icd10cm', 'icd10cm_order_2024.txt'), ICD10CM_ORDER);
  writeFileSync(at('cvx', 'cvx.txt'), CVX_TXT);
  return {
    loinc: path.join(dir, 'Loinc_2.73'),
    snomed: path.join(dir, rf2[0]!),
    rxnorm: path.join(dir, 'RxNorm_full'),
    icd10cm: path.join(dir, 'icd10cm', 'icd10cm_order_2024.txt'),
    cvx: path.join(dir, 'cvx'),
  };
}
