/**
 * The schema version check both stores' migration runners make at open (sqlite/sqlite-store.ts, postgres/
 * postgres-store.ts): a store whose schema is newer than this build's migrations was written by a newer hie-ledger,
 * and an older build must not run on it (its statements may miss what the newer schema requires, or wait on what
 * it no longer has). The CLI reports it in one line and exits 2, as for the data directory's other errors.
 */

/** A store written by a newer hie-ledger than this build: refused at open. */
export class NewerStoreSchemaError extends Error {
  override readonly name = 'NewerStoreSchemaError';

  constructor(
    /** The newest migration the store records. */
    readonly schema: number,
    /** The newest migration this build knows. */
    readonly known: number,
  ) {
    super(
      `this store was written by a newer hie-ledger: schema ${schema}, this build knows up to ${known} ` +
        '(run the newer hie-ledger, or restore the store from its backup before the upgrade)',
    );
  }
}

/** Throws NewerStoreSchemaError when `applied` (the store's newest migration) is past `known` (this build's). */
export function refuseNewerSchema(applied: number, known: number): void {
  if (applied > known) throw new NewerStoreSchemaError(applied, known);
}
