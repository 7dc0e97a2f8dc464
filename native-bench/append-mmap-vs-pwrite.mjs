#!/usr/bin/env node
// Segment append: memory-mapped segment (@riaskov/mmap-io) vs fs.writeSync/readSync (pwrite/pread).
//
// Installs nothing. The mmap module is loaded from MMAP_IO_PATH (a package
// directory or file), or from '@riaskov/mmap-io' if resolvable; if neither
// loads, only the pwrite/pread figures are printed and the script exits 0.
//
//   mkdir -p /tmp/mmapbench && cd /tmp/mmapbench
//   echo '{"private":true,"allowScripts":{"@riaskov/mmap-io":true}}' > package.json
//   npm install @riaskov/mmap-io@1.4.3          # native build via node-gyp
//   MMAP_IO_PATH=/tmp/mmapbench/node_modules/@riaskov/mmap-io \
//     node native-bench/append-mmap-vs-pwrite.mjs
//
// Optional env: BENCH_DIR (scratch dir, default $TMPDIR/ticker-append-bench-<pid>),
// BENCH_RUNS (measured runs, default 3; one extra warm-up run is discarded).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import { createRequire } from "node:module";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const RECORD = 128;
const TOTAL_RECORDS = 1_000_000;
const TOTAL_BYTES = RECORD * TOTAL_RECORDS; // 128,000,000 bytes
const SEGMENT = 64 * 1024 * 1024; // 64 MiB, a whole number of records
const READ_PAGE = 1536 * 1024; // 1.5 MiB
const SYNC_ITERS = 200;
const SYNC_BATCH = 1000 * RECORD; // 128,000 bytes
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc"); // mmap-io unmaps only when its Buffer is collected

const now = () => Number(process.hrtime.bigint()) / 1e9;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const segName = (dir, prefix, i) => path.join(dir, `${prefix}-${String(i).padStart(6, "0")}.seg`);

function loadMmap() {
  const spec = process.env.MMAP_IO_PATH ? path.resolve(process.env.MMAP_IO_PATH) : "@riaskov/mmap-io";
  try {
    const req = createRequire(path.join(process.cwd(), "noop.js"));
    const m = req(spec);
    const mm = m.default ?? m;
    if (typeof mm.map !== "function" || typeof mm.sync !== "function") throw new Error("no map()/sync() export");
    return { mm, spec };
  } catch (err) {
    return { mm: null, spec, err };
  }
}

// A batch buffer of `n` records; every record gets a non-zero header (seq, ~seq).
function makeBatch(n) {
  const b = Buffer.alloc(n * RECORD, 0x5a);
  for (let i = 0; i < n; i++) b.writeUInt32LE(i, i * RECORD);
  return b;
}
function stampAll(b, firstSeq) {
  for (let off = 0, s = firstSeq; off < b.length; off += RECORD, s++) {
    b.writeUInt32LE(s, off);
    b.writeUInt32LE(~s >>> 0, off + 4);
  }
}

function writeFully(fd, buf, off, len, pos) {
  while (len > 0) {
    const n = fs.writeSync(fd, buf, off, len, pos);
    off += n;
    len -= n;
    pos += n;
  }
}

// ---- appenders -------------------------------------------------------------

// pwrite: segment files grow as written, rolled at 64 MiB.
function appendPwrite(dir, batchRecords, { batches = TOTAL_RECORDS / batchRecords, stamp = false, prefix = "pw" } = {}) {
  const batchBytes = batchRecords * RECORD;
  const src = makeBatch(batchRecords);
  const t0 = now();
  let seg = 0,
    segPos = 0;
  let fd = fs.openSync(segName(dir, prefix, seg), "w");
  for (let b = 0; b < batches; b++) {
    if (stamp) stampAll(src, b * batchRecords);
    else src.writeUInt32LE(b, 0);
    let off = 0;
    while (off < batchBytes) {
      const n = Math.min(SEGMENT - segPos, batchBytes - off);
      writeFully(fd, src, off, n, segPos);
      segPos += n;
      off += n;
      if (segPos === SEGMENT) {
        fs.closeSync(fd);
        fd = fs.openSync(segName(dir, prefix, ++seg), "w");
        segPos = 0;
      }
    }
  }
  fs.closeSync(fd);
  return now() - t0;
}

