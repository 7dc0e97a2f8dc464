// Ordered ingest's state in PostgreSQL (producer_ordering in cluster mode,
// src/shard/cluster-ordered.ts): the events a stream holds for a missing
// producer_seq (`ticker_cluster_held`) and each producer's last appended
// producer_seq (`ticker_cluster_producers`). An owner's admission writes its
// changes to both in the same transaction as the tail row of what it
// released (tail.ts, the group's commit then one transaction, fenced once),
// so a new owner reads either all of an admission or none of it: a held
// event's row goes when the tail row holding it lands, and a producer's
// place moves with it. A new owner restores the rule from these rows, not by
// reading the stream's history.
import type postgres from "postgres";
import { plainTextArray, textArray } from "./sql-array.js";

/** A held event as the rule keeps it: its producer fields, when it came, its record frame. */
export interface HeldRow {
  producerId: string;
  producerSeq: number;
  receivedMs: number;
  frame: Buffer;
}

export interface ProducerRow {
  producerId: string;
  /** The last producer_seq appended (a tombstone counts for the end of its range). */
  lastSeq: number;
  lastSeenMs: number;
}

/** What one admission (or gap expiry) of a stream changes. */
export interface OrderedChanges {
  stream: string;
  /** Newly held events. */
  held: HeldRow[];
  /** Held events released by this admission (their records are in its tail row). */
  released: Array<{ producerId: string; producerSeq: number }>;
  /** Producers that appended, with their new last seq. */
  producers: ProducerRow[];
  /** An expiry's sweep: producers seen last before this, with nothing held, are forgotten (null: none). */
  idleBeforeMs: number | null;
}

const base64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
const digits = (ns: number[]) => plainTextArray(ns.map(String));

/**
 * Writes the changes of a commit's admissions inside its transaction (the
 * caller has fenced it): at most one per stream, so no statement touches a
 * row twice.
 */
export async function writeOrdered(tx: postgres.TransactionSql, shard: number, all: OrderedChanges[]): Promise<void> {
  const gone = all.flatMap((c) => c.released.map((r) => ({ stream: c.stream, ...r })));
  if (gone.length > 0) {
    await tx`delete from ticker_cluster_held h
      using unnest(${textArray(gone.map((g) => g.stream))}::text[], ${textArray(gone.map((g) => g.producerId))}::text[],
        ${digits(gone.map((g) => g.producerSeq))}::bigint[]) as g(stream, producer_id, producer_seq)
      where h.stream = g.stream and h.producer_id = g.producer_id and h.producer_seq = g.producer_seq`;
  }
  const held = all.flatMap((c) => c.held.map((h) => ({ stream: c.stream, ...h })));
  if (held.length > 0) {
    await tx`insert into ticker_cluster_held (stream, producer_id, producer_seq, received_ms, frame, shard)
      select h.stream, h.producer_id, h.producer_seq, h.received_ms, decode(h.frame, 'base64'), ${shard}
      from unnest(${textArray(held.map((h) => h.stream))}::text[], ${textArray(held.map((h) => h.producerId))}::text[],
        ${digits(held.map((h) => h.producerSeq))}::bigint[], ${digits(held.map((h) => h.receivedMs))}::bigint[],
        ${plainTextArray(held.map((h) => base64(h.frame)))}::text[]) as h(stream, producer_id, producer_seq, received_ms, frame)`;
  }
  const producers = all.flatMap((c) => c.producers.map((p) => ({ stream: c.stream, ...p })));
  if (producers.length > 0) {
    await tx`insert into ticker_cluster_producers (stream, producer_id, last_seq, last_seen_ms, shard)
      select p.stream, p.producer_id, p.last_seq, p.last_seen_ms, ${shard}
      from unnest(${textArray(producers.map((p) => p.stream))}::text[], ${textArray(producers.map((p) => p.producerId))}::text[],
        ${digits(producers.map((p) => p.lastSeq))}::bigint[], ${digits(producers.map((p) => p.lastSeenMs))}::bigint[])
        as p(stream, producer_id, last_seq, last_seen_ms)
      on conflict (stream, producer_id) do update set last_seq = excluded.last_seq, last_seen_ms = excluded.last_seen_ms`;
  }
  const sweeps = all.filter((c) => c.idleBeforeMs !== null);
  if (sweeps.length > 0) {
    await tx`delete from ticker_cluster_producers p
      using unnest(${textArray(sweeps.map((c) => c.stream))}::text[], ${digits(sweeps.map((c) => c.idleBeforeMs ?? 0))}::bigint[]) as s(stream, before_ms)
      where p.stream = s.stream and p.last_seen_ms < s.before_ms
        and not exists (select 1 from ticker_cluster_held h where h.stream = p.stream and h.producer_id = p.producer_id)`;
  }
}

export class OrderedStore {
  constructor(private readonly sql: postgres.Sql) {}

  /**
   * A stream's ordered state as the cluster holds it: its held events, and
   * its producers seen since `idleBeforeMs` or holding an event (the others
   * are forgotten, as the rule forgets them).
   */
  async read(stream: string, idleBeforeMs: number): Promise<{ producers: ProducerRow[]; held: HeldRow[] }> {
    const sql = this.sql;
    const held = await sql<{ producer_id: string; producer_seq: string; received_ms: string; frame: Buffer }[]>`
      select producer_id, producer_seq, received_ms, frame from ticker_cluster_held where stream = ${stream} order by producer_id, producer_seq`;
    const producers = await sql<{ producer_id: string; last_seq: string; last_seen_ms: string }[]>`
      select producer_id, last_seq, last_seen_ms from ticker_cluster_producers p where stream = ${stream}
        and (last_seen_ms >= ${idleBeforeMs} or exists (select 1 from ticker_cluster_held h where h.stream = p.stream and h.producer_id = p.producer_id))`;
    return {
      held: held.map((r) => ({ producerId: r.producer_id, producerSeq: Number(r.producer_seq), receivedMs: Number(r.received_ms), frame: r.frame })),
      producers: producers.map((r) => ({ producerId: r.producer_id, lastSeq: Number(r.last_seq), lastSeenMs: Number(r.last_seen_ms) })),
    };
  }
}
