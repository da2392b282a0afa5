/**
 * The participants in the PostgreSQL store's database (migration 12: `participant`), shared by every replica: a
 * client registered once (`hie-ledger participant ... --store postgres`) gets a token at any replica, and a
 * revocation is refused by every replica from its next request after the notification.
 *
 * isActive is asked on every request and must answer at once, so each replica keeps the set of enrolled client
 * ids in memory: loaded at start, updated by its own writes and lookups, and by the notification each write sends
 * on the schema's channel (`pg_notify`, delivered at commit). After its listening connection was lost a replica
 * listens again and reloads the set. A client enrolled at another replica whose notification has not arrived yet
 * is refused (fail closed) until it does, or until this replica looks it up (`findClient`, the token endpoint).
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { IdentityEnrollment, IdentityProvider } from '../ledger/identity/identity-provider.js';
import type { EcKeyType } from '../ledger/identity/embedded-ca.js';
import type { ClientRecord } from './tokens.js';
import { listenOnChannel, type ChannelLog } from '../platform/pg-channel.js';
import {
  clientRecordOf,
  enrolmentSteps,
  type ClientKeys,
  type Participant,
  type ParticipantInput,
  type ParticipantRecords,
  type ParticipantRegistry,
  type ParticipantStatus,
  type ParticipantRow,
  toParticipant,
} from './participants.js';

export interface PostgresParticipantsOptions {
  pool: pg.Pool;
  schema: string;
  /** The organisation's CA: needed to register, enrol and revoke (not to authenticate). */
  identity?: IdentityProvider;
  log?: ChannelLog;
}

export class PostgresParticipants implements ParticipantRegistry {
  private readonly pool: pg.Pool;
  private readonly S: string;
  private readonly channel: string;
  private readonly steps: Pick<ParticipantRegistry, 'register' | 'enroll' | 'revoke'>;
  /** The client ids enrolled and not revoked, as this replica last learnt (isActive). */
  private readonly enrolled = new Set<string>();
  private readonly keys: ClientKeys = new Map();
  /**
   * Reads are numbered as they start; a client's state is taken from a read only if none started later was
   * applied already (reads on several connections may answer out of order: an older "enrolled" must not undo a
   * newer "revoked").
   */
  private reads = 0;
  private readonly appliedRead = new Map<string, number>();
  private stopListening?: () => Promise<void>;

  private constructor(options: PostgresParticipantsOptions) {
    this.pool = options.pool;
    this.S = `"${options.schema.replace(/"/g, '""')}"`;
    this.channel = `hie_participant_${createHash('sha256').update(options.schema).digest('hex').slice(0, 16)}`;
    this.steps = enrolmentSteps(this.records(), options.identity);
  }

  /** The participants of a migrated schema; `listen` (a serving replica): follow the other replicas' changes. */
  static async open(
    options: PostgresParticipantsOptions & { listen?: boolean },
  ): Promise<PostgresParticipants> {
    const participants = new PostgresParticipants(options);
    if (options.listen !== false)
      participants.stopListening = await listenOnChannel(options.pool, participants.channel, {
        payload: (clientId) => participants.refresh(clientId),
        reload: () => participants.reload(),
        log: options.log,
        what: 'participants',
      });
    await participants.reload();
    return participants;
  }

  async close(): Promise<void> {
    const stop = this.stopListening;
    this.stopListening = undefined;
    await stop?.();
  }

  /** Reads every enrolled client id again (at start, and after the listening connection was lost). */
  private async reload(): Promise<void> {
    const read = ++this.reads;
    const { rows } = await this.pool.query<{ client_id: string }>(
      `SELECT client_id FROM ${this.S}.participant WHERE status = 'enrolled'`,
    );
    const enrolled = new Set(rows.map((row) => row.client_id));
    for (const clientId of [...this.enrolled, ...enrolled])
      this.note(enrolled.has(clientId) ? 'enrolled' : 'revoked', clientId, read);
  }

  /** Reads one participant's status again (another replica or the CLI changed it). */
  private async refresh(clientId: string): Promise<void> {
    await this.row(clientId);
  }

