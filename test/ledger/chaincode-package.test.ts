/** The chaincode package as a deployable unit: CommonJS entry, contract metadata, no nondeterministic APIs. */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChaincodeRuntime } from '../../src/ledger/embedded/chaincode-runtime.js';

const require = createRequire(import.meta.url);
const chaincodeSource = path.join('chaincode', 'src');

describe('chaincode package', () => {
  it('loads with require() and exports the contracts fabric-shim registers', () => {
    const chaincode = require('hie-ledger-chaincode') as { contracts: (new () => { getName(): string })[] };
    expect(chaincode.contracts.map((Contract) => new Contract().getName())).toContain('anchor');
    const packageJson = require('hie-ledger-chaincode/package.json') as {
      main: string;
      scripts: Record<string, string>;
    };
    expect(packageJson.main).toBe('dist/index.js');
    expect(packageJson.scripts['start:server']).toContain('fabric-chaincode-node server');
  });

  it('declares reads as evaluate and writes as submit transactions in its metadata', () => {
    const runtime = new ChaincodeRuntime();
    for (const name of ['ReadAnchor', 'ReadBatch', 'KeyHistory'])
      expect(runtime.isEvaluateOnly(`anchor:${name}`)).toBe(true);
    for (const name of ['AnchorVersion', 'AnchorBatch', 'AnchorBatchTagged'])
      expect(runtime.isEvaluateOnly(`anchor:${name}`)).toBe(false);
    for (const name of ['ReadMember', 'ListMembers'])
      expect(runtime.isEvaluateOnly(`member:${name}`)).toBe(true);
    for (const name of ['RegisterMember', 'UpdateMember', 'RevokeMember'])
      expect(runtime.isEvaluateOnly(`member:${name}`)).toBe(false);
  });

  it('uses no wall clock, randomness or environment in contract code', () => {
    const forbidden = [
      /Date\.now\(/,
      /new Date\(\)/,
      /Math\.random/,
      /randomUUID|randomBytes|getRandomValues/,
      /process\.env/,
      /performance\.now/,
    ];
    const files = readdirSync(chaincodeSource).filter((file) => file.endsWith('.ts'));
    expect(files).toContain('anchor-contract.ts');
    for (const file of files) {
      const source = readFileSync(path.join(chaincodeSource, file), 'utf8');
      for (const pattern of forbidden) expect(source, `${file} uses ${pattern}`).not.toMatch(pattern);
    }
  });
});
