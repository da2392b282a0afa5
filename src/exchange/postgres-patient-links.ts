/**
 * Patient links in the PostgreSQL store's database (migration 15), shared by the replicas (docs/replicas.md,
 * "Patient links at every replica"): a Patient linked through one replica has its npid at every other; a link
 * token is redeemed once for the whole service; the home's locator, the disclosures made under links and the
 * pending wrong-link reports are the service's, not a replica's. The same behaviour as the data directory's
 * PatientLinkStore (patient-links.ts), which it mirrors table for table. Reads go to the database each time (no
 * cache: a link made or ended at another replica counts from its commit).
 *
 * A link and an unlink run in one transaction holding a transaction-scoped advisory lock on the npid (link) or the
 * local Patient (both), so two replicas linking unrelated Patients to one npid at once cannot both succeed, and a
 * relink's ended link and its pending report are written with it.
 */
import type pg from 'pg';
import {
  DISCLOSURE_COLUMNS,
  disclosureOfRow,
  disclosureValues,
  endedOfRow,
  linkConflict,
  linkOfRow,
  type DisclosureRow,
  type EndedLink,
  type HistoryRow,
  type LinkDisclosure,
  type LinkRow,
  type PatientLink,
  type PatientLinkStorage,
  type PendingWrongLinkReport,
} from './patient-links.js';

const LINK_COLUMNS = 'local_patient, npid, home_msp, linked_at';

/** Namespace of the links' advisory locks ("HIEL"); the second key is a hash of what is locked. */
const LINK_LOCK = 0x4849454c;

export class PostgresPatientLinks implements PatientLinkStorage {
  private readonly S: string;

  constructor(
    private readonly pool: pg.Pool,
    schema: string,
  ) {
    this.S = `"${schema.replace(/"/g, '""')}"`;
  }

  async spend(token: string, expiresAt: number, now: number): Promise<boolean> {
    await this.pool.query(`DELETE FROM ${this.S}.spent_link_token WHERE expires_at < $1`, [now]);
    const { rowCount } = await this.pool.query(
      `INSERT INTO ${this.S}.spent_link_token (token, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
      [token, expiresAt],
    );
    return rowCount === 1;
  }

  async locate(npid: string, custodianMsp: string, since: string): Promise<void> {
    await this.pool.query(
      `INSERT INTO ${this.S}.link_locator (npid, custodian_msp, since) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
      [npid, custodianMsp, since],
    );
  }

