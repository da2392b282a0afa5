import { configDefaults, defineConfig } from 'vitest/config';
import { HeavyFirstSequencer } from './test/support/sequencer.js';

/**
 * The fast lane (`npm run test:unit`): pure modules and the in-memory store contract. A file belongs here when
 * it boots no app, opens no SQLite file or database, starts no embedded chain or child process, needs no build
 * step (the chaincode package) and runs no whole corpus (the R4 examples, the HL7 validator cases, compiling the
 * definitions or schema caches), and none mocks modules or changes process.env (they share one module graph).
 * Everything else runs in the `app` project; `npm test` runs both, each file once.
 */
const UNIT_TESTS = [
  'test/architecture.test.ts',
  'test/bench/*.test.ts',
  'test/platform/backoff.test.ts',
  'test/fhir/**/*.test.ts',
  'test/store/memory.test.ts',
  'test/access/{scopes,tokens}.test.ts',
  'test/consent/consent-resource.test.ts',
  'test/http/{http-date,ids}.test.ts',
  'test/integrity/mapping.test.ts',
  'test/search/{parse,index-entries,full-text-rows}.test.ts',
  'test/schema/schema-validator.test.ts',
  'test/validation/{json-syntax,native-invariants,rules,hostile,profiles}.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    // Compiles src/ once per run for the tests that start the CLI as a process (test/support/cli-build.ts).
    globalSetup: ['test/support/global-setup.ts'],
    hookTimeout: 120_000,
    pool: 'forks',
    // The long files first (test/support/sequencer.ts), so that the two forks end together.
    sequence: { sequencer: HeavyFirstSequencer },
    poolOptions: {
      // Each fork process runs many files (a fresh process per file re-imported every package); whether files
      // share src/ modules is the project's `isolate` (the app project below).
      forks: { maxForks: 2, minForks: 1, isolate: false },
      // Used by the unit project only (vitest reads pool options here, not from a project).
      threads: { maxThreads: 2, minThreads: 1, isolate: false },
    },
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: UNIT_TESTS,
          // Pure modules share no state through globals (no mocks, no env), so one module graph per worker is
          // safe; and the validator's definitions load once per worker, not once per file (measured: 31 s -> 16 s
          // wall on 2 busy cores).
          pool: 'threads',
          isolate: false,
          // npm test: the unit lane first, then the app project, so the two pools never share the 2 cores.
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'app',
          include: ['test/**/*.test.ts', 'chaincode/test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...UNIT_TESTS],
          // One module graph per fork, as in the unit lane: isolated, each of the 150 files re-imported fastify,
          // the app and the validator (197 s of the CI run's collect time). Safe because no app file mocks a
          // module (vi.mock), writes process.env, or replaces what a module exports; what src/ keeps per process
          // is a cache of what never changes (definitions, the compiled schema, UCUM units, the chaincode) or is
          // reset by the app that set it when it closes (custom search parameters); spies are restored after each
          // file; the files that need a module's first load in a process (schema-cache, and file-modes for the
          // cache an app's first start writes) call vi.resetModules themselves.
          // docs/architecture.md "Tests" has the rules a new app test keeps.
          isolate: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
