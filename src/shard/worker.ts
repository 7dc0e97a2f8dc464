// A shard worker's loop, outbox and start-up: it opens the streams that hash
// to it (recovery), hands each request the front passes through its in-ring
// to the module of its operation (publish, read, watch, admin, groups), and
// answers through its out-ring, in the order the answers are made.
import { parentPort, workerData } from "node:worker_threads";
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { Ring } from "../ring/ring.js";
import { ApiError, asApiError } from "../errors.js";
import type { Config } from "../config.js";
import type { ExternalCheckpoints } from "../consumer/external.js";
import { applyExternalCheckpoints, openExternalCheckpoints } from "./external-checkpoints.js";
import { WorkerCluster } from "./cluster.js";
import { ARCHIVE_ATTEMPTS_MAX, ArchiveMiss, archiveUnreadable } from "./history-view.js";
import type { CorruptionInfo, LogOptions } from "../log/log.js";
import { frameBytesFor } from "../log/record.js";
import { OpenFiles } from "../log/open-files.js";
import { shardOpenFilesMax } from "../limits.js";
import { ContentType, Op, readRequest, shardOf, type FrontCommand, type Request, type ScrubItem, type WorkerEvent, type WorkerInit } from "./protocol.js";
import { StreamAdmin } from "./admin.js";
import { ShardBuffers } from "./buffers.js";
import { ConsumerGroups } from "./groups.js";
import { Publisher } from "./publish.js";
import { LogReads } from "./read.js";
import { Snapshots } from "./snapshot.js";
import { applyRetention } from "./retention.js";
import { Stream, type StreamReport } from "./stream.js";
import { TimelineReads } from "./timeline-read.js";
import { WatchedStreams } from "./watch.js";
import { fullConfig, type StreamDefaults } from "./stream-config.js";
import { hasMeta, readMeta, unescapeStreamId } from "./stream-meta.js";
import { Descriptions } from "./descriptions.js";
import { HELD_ENTRY_HEADER_BYTES } from "./held-events.js";
import { createLogger, logger, setLogger } from "../logger.js";
import { noteStorageRefusal } from "./disk-full-log.js";
import { ShardMetrics } from "./metrics.js";
import { syncAndClose } from "./clean-stop.js";

/** Requests taken from the ring before yielding to timers and fsync callbacks. */
const REQUESTS_PER_TURN_MAX = 64;
/**
 * A wait on a ring ends after this long even without a wake-up: the loop
 * looks at `stopping` again, and a wake-up lost to a bug costs a second
 * rather than a hang.
 */
const RING_WAIT_MS_MAX = 1000;

/**
 * Log reads (replay pages, consumers' pages) taken from the ring and run
 * after the other requests of the pass, one per pass: a publish, whose
 * commit is what live consumers wait for, never queues behind a batch of
 * them. More than this wait: the next ones run in ring order.
 */
const READS_WAITING_MAX = 64;
const isLogRead = (r: Request) => r.op === Op.Replay || r.op === Op.ConsumeRead;

/** How often ordered streams look for gaps past gap_timeout_ms. */
const GAP_TICK_MS = 100;
import { Outbox } from "./outbox.js";

export { Outbox };

class ShardWorker {
  private readonly inRing: Ring;
  private readonly outbox: Outbox;
  private readonly root: string;
  private readonly descriptions: Descriptions;
  private readonly logOpts: LogOptions;
  private readonly defaults: StreamDefaults;
  private stopping = false;
  private retention: NodeJS.Timeout | null = null;
  /** The shard's open files (segments, checkpoint files, held.log); its bound is also how many syncs a clean stop keeps in flight. */
  private readonly files: OpenFiles;
  /** PostgreSQL / Redis copies of group checkpoints, when configured. */
  private external: ExternalCheckpoints | null = null;
  private readonly buffers: ShardBuffers;
  // One per operation (src/shard/<module>.ts), each with what it needs.
  private readonly streams: StreamAdmin;
  private readonly publisher: Publisher;
  private readonly reads: LogReads;
  private readonly snapshots: Snapshots;
  /** Streams the front follows live, and the pushes for them. */
  private readonly watched: WatchedStreams;
  private readonly groups: ConsumerGroups;
  private readonly timelines: TimelineReads;
  private readonly metrics: ShardMetrics;
  /** Cluster mode only. */
  private readonly cluster: WorkerCluster | null = null;