  async custodiansOf(npid: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ custodian_msp: string }>(
      `SELECT custodian_msp FROM ${this.S}.link_locator WHERE npid = $1 ORDER BY custodian_msp`,
      [npid],
    );
    return rows.map((row) => row.custodian_msp);
  }

  async linkOf(localPatient: string): Promise<PatientLink | undefined> {
    const { rows } = await this.pool.query<LinkRow>(
      `SELECT ${LINK_COLUMNS} FROM ${this.S}.patient_link WHERE local_patient = $1`,
      [localPatient],
    );
    return rows[0] && linkOfRow(rows[0]);
  }

  async linksTo(npid: string): Promise<PatientLink[]> {
    const { rows } = await this.pool.query<LinkRow>(
      `SELECT ${LINK_COLUMNS} FROM ${this.S}.patient_link WHERE npid = $1 ORDER BY local_patient`,
      [npid],
    );
    return rows.map(linkOfRow);
  }

  link(link: PatientLink, allowed?: readonly string[]): Promise<EndedLink | undefined> {
    return this.transaction([link.npid, link.localPatient], async (client) => {
      if (allowed) {
        const { rows } = await client.query<{ local_patient: string }>(
          `SELECT local_patient FROM ${this.S}.patient_link WHERE npid = $1 AND local_patient <> $2`,
          [link.npid, link.localPatient],
        );
        for (const row of rows) if (!allowed.includes(row.local_patient)) linkConflict(row.local_patient);
      }
      const previous = await this.linkIn(client, link.localPatient);
      let ended: EndedLink | undefined;
      if (previous && (previous.npid !== link.npid || previous.homeMsp !== link.homeMsp)) {
        ended = await this.remember(client, previous, link.linkedAt, 'corrected');
        await client.query(
          `INSERT INTO ${this.S}.wrong_link_report (history_seq, owner_npid) VALUES ($1, $2)`,
          [ended.seq, link.npid],
        );
      }
      await client.query(
        `INSERT INTO ${this.S}.patient_link (${LINK_COLUMNS}) VALUES ($1, $2, $3, $4)
         ON CONFLICT (local_patient) DO UPDATE SET npid = excluded.npid, home_msp = excluded.home_msp,
           linked_at = excluded.linked_at`,
        [link.localPatient, link.npid, link.homeMsp, link.linkedAt],
      );
      return ended;
    });
  }

  unlink(localPatient: string, at: string, wrong = false): Promise<EndedLink | undefined> {
    return this.transaction([localPatient], async (client) => {
      const previous = await this.linkIn(client, localPatient);
      if (!previous) return undefined;
      const ended = await this.remember(client, previous, at, wrong ? 'wrong' : 'revoked');
      if (wrong)
        await client.query(`INSERT INTO ${this.S}.wrong_link_report (history_seq) VALUES ($1)`, [ended.seq]);
      await client.query(`DELETE FROM ${this.S}.patient_link WHERE local_patient = $1`, [localPatient]);
      return ended;
    });
  }

  async history(localPatient: string): Promise<EndedLink[]> {
    const { rows } = await this.pool.query<HistoryRow>(
      `SELECT * FROM ${this.S}.patient_link_history WHERE local_patient = $1 ORDER BY seq`,
      [localPatient],
    );
    return rows.map(endedOfRow);
  }

  async noteDisclosure(disclosure: LinkDisclosure): Promise<void> {
    await this.pool.query(
      `INSERT INTO ${this.S}.link_disclosure (${DISCLOSURE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      disclosureValues(disclosure),
    );
  }

  async disclosuresUnder(ended: EndedLink): Promise<LinkDisclosure[]> {
    const { rows } = await this.pool.query<DisclosureRow>(
      `SELECT * FROM ${this.S}.link_disclosure WHERE local_patient = $1 AND npid = $2 AND at >= $3 AND at <= $4
       ORDER BY at, seq`,
      [ended.localPatient, ended.npid, ended.linkedAt, ended.endedAt],
    );
    return rows.map(disclosureOfRow);
  }

  async pendingReports(): Promise<PendingWrongLinkReport[]> {
    const { rows } = await this.pool.query<HistoryRow & { owner_npid: string | null }>(
      `SELECT h.*, r.owner_npid FROM ${this.S}.wrong_link_report r
         JOIN ${this.S}.patient_link_history h ON h.seq = r.history_seq
       WHERE r.reported_at IS NULL ORDER BY h.seq`,
    );
    return rows.map((row) => {
      const ended = endedOfRow(row);
      return row.owner_npid === null ? { ended } : { ended, ownerNpid: row.owner_npid };
    });
  }

  async reported(historySeq: number, at: string): Promise<void> {
    await this.pool.query(`UPDATE ${this.S}.wrong_link_report SET reported_at = $1 WHERE history_seq = $2`, [
      at,
      historySeq,
    ]);
  }

  /** The store's pool is the store's to close. */
  close(): void {}

  private async linkIn(client: pg.PoolClient, localPatient: string): Promise<PatientLink | undefined> {
    const { rows } = await client.query<LinkRow>(
      `SELECT ${LINK_COLUMNS} FROM ${this.S}.patient_link WHERE local_patient = $1`,
      [localPatient],
    );
    return rows[0] && linkOfRow(rows[0]);
  }

  private async remember(
    client: pg.PoolClient,
    link: PatientLink,
    endedAt: string,
    reason: EndedLink['reason'],
  ): Promise<EndedLink> {
    const { rows } = await client.query<{ seq: string }>(
      `INSERT INTO ${this.S}.patient_link_history (${LINK_COLUMNS}, ended_at, reason)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`,
      [link.localPatient, link.npid, link.homeMsp, link.linkedAt, endedAt, reason],
    );
    return { ...link, endedAt, reason, seq: Number(rows[0]!.seq) };
  }

  /** Runs `work` in a transaction holding the advisory locks of `keys` (taken in sorted order: no deadlock). */
  private async transaction<T>(keys: string[], work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      for (const key of [...new Set(keys)].sort())
        await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LINK_LOCK, `${this.S}:${key}`]);
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }
}
