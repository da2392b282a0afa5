/**
 * SNOMED CT identifiers (SCTIDs), by the rules of the SNOMED CT Technical Implementation Guide ("SCTID Data
 * Type", "Check-digit", "Partition-identifier"): 6 to 18 decimal digits without a leading zero; the last digit is a
 * Verhoeff check digit over the others; the two digits before it are the partition identifier, whose second digit
 * says what the identifier names (0 a concept, 1 a description, 2 a relationship, ...) and whose first digit
 * whether the identifier is short (0, the International Edition's own) or long (1, an extension's, with a
 * namespace). Checked without any SNOMED CT content, so they hold for every edition.
 */

/** The Verhoeff scheme's dihedral-group multiplication table D5. */
const MULTIPLY: readonly (readonly number[])[] = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
  [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
  [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
  [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
  [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
  [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
  [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
  [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
  [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/** The permutations by position: the first is the identity, each next one the first applied once more. */
const PERMUTE: readonly (readonly number[])[] = (() => {
  const step = [1, 5, 7, 6, 2, 8, 3, 0, 9, 4];
  const rows: number[][] = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]];
  for (let i = 1; i < 8; i++) rows.push(rows[i - 1]!.map((d) => step[d]!));
  return rows;
})();

/** Whether a string of digits ends with its Verhoeff check digit. */
export function verhoeffValid(digits: string): boolean {
  let check = 0;
  for (let i = 0; i < digits.length; i++) {
    const digit = digits.charCodeAt(digits.length - 1 - i) - 48;
    check = MULTIPLY[check]![PERMUTE[i % 8]![digit]!]!;
  }
  return check === 0;
}

/** What an SCTID's partition identifier says it names (its second digit; TIG "Partition-identifier"). */
const PARTITION_KINDS: Record<string, string> = {
  '0': 'a concept',
  '1': 'a description',
  '2': 'a relationship',
  '3': 'a subset',
  '4': 'a cross-map set',
  '5': 'a cross-map target',
};

/**
 * Why a code made of digits only is not a SNOMED CT concept id (undefined when it is one by its syntax). Codes
 * with other characters are not judged here: they may be SNOMED CT expressions (compositional grammar).
 */
export function conceptIdProblem(code: string): string | undefined {
  if (!/^[0-9]+$/.test(code)) return undefined;
  if (code.length < 6 || code.length > 18 || code.startsWith('0'))
    return 'an SCTID has 6 to 18 digits and no leading zero';
  if (!verhoeffValid(code)) return 'its check digit is wrong (Verhoeff)';
  const partition = code.slice(-3, -1);
  if (partition[0] !== '0' && partition[0] !== '1')
    return `its partition identifier '${partition}' is not one SNOMED CT defines`;
  if (partition[1] !== '0') {
    const kind = PARTITION_KINDS[partition[1]!] ?? 'not a concept';
    return `it identifies ${kind}, not a concept (partition identifier '${partition}'); only concept ids and expressions are codes`;
  }
  return undefined;
}
