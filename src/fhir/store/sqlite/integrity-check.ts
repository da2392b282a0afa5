/**
 * The SQLite store's start-up integrity check (docs/store.md): `PRAGMA integrity_check` (or `quick_check`), and
 * where the damage is: each problem SQLite reports is traced to the table or index whose b-tree holds it (the
 * `Tree N` root page, the `Page N` through the `dbstat` table, or the index SQLite names).
 *
 * A small store is checked before it serves (a failure refuses the start); a large one in a child process with its
 * own read-only connection, so the check never blocks the event loop; readiness waits on it. That process runs
 * below normal CPU priority: the check is one SQLite statement (seconds to minutes on a large store) that cannot be
 * paused between chunks, and at normal priority it takes its full share of a contended core from the requests served
 * meanwhile. A process, not a worker thread, because it can be stopped at once (the statement cannot be interrupted
 * from another thread: closing the store waited for its end) and its priority can be set on every system.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { constants, getPriority, setPriority } from 'node:os';
import type Database from 'better-sqlite3';
import type { IntegrityCheckMode, IntegrityCheckResult } from '../resource-store.js';

export type { IntegrityCheckMode, IntegrityCheckResult, StoreIntegrityStatus } from '../resource-store.js';

/** SQLite stops listing problems after this many (the first ones say where). */
const MAX_MESSAGES = 100;

export function integrityPragma(mode: IntegrityCheckMode, table?: string): string {
  const name = mode === 'full' ? 'integrity_check' : 'quick_check';
  return table === undefined ? `${name}(${MAX_MESSAGES})` : `${name}("${table.replaceAll('"', '""')}")`;
}

/**
 * What one check gave: SQLite's answer rows, or, when SQLite gave up with an error (some damage makes it throw
 * "database disk image is malformed" instead of listing problems), that error and a check of each table alone.
 */
export type CheckOutcome =
  { rows: string[] } | { error: string; tables: { name: string; rows?: string[]; error?: string }[] };

/** Runs the check on this connection (blocking). The worker below runs the same steps in JavaScript. */
export function checkNow(db: Database.Database, mode: IntegrityCheckMode): CheckOutcome {
  const answer = (pragma: string) =>
    (db.pragma(pragma, { simple: false }) as Record<string, unknown>[]).map((row) =>
      String(Object.values(row)[0]),
    );
  try {
    return { rows: answer(integrityPragma(mode)) };
  } catch (err) {
    const tables: { name: string; rows?: string[]; error?: string }[] = [];
    for (const name of db
      .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
      .pluck()
      .all() as string[]) {
      try {
        tables.push({ name, rows: answer(integrityPragma(mode, name)) });
      } catch (tableErr) {
        tables.push({ name, error: tableErr instanceof Error ? tableErr.message : String(tableErr) });
      }
    }
    return { error: err instanceof Error ? err.message : String(err), tables };
  }
}

/**
 * The priority of the check's process (a nice value; os.setPriority maps it on Windows): below normal, so that
 * whenever a core is contended the service's threads get it first (Linux CFS weight 110 against 1024 at 0: about a
 * tenth of a shared core), while an idle core still runs the check at full speed. Not the lowest (19, weight 15):
 * readiness waits on the check, so it must still progress on a machine kept busy by other work.
 */
export const CHECK_NICE = constants.priority.PRIORITY_BELOW_NORMAL;

/** What the check's process answers: the check's outcome and the priority it ran at. */
export interface BackgroundCheck {
  outcome: CheckOutcome;
  /** The process's nice value during the check (os.getPriority() inside it). */
  nice: number;
}

/**
 * The check in plain JavaScript, for a Node process of its own (no build step, no loader: tests run the TypeScript
 * sources): the steps of checkNow, answered on the IPC channel.
 */
