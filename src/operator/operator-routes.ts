/**
 * What an operator's probes and Prometheus ask, beside the FHIR base and without authentication:
 * - GET /healthz: the process serves HTTP (liveness);
 * - GET /readyz: every readiness check passes (store, ledger, validator, consent feed, certificates), else 503; a
 *   check may answer `degraded` (a warning: still ready, 200 with status `degraded`);
 * - GET /metrics: Prometheus text (src/operator/metrics.ts), for loopback callers and the addresses --metrics-allow lists.
 * Probe answers name the checks and say ok or failing: no data, no counts, no block numbers.
 */
import { BlockList, isIP } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServiceMetrics } from './metrics.js';
import type { MetricsAllow } from '../config/metrics-allow.js';

/** A check's answer when it passes: nothing (ok), or a warning that leaves the service ready. */
export type ReadinessResult = void | undefined | { degraded: string };

/** One readiness check: resolves when ready (degraded with a warning), throws (or rejects) when not. */
export interface ReadinessCheck {
  name: string;
  check(): Promise<ReadinessResult> | ReadinessResult;
}

export interface OperatorRoutesOptions {
  checks: ReadinessCheck[];
  metrics?: ServiceMetrics;
  /** Who may read /metrics (parseMetricsAllow). */
  metricsAllow: MetricsAllow;
  /** The longest a check may take before it counts as failing (ms). */
  checkTimeoutMs?: number;
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

const JSON_TYPE = 'application/json; charset=utf-8';

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

function metricsAllowed(allow: MetricsAllow, remote: string | undefined): boolean {
  if (allow === 'all') return true;
  if (!remote) return false;
  // A dual-stack socket reports IPv4 callers as ::ffff:a.b.c.d.
  const address = remote.startsWith('::ffff:') && isIP(remote.slice(7)) === 4 ? remote.slice(7) : remote;
  const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
  return LOOPBACK.check(address, type) || allow.check(address, type);
}

async function withTimeout(
  work: Promise<ReadinessResult> | ReadinessResult,
  ms: number,
): Promise<ReadinessResult> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
        timer.unref();
      }),
    ]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

export function registerOperatorRoutes(app: FastifyInstance, options: OperatorRoutesOptions): void {
  const timeoutMs = options.checkTimeoutMs ?? 2000;
  /** Each check's last state other than ok, to log changes once rather than every probe. */
  const failing = new Set<string>();
  const degraded = new Set<string>();

  app.get('/healthz', (_request, reply) =>
    reply.header('content-type', JSON_TYPE).header('cache-control', 'no-store').send('{"status":"alive"}'),
  );

  app.get('/readyz', async (_request, reply) => {
    const results = await Promise.all(
      options.checks.map(async ({ name, check }) => {
        try {
          const result = await withTimeout(check(), timeoutMs);
          if (failing.delete(name)) options.log.info({ check: name }, 'readiness check passes again');
          if (result) {
            if (!degraded.has(name)) {
              degraded.add(name);
              options.log.warn({ check: name, reason: result.degraded }, 'readiness check degraded');
            }
            return [name, 'degraded'] as const;
          }
          degraded.delete(name);
          return [name, 'ok'] as const;
        } catch (err) {
          if (!failing.has(name)) {
            failing.add(name);
            degraded.delete(name);
            // The reason is the service's own (a ledger or store error): no request data.
            options.log.warn(
              { check: name, reason: err instanceof Error ? err.message : String(err) },
              'readiness check failing',
            );
          }
          return [name, 'failing'] as const;
        }
      }),
    );
    const ready = results.every(([, state]) => state !== 'failing');
    const status = !ready
      ? 'not ready'
      : results.some(([, state]) => state === 'degraded')
        ? 'degraded'
        : 'ready';
    return reply
      .code(ready ? 200 : 503)
      .header('content-type', JSON_TYPE)
      .header('cache-control', 'no-store')
      .send(JSON.stringify({ status, checks: Object.fromEntries(results) }));
  });

  const metrics = options.metrics;
  if (metrics) {
    app.get('/metrics', async (request: FastifyRequest, reply: FastifyReply) => {
      if (!metricsAllowed(options.metricsAllow, request.socket.remoteAddress)) {
        return reply
          .code(403)
          .header('content-type', 'text/plain; charset=utf-8')
          .send('metrics are served to loopback callers and the addresses of --metrics-allow only\n');
      }
      const { contentType, body } = await metrics.text();
      return reply.header('content-type', contentType).header('cache-control', 'no-store').send(body);
    });
  }
}
