// The query parameters each HTTP route accepts: the routes refuse any other
// (checkQuery), and src/front/openapi.ts documents these same sets.
export const NO_PARAMS: ReadonlySet<string> = new Set();
export const GROUP_PARAM: ReadonlySet<string> = new Set(["group"]);
export const REPLAY_PARAMS: ReadonlySet<string> = new Set(["from", "to", "limit", "from_time", "types", "keys", "max_rate"]);
export const SNAPSHOT_PARAMS: ReadonlySet<string> = new Set(["limit", "as_of_seq", "after_seq"]);
export const PUBLISH_PARAMS: ReadonlySet<string> = new Set(["expected_head_seq"]);
export const TIMELINE_NAMED_PARAMS: ReadonlySet<string> = new Set(["cursor", "limit", "direction", "wait_ms"]);
export const TIMELINE_AD_HOC_PARAMS: ReadonlySet<string> = new Set(["streams", ...TIMELINE_NAMED_PARAMS]);
export const CONSUME_PARAMS: ReadonlySet<string> = new Set([
  "group",
  "from",
  "from_time",
  "format",
  "window",
  "max_attempts",
  "types",
  "keys",
  "max_rate",
  "conflate",
  "token",
]);
