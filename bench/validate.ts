/**
 * Validation throughput on every resource of the Synthea transaction Bundles (../shared/data/synthea-bundles),
 * single process: schema-only (ajv, per resource type) and full (structure, invariants, required bindings).
 *
 *   npm run bench:validate [-- --limit N]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createFhirValidatorSync } from '../src/fhir/validation/index.js';
import { createSchemaValidator } from '../src/fhir/validation/schema.js';
import type { ResourceValidator } from '../src/fhir/validation/validator.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.join(root, '../shared/data/synthea-bundles');
const limitArg = process.argv.indexOf('--limit');
const limit = limitArg > 0 ? Number(process.argv[limitArg + 1]) : Infinity;

const resources: unknown[] = [];
for (const f of fs
  .readdirSync(dir)
  .filter((x) => x.endsWith('.json'))
  .sort()) {
  const bundle = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
  for (const e of bundle.entry ?? []) if (e.resource && resources.length < limit) resources.push(e.resource);
}

interface Row {
  validator: string;
  startupMs: number;
  resources: number;
  perSecond: number;
  invalid: number;
  errors: number;
  warnings: number;
}

function measure(name: string, v: ResourceValidator, startupMs: number): Row {
  // One counting pass (also the warm-up: compiles per-type structures and expressions), then timed passes.
  let invalid = 0;
  let errors = 0;
  let warnings = 0;
  for (const r of resources) {
    const out = v.validate(r);
    if (!out.valid) invalid++;
    for (const i of out.issues) {
      if (i.severity === 'error' || i.severity === 'fatal') errors++;
      else if (i.severity === 'warning') warnings++;
    }
  }
  // The machine is shared: the best of three timed passes.
  let ms = Infinity;
  for (let pass = 0; pass < 3; pass++) {
    const t = performance.now();
    for (const r of resources) v.validate(r);
    ms = Math.min(ms, performance.now() - t);
  }
  return {
    validator: name,
    startupMs: Math.round(startupMs),
    resources: resources.length,
    perSecond: Math.round((resources.length * 1000) / ms),
    invalid,
    errors,
    warnings,
  };
}

const rows: Row[] = [];
let t = performance.now();
const schema = await createSchemaValidator();
rows.push(measure('schema-only (ajv)', schema, performance.now() - t));
t = performance.now();
const full = createFhirValidatorSync();
rows.push(measure('full (structure+invariants+bindings)', full, performance.now() - t));
const gated = createFhirValidatorSync({ schema });
rows.push(measure('schema gate, then full', gated, 0));

console.log(
  `node ${process.version}, ${resources.length} Synthea resources, load average ${os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')} on ${os.cpus().length} cores`,
);
console.table(rows);
if (process.argv.includes('--issues')) {
  const tally = new Map<string, number>();
  for (const r of resources)
    for (const i of full.validate(r).issues) {
      const k = `${i.severity} ${(i.diagnostics ?? '').replace(/'[^']*'/g, "'*'").slice(0, 100)}`;
      tally.set(k, (tally.get(k) ?? 0) + 1);
    }
  console.log(
    [...tally]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 25)
      .map(([k, c]) => `${c}\t${k}`)
      .join('\n'),
  );
}
