// COCO RLE, as pycocotools writes it (maskApi.c rleToString / rleFrString): runs alternate 0s and 1s starting with
// 0s over the mask in column-major order; each run (after the second, as the difference to the run two before) is
// written in 5-bit groups, low first, as chars 48 + group, with 0x20 meaning "more follows" and 0x10 the sign.
// Arithmetic rather than bit operators, so runs past 2^31 (huge images) stay exact.

export function rleCountsFromString(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true, c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * Math.pow(32, k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x -= Math.pow(32, k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

export function rleCountsToString(counts) {
  let s = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      const c = ((x % 32) + 32) % 32;        // low 5 bits, also for negative x
      x = Math.floor(x / 32);                // arithmetic shift
      more = (c & 0x10) ? x !== -1 : x !== 0;
      s += String.fromCharCode(48 + (more ? c | 0x20 : c));
    }
  }
  return s;
}

// {size: [h, w], counts: string | number[]} → {h, w, data: Uint8Array (row-major, 0/1)}
export function rleDecode(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? rleCountsFromString(rle.counts) : rle.counts;
  const data = new Uint8Array(h * w);
  let i = 0;
  for (let r = 0; r < counts.length; r++) {
    const end = Math.min(i + counts[r], h * w);
    if (r % 2 === 1) {
      for (let j = i; j < end; j++) data[(j % h) * w + Math.floor(j / h)] = 1;
    }
    i = end;
  }
  return { h, w, data };
}

// {h, w, data (row-major)} → {size: [h, w], counts: string}, byte-identical to pycocotools' encode.
export function rleEncode(mask) {
  const { h, w, data } = mask;
  const counts = [];
  let prev = 0, run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = data[y * w + x] ? 1 : 0;
      if (v !== prev) { counts.push(run); run = 0; prev = v; }
      run++;
    }
  }
  counts.push(run);
  return { size: [h, w], counts: rleCountsToString(counts) };
}

// For scripts and tests in the page (the module's own names are not globals).
window.segdetRle = { decode: rleDecode, encode: rleEncode, countsFromString: rleCountsFromString,
                     countsToString: rleCountsToString };
