/**
 * Client assertions already used (`iss` + `jti`), each kept until the assertion would have expired anyway, so a
 * replayed assertion is refused. With a file, the set survives a restart: it is rewritten (write, then rename) on
 * every admission, which is cheap because token requests are few (tokens are cached by callers for minutes, and
 * /auth/token is rate-limited) and the set holds only unexpired assertions (five minutes at most each).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { mkdirPrivate, PRIVATE_FILE_MODE } from '../platform/private-files.js';
import type { ReplayGuard, ReplayVerdict } from '../access/shared-state.js';

/** Past this many live entries new assertions are refused rather than an old one forgotten (a forgotten one could be replayed). */
const MAX_ENTRIES = 100_000;

export type { ReplayVerdict };

/** This process's guard (one replica); replicas share src/access/shared-state.ts's instead. */
export class ReplayCache implements ReplayGuard {
  /** key -> expiry (epoch ms) */
  private readonly used = new Map<string, number>();

  constructor(
    private readonly file: string | undefined,
    private readonly now: () => number = Date.now,
  ) {
    if (file === undefined) return;
    let saved: unknown;
    try {
      saved = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      // An unreadable file would silently allow replays: refuse to start instead.
      throw new Error(`the assertion replay file ${file} is unreadable: ${(err as Error).message}`);
    }
    if (saved === null || typeof saved !== 'object' || Array.isArray(saved))
      throw new Error(`the assertion replay file ${file} is not a JSON object`);
    const current = this.now();
    for (const [key, expiresAt] of Object.entries(saved as Record<string, unknown>))
      if (typeof expiresAt === 'number' && expiresAt >= current) this.used.set(key, expiresAt);
  }

  /** Records `key` as used until `expiresAt` (epoch ms), unless it was used before. */
  admit(key: string, expiresAt: number): ReplayVerdict {
    const current = this.now();
    for (const [used, until] of this.used) if (until < current) this.used.delete(used);
    if (this.used.has(key)) return 'replayed';
    if (this.used.size >= MAX_ENTRIES) return 'full';
    this.used.set(key, expiresAt);
    this.save();
    return 'fresh';
  }

  private save(): void {
    if (this.file === undefined) return;
    mkdirPrivate(dirname(this.file));
    const temporary = `${this.file}.tmp`;
    writeFileSync(temporary, JSON.stringify(Object.fromEntries(this.used)), { mode: PRIVATE_FILE_MODE });
    renameSync(temporary, this.file);
  }
}
