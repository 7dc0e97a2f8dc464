// CRC-32 (the zlib polynomial, same values as zlib.crc32) of a byte range.
// For the small ranges of single records a table-driven loop in JS beats the
// native call, whose fixed cost (plus the subarray it needs) dominates below
// about half a kilobyte; larger ranges go native. Measured: 136-byte record
// 280 ns in JS vs 520 ns native; 8 KB 22 us in JS vs 4 us native.
// A leaf module: record frames and checkpoint files both use it.
import { crc32 } from "node:zlib";

const JS_RANGE_BYTES_MAX = 512;

// Slice-by-16 tables (16 bytes per step; measured 10-20% faster than
// slice-by-8 on 176- and 400-byte records here).
const T = new Int32Array(256 * 16);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  T[n] = c;
}
for (let n = 0; n < 256; n++) {
  for (let t = 1; t < 16; t++) T[t * 256 + n] = (T[(t - 1) * 256 + n] >>> 8) ^ T[T[(t - 1) * 256 + n] & 0xff];
}

export function crc32Range(b: Buffer, start: number, end: number): number {
  if (end - start > JS_RANGE_BYTES_MAX) return crc32(b.subarray(start, end));
  let c = -1;
  let i = start;
  for (; i + 16 <= end; i += 16) {
    const a = c ^ (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24));
    c =
      T[3840 + (a & 0xff)] ^
      T[3584 + ((a >>> 8) & 0xff)] ^
      T[3328 + ((a >>> 16) & 0xff)] ^
      T[3072 + (a >>> 24)] ^
      T[2816 + b[i + 4]] ^
      T[2560 + b[i + 5]] ^
      T[2304 + b[i + 6]] ^
      T[2048 + b[i + 7]] ^
      T[1792 + b[i + 8]] ^
      T[1536 + b[i + 9]] ^
      T[1280 + b[i + 10]] ^
      T[1024 + b[i + 11]] ^
      T[768 + b[i + 12]] ^
      T[512 + b[i + 13]] ^
      T[256 + b[i + 14]] ^
      T[b[i + 15]];
  }
  for (; i < end; i++) c = T[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
