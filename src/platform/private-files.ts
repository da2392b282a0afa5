/**
 * Everything the service keeps in its data directory is for its own user only: directories 0700, files 0600
 * (the store holds health data; identity, secrets and checkpoints decide access). `hie-ledger serve` sets the
 * umask to 0077, and every directory and file is also created with its mode, so the rule holds without the umask
 * (tests, embedding). Data directories of older versions (0755/0644) are tightened at start.
 */
import { chmodSync, closeSync, lstatSync, mkdirSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** `mkdir -p` with mode 0700 for every directory it creates, and `dir` itself tightened. */
export function mkdirPrivate(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  tighten(dir, PRIVATE_DIR_MODE);
}

/**
 * Creates `file` empty with mode 0600 unless it exists (and tightens it when it does). Called before SQLite opens
 * a database: SQLite creates the file 0644, and gives its -wal, -shm and -journal files the database file's mode.
 */
export function ensurePrivateFile(file: string): void {
  if (file === '' || file === ':memory:' || file.startsWith('file:')) return; // no file of its own
  closeSync(openSync(file, 'a', PRIVATE_FILE_MODE));
  tighten(file, PRIVATE_FILE_MODE);
}

function tighten(path: string, mode: number): void {
  const stat = lstatSync(path);
  if ((stat.mode & 0o777) !== mode && ownedByUs(stat.uid)) chmodSync(path, mode);
}

function ownedByUs(uid: number): boolean {
  return process.getuid === undefined || uid === process.getuid();
}

/**
 * Walks the data directory and sets 0700 on every directory and 0600 on every file this user owns (symbolic links
 * are not followed). Returns how many entries it changed.
 */
export function tightenDataDir(dataDir: string): number {
  let changed = 0;
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isSymbolicLink()) continue;
      const wanted = entry.isDirectory() ? PRIVATE_DIR_MODE : PRIVATE_FILE_MODE;
      let stat;
      try {
        stat = lstatSync(path);
      } catch {
        continue; // removed meanwhile (a SQLite -journal)
      }
      if ((stat.mode & 0o777) !== wanted && ownedByUs(stat.uid)) {
        chmodSync(path, wanted);
        changed++;
      }
      if (entry.isDirectory()) walk(path);
    }
  };
  const root = lstatSync(dataDir);
  if ((root.mode & 0o777) !== PRIVATE_DIR_MODE && ownedByUs(root.uid)) {
    chmodSync(dataDir, PRIVATE_DIR_MODE);
    changed++;
  }
  walk(dataDir);
  return changed;
}
