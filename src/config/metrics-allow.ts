/** The --metrics-allow option: who besides loopback may read /metrics (src/operator/operator-routes.ts). */
import { BlockList, isIP } from 'node:net';

/** `all`, or the addresses and networks besides loopback that may read /metrics. */
export type MetricsAllow = 'all' | BlockList;

/**
 * Parses --metrics-allow: `loopback` (default), `all`, or comma-separated addresses and CIDR networks. Throws a
 * RangeError naming the entry that is neither.
 */
export function parseMetricsAllow(text: string): MetricsAllow {
  const value = text.trim();
  if (value === 'all') return 'all';
  const list = new BlockList();
  for (const entry of value.split(',').map((e) => e.trim())) {
    if (entry === '' || entry === 'loopback') continue;
    const [address, prefix, ...rest] = entry.split('/');
    const family = isIP(address);
    const bits = family === 4 ? 32 : 128;
    if (family === 0 || rest.length > 0 || (prefix !== undefined && !/^\d{1,3}$/.test(prefix)))
      throw new RangeError(`'${entry}' is not an IP address or CIDR network`);
    if (prefix !== undefined && Number(prefix) > bits)
      throw new RangeError(`'${entry}' has a prefix longer than ${bits}`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(prefix), type);
  }
  return list;
}
