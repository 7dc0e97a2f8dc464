// Flag values the client commands share, parsed when commander reads them: a
// bad value is a usage error (status 2) naming the flag, before any request.
import { InvalidArgumentError } from "commander";

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
