/**
 * The architecture's lint rules bite (eslint.config.js; docs/architecture.md draws the map): an import against the
 * direction of the folders, or one that closes a cycle, is an error; the directions the map allows are not.
 */
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const eslint = new ESLint();

async function ruleIds(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return result.messages.map((m) => m.ruleId ?? m.message);
}

const importing = (specifier: string) =>
  `import * as other from '${specifier}';\nexport const used = other;\n`;

describe('architecture lint rules', () => {
  it.each([
    ['the ledger imports no FHIR', 'src/ledger/probe.ts', '../fhir/outcome.js'],
    ['the ledger imports no feature', 'src/ledger/fabric/probe.ts', '../../integrity/merkle.js'],
    ['the FHIR core imports no feature', 'src/fhir/interactions/probe.ts', '../../access/setup.js'],
    ['the FHIR core imports no ledger', 'src/fhir/search/probe.ts', '../../ledger/ledger.js'],
    ['the store imports no interaction', 'src/fhir/store/probe.ts', '../interactions/router.js'],
    ['the store imports no search', 'src/fhir/store/sqlite/probe.ts', '../../search/definitions.js'],
    ['interactions do not import HTTP', 'src/fhir/interactions/probe.ts', '../http/errors.js'],
    ["src/fhir's own files import none of its parts", 'src/fhir/probe.ts', './store/resource-store.js'],
    ['consent does not import access', 'src/consent/probe.ts', '../access/setup.js'],
    ['integrity does not import consent', 'src/integrity/probe.ts', '../consent/consent-service.js'],
    ['config imports no feature', 'src/config/probe.ts', '../operator/metrics.js'],
    ['no feature imports the composition root', 'src/access/probe.ts', '../app/app.js'],
    ['no feature imports the exchange', 'src/integrity/probe.ts', '../exchange/member-directory.js'],
    ['no feature imports bulk exchange', 'src/access/probe.ts', '../bulk/import/engine.js'],
    [
      'the FHIR core imports no bulk exchange',
      'src/fhir/interactions/probe.ts',
      '../../bulk/import/engine.js',
    ],
    ['the exchange imports no Fabric client', 'src/exchange/probe.ts', '@hyperledger/fabric-gateway'],
  ])('%s', async (_what, filePath, specifier) => {
    expect(await ruleIds(filePath, importing(specifier))).toContain('no-restricted-imports');
  });

  it.each([
    ['access uses consent', 'src/access/probe.ts', '../consent/consent-service.js'],
    [
      'integrity uses the FHIR store and the ledger port',
      'src/integrity/probe.ts',
      '../fhir/store/resource-store.js',
    ],
    ['interactions use the store', 'src/fhir/interactions/probe.ts', '../store/resource-store.js'],
    ['the composition root wires adapters', 'src/app/probe.ts', '../ledger/fabric/fabric-ledger.js'],
    ['the exchange uses the ledger port', 'src/exchange/probe.ts', '../ledger/ledger.js'],
    ['commands use the exchange', 'src/commands/probe.ts', '../exchange/member-directory.js'],
    ['bulk exchange uses the FHIR core', 'src/bulk/import/probe.ts', '../../fhir/interactions/batch.js'],
    ['commands use bulk exchange', 'src/commands/probe.ts', '../bulk/import/engine.js'],
  ])('allowed: %s', async (_what, filePath, specifier) => {
    expect(await ruleIds(filePath, importing(specifier))).toEqual([]);
  });

  it('an import that closes a cycle between modules is an error', async () => {
    // parse.ts imports definitions.ts; definitions.ts importing parse.ts back closes the cycle
    const ids = await ruleIds('src/fhir/search/definitions.ts', importing('./parse.js'));
    expect(ids).toContain('import-x/no-cycle');
  });
});
