// What each part of the consume hub (groups, delivery, progress) takes from
// it: read once at construction into fields, since the parts use them per
// message and the hub's own fields are one hop further.
import type { Config } from "../../config.js";
import type { ConsumeHub } from "./hub.js";
import type { Clock, ShardLink } from "./ports.js";
import type { Feed } from "./state.js";

export abstract class HubPart {
  protected readonly config: Config;
  protected readonly shards: ShardLink;
  protected readonly clock: Clock;
  protected readonly feeds: Map<string, Feed>;

  constructor(protected readonly hub: ConsumeHub) {
    this.config = hub.config;
    this.shards = hub.shards;
    this.clock = hub.clock;
    this.feeds = hub.feeds;
  }
}
