/**
 * GET /metrics: Prometheus text (prom-client) with requests by interaction, resource type and status class,
 * latency histograms, validation failures, the anchor backlog and its oldest entry's age, ledger transactions and
 * errors, consent decisions and the audit backlog. Labels never carry ids or values. Loopback callers only unless
 * --metrics-allow lists the caller (or says all).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openEmbeddedLedger } from '../../src/ledger/embedded/index.js';
import { ServiceMetrics } from '../../src/operator/metrics.js';
import { FaultyLedger, MSP_ID } from '../integrity/helpers.js';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { send, startTestApp, FHIR_JSON, type TestApp } from '../http/helpers.js';
import { actor, privacyConsent, startHarness } from '../access/app-harness.js';

const apps: TestApp[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.stop();
});
async function start(flags: Record<string, unknown> = {}): Promise<TestApp> {
  const app = await startTestApp({}, flags);
  apps.push(app);
  return app;
}

/** The value of one sample line, e.g. `hie_anchor_backlog 3`; undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('GET /metrics', () => {
  it('counts requests, latencies, validation failures, anchors and ledger calls, with no ids or values', async () => {
    const app = await start({ anchoring: 'on' });
    const send = (method: 'GET' | 'POST' | 'PUT', url: string, body?: unknown) =>
      app.fastify.inject({
        method,
        url,
        headers: body === undefined ? {} : FHIR_JSON,
        payload: body === undefined ? undefined : JSON.stringify(body),
      });
    expect(
      (await send('PUT', '/fhir/Patient/MRN7730219', { resourceType: 'Patient', id: 'MRN7730219' }))
        .statusCode,
    ).toBe(201);
    expect((await send('GET', '/fhir/Patient/MRN7730219')).statusCode).toBe(200);
    expect((await send('GET', '/fhir/Patient/MRN0000404')).statusCode).toBe(404);
    expect((await send('GET', '/fhir/Patient?name=Zebulonova')).statusCode).toBe(200);
    expect((await send('GET', '/fhir/Patient/MRN7730219/$everything')).statusCode).toBe(200);
    expect(
      (await send('POST', '/fhir/Observation', { resourceType: 'Observation', status: 'Quintrell-9' }))
        .statusCode,
    ).toBe(400);
    expect((await send('GET', '/fhir/NoSuchType/MRN7730219')).statusCode).toBe(404);
    expect((await send('GET', '/elsewhere/MRN7730219')).statusCode).toBe(404);

    // Before the anchoring worker runs: one version waits.
    const res = await send('GET', '/metrics');
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    let text = res.body;
    const requests = (interaction: string, type: string, status: string) =>
      sample(
        text,
        `hie_http_requests_total{interaction="${interaction}",resource_type="${type}",status_class="${status}"}`,
      );
    expect(requests('update', 'Patient', '2xx')).toBe(1);
    expect(requests('read', 'Patient', '2xx')).toBe(1);
    expect(requests('read', 'Patient', '4xx')).toBe(1);
    expect(requests('search-type', 'Patient', '2xx')).toBe(1);
    expect(requests('$everything', 'Patient', '2xx')).toBe(1);
    expect(requests('create', 'Observation', '4xx')).toBe(1);
    expect(requests('unrouted', '', '4xx')).toBe(1);
    expect(requests('unmatched', '', '4xx')).toBe(1);
    expect(
      sample(
        text,
        'hie_http_request_duration_seconds_count{interaction="read",resource_type="Patient",status_class="2xx"}',
      ),
    ).toBe(1);
    expect(text).toMatch(
      /hie_http_request_duration_seconds_bucket\{le="0\.005",interaction="read",resource_type="Patient",status_class="2xx"\} [01]/,
    );
    expect(sample(text, 'hie_validation_failures_total{resource_type="Observation"}')).toBe(1);
    expect(sample(text, 'hie_anchor_backlog')).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'hie_anchor_oldest_pending_age_seconds')).toBeGreaterThanOrEqual(0);
    expect(sample(text, 'hie_audit_backlog')).toBeGreaterThanOrEqual(0);
    expect(text).toContain('# TYPE hie_consent_decisions_total counter');

    await app.integrity!.anchorer.drain();
    text = (await send('GET', '/metrics')).body;
    expect(sample(text, 'hie_anchor_backlog')).toBe(0);
    expect(sample(text, 'hie_anchor_oldest_pending_age_seconds')).toBe(0);
    expect(text).toMatch(
      /hie_ledger_transactions_total\{kind="submit",transaction="anchor:\w+",outcome="ok"\} \d/,
    );

    // Labels carry interactions, types and status classes only.
    for (const value of ['MRN7730219', 'MRN0000404', 'Zebulonova', 'Quintrell', 'NoSuchType', 'elsewhere'])
      expect(text, value).not.toContain(value);
  });

  it('serves loopback callers only by default; --metrics-allow opens it to listed networks or to all', async () => {
    const closed = await start();
    const from = (app: TestApp, remoteAddress: string) =>
      app.fastify.inject({ method: 'GET', url: '/metrics', remoteAddress });
    expect((await from(closed, '127.0.0.1')).statusCode).toBe(200);
    expect((await from(closed, '::1')).statusCode).toBe(200);
    expect((await from(closed, '::ffff:127.0.0.1')).statusCode).toBe(200);
    const refused = await from(closed, '10.1.2.3');
    expect(refused.statusCode).toBe(403);
    expect(refused.body).not.toContain('hie_');

    const listed = await start({ metricsAllow: '10.0.0.0/8, 192.0.2.7' });
    expect((await from(listed, '10.1.2.3')).statusCode).toBe(200);
    expect((await from(listed, '::ffff:10.1.2.3')).statusCode).toBe(200);
    expect((await from(listed, '192.0.2.7')).statusCode).toBe(200);
    expect((await from(listed, '192.0.2.8')).statusCode).toBe(403);
    expect((await from(listed, '127.0.0.1')).statusCode).toBe(200);

    const open = await start({ metricsAllow: 'all' });
    expect((await from(open, '203.0.113.9')).statusCode).toBe(200);
  });

  it('still answers when a backlog cannot be read (the store closed)', async () => {
    const app = await start();
    await app.store.close();
    const res = await send(app, { method: 'GET', url: '/metrics' }, 200);
    expect(res.body).toContain('# TYPE hie_anchor_backlog gauge');
  });

  it('refuses a --metrics-allow that is not addresses or networks', () => {
    for (const bad of ['10.0.0.0/33', 'example.org', '10.0.0.1/8/2', '::1/129', 'fe80::/x'])
      expect(() => loadConfig({ metricsAllow: bad }, {}), bad).toThrow(ConfigError);
    expect(() => loadConfig({}, { HIE_METRICS_ALLOW: 'loopback,2001:db8::/32' })).not.toThrow();
  });
});

describe('consent decisions in /metrics', () => {
  it('counts permits and denials by outcome, naming no participant or patient', async () => {
    const h = await startHarness();
    try {
      const sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
      const doctor = await h.enrol('dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
      const patient = await h.enrol('pat-9', 'patient', 'Patient/p9');
      expect((await h.request(sys, 'PUT', '/Patient/p9', { resourceType: 'Patient', id: 'p9' })).status).toBe(
        201,
      );
      expect((await h.request(doctor, 'GET', '/Patient/p9')).status).toBe(404);
      const granted = await h.request(
        patient,
        'POST',
        '/Consent',
        privacyConsent('Patient/p9', { type: 'permit', actor: [actor('Practitioner/dr-b')] }),
      );
      expect(granted.status, granted.text).toBe(201);
      expect((await h.request(doctor, 'GET', '/Patient/p9')).status).toBe(200);

      const text = (await h.app.fastify.inject({ method: 'GET', url: '/metrics' })).body;
      expect(sample(text, 'hie_consent_decisions_total{outcome="deny"}')).toBeGreaterThanOrEqual(1);
      expect(sample(text, 'hie_consent_decisions_total{outcome="permit"}')).toBeGreaterThanOrEqual(1);
      expect(text).toMatch(
        /hie_ledger_transactions_total\{kind="submit",transaction="consent:\w+",outcome="ok"\}/,
      );
      for (const name of ['p9', 'dr-b', 'hosp-', 'sys-a', 'pat-9', String(granted.body.id)])
        expect(text, name).not.toContain(name);
    } finally {
      await h.stop();
    }
  });
});

describe('the counting ledger', () => {
  it('passes on a network ledger’s onReachable (the anchorer resumes through it), and has none without', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hie-metrics-ledger-'));
    const network = new FaultyLedger(await openEmbeddedLedger({ dataDir: dir, mspId: MSP_ID }));
    try {
      const metrics = new ServiceMetrics();
      const counted = metrics.countingLedger(network);
      let reached = 0;
      const unsubscribe = counted.onReachable!(() => reached++);
      network.reportReachable();
      unsubscribe();
      network.reportReachable();
      expect(reached).toBe(1);
      expect(metrics.countingLedger(network.inner).onReachable).toBeUndefined();
    } finally {
      await network.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