// mmap: each segment pre-sized with ftruncate, mapped MAP_SHARED, batch copied
// with Buffer.copy; new segment when full; the last one trimmed at the end.
function appendMmap(mm, dir, batchRecords, { batches = TOTAL_RECORDS / batchRecords, stamp = false, prefix = "mm", trim = true } = {}) {
  const batchBytes = batchRecords * RECORD;
  const src = makeBatch(batchRecords);
  const open = (i) => {
    const fd = fs.openSync(segName(dir, prefix, i), "w+");
    fs.ftruncateSync(fd, SEGMENT);
    const map = mm.map(SEGMENT, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_SHARED, fd, 0);
    return { fd, map };
  };
  const t0 = now();
  let seg = 0,
    segPos = 0;
  let cur = open(seg);
  for (let b = 0; b < batches; b++) {
    if (stamp) stampAll(src, b * batchRecords);
    else src.writeUInt32LE(b, 0);
    let off = 0;
    while (off < batchBytes) {
      const n = Math.min(SEGMENT - segPos, batchBytes - off);
      src.copy(cur.map, segPos, off, off + n);
      segPos += n;
      off += n;
      if (segPos === SEGMENT) {
        fs.closeSync(cur.fd);
        cur = open(++seg);
        segPos = 0;
      }
    }
  }
  if (trim) fs.ftruncateSync(cur.fd, segPos); // drop the sparse tail (map is not touched past segPos)
  fs.closeSync(cur.fd);
  const dt = now() - t0;
  cur = null;
  return dt;
}

// ---- readers (files written by appendPwrite, hot in page cache) -----------

function segFiles(dir, prefix) {
  return fs
    .readdirSync(dir)
    .filter((f) => f.startsWith(`${prefix}-`))
    .sort()
    .map((f) => path.join(dir, f));
}

function readPread(files) {
  const page = Buffer.allocUnsafe(READ_PAGE);
  const t0 = now();
  const fds = files.map((f) => fs.openSync(f, "r"));
  let pos = 0,
    sum = 0;
  while (pos < TOTAL_BYTES) {
    const want = Math.min(READ_PAGE, TOTAL_BYTES - pos);
    let got = 0;
    while (got < want) {
      const p = pos + got,
        seg = Math.floor(p / SEGMENT),
        segOff = p % SEGMENT;
      const n = fs.readSync(fds[seg], page, got, Math.min(want - got, SEGMENT - segOff), segOff);
      if (n <= 0) throw new Error("short read");
      got += n;
    }
    sum += page[0];
    pos += want;
  }
  for (const fd of fds) fs.closeSync(fd);
  return { dt: now() - t0, sum };
}

function mapForRead(mm, files) {
  return files.map((f) => {
    const fd = fs.openSync(f, "r");
    const size = fs.fstatSync(fd).size;
    const map = mm.map(size, mm.PROT_READ, mm.MAP_SHARED, fd, 0);
    fs.closeSync(fd); // the mapping outlives the fd
    return map;
  });
}

function readMapped(maps) {
  const page = Buffer.allocUnsafe(READ_PAGE);
  let pos = 0,
    sum = 0;
  while (pos < TOTAL_BYTES) {
    const want = Math.min(READ_PAGE, TOTAL_BYTES - pos);
    let got = 0;
    while (got < want) {
      const p = pos + got,
        seg = Math.floor(p / SEGMENT),
        segOff = p % SEGMENT;
      const n = Math.min(want - got, SEGMENT - segOff);
      maps[seg].subarray(segOff, segOff + n).copy(page, got); // slice, then copy the page out
      got += n;
    }
    sum += page[0];
    pos += want;
  }
  return sum;
}

// ---- durability: cost of making one 128,000-byte batch durable -------------

function syncPwrite(dir, presize) {
  const f = path.join(dir, presize ? "sync-pw-presized.seg" : "sync-pw.seg");
  const fd = fs.openSync(f, "w");
  if (presize) fs.ftruncateSync(fd, SEGMENT);
  const src = makeBatch(SYNC_BATCH / RECORD);
  const sync = [],
    total = [];
  for (let i = 0; i < SYNC_ITERS; i++) {
    src.writeUInt32LE(i, 0);
    const t0 = now();
    writeFully(fd, src, 0, SYNC_BATCH, i * SYNC_BATCH);
    const t1 = now();
    fs.fdatasyncSync(fd);
    const t2 = now();
    sync.push(t2 - t1);
    total.push(t2 - t0);
  }
  fs.closeSync(fd);
  fs.rmSync(f);
  return { sync, total };
}

function syncMmap(mm, dir) {
  const f = path.join(dir, "sync-mm.seg");
  const fd = fs.openSync(f, "w+");
  fs.ftruncateSync(fd, SEGMENT);
  let map = mm.map(SEGMENT, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_SHARED, fd, 0);
  const src = makeBatch(SYNC_BATCH / RECORD);
  const PAGE = mm.PAGESIZE || 4096;
  const sync = [],
    total = [];
  for (let i = 0; i < SYNC_ITERS; i++) {
    src.writeUInt32LE(i, 0);
    const off = i * SYNC_BATCH;
    const t0 = now();
    src.copy(map, off);
    const t1 = now();
    const start = off - (off % PAGE); // msync needs a page-aligned address
    mm.sync(map, start, off + SYNC_BATCH - start, true, false); // msync(MS_SYNC) of the dirty range
    const t2 = now();
    sync.push(t2 - t1);
    total.push(t2 - t0);
  }
  fs.closeSync(fd);
  map = null;
  fs.rmSync(f);
  return { sync, total };
}

