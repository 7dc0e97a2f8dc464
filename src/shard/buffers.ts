// The shard's reused working memory shared by its operations: the worker-local
// copy of a request body, the page buffer frames are read into and the JSON
// writer pages are rendered with. One of each is enough because a shard serves
// one request at a time; a reply that outlives its request is copied out of
// them by the outbox.
import { copyBytes } from "../bytes.js";
import { jsonText } from "../validate.js";
import { ByteWriter, JsonRenderer } from "../wire/event-codec.js";

/** First size of the grown-on-demand buffers: most requests and pages fit, and a shard keeps one of each. */
export const START_BUFFER_BYTES = 1024 * 1024;

export class ShardBuffers {
  /** The last request body copied out of the ring (grown on demand, never shrunk). */
  body = Buffer.allocUnsafe(START_BUFFER_BYTES);
  /** Frames of one page: a page's bytes plus one frame that may overrun them (Limits.pageBufferBytes). */
  readonly page: Buffer;
  readonly jsonPage = new ByteWriter(START_BUFFER_BYTES);
  readonly renderer = new JsonRenderer();

  constructor(pageBufferBytes: number) {
    this.page = Buffer.allocUnsafe(pageBufferBytes);
  }

  /**
   * Copies a request body out of the shared ring into worker memory (one
   * native memcpy), for the parsers that need a buffer of their own: the JSON
   * scanner writes decoded strings after the body, and V8's string decoding
   * and JSON.parse take slower paths on shared memory.
   */
  ownCopy(shared: Buffer): Buffer {
    // Twice the body: JsonBatch decodes escaped strings into the space after it.
    if (2 * shared.byteLength > this.body.length) this.body = Buffer.allocUnsafe(Math.max(2 * shared.byteLength, this.body.length * 2));
    copyBytes(shared, this.body, 0);
    return this.body.subarray(0, shared.byteLength);
  }

  /** A control-plane JSON body (stream config, checkpoint), parsed. */
  jsonBody(shared: Buffer): unknown {
    return jsonText(this.ownCopy(shared));
  }
}
