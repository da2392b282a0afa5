/**
 * Against a real Fabric network: network/scripts/test-real-fabric.sh brings one up (FABRIC_BIN), deploys the
 * chaincode and sets HIE_REAL_FABRIC_CONFIG to hospital1's connection file (fabric-config.sh). Then the Ledger
 * contract suite runs through the Fabric adapter on the real peers, and the service end to end with
 * --ledger fabric. Without that variable (CI: no Fabric binaries, no Docker) the file is skipped, saying why.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadFabricConfig } from '../../src/ledger/fabric/config.js';
import { openFabricLedger } from '../../src/ledger/fabric/fabric-ledger.js';
import { FabricCaIdentityProvider } from '../../src/ledger/identity/fabric-ca.js';
import { describeLedgerContract } from '../ledger/ledger-contract.js';
import { FHIR_JSON, json, startTestApp } from '../http/helpers.js';

const configFile = process.env.HIE_REAL_FABRIC_CONFIG;

interface Parameters {
  parameter: { name: string; valueBoolean?: boolean; valueCode?: string; valueString?: string }[];
}
const param = (result: Parameters, name: string) => {
  const found = result.parameter.find((p) => p.name === name);
  return found?.valueBoolean ?? found?.valueCode ?? found?.valueString;
};

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 45_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

if (!configFile) {
  describe.skip('real Fabric network: skipped, HIE_REAL_FABRIC_CONFIG is not set (network/scripts/test-real-fabric.sh sets it)', () => {
    it('needs a running network', () => undefined);
  });
} else {
  const config = loadFabricConfig(configFile);

  describeLedgerContract('fabric (real network)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hie-real-fabric-'));
    if (!config.ca) throw new Error(`${configFile} has no "ca" section (fabric-config.sh writes one)`);
    // An identity of the same organisation without the service role, from the org's Fabric CA.
    const id = `clinician-${randomBytes(4).toString('hex')}`;
    const clinician = await FabricCaIdentityProvider.fromConfig(config.ca).enroll({
      enrollmentId: id,
      attrs: { 'hie.role': 'clinician', 'hie.id': id },
      keyType: 'P-256',
    });
    writeFileSync(join(dir, 'clinician-cert.pem'), clinician.certificate);
    writeFileSync(join(dir, 'clinician-key.pem'), clinician.privateKey, { mode: 0o600 });
    const ledger = openFabricLedger({ config, checkpointPath: join(dir, 'fabric-events.json') });
    const nonServiceLedger = openFabricLedger({
      config: {
        ...config,
        identity: { certPath: join(dir, 'clinician-cert.pem'), keyPath: join(dir, 'clinician-key.pem') },
      },
    });
    return {
      mspId: config.mspId,
      ledger,
      nonServiceLedger,
      async close() {
        await ledger.close();
        await nonServiceLedger.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  });

  describe('the service end to end on the real network (--ledger fabric)', () => {
    it('anchors a created resource on the channel and $verify proves it', async () => {
      const app = await startTestApp(
        {},
        {
          ledger: 'fabric',
          fabricConfig: configFile,
          anchorBatchSize: '10',
          anchorIntervalMs: '50',
          auditCron: 'off',
        },
      );
      try {
        const created = await app.fastify.inject({
          method: 'POST',
          url: '/fhir/Patient',
          headers: FHIR_JSON,
          payload: JSON.stringify({ resourceType: 'Patient', gender: 'female', birthDate: '1970-01-01' }),
        });
        expect(created.statusCode, created.body).toBe(201);
        const id = json(created.body).id as string;
        const verify = async () =>
          json(
            (await app.fastify.inject({ method: 'GET', url: `/fhir/Patient/${id}/$verify` })).body,
          ) as Parameters;
        await until(async () => param(await verify(), 'status') === 'anchored', 'the write is anchored');
        const result = await verify();
        expect(param(result, 'verified')).toBe(true);
        expect(param(result, 'transactionId')).toMatch(/^[0-9a-f]{64}$/);
      } finally {
        await app.stop();
      }
    });
  });
}