// ---- child modes: kill -9 and SIGBUS --------------------------------------

const CRASH_BATCHES = 50; // 50,000 records, 6.4 MB

async function child(mode, method, dir) {
  if (mode === "crash") {
    const { mm } = method === "mmap" ? loadMmap() : {};
    if (method === "mmap") appendMmap(mm, dir, 1000, { batches: CRASH_BATCHES, stamp: true, prefix: "crash-mm", trim: false });
    else appendPwrite(dir, 1000, { batches: CRASH_BATCHES, stamp: true, prefix: "crash-pw" });
    process.kill(process.pid, "SIGKILL");
  } else if (mode === "sigbus") {
    const { mm } = loadMmap();
    const f = path.join(dir, "sigbus.seg");
    const fd = fs.openSync(f, "w+");
    fs.ftruncateSync(fd, SEGMENT);
    const map = mm.map(SEGMENT, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_SHARED, fd, 0);
    makeBatch(1000).copy(map, 0);
    fs.ftruncateSync(fd, 0); // e.g. recovery/retention truncates the file under a live mapping
    process.stdout.write("touching mapped page after truncate\n");
    const x = map[0]; // -> SIGBUS
    process.stdout.write(`survived, read ${x}\n`);
  }
}

function verifyCrash(dir, prefix) {
  const files = segFiles(dir, prefix);
  let valid = 0,
    size = 0;
  outer: for (const f of files) {
    const b = fs.readFileSync(f);
    size += b.length;
    for (let off = 0; off + RECORD <= b.length; off += RECORD) {
      const s = b.readUInt32LE(off);
      if (s !== valid || b.readUInt32LE(off + 4) !== ~s >>> 0) break outer;
      valid++;
    }
  }
  return { valid, size };
}

// ---- main -----------------------------------------------------------------

const fmt = (x, d = 0) => x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });

