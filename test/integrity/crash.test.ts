/**
 * Crash test: the server, receiving a stream of writes, is killed with SIGKILL. After a restart every acknowledged
 * write is there, and every one of them ends up anchored and verified (the outbox and the batch journal drain).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { cliNodeArgs } from '../support/cli-build.js';
import { runVerify } from '../../src/commands/verify.js';
import { dataDirConfig, eventually } from './helpers.js';

interface Server {
  child: ChildProcess;
  base: string;
  exited: Promise<number | null>;
}

/** Every server process this file started: the afterAll stops those still running, started or still starting. */
const children: ChildProcess[] = [];

/** Starts `hie-ledger serve` on a free port and resolves with its FHIR base URL (from its start-up log line). */
function startServer(dataDir: string): Promise<Server> {
  const child = spawn(
    process.execPath,
    [
      ...cliNodeArgs(),
      'serve',
      '--data-dir',
      dataDir,
      '--port',
      '0',
      '--auth',
      'dev-open',
      '--anchor-batch-size',
      '1000',
      '--anchor-interval-ms',
      '30',
      '--audit-cron',
      'off',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    let output = '';
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /"fhirBase":"([^"]+)"/.exec(output);
      if (match) {
        child.stdout!.off('data', onData);
        child.stdout!.resume();
        resolve({ child, base: match[1], exited });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    void exited.then((code) => reject(new Error(`the server exited (${code}) before listening:\n${output}`)));
  });
}

const observation = (i: number) =>
  JSON.stringify({
    resourceType: 'Observation',
    status: 'final',
    code: { text: `crash ${i}` },
    valueQuantity: { value: 1.5, unit: 'mg' },
  }).replace('"value":1.5', '"value":1.50');

describe('crash in the middle of a stream of writes', () => {
  let dataDir: string;
  let server: Server | undefined;

  afterAll(async () => {
    // A server still starting when the test timed out is not `server` yet: without this it outlived the run.
    for (const child of children) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('keeps every acknowledged write, and anchors and verifies each after restart', async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'hie-crash-'));
    server = await startServer(dataDir);
    const acknowledged: { id: string; versionId: string }[] = [];
    let sent = 0;
    let killed = false;

    // Four concurrent writers; the server is killed once enough writes were acknowledged, with more in flight.
    const writer = async () => {
      while (!killed) {
        const i = sent++;
        try {
          const res = await fetch(`${server!.base}/Observation`, {
            method: 'POST',
            headers: { 'content-type': 'application/fhir+json' },
            body: observation(i),
          });
          if (res.status === 201) {
            const body = (await res.json()) as { id: string; meta: { versionId: string } };
            acknowledged.push({ id: body.id, versionId: body.meta.versionId });
          }
          if (acknowledged.length >= 120 && !killed) {
            killed = true;
            server!.child.kill('SIGKILL');
          }
        } catch {
          // The connection died with the server: not acknowledged.
        }
      }
    };
    await Promise.all([writer(), writer(), writer(), writer()]);
    expect(await server.exited).toBe(null); // killed by the signal, not exited
    expect(acknowledged.length).toBeGreaterThanOrEqual(120);

    server = await startServer(dataDir);
    for (const { id, versionId } of acknowledged) {
      const res = await fetch(`${server.base}/Observation/${id}/_history/${versionId}`);
      expect(res.status, `Observation/${id}`).toBe(200);
      expect(await res.text()).toContain('"value":1.50');
    }
    for (const { id, versionId } of acknowledged) {
      await eventually(async () => {
        const res = await fetch(`${server!.base}/Observation/${id}/_history/${versionId}/$verify`);
        const body = (await res.json()) as { parameter: { name: string; valueBoolean?: boolean }[] };
        return body.parameter.find((p) => p.name === 'verified')?.valueBoolean === true;
      }, `Observation/${id} is anchored and verified`);
    }

    // A clean stop, then the offline audit of the whole data directory.
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    let out = '';
    const sink = new Writable({
      write(chunk, _enc, done) {
        out += String(chunk);
        done();
      },
    });
    const code = await runVerify({ ...dataDirConfig(dataDir), progress: false, out: sink, err: sink });
    expect(out).toContain('OK: every stored version matches the ledger.');
    expect(code).toBe(0);
  }, 120_000);
});
