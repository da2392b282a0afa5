/**
 * The SQLite store's start-up integrity check (docs/store.md): `PRAGMA integrity_check` (or `quick_check`), and
 * where the damage is: each problem SQLite reports is traced to the table or index whose b-tree holds it (the
 * `Tree N` root page, the `Page N` through the `dbstat` table, or the index SQLite names).
 *
 * A small store is checked before it serves (a failure refuses the start); a large one in a worker thread with
 * its own read-only connection, so the check never blocks the event loop; readiness waits on it. That thread runs
 * below normal CPU priority: the check is one SQLite statement (seconds to minutes on a large store) that cannot be
 * paused between chunks, and at normal priority it takes its full share of a core from the requests served meanwhile.
 */
import { createRequire } from 'node:module';
import { constants, platform } from 'node:os';
import { Worker } from 'node:worker_threads';
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
 * The nice value of the check's thread (Linux): below normal, so that whenever a core is contended the threads
 * serving requests get it first (CFS weight 110 against 1024 at 0: about a tenth of a shared core), while an idle
 * core still runs the check at full speed. Not the lowest (19, weight 15): readiness waits on the check, so it must
 * still progress on a machine kept busy by other work.
 */
export const CHECK_THREAD_NICE = constants.priority.PRIORITY_BELOW_NORMAL;

/**
 * Only Linux gives each thread its own nice value (setpriority on the calling thread); elsewhere the same call
 * would lower the whole process, requests included, so the check there runs at the process's priority.
 */
const PER_THREAD_PRIORITY = platform() === 'linux';

/** What the worker answers: the check's outcome and the nice value its thread ran at. */
export interface WorkerCheck {
  outcome: CheckOutcome;
  /** The thread's nice value during the check (os.getPriority() inside the worker). */
  nice: number;
}

/**
 * Runs the check in a worker thread on a connection of its own (integrity_check only reads), at CHECK_THREAD_NICE
 * on Linux. Resolves with the outcome; an error of the worker itself (the file cannot be opened) rejects.
 */
export function checkInWorker(
  file: string,
  mode: IntegrityCheckMode,
): { done: Promise<CheckOutcome>; thread: Promise<WorkerCheck>; stop: () => Promise<void> } {
  const module = createRequire(import.meta.url).resolve('better-sqlite3');
  // An inline CommonJS worker (no separate file to build or resolve; tests run the TypeScript sources): the steps
  // of checkNow, in JavaScript, after lowering this thread's own priority.
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const os = require('node:os');
     // Only ever lowered: a process already started nicer than that keeps its own value.
     if (workerData.nice !== undefined && os.getPriority() < workerData.nice) {
       try {
         os.setPriority(workerData.nice);
       } catch {
         // Not permitted here (a sandbox): the check runs at the process's priority.
       }
     }
     const Database = require(workerData.module);
     const db = new Database(workerData.file, { fileMustExist: true });
     const answer = (pragma) => db.pragma(pragma, { simple: false }).map((row) => String(Object.values(row)[0]));
     let outcome;
     try {
       outcome = { rows: answer(workerData.pragma) };
     } catch (err) {
       const tables = [];
       for (const name of db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all()) {
         try {
           tables.push({ name, rows: answer(workerData.tablePragma.replace('TABLE', name.replaceAll('"', '""'))) });
         } catch (tableErr) {
           tables.push({ name, error: String(tableErr && tableErr.message) });
         }
       }
       outcome = { error: String(err && err.message), tables };
     }
     db.close();
     parentPort.postMessage({ outcome, nice: os.getPriority() });`,
    {
      eval: true,
      name: 'integrity-check',
      workerData: {
        module,
        file,
        nice: PER_THREAD_PRIORITY ? CHECK_THREAD_NICE : undefined,
        pragma: integrityPragma(mode),
        tablePragma: `${mode === 'full' ? 'integrity_check' : 'quick_check'}("TABLE")`,
      },
    },
  );
  worker.unref();
  const thread = new Promise<WorkerCheck>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) =>
      reject(new Error(`the integrity check worker stopped (exit code ${code})`)),
    );
  });
  const done = thread.then((answer) => answer.outcome);
  thread.catch(() => undefined);
  done.catch(() => undefined);
  return {
    done,
    thread,
    stop: async () => {
      await worker.terminate();
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
