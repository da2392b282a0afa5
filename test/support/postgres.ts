/**
 * The PostgreSQL server of the PostgreSQL suites: HIE_TEST_POSTGRES_URL, e.g.
 * postgres://postgres@127.0.0.1:55432/postgres (.ci/run starts one). Without it those suites skip with their reason,
 * unless HIE_REQUIRE_POSTGRES=1 (set by .ci/run where PostgreSQL is installable): then a suite that would skip fails.
 */
import { describe, it } from 'vitest';

export const POSTGRES_URL: string | undefined = process.env.HIE_TEST_POSTGRES_URL || undefined;

const REQUIRED = process.env.HIE_REQUIRE_POSTGRES === '1';

/** Why `suite` cannot run here (undefined: it can); required but unset: registers a failing test saying so. */
export function postgresSkipReason(suite: string): string | undefined {
  if (POSTGRES_URL) return undefined;
  const reason = `${suite} skipped: set HIE_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:55432/postgres; docs/store.md)`;
  if (REQUIRED) {
    describe(`${suite} (required: HIE_REQUIRE_POSTGRES=1)`, () => {
      it('has a PostgreSQL server', () => {
        throw new Error(
          `HIE_REQUIRE_POSTGRES=1 but HIE_TEST_POSTGRES_URL is not set: ${suite} would be skipped`,
        );
      });
    });
  } else console.warn(reason);
  return reason;
}
