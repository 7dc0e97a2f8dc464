// How a client command reaches the server: the global options (context.ts)
// become one Ticker client (src/client), closed when the command ends however
// it ends, so no keep-alive socket holds the process open after its output.
import type { Command } from "commander";
import { Ticker } from "../client/index.js";
import { type CliContext, clientContext } from "./context.js";

/** Runs `work` with a client of the server the global options name. */
export async function withTicker<T>(command: Command, work: (ticker: Ticker, ctx: CliContext) => Promise<T>): Promise<T> {
  const ctx = clientContext(command);
  const ticker = new Ticker({ url: ctx.url, token: ctx.token });
  try {
    return await work(ticker, ctx);
  } finally {
    ticker.close();
  }
}