  constructor(private readonly init: WorkerInit) {
    const c = init.config;
    const limits = init.limits;
    this.inRing = new Ring(init.inRing);
    const outRing = new Ring(init.outRing);
    // The front checks request bodies against the bound it derived; this end reads with the rings' own.
    if (this.inRing.messageBytesMax !== limits.ringMessageBytesMax || outRing.messageBytesMax !== limits.ringMessageBytesMax) {
      throw new Error(
        `limits invariant: rings carry ${this.inRing.messageBytesMax} / ${outRing.messageBytesMax} bytes a message, the front derived ${limits.ringMessageBytesMax}`,
      );
    }
    // The bound the publisher enforces and recovery and reads hold as damage: the record format's frame of the largest event.
    if (frameBytesFor(limits.eventBodyBytesMax) !== limits.frameBytesMax) {
      throw new Error(
        `limits invariant: a ${limits.eventBodyBytesMax}-byte event frames to ${frameBytesFor(limits.eventBodyBytesMax)} bytes, the front derived ${limits.frameBytesMax}`,
      );
    }
    // Answers and pushes of one turn wake the front once.
    outRing.deferNotify = "microtask";
    this.outbox = new Outbox(outRing);
    this.root = join(c.data_dir, "streams");
    // Every shard reads the files; each keeps its own streams' lines (and
    // those of hashed names, which do not tell their owner).
    this.descriptions = new Descriptions(c.data_dir, (name) => this.mayOwn(name));
    const metrics = (this.metrics = new ShardMetrics(init.shard, init.shards, c.metrics_streams_max));
    this.logOpts = {
      segmentBytesMax: c.segment_bytes_max,
      indexIntervalBytes: c.index_interval_bytes,
      frameBytesMax: limits.frameBytesMax,
      observeSyncSeconds: (s) => metrics.observeFsync(s),
      openFiles: (this.files = new OpenFiles(shardOpenFilesMax(c))),
    };
    this.defaults = {
      retention_ms: c.default_retention_ms,
      dedup_window_ms: c.default_dedup_window_ms,
      durability: c.default_durability,
      max_event_bytes: c.event_bytes_max,
      ordered: {
        heldEventsMax: c.held_events_max,
        heldBytesMax: c.held_bytes_max,
        producersMax: c.producers_max,
        // A held.log entry: its header, the longest producer id, the largest frame.
        entryBytesMax: HELD_ENTRY_HEADER_BYTES + c.event_field_bytes_max + limits.frameBytesMax + 8,
      },
    };
    this.buffers = new ShardBuffers(limits.pageBufferBytes);
    this.groups = new ConsumerGroups(this.outbox, this.buffers, () => this.external);
    // Cluster mode: the stream's whole history, the archive below this node's copy (a new owner's copy starts after it).
    this.snapshots = new Snapshots(
      c,
      this.outbox,
      this.buffers,
      (id) => this.streams.get(id),
      (s) => this.cluster?.logOf(s) ?? s.log,
    );
    this.watched = new WatchedStreams(this.outbox, this.buffers);
    this.reads = new LogReads(c, this.outbox, this.buffers, this.watched);
    this.streams = new StreamAdmin(this.root, this.descriptions, this.logOpts, this.defaults, c, this.outbox, this.buffers, this.watched, () => this.external);
    this.publisher = new Publisher(c, this.logOpts.frameBytesMax, this.streams, this.outbox, this.buffers, this.watched, metrics);
    this.timelines = new TimelineReads(c, this.outbox, this.buffers, this.streams);
    if (c.cluster_postgres_url) {
      this.cluster = new WorkerCluster(c, init.shard, init.shards, limits.frameBytesMax, this.streams, this.publisher, this.outbox, () => this.external);
      this.publisher.cluster = this.cluster;
      this.groups.cluster = this.cluster;
    }
  }

  /** Cluster mode: the first seq of a stream the archive does not hold yet (retention keeps it). */
  private readonly keepFrom = (s: Stream): number => this.cluster?.keepFrom(s) ?? Number.POSITIVE_INFINITY;

  clusterGain(shard: number, epoch: number): Promise<void> {
    return this.cluster?.gain(shard, epoch) ?? Promise.resolve();
  }

  clusterLose(shard: number): void {
    this.cluster?.lose(shard);
  }

  private get config(): Config {
    return this.init.config;
  }

