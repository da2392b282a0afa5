/**
 * The full-text documents of the SQLite store (`_text` and `_content`, src/fhir/search/full-text.ts), written by the
 * store itself (schema migration 12) into the contentless FTS5 table `search_text`, keyed by rowid 2 seq + 1 for
 * `_content` (seq: the version's resource_version.seq).
 *
 * Why queued: FTS5 turns its pending data into a new level-0 segment at every statement savepoint, so a document
 * inserted by each write (the triggers of migrations 6-11) cost a segment flush per write, whatever the group commit
 * did. Here the documents of one transaction wait in memory and go in with one statement just before its COMMIT
 * (`flush`): one flush per commit. Deletions run at once, by rowid (a rowid not in the table is a no-op: FTS5 finds
 * no entry for it in its docsize table); a deleted document still waiting is dropped from the queue.
 *
 * A write that fails inside a batch has its savepoint rolled back: `mark` before it and `rollbackTo` after the
 * failure put the queue back as it was (documents it added dropped, documents it removed put back).
 */
import type Database from 'better-sqlite3';

/** The full-text parameters (index entries of type `special`, src/fhir/search/full-text.ts FULL_TEXT_PARAMS). */
export const FULL_TEXT_FIELDS = ['_text', '_content'] as const;
export type FullTextParam = (typeof FULL_TEXT_FIELDS)[number];

interface TextDocument {
  rowid: number;
  body: string;
}

/** Where the queue was: `rollbackTo` returns it there. */
export interface TextQueueMark {
  readonly added: number;
  readonly removed: number;
}

/** The document number of a version's field: 2 seq, + 1 for `_content` (search-sql.ts reads it back). */
export function textRowid(seq: number, param: FullTextParam): number {
  return seq * 2 + (param === '_content' ? 1 : 0);
}

export class TextDocuments {
  /** Documents queued in this transaction, in order; undefined where one was removed again. */
  private readonly queued: (TextDocument | undefined)[] = [];
  /** Position in `queued` of each queued rowid. */
  private readonly position = new Map<number, number>();
  /** Queued documents removed again (by a later deletion or replacement), to put back if that is rolled back. */
  private readonly removed: { at: number; document: TextDocument }[] = [];
  private readonly insertAll: Database.Statement;
  private readonly deleteVersion: Database.Statement;
  private readonly fieldsOf: Database.Statement;

  constructor(db: Database.Database) {
    // One statement for the whole queue: a JSON array of [rowid, body] (bodies are lower-case letters and spaces).
    this.insertAll = db.prepare(
      'INSERT INTO search_text (rowid, body) SELECT value ->> 0, value ->> 1 FROM json_each(?)',
    );
    this.deleteVersion = db.prepare('DELETE FROM search_text WHERE rowid IN (?, ?)');
    this.fieldsOf = db.prepare('SELECT rowid FROM search_text WHERE rowid IN (?, ?)').pluck();
  }

  /** Queues the document of a version's field (replacing one queued for it). */
  add(seq: number, param: FullTextParam, body: string): void {
    const rowid = textRowid(seq, param);
    this.unqueue(rowid);
    this.position.set(rowid, this.queued.length);
    this.queued.push({ rowid, body });
  }

  /** Deletes the documents of a version (its index rows are being deleted): stored ones by rowid, queued ones. */
  delete(seq: number): void {
    const rowids = FULL_TEXT_FIELDS.map((param) => textRowid(seq, param));
    for (const rowid of rowids) this.unqueue(rowid);
    this.deleteVersion.run(...rowids);
  }

  /** The fields a version has a stored document for (`_text` first). */
  storedFields(seq: number): FullTextParam[] {
    const stored = new Set(this.fieldsOf.all(...FULL_TEXT_FIELDS.map((param) => textRowid(seq, param))));
    return FULL_TEXT_FIELDS.filter((param) => stored.has(textRowid(seq, param)));
  }

  mark(): TextQueueMark {
    return { added: this.queued.length, removed: this.removed.length };
  }

  /** The queue as it was at `mark` (the savepoint taken with it rolled back). */
  rollbackTo(mark: TextQueueMark): void {
    while (this.queued.length > mark.added) {
      const at = this.queued.length - 1;
      const document = this.queued.pop();
      if (document && this.position.get(document.rowid) === at) this.position.delete(document.rowid);
    }
    while (this.removed.length > mark.removed) {
      const { at, document } = this.removed.pop()!;
      if (at >= mark.added) continue; // added after the mark: gone with it
      this.queued[at] = document;
      this.position.set(document.rowid, at);
    }
  }

  /** Inserts the queued documents (one statement, in rowid order), just before the transaction commits. */
  flush(): void {
    const documents: [number, string][] = [];
    for (const document of this.queued) if (document) documents.push([document.rowid, document.body]);
    this.clear();
    if (documents.length === 0) return;
    // FTS5 starts a new segment when a rowid is below the previous one: ascending, they all go into one.
    documents.sort((a, b) => a[0] - b[0]);
    this.insertAll.run(JSON.stringify(documents));
  }

  /** Forgets the queue (the transaction rolled back, or its documents were inserted). */
  clear(): void {
    this.queued.length = 0;
    this.removed.length = 0;
    this.position.clear();
  }

  private unqueue(rowid: number): void {
    const at = this.position.get(rowid);
    if (at === undefined) return;
    this.removed.push({ at, document: this.queued[at]! });
    this.queued[at] = undefined;
    this.position.delete(rowid);
  }
}
