// A full disk refuses every write until space comes back: the log says so
// once, then at most once per DISK_FULL_LOG_INTERVAL_MS with how many requests
// were refused since, instead of one line per refused publish.
import type { ApiError } from "../errors.js";
import { logger } from "../logger.js";

export const DISK_FULL_LOG_INTERVAL_MS = 10_000;

let lastLoggedMs = Number.NEGATIVE_INFINITY;
let refusedSinceLog = 0;

/** Notes a refusal `e` if it is `disk_full` (or `storage_error`, the disk failing writes). */
export function noteStorageRefusal(e: ApiError, stream: string | undefined, nowMs = Date.now()): void {
  if (e.code !== "disk_full" && e.code !== "storage_error") return;
  refusedSinceLog++;
  if (nowMs - lastLoggedMs < DISK_FULL_LOG_INTERVAL_MS) return;
  logger().error(
    { kind: "disk_full", code: e.code, stream, refused: refusedSinceLog },
    `${e.message} (stream ${stream ?? "?"}; ${refusedSinceLog} request(s) refused since the last line)`,
  );
  lastLoggedMs = nowMs;
  refusedSinceLog = 0;
}