  /** Opens every stream this shard owns; recovery runs here, before ready. */
  recover(): WorkerEvent {
    mkdirSync(this.root, { recursive: true });
    const recovery: Array<{ stream: string; report: StreamReport }> = [];
    const scrub: ScrubItem[] = [];
    const unreadable: string[] = [];
    for (const name of readdirSync(this.root)) {
      // The directory name tells the owner unless the id was too long to
      // keep (hashed): every shard lists every stream, and reading the
      // others' two stream.json copies made restart at 100,000 streams
      // read 200,000 files per shard instead of 200,000 in all.
      if (!this.mayOwn(name)) continue;
      const dir = join(this.root, name);
      if (!hasMeta(dir, this.descriptions)) continue; // a crash between mkdir and the first write: nothing in it
      const read = readMeta(dir, () => fullConfig({}, this.defaults), this.descriptions);
      if (read === null) {
        // Every shard sees it; shard 0 alone reports it.
        if (this.init.shard === 0) unreadable.push(dir);
        continue;
      }
      // Only the owner may open a stream: opening runs recovery, which writes.
      if (shardOf(read.meta.id, this.init.shards) !== this.init.shard) continue;
      const { stream: s, report: r } = Stream.open(dir, read, this.logOpts, this.config.dedup_keys_max, this.defaults, this.descriptions);
      this.streams.adopt(s);
      for (const u of r.unverified) scrub.push({ stream: s.id, ...u, frameBytesMax: this.logOpts.frameBytesMax });
      r.unverified = [];
      if (r.truncatedBytes > 0 || r.rebuiltIndexes > 0 || r.corruptions.length > 0 || r.files.length > 0) recovery.push({ stream: s.id, report: r });
    }
    this.descriptions.forget();
    return { type: "ready", streams: this.streams.size, recovery, scrub, unreadable };
  }

  /** With PostgreSQL or Redis configured: their checkpoints, which win over the data dir's (external-checkpoints.ts). */
  async loadExternalCheckpoints(): Promise<void> {
    this.external = await openExternalCheckpoints(this.config);
    if (this.external) await applyExternalCheckpoints(this.external, this.streams, this.streams.ids());
  }

  noteVerified(stream: string, baseSeq: number): void {
    this.streams.get(stream)?.log.markVerified(baseSeq);
  }

  /** Damage the background scrub found: shown in the stream's info from now on. */
  noteCorruption(stream: string, info: CorruptionInfo): void {
    this.streams.get(stream)?.noteCorruption(info);
  }

  /** Whether a stream directory may be this shard's: its name tells the owner, unless the id was hashed (too long to keep). */
  private mayOwn(dirName: string): boolean {
    const id = unescapeStreamId(dirName);
    return id === null || shardOf(id, this.init.shards) === this.init.shard;
  }

  async run(): Promise<void> {
    const retention = (this.retention = setInterval(
      () => applyRetention(this.streams.values(), Date.now(), this.metrics, this.keepFrom),
      this.config.retention_check_interval_ms,
    ));
    // Ordered streams' gap timers: a held event goes out within gap_timeout_ms + this tick of its receipt.
    const gaps = setInterval(() => {
      const now = Date.now();
      if (this.stopping) return;
      for (const s of this.streams.values()) if (s.ordered) this.publisher.expireHeld(s, now);
    }, GAP_TICK_MS);
    // Their bodies are empty: nothing of the ring is kept once released.
    const reads: Request[] = [];
    let turn = 0;
    while (!this.stopping) {
      let taken = 0;
      while (taken < REQUESTS_PER_TURN_MAX && this.outbox.waiting === 0) {
        const msg = this.inRing.read();
        if (!msg) break;
        const req = readRequest(this.inRing, msg);
        if (isLogRead(req) && reads.length < READS_WAITING_MAX) reads.push(req);
        else this.serve(req);
        this.inRing.release();
        taken++;
      }
      const read = this.outbox.waiting === 0 ? reads.shift() : undefined;
      if (read) {
        this.serve(read);
        taken++;
      }
      turn += taken;
      if (this.outbox.waiting > 0) await this.outbox.drain();
      else if (taken === 0) {
        turn = 0;
        await this.inRing.waitReadable(RING_WAIT_MS_MAX);
      } else if (turn >= REQUESTS_PER_TURN_MAX) {
        turn = 0;
        await yieldToLoop();
      }
    }
    clearInterval(retention);
    clearInterval(gaps);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    // Nothing rolls or removes a segment while the syncs are in flight.
    if (this.retention !== null) clearInterval(this.retention);
    await syncAndClose(this.streams.values(), this.files.filesMax);
    this.descriptions.close();
    await this.external?.close(); // the last batch of checkpoints
    await this.cluster?.close();
  }

  /** Runs a request; an error becomes its answer. */
  private serve(req: Request, attempt = 1): void {
    try {
      this.handle(req);
    } catch (err) {
      // Cluster mode: history in the archive, fetched first; then the request again (read bodies are empty: nothing of the ring is kept).
      if (err instanceof ArchiveMiss && attempt < ARCHIVE_ATTEMPTS_MAX) {
        err.loading.then(
          () => this.serve(req, attempt + 1),
          (e: unknown) => this.serveError(req, e),
        );
        return;
      }
      // Past the tries: the archive (or the database) did not give what the read needs.
      if (err instanceof ArchiveMiss) return this.serveError(req, archiveUnreadable());
      this.serveError(req, err);
    }
  }

