// Flag values the client commands share, parsed when commander reads them: a
// bad value is a usage error (status 2) naming the flag, before any request.
import { type Command, InvalidArgumentError } from "commander";

/** An integer of at least `min` (a count, a seq, a size in bytes or ms). */
export function integerAtLeast(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`must be an integer of at least ${min}`);
    return n;
  };
}

export type Position = number | "earliest" | "latest";

/** Where a read starts: a seq (1 or more), "earliest" or "latest". */
export function position(value: string): Position {
  if (value === "earliest" || value === "latest") return value;
  return integerAtLeast(1)(value);
}

/** A comma-separated list of filter values (`trade,quote*`); the server checks each. */
export function valueList(value: string): string[] {
  return value.split(",");
}

/** --types, --keys and --max-rate: the server-side filter and rate of a read (replay and tail alike). */
export function addReadOptions(cmd: Command): Command {
  return cmd
    .option("--types <list>", "only events of these types, comma-separated; a value ending in * is a prefix", valueList)
    .option("--keys <list>", "only events with these keys, comma-separated; a value ending in * is a prefix", valueList)
    .option("--max-rate <events/s>", "at most this many events a second (the server paces)", integerAtLeast(1));
}

export interface ReadFlags {
  types?: string[];
  keys?: string[];
  maxRate?: number;
}
