// One host's time series, in fixed-size typed arrays.

import { isNum } from "./util.js";

const MAX_CORE_SERIES = 128;         // per-core history kept for at most this many cores

/**
 * Fixed-size column store of one host's points, in increasing time: from
 * the server's history (an overview has only cpu and mem) and then live.
 */
export class History {
  constructor(capacity) {
    this.capacity = capacity;
    this.length = 0;
    this.start = 0;
    this.t = new Float64Array(capacity);
    this.cpu = new Float32Array(capacity);
    this.mem = new Float32Array(capacity);
    this.rx = new Float32Array(capacity);
    this.tx = new Float32Array(capacity);
    this.disk = new Float32Array(capacity);   // the fullest mount's percent
    this.cores = [];          // core index -> Float32Array, allocated when first seen
  }
  coreSeries(c) {
    if (!this.cores[c]) this.cores[c] = new Float32Array(this.capacity).fill(NaN);
    return this.cores[c];
  }
  /** Index into the column arrays of the i-th oldest point. */
  at(i) { return (this.start + i) % this.capacity; }
  lastT() { return this.length ? this.t[this.at(this.length - 1)] : null; }
  /** Position (0 … length) of the oldest point at or after time t. */
  firstAtOrAfter(t) {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.t[this.at(mid)] < t) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  /** Append a sample {t, cpu, mem, rx, tx, disk, cores}; false unless t is newer than the last. */
  push(s) {
    const last = this.lastT();
    if (!isNum(s.t) || (last !== null && s.t <= last)) return false;
    let i;
    if (this.length < this.capacity) {
      i = this.at(this.length);
      this.length++;
    } else {
      i = this.start;
      this.start = (this.start + 1) % this.capacity;
    }
    this.t[i] = s.t;
    this.cpu[i] = s.cpu ?? NaN;
    this.mem[i] = s.mem ?? NaN;
    this.rx[i] = s.rx ?? NaN;
    this.tx[i] = s.tx ?? NaN;
    this.disk[i] = s.disk ?? NaN;
    for (const arr of this.cores) if (arr) arr[i] = NaN;
    const cores = Array.isArray(s.cores) ? s.cores : [];
    const n = Math.min(cores.length, MAX_CORE_SERIES);
    for (let c = 0; c < n; c++) this.coreSeries(c)[i] = isNum(cores[c]) ? cores[c] : NaN;
    return true;
  }
  /** The sample at position i, as push() takes it. */
  sample(i) {
    const j = this.at(i);
    return {
      t: this.t[j], cpu: this.cpu[j], mem: this.mem[j], rx: this.rx[j], tx: this.tx[j], disk: this.disk[j],
      cores: this.cores.map((arr) => (arr ? arr[j] : NaN)),
    };
  }
}
