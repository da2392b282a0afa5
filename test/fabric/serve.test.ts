/**
 * `hie-ledger serve --ledger fabric --fabric-config FILE`: configuration checks, the --fabric-config file format,
 * and the app wired to a Fabric network (the ledger gateway) instead of the embedded ledger.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app/app.js';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { FabricConfigError, loadFabricConfig } from '../../src/ledger/fabric/config.js';
import type { ResourceValidator } from '../../src/fhir/validation/validator.js';
import { startFabricHarness, type FabricHarness } from './support/harness.js';

let harness: FabricHarness;
/** The validator port, accepting Patients (the ledger is under test here, not validation). */
const validator: ResourceValidator = {
  isResourceType: (type) => type === 'Patient',
  resourceTypes: ['Patient'],
  validate: () => ({ valid: true, issues: [] }),
};
beforeAll(async () => {
  harness = await startFabricHarness();
});
afterAll(async () => harness?.close());

function writeConfig(content: unknown): string {
  const file = join(harness.dir, `fabric-${randomBytes(4).toString('hex')}.json`);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}

describe('configuration', () => {
  it('keeps the embedded ledger as the default and needs a file for fabric', () => {
    expect(loadConfig({}, {}).ledger).toBe('embedded');
    expect(() => loadConfig({ ledger: 'fabric' }, {})).toThrow(ConfigError);
    expect(() => loadConfig({ ledger: 'quantum' }, {})).toThrow(/--ledger/);
    const config = loadConfig({}, { HIE_LEDGER: 'fabric', HIE_FABRIC_CONFIG: 'net/hospital1.json' });
    expect(config.ledger).toBe('fabric');
    expect(config.fabricConfig).toMatch(/net\/hospital1\.json$/);
  });

  it('loads a --fabric-config file, resolving paths against its directory', () => {
    const base = harness.config();
    const file = writeConfig({
      peerEndpoint: base.peerEndpoint,
      hostAlias: base.hostAlias,
      tlsRootCertPath: 'tls-ca.pem',
      mspId: base.mspId,
      channel: 'hie',
      chaincode: 'hie',
      identity: { certPath: base.identity.certPath, keyPath: base.identity.keyPath },
      timeouts: { commitStatusMs: 1000 },
    });
    const loaded = loadFabricConfig(file);
    expect(loaded.tlsRootCertPath).toBe(join(harness.dir, 'tls-ca.pem'));
    expect(loaded.timeouts).toMatchObject({ commitStatusMs: 1000, endorseMs: 15000 });
  });

  it('reads the same configuration from YAML', () => {
    const base = harness.config();
    const file = join(harness.dir, 'hospital1.fabric.yaml');
    writeFileSync(
      file,
      [
        `peerEndpoint: ${base.peerEndpoint}`,
        `hostAlias: ${base.hostAlias}`,
        'tlsRootCertPath: tls-ca.pem',
        `mspId: ${base.mspId}`,
        'channel: hie',
        'chaincode: hie',
        'identity:',
        `  certPath: ${base.identity.certPath}`,
        `  keyPath: ${base.identity.keyPath}`,
        'timeouts:',
        '  endorseMs: 2500',
      ].join('\n'),
    );
    expect(loadFabricConfig(file)).toMatchObject({
      peerEndpoint: base.peerEndpoint,
      tlsRootCertPath: join(harness.dir, 'tls-ca.pem'),
      timeouts: { endorseMs: 2500 },
    });
    writeFileSync(file, 'peerEndpoint: [unclosed');
    expect(() => loadFabricConfig(file)).toThrow(/not valid YAML/);
  });

  it('names what is wrong in a bad file', () => {
    const base = harness.config();
    const valid = {
      peerEndpoint: base.peerEndpoint,
      tlsRootCertPath: base.tlsRootCertPath,
      mspId: 'Hospital1MSP',
      channel: 'hie',
      chaincode: 'hie',
      identity: { certPath: base.identity.certPath, keyPath: base.identity.keyPath },
    };
    expect(() => loadFabricConfig(writeConfig('{ not json'))).toThrow(/not valid JSON/);
    expect(() => loadFabricConfig(writeConfig({ ...valid, peerEndpoint: 'grpcs://peer' }))).toThrow(
      /host:port/,
    );
    expect(() => loadFabricConfig(writeConfig({ ...valid, mspId: '' }))).toThrow(/mspId/);
    expect(() =>
      loadFabricConfig(writeConfig({ ...valid, identity: { certPath: 'missing.pem', keyPath: 'k' } })),
    ).toThrow(/cannot read .*missing\.pem/);
    expect(() => loadFabricConfig(writeConfig({ ...valid, peer: 'x' }))).toThrow(FabricConfigError);
    expect(() => loadFabricConfig(join(harness.dir, 'absent.json'))).toThrow(/cannot read it/);
  });
});

describe('buildApp with --ledger fabric', () => {
  it('connects the app to the Fabric network through the gateway', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'hie-serve-fabric-'));
    const base = harness.config();
    const file = writeConfig({ ...base, timeouts: undefined, checkpointPath: undefined, ca: undefined });
    const validator: ResourceValidator = {
      validate: async () => ({ valid: true, issues: [] }),
    } as unknown as ResourceValidator;
    const app = await buildApp(
      loadConfig({ dataDir, ledger: 'fabric', fabricConfig: file, port: '0', logLevel: 'silent' }, {}),
      { validator },
    );
    try {
      expect(app.ledger?.kind).toBe('fabric');
      const key = randomBytes(32).toString('hex');
      const committed = await app.ledger!.submit('anchor:AnchorVersion', [
        key,
        randomBytes(32).toString('hex'),
      ]);
      expect(harness.server.committed).toContain(committed.transactionId);
      expect(JSON.parse(await app.ledger!.evaluate('anchor:ReadAnchor', [key])).txId).toBe(
        committed.transactionId,
      );
    } finally {
      await app.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('serve on Fabric while the peer is away', () => {
  it('starts, stores writes with their anchors pending, and anchors them once the peer returns', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'hie-serve-away-'));
    const base = harness.config();
    const file = writeConfig({ ...base, timeouts: undefined, checkpointPath: undefined, ca: undefined });
    const committedBefore = harness.server.committed.length;
    harness.server.stop();
    let app: Awaited<ReturnType<typeof buildApp>> | undefined;
    try {
      app = await buildApp(
        loadConfig(
          {
            dataDir,
            ledger: 'fabric',
            fabricConfig: file,
            logLevel: 'silent',
            auth: 'dev-open',
            anchorBatchSize: '10',
            anchorIntervalMs: '50',
            auditCron: 'off',
          },
          {},
        ),
        { validator },
      );
      const created = await app.fastify.inject({
        method: 'POST',
        url: '/fhir/Patient',
        headers: { 'content-type': 'application/fhir+json' },
        payload: JSON.stringify({ resourceType: 'Patient', gender: 'female' }),
      });
      expect(created.statusCode, created.body).toBe(201);
      const anchorer = app.integrity!.anchorer;
      while (anchorer.status().consecutiveFailures === 0) await new Promise((r) => setTimeout(r, 50));
      expect(anchorer.status().committedBatches).toBe(0);
      expect(harness.server.committed.length).toBe(committedBefore);

      await harness.server.start();
      while (anchorer.status().committedBatches === 0) await new Promise((r) => setTimeout(r, 100));
      expect(harness.server.committed.length).toBe(committedBefore + 1);
    } finally {
      await app?.close();
      if (!harness.server.listening) await harness.server.start();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
