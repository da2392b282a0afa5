import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';

/**
 * The architecture, checked (docs/architecture.md draws it): which folders of src/ each folder may import. A
 * folder not listed under `mayImport` may not be imported from it; together the table is a one-way graph, so no two
 * folders import each other. Within src/fhir/ the same holds for its subfolders; src/fhir's own files (outcome,
 * fhir-json, query ...) import none of them.
 */
const FEATURES = [
  'access',
  'app',
  'bulk',
  'commands',
  'config',
  'consent',
  'exchange',
  'fhir',
  'integrity',
  'ledger',
  'operator',
  'platform',
  'terminology',
];
const FHIR_PARTS = ['definitions', 'http', 'interactions', 'operations', 'search', 'store', 'validation'];

const LAYERS = [
  // the composition root and the command line see everything
  { folder: 'app', mayImport: FEATURES.filter((f) => f !== 'commands') },
  { folder: 'commands', mayImport: FEATURES },
  // features; exchange (members calling each other) sits above the features it combines
  {
    folder: 'exchange',
    mayImport: ['access', 'consent', 'integrity', 'fhir', 'ledger', 'config', 'platform'],
  },
  // bulk exchange (import engine, $export/$import jobs) sits above the features it combines, like exchange
  {
    folder: 'bulk',
    mayImport: ['access', 'consent', 'integrity', 'fhir', 'ledger', 'config', 'platform'],
  },
  { folder: 'access', mayImport: ['consent', 'fhir', 'ledger', 'platform'] },
  { folder: 'consent', mayImport: ['fhir', 'ledger', 'platform'] },
  { folder: 'integrity', mayImport: ['fhir', 'ledger', 'platform'] },
  { folder: 'operator', mayImport: ['config', 'fhir', 'ledger', 'platform'] },
  // the loaded code systems (terminology.sqlite) behind the FHIR core's terminology port
  { folder: 'terminology', mayImport: ['fhir', 'platform'] },
  // the FHIR core and the ledger know no feature; the ledger knows no FHIR
  { folder: 'fhir', mayImport: ['platform'] },
  { folder: 'ledger', mayImport: ['platform'] },
  { folder: 'config', mayImport: [] },
  { folder: 'platform', mayImport: [] },
];

const FHIR_LAYERS = {
  http: ['interactions', 'store'],
  operations: ['definitions', 'interactions', 'search', 'store', 'validation'],
  interactions: ['search', 'store', 'validation'],
  search: ['store'],
  store: [],
  validation: ['definitions'],
  definitions: [],
};

const restrict = (folders, message) => ({
  group: folders.map((f) => `**/${f}/**`),
  message,
});

const FABRIC = {
  group: ['@hyperledger/*', 'fabric-*'],
  message: 'Only src/ledger knows Fabric (docs/architecture.md).',
};
const HTTP = {
  group: ['fastify', 'fastify/*', '@fastify/*'],
  message: 'Only src/fhir/http talks HTTP in the FHIR core.',
};

function layerRules({ folder, mayImport }) {
  const forbidden = FEATURES.filter((f) => f !== folder && !mayImport.includes(f));
  const patterns = [];
  if (forbidden.length > 0)
    patterns.push(
      restrict(
        forbidden,
        `src/${folder} may import only ${mayImport.join(', ') || 'no other folder'} (docs/architecture.md).`,
      ),
    );
  if (folder !== 'ledger' && folder !== 'app' && folder !== 'commands') patterns.push(FABRIC);
  return { files: [`src/${folder}/**/*.ts`], rules: { 'no-restricted-imports': ['error', { patterns }] } };
}

function fhirPartRules(part, mayImport) {
  const forbiddenFeatures = FEATURES.filter((f) => f !== 'fhir' && f !== 'platform');
  const forbiddenParts = FHIR_PARTS.filter((p) => p !== part && !mayImport.includes(p));
  const patterns = [
    restrict(forbiddenFeatures, 'The FHIR core imports no feature (docs/architecture.md).'),
    FABRIC,
  ];
  if (forbiddenParts.length > 0)
    patterns.push(
      restrict(
        forbiddenParts,
        `src/fhir/${part} may import only ${mayImport.join(', ') || 'no other part'} of src/fhir (docs/architecture.md).`,
      ),
    );
  if (part !== 'http') patterns.push(HTTP);
  return { files: [`src/fhir/${part}/**/*.ts`], rules: { 'no-restricted-imports': ['error', { patterns }] } };
}

export default tseslint.config(
  {
    ignores: ['dist/**', 'chaincode/dist/**', 'node_modules/**', 'data/**', 'coverage/**', '.test-build/**'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  ...LAYERS.map(layerRules),
  {
    // src/fhir's own files: imported by its parts, importing none of them
    files: ['src/fhir/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            restrict(
              FEATURES.filter((f) => f !== 'fhir' && f !== 'platform'),
              'The FHIR core imports no feature (docs/architecture.md).',
            ),
            restrict(
              FHIR_PARTS,
              "src/fhir's own files import none of its subfolders (docs/architecture.md).",
            ),
            FABRIC,
            HTTP,
          ],
        },
      ],
    },
  },
  ...Object.entries(FHIR_LAYERS).map(([part, mayImport]) => fhirPartRules(part, mayImport)),
  {
    // no import cycles between modules (a cycle between folders is already excluded by the table above)
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [createNodeResolver({ extensionAlias: { '.js': ['.ts', '.js'] } })],
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    rules: { 'import-x/no-cycle': ['error', { ignoreExternal: true }] },
  },
);
