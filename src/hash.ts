// FNV-1a, 32 bits: the one hash behind stream -> shard routing (a shard
// worker, a cluster shard) and the cluster's rendezvous ranks. Stable across
// processes and versions: routing depends on it never changing.

export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
