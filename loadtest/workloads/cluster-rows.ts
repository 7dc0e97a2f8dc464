// The rows of bench:cluster by name, shared by the workload that measures
// them and the report's Cluster section that lays them out: each row is
// measured on one node and on the 3-node cluster in the same run, and its
// series' variant says which ("3-node cluster: publish").

export const CLUSTER_NODES = 3;
/** The publish latency row's offered rate: batches of BATCH_EVENTS at this many events a second. */
export const PACED_EVENTS_PER_S = 20_000;
/** Small segments, so that all but the open one of a replay stream are closed and archived (the default is 64 MiB). */
export const SEGMENT_BYTES_MAX = 8 * 2 ** 20;

export const SETUPS = { one: "one node", cluster: `${CLUSTER_NODES}-node cluster` } as const;
export type Setup = keyof typeof SETUPS;

export const ROWS = {
  publish: "publish",
  paced: `publish at ${PACED_EVENTS_PER_S.toLocaleString("en-US")} events/s`,
  /** One node: the node. The cluster: a client that asked the stream's owner first. */
  replayOwner: "replay through the owner",
  /** The cluster only: a fresh client asking a node that does not own the stream, whose archived history it serves. */
  replayArchive: "replay through a non-owner, from the archive",
  /** The same again: the non-owner's shard thread holds the segments now. */
  replayArchiveCached: "replay through a non-owner, segments cached",
} as const;
export type Row = keyof typeof ROWS;

export const clusterVariant = (setup: Setup, row: Row) => `${SETUPS[setup]}: ${ROWS[row]}`;

/** Every row's CPU, by process kind, in seconds over the row's wall time ("wall s"). */
export const CPU_METRICS = ["wall s", "nodes CPU s", "PostgreSQL CPU s", "client CPU s", "other CPU s"] as const;
