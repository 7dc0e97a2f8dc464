// `ticker streams`: every stream with its head, size and main settings.
import { Command } from "commander";
import { withTicker } from "./client.js";
import { note, printJson, printTable } from "./output.js";

const EXAMPLES = `
Examples:
  $ ticker streams
  $ ticker streams --json | jq -r '.[].id'`;

export function streamsCommand(): Command {
  return new Command("streams")
    .description("list the streams: head, first retained seq, events, bytes, retention and durability")
    .addHelpText("after", EXAMPLES)
    .action((_flags: object, cmd: Command) =>
      withTicker(cmd, async (ticker, ctx) => {
        const streams = await ticker.streams.list();
        if (ctx.json) return printJson(streams);
        if (streams.length === 0) return note(ctx, "no streams");
        printTable(
          ["STREAM", "HEAD", "FIRST", "EVENTS", "BYTES", "RETENTION_MS", "DURABILITY"],
          streams.map((s) => [s.id, s.head_seq, s.first_seq, s.events, s.bytes, s.retention_ms, String(s.durability)]),
        );
      }),
    );
}
