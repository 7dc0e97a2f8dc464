// `ticker groups <stream>`, `ticker lag <stream>` and `ticker checkpoint
// <stream> --group g`: the consumer groups of a stream, with where each has
// acked to, how far behind the head it is, and who is connected.
import { Command } from "commander";
import type { Ticker } from "../client/index.js";
import { integerAtLeast } from "./args.js";
import { withTicker } from "./client.js";
import { note, printFields, printJson, printTable } from "./output.js";

/** A group as GET .../groups answers it; checkpoint and lag are null for a group connected but without a checkpoint yet. */
interface Group {
  group: string;
  head_seq: number;
  checkpoint_seq: number | null;
  lag: number | null;
  lag_ms: number | null;
  members: Array<{ role: string; connected_at: number; next_seq: number | null }>;
}

const groupsOf = async (ticker: Ticker, stream: string) => (await ticker.groups(stream)) as unknown as Group[];

function members(g: Group): string {
  const active = g.members.filter((m) => m.role === "active").length;
  const standby = g.members.length - active;
  return g.members.length === 0 ? "none" : [active && `${active} active`, standby && `${standby} standby`].filter(Boolean).join(", ");
}

export function groupsCommand(): Command {
  return new Command("groups")
    .description("list a stream's consumer groups: checkpoint, lag and connected members")
    .argument("<stream>", "the stream")
    .addHelpText("after", "\nExamples:\n  $ ticker groups orders\n  $ ticker groups orders --json | jq '.[] | {group, lag}'")
    .action((stream: string, _flags: object, cmd: Command) =>
      withTicker(cmd, async (ticker, ctx) => {
        const groups = await groupsOf(ticker, stream);
        if (ctx.json) return printJson(groups);
        if (groups.length === 0) return note(ctx, `no groups on ${stream}`);
        printTable(
          ["GROUP", "CHECKPOINT", "HEAD", "LAG", "LAG_MS", "MEMBERS"],
          groups.map((g) => [g.group, g.checkpoint_seq, g.head_seq, g.lag, g.lag_ms, members(g)]),
        );
      }),
    );
}

export function lagCommand(): Command {
  return new Command("lag")
    .description("how far a group (or each group) is behind the stream's head, in events and in ms")
    .argument("<stream>", "the stream")
    .option("--group <group>", "this group only (default: every group of the stream)")
    .addHelpText("after", "\nExamples:\n  $ ticker lag orders\n  $ ticker lag orders --group billing --json   # {group, head_seq, checkpoint_seq, lag, lag_ms}")
    .action((stream: string, flags: { group?: string }, cmd: Command) =>
      withTicker(cmd, async (ticker, ctx) => {
        if (flags.group !== undefined) {
          const lag = await ticker.lag(stream, flags.group);
          return ctx.json ? printJson(lag) : printFields(lag as unknown as Record<string, unknown>);
        }
        const lags = (await groupsOf(ticker, stream)).map(({ members: _, ...lag }) => lag);
        if (ctx.json) return printJson(lags);
        if (lags.length === 0) return note(ctx, `no groups on ${stream}`);
        printTable(
          ["GROUP", "CHECKPOINT", "HEAD", "LAG", "LAG_MS"],
          lags.map((g) => [g.group, g.checkpoint_seq, g.head_seq, g.lag, g.lag_ms]),
        );
      }),
    );
}

export function checkpointCommand(): Command {
  return new Command("checkpoint")
    .description("show a group's checkpoint (the last seq it acked), or --set it (a consumer resumes after it)")
    .argument("<stream>", "the stream")
    .requiredOption("--group <group>", "the group")
    .option("--set <seq>", "move the checkpoint to this seq (0 to the head): the group's next connection starts at seq + 1", integerAtLeast(0))
    .addHelpText(
      "after",
      "\nExamples:\n  $ ticker checkpoint orders --group billing\n  $ ticker checkpoint orders --group billing --set 0   # replay everything to it",
    )
    .action((stream: string, flags: { group: string; set?: number }, cmd: Command) =>
      withTicker(cmd, async (ticker, ctx) => {
        const cp = flags.set === undefined ? await ticker.checkpoints.get(stream, flags.group) : await ticker.checkpoints.set(stream, flags.group, flags.set);
        if (ctx.json) printJson(cp);
        else printFields(cp);
      }),
    );
}
