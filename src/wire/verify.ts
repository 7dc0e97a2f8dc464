// A small FlatBuffers verifier for what producers send us. The JS runtime has
// none, and a malformed buffer read through generated accessors quietly yields
// zeros or garbage instead of failing. These checks keep every offset we are
// about to follow inside the buffer; a failure throws VerifyError.

export class VerifyError extends Error {}

const fail = (what: string): never => {
  throw new VerifyError(what);
};

export class Verifier {
  private readonly dv: DataView;
  /**
   * Checks positions in `bytes` within [start, end): a nested buffer is
   * verified in place, its offsets relative to its own start like any other.
   */
  constructor(
    bytes: Uint8Array | DataView,
    private readonly start = 0,
    private readonly end = bytes.byteLength,
  ) {
    this.dv = bytes instanceof DataView ? bytes : new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private need(pos: number, n: number, what: string): void {
    if (pos < this.start || n < 0 || pos + n > this.end) fail(`${what} out of bounds`);
  }

  /** Checks the root table and returns its position. */
  root(): number {
    this.need(this.start, 4, "root offset");
    const pos = this.start + this.dv.getUint32(this.start, true);
    this.table(pos);
    return pos;
  }

  /** Checks a table's vtable; returns the vtable position and size. */
  table(pos: number): { vt: number; vtBytes: number } {
    if ((pos - this.start) % 4 !== 0) fail("misaligned table");
    this.need(pos, 4, "table");
    const vt = pos - this.dv.getInt32(pos, true);
    this.need(vt, 4, "vtable");
    const vtBytes = this.dv.getUint16(vt, true);
    const tableBytes = this.dv.getUint16(vt + 2, true);
    if (vtBytes < 4 || vtBytes % 2 !== 0) fail("bad vtable size");
    this.need(vt, vtBytes, "vtable");
    this.need(pos, tableBytes, "table");
    return { vt, vtBytes };
  }

  /** Position of field `index` in the table at `pos`, or 0 when absent. */
  field(pos: number, index: number, bytes: number): number {
    const { vt, vtBytes } = this.table(pos);
    const at = 4 + index * 2;
    if (at >= vtBytes) return 0;
    const off = this.dv.getUint16(vt + at, true);
    if (off === 0) return 0;
    this.need(pos + off, bytes, "field");
    return pos + off;
  }

  /** Checks a vector and returns where its elements start and how many there are. */
  vectorSpan(fieldPos: number, elemBytes: number, isString = false): { data: number; count: number } {
    this.need(fieldPos, 4, "vector offset");
    const vec = fieldPos + this.dv.getUint32(fieldPos, true);
    this.need(vec, 4, "vector length");
    const count = this.dv.getUint32(vec, true);
    this.need(vec + 4, count * elemBytes + (isString ? 1 : 0), "vector");
    return { data: vec + 4, count };
  }
}
