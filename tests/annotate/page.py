"""What the page tests share: masks carried between Python and the page's JavaScript."""

# Masks cross between Python and the page as row-major bits packed into bytes, base64 (numpy's packbits order).
TO_BITS = """m => { const bytes = new Uint8Array(Math.ceil(m.data.length / 8));
  for (let i = 0; i < m.data.length; i++) if (m.data[i]) bytes[i >> 3] |= 128 >> (i & 7);
  let s = ""; for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(s); }"""
FROM_BITS = """([h, w, b64]) => { const s = atob(b64), data = new Uint8Array(h * w);
  for (let i = 0; i < h * w; i++) data[i] = (s.charCodeAt(i >> 3) >> (7 - (i & 7))) & 1;
  return {h, w, data}; }"""