async function main() {
  const dir = process.env.BENCH_DIR ?? path.join(os.tmpdir(), `ticker-append-bench-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  const { mm, spec, err } = loadMmap();
  console.log(`node ${process.version}, ${os.cpus().length} cpus (nproc-visible: ${os.availableParallelism()}), ${os.platform()} ${os.release()}`);
  console.log(`scratch dir: ${dir}`);
  if (!mm) {
    console.log(`\n@riaskov/mmap-io could not be loaded from '${spec}' (${err?.message?.split("\n")[0]}).`);
    console.log("Set MMAP_IO_PATH to an installed copy (see the header of this script); printing pwrite/pread figures only.\n");
  } else {
    console.log(`mmap module: ${spec}`);
  }
  const clean = (prefix) => {
    for (const f of segFiles(dir, prefix)) fs.rmSync(f);
  };
  const rows = [];

  for (const batch of [1000, 10]) {
    const writes = TOTAL_RECORDS / batch;
    const res = { pwrite: [], mmap: [] },
      faults = { pwrite: [], mmap: [] };
    for (let r = 0; r <= RUNS; r++) {
      // r = 0 is a discarded warm-up
      const order = r % 2 ? ["mmap", "pwrite"] : ["pwrite", "mmap"];
      for (const m of order) {
        if (m === "mmap" && !mm) continue;
        const f0 = process.resourceUsage().minorPageFault;
        const dt = m === "pwrite" ? appendPwrite(dir, batch) : appendMmap(mm, dir, batch);
        const f1 = process.resourceUsage().minorPageFault;
        if (r > 0) {
          res[m].push(dt);
          faults[m].push(f1 - f0);
        }
        clean(m === "pwrite" ? "pw" : "mm");
        gc();
      }
    }
    for (const m of ["pwrite", "mmap"]) {
      if (!res[m].length) continue;
      const dt = median(res[m]);
      rows.push({
        key: batch,
        test: `append, ${batch} rec/write (${fmt(batch * RECORD)} B)`,
        method: m,
        mbs: TOTAL_BYTES / 1e6 / dt,
        ops: writes / dt,
        extra: `${fmt((dt / writes) * 1e6, 2)} µs/write; runs ${res[m].map((x) => fmt(x * 1000)).join("/")} ms; ~${fmt(median(faults[m]))} minor faults/run`,
      });
    }
  }

  // read back 128 MB in 1.5 MiB pages
  appendPwrite(dir, 1000, { prefix: "rd" });
  const files = segFiles(dir, "rd");
  const rd = { pread: [], mmapCold: [], mmapWarm: [] };
  for (let r = 0; r <= RUNS; r++) {
    const p = readPread(files);
    if (mm) {
      const t0 = now();
      let maps = mapForRead(mm, files);
      readMapped(maps);
      const t1 = now();
      readMapped(maps);
      const t2 = now();
      maps = null;
      gc();
      if (r > 0) {
        rd.mmapCold.push(t1 - t0);
        rd.mmapWarm.push(t2 - t1);
      }
    }
    if (r > 0) rd.pread.push(p.dt);
  }
  const pages = Math.ceil(TOTAL_BYTES / READ_PAGE);
  for (const [k, label] of [
    ["pread", "pread"],
    ["mmapCold", "mmap (map + first pass, slice+copy)"],
    ["mmapWarm", "mmap (already mapped, slice+copy)"],
  ]) {
    if (!rd[k].length) continue;
    const dt = median(rd[k]);
    rows.push({
      test: "read 128 MB in 1.5 MiB pages (page cache hot)",
      method: label,
      mbs: TOTAL_BYTES / 1e6 / dt,
      ops: pages / dt,
      extra: `runs ${rd[k].map((x) => fmt(x * 1000, 1)).join("/")} ms`,
    });
  }
  clean("rd");

  console.log("\n| test | method | MB/s | writes (or pages)/s | notes |\n|---|---|---:|---:|---|");
  for (const r of rows) console.log(`| ${r.test} | ${r.method} | ${fmt(r.mbs)} | ${fmt(r.ops)} | ${r.extra} |`);

  for (const batch of [1000, 10]) {
    const a = rows.find((r) => r.key === batch && r.method === "pwrite");
    const b = rows.find((r) => r.key === batch && r.method === "mmap");
    if (a && b) console.log(`mmap/pwrite append throughput, ${batch} rec/write: ${(b.mbs / a.mbs).toFixed(2)}x`);
  }

  // durability cost
  console.log(`\nDurability: time to make one ${fmt(SYNC_BATCH)}-byte batch durable, ${SYNC_ITERS} iterations (ms)`);
  console.log("| method | sync p50 | sync p99 | write+sync p50 | write+sync p99 |\n|---|---:|---:|---:|---:|");
  const sres = [
    ["pwrite append + fdatasync", syncPwrite(dir, false)],
    ["pwrite into ftruncate-presized file + fdatasync", syncPwrite(dir, true)],
  ];
  if (mm) sres.push(["mmap copy + msync(MS_SYNC) of dirty range", syncMmap(mm, dir)]);
  for (const [label, s] of sres) {
    const a = [...s.sync].sort((x, y) => x - y),
      b = [...s.total].sort((x, y) => x - y);
    console.log(`| ${label} | ${fmt(pct(a, 50) * 1e3, 3)} | ${fmt(pct(a, 99) * 1e3, 3)} | ${fmt(pct(b, 50) * 1e3, 3)} | ${fmt(pct(b, 99) * 1e3, 3)} |`);
  }
  gc();

  // kill -9 and SIGBUS, each in a child process
  const self = fileURLToPath(import.meta.url);
  console.log("\nkill -9 after 50 batches of 1000 records (no fsync/msync), then re-read:");
  for (const m of mm ? ["pwrite", "mmap"] : ["pwrite"]) {
    const prefix = m === "mmap" ? "crash-mm" : "crash-pw";
    const c = spawnSync(process.execPath, [self, "--child", "crash", m, dir], { env: process.env, encoding: "utf8" });
    const v = verifyCrash(dir, prefix);
    console.log(
      `  ${m}: child ended by ${c.signal ?? `exit ${c.status}`}; ${fmt(v.valid)} of ${fmt(CRASH_BATCHES * 1000)} records intact; file size ${fmt(v.size)} B` +
        (v.size > v.valid * RECORD ? " (pre-sized, zero tail must be found by scanning and trimmed on recovery)" : ""),
    );
    clean(prefix);
  }
  if (mm) {
    const c = spawnSync(process.execPath, [self, "--child", "sigbus", "mmap", dir], { env: process.env, encoding: "utf8" });
    console.log(
      `SIGBUS check (file truncated under a live mapping, then read): child ended by ${c.signal ?? `exit ${c.status}`}; stdout: ${c.stdout.trim().replace(/\n/g, " | ")}`,
    );
    fs.rmSync(path.join(dir, "sigbus.seg"), { force: true });
  }

  if (!process.env.BENCH_DIR) fs.rmSync(dir, { recursive: true, force: true });
}

if (process.argv[2] === "--child") await child(process.argv[3], process.argv[4], process.argv[5]);
else await main();
