/**
 * The grants of a patient as the ledger holds them, read as the patient's home can: the ledger names no patient,
 * so the home's grant index (its data directory) gives the grant ids, and each record's tag must be the patient's.
 */
import { join } from 'node:path';
import type { GrantRecord } from 'hie-ledger-chaincode';
import type { Ledger } from '../../src/ledger/ledger.js';
import { NetworkIds, patientTag } from '../../src/consent/network-ids.js';

export async function ledgerGrantsOf(
  dataDir: string,
  ledger: Ledger,
  patient: string,
): Promise<GrantRecord[]> {
  const ids = new NetworkIds(join(dataDir, 'identity', 'network-ids.sqlite'));
  try {
    const npid = ids.existingNpidOf(patient);
    if (!npid) return [];
    const out: GrantRecord[] = [];
    for (const grantId of ids.grantIdsOf(patient)) {
      const record = JSON.parse(await ledger.evaluate('consent:ReadGrant', [grantId])) as GrantRecord | null;
      if (record && record.patientTag === patientTag(npid, 'grant', grantId)) out.push(record);
    }
    return out;
  } finally {
    ids.close();
  }
}
