/**
 * One process owns a data directory (docs/configuration.md, "Data directory"): two services on one directory would
 * anchor the same versions twice and corrupt each other's batches. The owner holds an exclusive SQLite lock on
 * DATA/lock.sqlite for its whole life (`locking_mode = EXCLUSIVE`: a POSIX advisory lock the operating system
 * releases when the process ends, however it ends: a SIGKILL leaves no stale lock). Who holds it is written
 * beside it (DATA/lock.owner.json) so a refused process can name the owner's pid.
 *
 * POSIX locks are not reliable on network file systems (NFS, SMB/CIFS): a data directory there is refused.
 */
import { readFileSync, renameSync, statfsSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ensurePrivateFile, PRIVATE_FILE_MODE } from './private-files.js';

/** What the owner writes about itself. */
export interface DataDirOwner {
  pid: number;
  host: string;
  /** What holds it: `serve`, `participant enroll` ... */
  command: string;
  since: string;
}

/** The data directory is owned by another process (or another lock of this one). */
export class DataDirBusyError extends Error {
  override readonly name = 'DataDirBusyError';
  constructor(
    readonly dataDir: string,
    readonly owner: DataDirOwner | undefined,
  ) {
    super(
      owner
        ? `the data directory ${dataDir} is in use by ${owner.command} (pid ${owner.pid} on ${owner.host}, since ${owner.since}); stop it first`
        : `the data directory ${dataDir} is in use by another process; stop it first`,
    );
  }
}

/** The data directory is on a file system whose locks cannot be trusted. */
export class UntrustedFileSystemError extends Error {
  override readonly name = 'UntrustedFileSystemError';
}

/** statfs magic numbers of network file systems (linux/magic.h). */
const NETWORK_FILE_SYSTEMS = new Map<number, string>([
  [0x6969, 'NFS'],
  [0x517b, 'SMB'],
  [0xff534d42, 'CIFS'],
  [0xfe534d42, 'SMB2'],
  [0x564c, 'NCP'],
  [0x47504653, 'GPFS'],
]);

export interface DataDirLock {
  readonly dataDir: string;
  /** Releases the lock (idempotent). */
  release(): void;
}

function ownerFile(dataDir: string): string {
  return join(dataDir, 'lock.owner.json');
}

function readOwner(dataDir: string): DataDirOwner | undefined {
  try {
    const owner = JSON.parse(readFileSync(ownerFile(dataDir), 'utf8')) as Partial<DataDirOwner>;
    return typeof owner.pid === 'number' && typeof owner.command === 'string'
      ? { pid: owner.pid, host: String(owner.host), command: owner.command, since: String(owner.since) }
      : undefined;
  } catch {
    return undefined;
  }
}

function checkFileSystem(dataDir: string): void {
  let type: number;
  try {
    type = statfsSync(dataDir).type;
  } catch {
    return; // no statfs here: nothing to tell
  }
  const name = NETWORK_FILE_SYSTEMS.get(type >>> 0);
  if (name)
    throw new UntrustedFileSystemError(
      `the data directory ${dataDir} is on a network file system (${name}), where file locks cannot be trusted: put it on a local disk`,
    );
}

/**
 * Takes the data directory's lock for `command`, or throws DataDirBusyError naming the owner (never waits). The
 * directory must exist.
 */
export function lockDataDir(dataDir: string, command: string): DataDirLock {
  checkFileSystem(dataDir);
  const file = join(dataDir, 'lock.sqlite');
  ensurePrivateFile(file);
  const db = new Database(file, { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    // The first write takes the EXCLUSIVE lock; in this locking mode it is kept until the connection closes.
    db.exec('BEGIN EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS owner (id INTEGER PRIMARY KEY)');
    db.exec('COMMIT');
  } catch (err) {
    db.close();
    if (
      (err as { code?: string }).code?.startsWith('SQLITE_BUSY') ||
      (err as { code?: string }).code === 'SQLITE_LOCKED'
    )
      throw new DataDirBusyError(dataDir, readOwner(dataDir));
    throw err;
  }
  const owner: DataDirOwner = {
    pid: process.pid,
    host: hostname(),
    command,
    since: new Date().toISOString(),
  };
  const tmp = `${ownerFile(dataDir)}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(owner)}\n`, { mode: PRIVATE_FILE_MODE });
  renameSync(tmp, ownerFile(dataDir));
  let released = false;
  return {
    dataDir,
    release() {
      if (released) return;
      released = true;
      db.close();
    },
  };
}
