/**
 * Issue 18: "Records received from other members and already verified against their anchors are not refused for
 * rules stricter than the network's pinned package set". The network pins `bindings=warn` (--network-validation);
 * A writes at the network's levels, B enforces bindings locally (its default, `error`). B's own write of a record
 * with a binding error is refused; A's verified record with the same error is saved at B (the network's level),
 * with the binding error as a warning.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordEvidenceBundle } from '../../src/exchange/record-evidence.js';
import { receivedBundleText, verifyEvidenceBundle } from '../../src/exchange/record-verifier.js';
import { CachedBatchSource } from '../../src/integrity/verification.js';
import { demoPatient, observation, startNetwork, type TestNetwork } from './network-harness.js';

let network: TestNetwork;
let drB: string;
let fetched: string;

/** Observation.status is bound (required) to observation-status: `done` is not in it. */
const withBadStatus = (id: string, patient: string) => ({
  ...observation(id, patient, { code: '2339-0' }),
  status: 'done',
});

beforeAll(async () => {
  network = await startNetwork(
    { validation: 'full', networkValidation: 'bindings=warn' },
    { A: { validationLevel: 'bindings=warn' } },
  );
  const { a, b } = network;
  await a.request(a.system, 'PUT', '/Patient/pa1', demoPatient('pa1'));
  await b.request(b.system, 'PUT', '/Patient/pb1', demoPatient('pb1'));
  drB = await b.enrol('dr-b', 'clinician', 'Practitioner/dr-b', b.organization);
  const obs = await a.request(a.system, 'PUT', '/Observation/o1', withBadStatus('o1', 'Patient/pa1'));
  expect(obs.status, obs.text).toBe(201);
  await a.app.integrity!.anchorer.drain();
  const versions = [(await a.app.store.read('Observation', 'o1'))!];
  const aEntry = await a.entry();
  const evidence = await recordEvidenceBundle(
    versions,
    { store: a.app.store, journal: a.app.integrity!.journal },
    aEntry,
  );
  const answer = await verifyEvidenceBundle(evidence, aEntry, new CachedBatchSource(b.app.ledger!));
  expect(answer.records.map((r) => r.status)).toEqual(['verified']);
  fetched = receivedBundleText([answer]);
});

afterAll(async () => {
  await network?.stop();
});

describe('records received and verified are held to the network’s pinned levels', () => {
  it('B refuses its own write with the binding error (bindings at error here)', async () => {
    const { b } = network;
    const own = await b.request(b.system, 'PUT', '/Observation/ob1', withBadStatus('ob1', 'Patient/pb1'));
    expect(own.status, own.text).toBe(400);
    expect(own.text).toContain('Observation.status');
  });

  it('B saves A’s verified record with the same error, at the network’s level (a warning)', async () => {
    const { b } = network;
    const res = await b.request(drB, 'POST', '/Patient/pb1/$network-save', fetched);
    expect(res.status, res.text).toBe(200);
    const copy = (
      res.body.parameter as {
        name: string;
        part?: { name: string; valueReference?: { reference: string } }[];
      }[]
    )
      .find((p) => p.name === 'saved')!
      .part!.find((p) => p.name === 'copy')!.valueReference!.reference;
    const stored = await b.request(drB, 'GET', `/${copy}`);
    expect(stored.status, stored.text).toBe(200);
    expect(stored.body.status).toBe('done');
  });
});
