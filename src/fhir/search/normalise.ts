/** The normal form of string and full-text search (both sides): lower case, diacritics stripped. */
export function normaliseString(text: string): string {
  return text
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase();
}
