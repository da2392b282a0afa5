/**
 * Follows one PostgreSQL notification channel on a connection of its own (LISTEN), as the replicas' shared state
 * needs: each payload is handed on; when the connection is lost it is opened again and `reload` is called (what
 * was notified meanwhile was missed). Returns the stop function.
 */
import pg from 'pg';

export interface ChannelLog {
  warn(obj: object, msg: string): void;
}

export interface ChannelListener {
  /** A notification's payload (its handling's failure is logged, never thrown). */
  payload(payload: string): Promise<void>;
  /** Called after the connection was opened again. */
  reload(): Promise<void>;
  log?: ChannelLog;
  /** What is followed, for the log: `participants`. */
  what: string;
}

/** Delay before a lost listening connection is opened again. */
const RELISTEN_MS = 500;

export async function listenOnChannel(
  pool: pg.Pool,
  channel: string,
  listener: ChannelListener,
): Promise<() => Promise<void>> {
  let stopped = false;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  const warn = (msg: string, err?: Error) => listener.log?.warn(err ? { err: err.message } : {}, msg);
  const onNotification = (message: pg.Notification) => {
    if (stopped || message.channel !== channel || message.payload === undefined) return;
    listener
      .payload(message.payload)
      .catch((err: Error) => warn(`${listener.what}: notification not read`, err));
  };
  const connect = async (): Promise<void> => {
    const next = new pg.Client(pool.options);
    next.on('notification', onNotification);
    next.on('error', () => lost(next));
    next.on('end', () => lost(next));
    await next.connect();
    await next.query(`LISTEN ${channel}`);
    client = next;
  };
  const lost = (which: pg.Client) => {
    if (stopped || client !== which) return;
    client = undefined;
    which.removeAllListeners('notification');
    void which.end().catch(() => undefined);
    warn(`${listener.what}: listening connection lost, listening again`);
    const retry = () => {
      timer = undefined;
      if (stopped) return;
      connect().then(
        () => listener.reload().catch((err: Error) => warn(`${listener.what}: not reloaded`, err)),
        () => (timer = setTimeout(retry, RELISTEN_MS)),
      );
    };
    timer = setTimeout(retry, RELISTEN_MS);
  };
  await connect();
  return async () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    const open = client;
    client = undefined;
    await open?.end().catch(() => undefined);
  };
}
