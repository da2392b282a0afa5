/**
 * Query parameters as a name -> values map (repeated names in order). The map has no prototype: a parameter named
 * like an Object.prototype member (`constructor`, `__proto__`, `toString` ...) is a plain entry, never a
 * function or the map's prototype. Every query map the service builds from client text comes from here, and every
 * other reading of a query string (the names for the logs, a transaction's reference rewrite) goes through here too.
 */
export type QueryMap = Record<string, string[]>;

/** An empty query map without a prototype. */
export function emptyQuery(): QueryMap {
  return Object.create(null) as QueryMap;
}

/** Adds the parameters of `text` (form/query encoding, without the `?`) to `query`, in order. */
export function appendQuery(query: QueryMap, text: string): QueryMap {
  if (text === '') return query;
  for (const [name, value] of new URLSearchParams(text)) {
    const values = query[name];
    if (values === undefined) query[name] = [value];
    else values.push(value);
  }
  return query;
}

/** The parameters of `text` (without the `?`), in a new map without a prototype. */
export function parseQuery(text: string): QueryMap {
  return appendQuery(emptyQuery(), text);
}

/** A copy of `query` (own entries only; the arrays copied too), without a prototype. */
export function copyQuery(query: QueryMap): QueryMap {
  const copy = emptyQuery();
  for (const name of Object.keys(query)) copy[name] = [...query[name]];
  return copy;
}

/**
 * The distinct parameter names of `text` (without the `?`) as `label` writes them, in order of first use, at most
 * `limit` of them.
 */
export function queryNames(text: string, limit: number, label = (name: string) => name): string[] {
  const names = new Set<string>();
  for (const name of new URLSearchParams(text).keys()) {
    if (names.size >= limit) break;
    names.add(label(name));
  }
  return [...names];
}

/**
 * `text` (without the `?`) with each value replaced by `rewrite(value)`, names and order kept, re-encoded; undefined
 * when no value changed (the caller keeps its text as written).
 */
export function rewriteQueryValues(text: string, rewrite: (value: string) => string): string | undefined {
  let changed = false;
  const out = new URLSearchParams();
  for (const [name, value] of new URLSearchParams(text)) {
    const rewritten = rewrite(value);
    if (rewritten !== value) changed = true;
    out.append(name, rewritten);
  }
  return changed ? out.toString() : undefined;
}
