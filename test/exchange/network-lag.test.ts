/**
 * Revocation timing against the ledger (docs/exchange.md): a member refuses network requests (503 `ledger-behind`,
 * Retry-After) while its consent event stream is more than `--network-max-lag-seconds` behind the ledger, or
 * stopped. The peer's event delivery is held back at the ledger port (the only fake: a stalled peer), on a real
 * embedded chain; the consent service's clock is injected, so nothing waits for time to pass.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsentService } from '../../src/consent/consent-service.js';
import { NetworkIds } from '../../src/consent/network-ids.js';
import { MemberDirectory } from '../../src/exchange/member-directory.js';
import { refuseWhileBehind } from '../../src/exchange/network-request.js';
import { FhirError } from '../../src/fhir/outcome.js';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import type { EventStream, Ledger, LedgerEvent } from '../../src/ledger/ledger.js';
import { makeOrg, openChain, TestPseudonyms, tempDir, type TestOrg } from '../ledger/helpers.js';

/** The ledger, with its event delivery held until `release()` and ended by `stop()` (a stalled, then lost peer). */
function stalledPeer(ledger: Ledger): Ledger & { release(): void; stop(): void } {
  let release!: () => void;
  const released = new Promise<'released'>((resolve) => (release = () => resolve('released')));
  let stop!: () => void;
  const stopped = new Promise<'stopped'>((resolve) => (stop = () => resolve('stopped')));
  return {
    kind: ledger.kind,
    submit: (transaction, args) => ledger.submit(transaction, args),
    evaluate: (transaction, args) => ledger.evaluate(transaction, args),
    height: () => ledger.height(),
    transactionStatus: (id) => ledger.transactionStatus(id),
    close: () => ledger.close(),
    release,
    stop,
    events(startBlock?: number): EventStream {
      const inner = ledger.events(startBlock);
      return {
        close: () => inner.close(),
        async *[Symbol.asyncIterator](): AsyncGenerator<LedgerEvent> {
          const events = inner[Symbol.asyncIterator]();
          if ((await Promise.race([released, stopped])) === 'stopped') return;
          for (;;) {
            const next = await Promise.race([events.next(), stopped]);
            if (next === 'stopped' || next.done) return;
            yield next.value;
          }
        },
      };
    },
  };
}

let cleanup: () => Promise<void>;
let chain: EmbeddedChain;
let org: TestOrg;
let peer: ReturnType<typeof stalledPeer>;
let consent: ConsentService;
let clock = Date.UTC(2026, 5, 1);

beforeAll(async () => {
  const temp = await tempDir();
  cleanup = temp.cleanup;
  org = await makeOrg(temp.dir, 'Org1MSP');
  chain = await openChain(temp.dir, [org]);
  peer = stalledPeer(chain.connect(org.service));
  consent = await ConsentService.open({
    ledger: peer,
    pseudonyms: new TestPseudonyms(),
    networkIds: new NetworkIds(),
    now: () => clock,
  });
});

afterAll(async () => {
  await consent?.close();
  await chain?.close();
  await cleanup?.();
});

async function refusal(maxLagSeconds: number): Promise<FhirError | undefined> {
  try {
    await refuseWhileBehind(consent, maxLagSeconds);
    return undefined;
  } catch (err) {
    return err as FhirError;
  }
}

let blocks = 0;

/** A block the stalled peer does not deliver: this member's directory entry. */
async function commitBlock(): Promise<void> {
  const enrollment = await org.ca.enroll({
    enrollmentId: `exch-${++blocks}`,
    attrs: { 'hie.role': 'exchange-service' },
    keyType: 'P-256',
  });
  await new MemberDirectory(chain.connect(org.service)).register({
    mspId: org.mspId,
    organization: 'Hospital',
    fhirBaseUrl: 'https://hospital.example/fhir',
    serviceCertificate: enrollment.certificate,
  });
}

describe('refusing network requests while the consent stream is behind', () => {
  it('serves while caught up; refuses once a block has waited more than the limit; serves again once delivered', async () => {
    expect(await consent.secondsBehind()).toBe(0);
    await commitBlock();
    // Seen behind now: not yet for longer than the limit.
    expect(await refusal(30)).toBeUndefined();
    clock += 30_000;
    expect(await refusal(30)).toBeUndefined();
    clock += 1_000;
    const refused = await refusal(30);
    expect(refused?.code).toBe('ledger-behind');
    expect(refused?.status).toBe(503);
    expect(refused?.headers['retry-after']).toBeDefined();
    // The peer delivers: caught up, served again (polled: the feed applies the events on its own).
    peer.release();
    while ((await consent.secondsBehind()) !== 0) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await refusal(30)).toBeUndefined();
  });

  it('refuses while the event stream is stopped, whatever the limit', async () => {
    peer.stop();
    while ((await consent.lag()).following) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await consent.secondsBehind()).toBe(Infinity);
    expect((await refusal(86_400))?.code).toBe('ledger-behind');
  });
});