  private serveError(req: Request, err: unknown): void {
    const e = asApiError(err);
    if (e.status === 500) logger().error({ kind: "internal", op: req.op, err }, `shard ${this.init.shard}: ${(err as Error).stack ?? err}`);
    else noteStorageRefusal(e, "stream" in req.meta ? String(req.meta.stream) : undefined);
    this.outbox.error(req.reqId, e);
  }

  private handle(req: Request): void {
    switch (req.op) {
      case Op.Publish:
        return this.publisher.publish(req);
      case Op.Replay:
        if (this.cluster) {
          const s = req.meta.archiveOnly ? this.cluster.archivedOnly(req.meta.stream) : this.streams.existing(req.meta.stream);
          return this.reads.replay(s, req, req.meta.archiveOnly ? s.log : this.cluster.logOf(s as Stream));
        }
        return this.reads.replay(this.streams.existing(req.meta.stream), req);
      case Op.PutStream:
        return this.cluster ? this.cluster.putStream(req) : this.streams.put(req);
      case Op.GetStream:
        return this.streams.show(req);
      case Op.DeleteStream:
        return this.cluster ? this.cluster.deleteStream(req) : this.streams.remove(req);
      case Op.ListStreams:
        return this.streams.list(req);
      case Op.SetCheckpoint:
        return this.groups.setCheckpoint(this.streams.existing(req.meta.stream), req);
      case Op.GetCheckpoint:
        return this.groups.getCheckpoint(this.streams.existing(req.meta.stream), req);
      case Op.Lag:
        return this.groups.lag(this.streams.existing(req.meta.stream), req);
      case Op.Groups:
        return this.groups.list(this.streams.existing(req.meta.stream), req);
      case Op.ConsumeStart: {
        const s = this.streams.existing(req.meta.stream);
        return this.reads.consumeStart(s, req, this.cluster?.logOf(s));
      }
      case Op.ConsumeRead: {
        const s = this.streams.existing(req.meta.stream);
        return this.reads.consumeRead(s, req, this.cluster?.logOf(s));
      }
      case Op.Watch:
        return this.watched.watch(req);
      case Op.TimelineRead:
        return this.timelines.read(req);
      case Op.Snapshot:
        return this.snapshots.read(this.streams.existing(req.meta.stream), req);
      case Op.Metrics:
        return void this.metrics
          .snapshot(this.streams.values(), (s) => this.streams.get(s.id) === s, this.buffers)
          .then(
            (json) => this.outbox.json(req.reqId, 200, json),
            (err: unknown) => {
              logger().error({ kind: "internal", op: req.op, err }, `shard ${this.init.shard}: metrics: ${(err as Error).stack ?? err}`);
              this.outbox.reply({ reqId: req.reqId, status: 500, ct: ContentType.Json, body: asApiError(err).body() });
            },
          );
      default:
        throw new ApiError(500, "internal", `unknown op ${(req as Request).op}`);
    }
  }
}

if (!parentPort) throw new Error("the shard worker runs in a worker thread (src/front/shards.ts starts it)");
const port = parentPort;
const init = workerData as WorkerInit;
setLogger(createLogger(init.config, { shard: init.shard }));
const worker = new ShardWorker(init);
const fatal = (err: unknown) => {
  port.postMessage({ type: "fatal", message: (err as Error).stack ?? String(err) } satisfies WorkerEvent);
  process.exit(1);
};
try {
  const ready = worker.recover();
  await worker.loadExternalCheckpoints();
  port.postMessage(ready);
} catch (err) {
  fatal(err);
}
port.on("message", (cmd: FrontCommand) => {
  if (cmd.type === "corruption") worker.noteCorruption(cmd.stream, cmd.info);
  else if (cmd.type === "verified") worker.noteVerified(cmd.stream, cmd.baseSeq);
  else if (cmd.type === "clusterGain") {
    void worker
      .clusterGain(cmd.shard, cmd.epoch)
      .then(() => port.postMessage({ type: "clusterGained", shard: cmd.shard, epoch: cmd.epoch } satisfies WorkerEvent), fatal);
  } else if (cmd.type === "clusterLose") worker.clusterLose(cmd.shard);
  else if (cmd.type === "shutdown") {
    void worker.stop().then(() => {
      port.postMessage({ type: "closed" } satisfies WorkerEvent);
      port.close();
    }, fatal);
  }
});
worker.run().catch(fatal);