  private note(status: ParticipantStatus | undefined, clientId: string, read: number): void {
    const applied = this.appliedRead.get(clientId);
    // An unknown client id (anyone may send one to the token endpoint) leaves nothing behind.
    if (status === undefined && applied === undefined && !this.enrolled.has(clientId)) return;
    if ((applied ?? 0) > read) return;
    this.appliedRead.set(clientId, read);
    if (status === 'enrolled') this.enrolled.add(clientId);
    else {
      this.enrolled.delete(clientId);
      this.keys.delete(clientId);
    }
  }

  /** One participant's row; what it says of the status is noted for isActive. */
  private async row(clientId: string): Promise<ParticipantRow | undefined> {
    const read = ++this.reads;
    const { rows } = await this.pool.query<ParticipantRow>(
      `SELECT * FROM ${this.S}.participant WHERE client_id = $1`,
      [clientId],
    );
    this.note(rows[0]?.status, clientId, read);
    return rows[0];
  }

  async get(clientId: string): Promise<Participant | undefined> {
    const row = await this.row(clientId);
    return row ? toParticipant(row) : undefined;
  }

  async list(): Promise<Participant[]> {
    const { rows } = await this.pool.query<ParticipantRow>(
      `SELECT * FROM ${this.S}.participant ORDER BY created_at, client_id`,
    );
    return rows.map(toParticipant);
  }

  async byPseudonym(pseudonym: string): Promise<Participant | undefined> {
    const { rows } = await this.pool.query<ParticipantRow>(
      `SELECT * FROM ${this.S}.participant WHERE pseudonym = $1`,
      [pseudonym],
    );
    return rows[0] ? toParticipant(rows[0]) : undefined;
  }

  async enrolledCertificates(): Promise<string[]> {
    const { rows } = await this.pool.query<{ certificate: string }>(
      `SELECT certificate FROM ${this.S}.participant WHERE status = 'enrolled' AND certificate IS NOT NULL`,
    );
    return rows.map((row) => row.certificate);
  }

  register(input: ParticipantInput): Promise<Participant> {
    return this.steps.register(input);
  }

  enroll(
    input: ParticipantInput & { keyType?: EcKeyType },
  ): Promise<{ participant: Participant; enrollment: IdentityEnrollment }> {
    return this.steps.enroll(input);
  }

  revoke(clientId: string): Promise<Participant> {
    return this.steps.revoke(clientId);
  }

  /** The storage of the enrolment steps: the `participant` table, each change notified to the other replicas. */
  private records(): ParticipantRecords {
    return {
      get: (clientId) => this.get(clientId),
      insertRegistered: async (p) => {
        // Two registrations of one client id at once: the primary key lets one in.
        const { rowCount } = await this.pool.query(
          `INSERT INTO ${this.S}.participant (client_id, pseudonym, role, resource, organization, status, created_at)
           VALUES ($1, $2, $3, $4, $5, 'registered', $6) ON CONFLICT (client_id) DO NOTHING`,
          [p.clientId, p.pseudonym, p.role, p.resource ?? null, p.organization ?? null, p.createdAt],
        );
        return rowCount === 1;
      },
      markEnrolled: async (clientId, { serial, certificate }) => {
        // Not over a revocation made meanwhile (another replica or the CLI): revoked stays revoked.
        const { rows } = await this.pool.query<ParticipantRow>(
          `WITH u AS (UPDATE ${this.S}.participant SET status = 'enrolled', serial = $1, certificate = $2
                      WHERE client_id = $3 AND status <> 'revoked' RETURNING *)
           SELECT u.*, pg_notify($4, u.client_id) FROM u`,
          [serial, certificate, clientId, this.channel],
        );
        if (!rows[0]) return undefined;
        this.note('enrolled', clientId, ++this.reads);
        return toParticipant(rows[0]);
      },
      markRevoked: async (clientId, revokedAt) => {
        // Every replica refuses it at the notification.
        await this.pool.query(
          `WITH u AS (UPDATE ${this.S}.participant SET status = 'revoked', revoked_at = $1
                      WHERE client_id = $2 AND status <> 'revoked' RETURNING client_id)
           SELECT pg_notify($3, client_id) FROM u`,
          [revokedAt, clientId, this.channel],
        );
        this.note('revoked', clientId, ++this.reads);
      },
    };
  }

  // ClientDirectory (token service)

  async findClient(clientId: string): Promise<ClientRecord | undefined> {
    return clientRecordOf(await this.row(clientId), this.keys);
  }

  isActive(clientId: string): boolean {
    return this.enrolled.has(clientId);
  }
}
