/**
 * The order in which `npm test` hands files to its two forks: the long files first. Two forks take the next file
 * as each one finishes, so a long file started last keeps one fork busy while the other waits; started first, the
 * short files fill in around it and both forks end together.
 *
 * Vitest orders by the durations of the previous run when its cache has them (a developer's checkout), else by
 * file size, which says little (a fresh clone: CI). So the files known to be long come first, longest first, by
 * their seconds on a quiet 2-core machine (CI dry run ci6c; an estimate for the order only, never an assertion);
 * the others follow in vitest's own order.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** Seconds of the longest files (all those over about 8 s), by path from the repository root. */
const LONG_FILES: ReadonlyMap<string, number> = new Map([
  ['test/exchange/local-network.test.ts', 32],
  ['test/bulk/import-cli.test.ts', 36],
  ['test/validation/examples.test.ts', 21],
  ['test/store/postgres.test.ts', 18],
  ['test/http/r4-examples-1.test.ts', 17],
  ['test/store/postgres-replicas.test.ts', 14],
  ['test/bulk/import-remote.test.ts', 14],
  ['test/bulk/postgres-bulk-replicas.test.ts', 12],
  ['test/store/postgres-migrate-data-dir.test.ts', 9],
  ['test/platform/data-dir-cli.test.ts', 11],
  ['test/http/r4-examples-6.test.ts', 10],
  ['test/http/config-cli.test.ts', 10],
  ['test/search/custom-parameters.test.ts', 9],
  ['test/corpus/leaf-hash.test.ts', 8],
  ['test/ledger/served-ledger.test.ts', 9],
  ['test/fabric/serve.test.ts', 9],
  ['test/http/r4-examples-5.test.ts', 9],
  ['test/fabric/faults.test.ts', 9],
  ['test/search/quantity.test.ts', 9],
  ['test/schema/schema-cache.test.ts', 8],
  ['test/search/evaluator-values.test.ts', 8],
  ['test/integrity/crash.test.ts', 8],
  ['test/search/store-search.test.ts', 8],
]);

export class HeavyFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const root = this.ctx.config.root;
    const secondsOf = (file: TestSpecification) =>
      LONG_FILES.get(file.moduleId.slice(root.length + 1).replaceAll('\\', '/')) ?? 0;
    // Array.prototype.sort is stable: files of equal weight (all the short ones) keep vitest's order.
    return (await super.sort(files)).sort((a, b) => secondsOf(b) - secondsOf(a));
  }
}
