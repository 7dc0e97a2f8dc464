// Streams admin: the streams this shard owns, by id, and the control-plane
// requests that create, change, show, list and delete them.
import { ApiError } from "../errors.js";
import type { Config } from "../config.js";
import type { ExternalCheckpoints } from "../consumer/external.js";
import type { LogOptions } from "../log/log.js";
import { ContentType, type Op, type RequestOf } from "./protocol.js";
import type { ShardBuffers } from "./buffers.js";
import { Stream } from "./stream.js";
import type { Descriptions } from "./descriptions.js";
import { fullConfig, parseStreamConfigPatch, type StreamConfig, type StreamDefaults } from "./stream-config.js";
import type { WatchedStreams } from "./watch.js";
import type { Outbox } from "./worker.js";

export class StreamAdmin {
  private readonly byId = new Map<string, Stream>();

  constructor(
    /** The data dir's streams/ folder: one folder per stream. */
    private readonly root: string,
    private readonly descriptions: Descriptions,
    private readonly logOpts: LogOptions,
    private readonly defaults: StreamDefaults,
    private readonly config: Config,
    private readonly outbox: Outbox,
    private readonly buffers: ShardBuffers,
    private readonly watched: WatchedStreams,
    /** Set once start-up has connected to them, if configured. */
    private readonly external: () => ExternalCheckpoints | null,
  ) {}

  get(id: string): Stream | undefined {
    return this.byId.get(id);
  }

  existing(id: string): Stream {
    const s = this.byId.get(id);
    if (!s) throw new ApiError(404, "stream_not_found", `stream "${id}" does not exist`, { stream: id });
    return s;
  }

  create(id: string, patch: Parameters<typeof fullConfig>[0], baseSeq = 1): Stream {
    const s = Stream.create(
      this.root,
      this.descriptions,
      id,
      fullConfig(patch, this.defaults),
      this.logOpts,
      this.config.dedup_keys_max,
      this.defaults.ordered,
      baseSeq,
    );
    this.byId.set(id, s);
    return s;
  }

  /** Removes this node's copy of a stream (cluster mode: the database and the archive hold it). */
  drop(id: string): void {
    const s = this.byId.get(id);
    if (!s) return;
    this.byId.delete(id);
    s.remove();
  }

  /** A stream that recovery opened. */
  adopt(s: Stream): void {
    this.byId.set(s.id, s);
  }

  values(): IterableIterator<Stream> {
    return this.byId.values();
  }

  ids(): string[] {
    return [...this.byId.keys()];
  }

  get size(): number {
    return this.byId.size;
  }

  /** A PUT's body as the config change it asks for (400 when it is not one). */
  patchOf(req: RequestOf<Op.PutStream>): Partial<StreamConfig> {
    const body = req.body.byteLength > 0 ? this.buffers.jsonBody(req.body) : undefined;
    return parseStreamConfigPatch(body, this.config.event_bytes_max);
  }

  /** The whole config a stream has after `patch`: its own merged, or the defaults' for a new one. */
  configAfter(id: string, patch: Partial<StreamConfig>): StreamConfig {
    const existing = this.byId.get(id);
    return existing ? { ...existing.config, ...patch } : fullConfig(patch, this.defaults);
  }

  /** PUT: creates the stream (201) or merges the body into its config (200). */
  put(req: RequestOf<Op.PutStream>): void {
    this.apply(req.reqId, req.meta.stream, this.patchOf(req));
  }

  /** Creates the stream with `patch` (201) or merges it into its config (200), and answers. */
  apply(reqId: number, id: string, patch: Partial<StreamConfig>): void {
    const existing = this.byId.get(id);
    if (existing) {
      existing.update(patch);
      return this.outbox.json(reqId, 200, existing.info());
    }
    return this.outbox.json(reqId, 201, this.create(id, patch).info());
  }

  show(req: RequestOf<Op.GetStream>): void {
    this.outbox.json(req.reqId, 200, this.existing(req.meta.stream).info());
  }

  remove(req: RequestOf<Op.DeleteStream>): void {
    this.removeNow(this.existing(req.meta.stream));
    this.outbox.reply({ reqId: req.reqId, status: 204, ct: ContentType.None, body: null });
  }

  /** The stream, its files and its groups' checkpoints gone (`checkpointsGone`: the cluster's removal took them); its watchers told. */
  removeNow(s: Stream, checkpointsGone = false): void {
    this.byId.delete(s.id);
    s.remove();
    if (!checkpointsGone) void this.external()?.deleteStream(s.id);
    this.watched.deleted(s.id);
  }

  list(req: RequestOf<Op.ListStreams>): void {
    this.outbox.json(req.reqId, 200, { streams: [...this.byId.values()].map((s) => s.info()) });
  }
}