const CHECK_SCRIPT = `
const os = require('node:os');
const { module, file, pragma, tablePragma } = JSON.parse(process.argv[1]);
const Database = require(module);
const db = new Database(file, { readonly: true, fileMustExist: true });
const answer = (p) => db.pragma(p, { simple: false }).map((row) => String(Object.values(row)[0]));
let outcome;
try {
  outcome = { rows: answer(pragma) };
} catch (err) {
  const tables = [];
  for (const name of db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all()) {
    try {
      tables.push({ name, rows: answer(tablePragma.replace('TABLE', name.replaceAll('"', '""'))) });
    } catch (tableErr) {
      tables.push({ name, error: String(tableErr && tableErr.message) });
    }
  }
  outcome = { error: String(err && err.message), tables };
}
db.close();
process.send({ outcome, nice: os.getPriority() }, () => process.disconnect());
`;

/**
 * Runs the check in a child process on a connection of its own (integrity_check only reads), at CHECK_NICE or
 * lower. Resolves with the outcome; an error of the process itself (the file cannot be opened) rejects. `stop`
 * kills it at once.
 */
export function checkInBackground(
  file: string,
  mode: IntegrityCheckMode,
): { done: Promise<CheckOutcome>; check: Promise<BackgroundCheck>; stop: () => Promise<void> } {
  const module = createRequire(import.meta.url).resolve('better-sqlite3');
  const job = JSON.stringify({
    module,
    file,
    pragma: integrityPragma(mode),
    tablePragma: `${mode === 'full' ? 'integrity_check' : 'quick_check'}("TABLE")`,
  });
  // Node without the service's flags (plain JavaScript needs no loader); stderr kept for a failure's reason.
  const child = spawn(process.execPath, ['-e', CHECK_SCRIPT, job], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    serialization: 'json',
  });
  try {
    // Only ever lowered: a service started nicer than that keeps its own value for the check too.
    if (child.pid !== undefined && getPriority(child.pid) < CHECK_NICE) setPriority(child.pid, CHECK_NICE);
  } catch {
    // Not permitted here, or already gone: the check runs at the service's priority.
  }
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    if (stderr.length < 4000) stderr += chunk;
  });
  const check = new Promise<BackgroundCheck>((resolve, reject) => {
    child.once('message', (answer) => resolve(answer as BackgroundCheck));
    child.once('error', reject);
    // 'close', not 'exit': it comes after the IPC channel has delivered the answer.
    child.once('close', (code, signal) =>
      reject(
        new Error(
          `the integrity check process stopped (${signal ?? `exit code ${code}`})${stderr ? `: ${stderr.trim().split('\n').at(-1)}` : ''}`,
        ),
      ),
    );
  });
  // The service may exit while the check runs: nothing here keeps it alive.
  child.unref();
  child.channel?.unref();
  const stderrHandle = child.stderr as { unref?: () => void } | null;
  stderrHandle?.unref?.();
  const done = check.then((answer) => answer.outcome);
  check.catch(() => undefined);
  done.catch(() => undefined);
  return {
    done,
    check,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.ref(); // waited for: its exit is what close() returns after
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** SQLite's answer as one problem per line ('ok' alone: none); the `*** in database main ***` banner dropped. */
function problemsOf(rows: readonly string[]): string[] {
  if (rows.length === 1 && rows[0] === 'ok') return [];
  return rows
    .flatMap((row) => row.split('\n'))
    .map((line) => line.trim())
    .filter((line) => line !== '' && !/^\*\*\* in database \w+ \*\*\*$/.test(line));
}

/** The problems of a check and where they are (tables, indexes; docs/store.md). */
export function interpret(
  db: Database.Database,
  outcome: CheckOutcome,
): Pick<IntegrityCheckResult, 'messages' | 'where'> {
  if ('rows' in outcome) {
    const messages = problemsOf(outcome.rows).slice(0, MAX_MESSAGES);
    return { messages, where: messages.length === 0 ? [] : locateCorruption(db, messages) };
  }
  const messages = [outcome.error];
  const where = new Set<string>();
  for (const table of outcome.tables) {
    if (table.error !== undefined) {
      messages.push(`${table.name}: ${table.error}`);
      where.add(`table ${table.name} (or one of its indexes)`);
    } else {
      const problems = problemsOf(table.rows ?? []);
      messages.push(...problems);
      if (problems.length > 0) for (const place of locateCorruption(db, problems)) where.add(place);
    }
  }
  if (where.size === 0) where.add('the file (no b-tree named)');
  return { messages: messages.slice(0, MAX_MESSAGES), where: [...where] };
}

/**
 * The tables and indexes SQLite's messages point at. `Tree N` is a b-tree by its root page; `Page N` is found in
 * `dbstat` (which may itself fail on a badly damaged file: then the page number is all there is);
 * `index NAME` and `TABLE.COLUMN` name themselves.
 */
export function locateCorruption(db: Database.Database, messages: readonly string[]): string[] {
  const byRoot = new Map<number, string>();
  const kinds = new Map<string, string>();
  try {
    for (const row of db.prepare('SELECT type, name, tbl_name, rootpage FROM sqlite_schema').all() as {
      type: string;
      name: string;
      tbl_name: string;
      rootpage: number | null;
    }[]) {
      const what =
        row.type === 'index' ? `index ${row.name} (of table ${row.tbl_name})` : `${row.type} ${row.name}`;
      kinds.set(row.name, what);
      if (row.rootpage) byRoot.set(row.rootpage, what);
    }
  } catch {
    // The schema itself is unreadable: page 1 is damaged.
    return ['the schema (page 1)'];
  }
  const where = new Set<string>();
  const pageOwner = (page: number): string => {
    try {
      const name = db.prepare('SELECT name FROM dbstat WHERE pageno = ?').pluck().get(page) as
        string | undefined;
      if (name !== undefined) return kinds.get(name) ?? name;
    } catch {
      // dbstat reads every b-tree; on a damaged file it may fail: say what is known.
    }
    return `page ${page} (its b-tree could not be read)`;
  };
  for (const message of messages) {
    let m: RegExpExecArray | null;
    if ((m = /\bTree (\d+) page (\d+)/.exec(message))) {
      where.add(byRoot.get(Number(m[1])) ?? pageOwner(Number(m[2])));
    } else if ((m = /\bindex (\S+)/i.exec(message)) && kinds.has(m[1]!)) {
      where.add(kinds.get(m[1]!)!);
    } else if ((m = /\bin (\w+)\.\w+/.exec(message)) && kinds.has(m[1]!)) {
      where.add(kinds.get(m[1]!)!);
    } else if ((m = /\b[Pp]age (\d+)/.exec(message))) {
      where.add(pageOwner(Number(m[1])));
    }
    // Other lines ("database disk image is malformed" after the listed ones) name no place of their own.
  }
  if (where.size === 0) where.add('the file (no b-tree named)');
  return [...where];
}

/** The one-line description of a failed check: where, then SQLite's first messages. */
export function describeFailure(result: Pick<IntegrityCheckResult, 'where' | 'messages'>): string {
  const shown = result.messages.slice(0, 5).join('; ');
  const more = result.messages.length > 5 ? ` (and ${result.messages.length - 5} more)` : '';
  return `corrupt in ${result.where.join(', ')}: ${shown}${more}`;
}

/** Logs the start-up check once it has finished: how long it took, and on failure where (docs/store.md). */
export function logIntegrityCheck(
  checked: Promise<IntegrityCheckResult | undefined>,
  log: { info(obj: object, msg: string): void; error(obj: object, msg: string): void },
): void {
  void checked.then((result) => {
    if (!result) return;
    const summary = { mode: result.mode, background: result.background, ms: result.ms };
    if (result.ok) log.info(summary, `store integrity check passed in ${result.ms} ms`);
    else
      log.error(
        { ...summary, where: result.where, messages: result.messages.slice(0, 5) },
        `store integrity check FAILED after ${result.ms} ms: ${describeFailure(result)}; restore the store from a backup`,
      );
  });
}
