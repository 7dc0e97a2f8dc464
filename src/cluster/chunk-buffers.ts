// Buffers of archived chunks that left a reader's cache, for its next
// fetches to read into (archived-history.ts): a replay reads a chunk after
// another, and a fresh 4 MiB buffer each time is memory outside the heap
// whose growth starts full collections (a fifth of a non-owner's CPU in a
// replay from the archive, measured: docs/bench-analysis.md).

/** Buffers kept (memory besides archive_cache_bytes_max: at most this many chunks). */
const SPARE_BUFFERS_MAX = 2;
/**
 * Room a chunk's buffer has past its bytes, so that it can take the next
 * chunk, which ends at another frame's end (1.6% of a 4 MiB chunk, also
 * besides archive_cache_bytes_max, which counts the bytes).
 */
const CHUNK_SLACK_BYTES = 64 * 1024;

export class ChunkBuffers {
  private readonly spare: Buffer[] = [];

  /** A buffer that holds `bytes`: a spare one, or a new one with room to spare. */
  take(bytes: number): Buffer {
    const block = this.spare.pop();
    if (block && block.length >= bytes) return block;
    if (block) this.give(block);
    return Buffer.allocUnsafeSlow(bytes + CHUNK_SLACK_BYTES);
  }

  /** A buffer nothing reads any more. */
  give(block: Buffer): void {
    if (this.spare.length < SPARE_BUFFERS_MAX) this.spare.push(block);
  }
}
