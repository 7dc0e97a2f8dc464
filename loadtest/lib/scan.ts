// Numbers read out of bytes in place: the consumers and the replay checks
// scan what the servers send instead of parsing it, so that the benchmark's
// own CPU stays out of what it measures.

const ZERO = 48;
const NINE = 57;
const DOT = 46;

/** An unsigned decimal integer at `at`; NaN if there is no digit. */
export function uintAt(buf: Uint8Array, at: number): number {
  let v = 0;
  let c = buf[at];
  if (!(c >= ZERO && c <= NINE)) return NaN;
  for (; c >= ZERO && c <= NINE; c = buf[++at]) v = v * 10 + (c - ZERO);
  return v;
}

/** An unsigned decimal with an optional fraction (what String(ms) writes for our stamps); NaN if none. */
export function udecimalAt(buf: Uint8Array, at: number): number {
  let c = buf[at];
  if (!(c >= ZERO && c <= NINE)) return NaN;
  let v = 0;
  for (; c >= ZERO && c <= NINE; c = buf[++at]) v = v * 10 + (c - ZERO);
  if (c !== DOT) return v;
  let frac = 0;
  let scale = 1;
  for (c = buf[++at]; c >= ZERO && c <= NINE; c = buf[++at]) {
    frac = frac * 10 + (c - ZERO);
    scale *= 10;
  }
  return v + frac / scale;
}
