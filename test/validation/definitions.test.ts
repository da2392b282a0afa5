import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DefinitionRegistry } from '../../src/fhir/definitions/definition-registry.js';

describe('core definitions', () => {
  it('load from the packages, write a compact cache, and load the same content from it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'defs-'));
    try {
      const fromPackages = new DefinitionRegistry();
      const first = fromPackages.loadCore({ cacheDir: dir });
      expect(first.files).toBeGreaterThan(3000);
      const [cacheFile] = fs.readdirSync(dir);
      expect(cacheFile).toMatch(/^r4-definitions-4\.0\.1-4\.0\.1-v1\.json$/);

      const fromCache = new DefinitionRegistry();
      const second = fromCache.loadCore({ cacheDir: dir });
      expect(second.files).toBe(1);
      expect(second.resources).toBe(first.resources);
      for (const type of ['StructureDefinition', 'ValueSet', 'CodeSystem', 'ConceptMap'] as const)
        expect(fromCache.all(type).length).toBe(fromPackages.all(type).length);
      const patient = fromCache.typeDefinition('Patient');
      expect(patient?.snapshot?.element.length).toBe(
        fromPackages.typeDefinition('Patient')?.snapshot?.element.length,
      );
      expect(patient?.text).toBeUndefined(); // narratives are not kept
      expect(
        fromCache.valueSet('http://hl7.org/fhir/ValueSet/administrative-gender')?.expansion?.contains
          ?.length ?? 0,
      ).toBeGreaterThanOrEqual(0);

      // A damaged cache is rebuilt, not fatal.
      fs.writeFileSync(path.join(dir, cacheFile), '{not json');
      const rebuilt = new DefinitionRegistry();
      expect(rebuilt.loadCore({ cacheDir: dir }).resources).toBe(first.resources);
      expect(() => JSON.parse(fs.readFileSync(path.join(dir, cacheFile), 'utf8'))).not.toThrow();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('layers registries: own resources first, then the parent', () => {
    const parent = new DefinitionRegistry();
    parent.registerResource({
      resourceType: 'ValueSet',
      url: 'http://x.org/vs',
      version: '1',
      status: 'active',
    });
    const child = new DefinitionRegistry(parent);
    expect(child.valueSet('http://x.org/vs')?.version).toBe('1');
    expect(child.valueSet('http://x.org/vs|1')?.version).toBe('1');
    child.registerResource({
      resourceType: 'ValueSet',
      url: 'http://x.org/vs',
      version: '2',
      status: 'active',
    });
    expect(child.valueSet('http://x.org/vs')?.version).toBe('2');
    expect(parent.valueSet('http://x.org/vs')?.version).toBe('1');
    expect(child.all('ValueSet')).toHaveLength(1);
    expect(child.registerResource({ resourceType: 'Patient', url: 'http://x.org/p' })).toBe(false);
    expect(child.registerResource(null)).toBe(false);
  });
});
