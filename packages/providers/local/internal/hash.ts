/**
 * Fast, portable 32-bit hashing and a seeded PRNG: every "random" choice of the
 * local engine and the emulators is derived from these, never from
 * `Math.random` or the clock.
 */

/** murmur3's 32-bit finaliser: spreads every input bit over the output */
export const fmix32 = (h: number): number => {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** FNV-1a over the UTF-16 code units of `text`, seeded, finalised with {@link fmix32}; unsigned 32-bit */
export const hashString = (text: string, seed = 0): number => {
  let h = (0x811c9dc5 ^ seed) >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return fmix32(h)
}

/** a uniform draw in [0, 1) from `text` and `seed` */
export const unit = (text: string, seed = 0): number => hashString(text, seed) / 4294967296

/** mulberry32: a deterministic PRNG in [0, 1) */
export const prng = (seed: number): () => number => {
  let s = seed | 0
  return () => {
    s = (s + 0x6d2b79f5) | 0
    let t = Math.imul(s ^ (s >>> 15), 1 | s)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** the UTF-8 byte length of `text`, without allocating */
export const utf8Length = (text: string): number => {
  let bytes = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x80) bytes += 1
    else if (c < 0x800) bytes += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 4
        i++
      } else bytes += 3
    } else bytes += 3
  }
  return bytes
}

/** the longest prefix of `text` of at most `maxBytes` UTF-8 bytes, never splitting a character */
export const utf8Prefix = (text: string, maxBytes: number): string => {
  if (maxBytes <= 0) return ""
  let bytes = 0
  let i = 0
  while (i < text.length) {
    const c = text.charCodeAt(i)
    let width = 1
    let units = 1
    if (c < 0x80) width = 1
    else if (c < 0x800) width = 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        width = 4
        units = 2
      } else width = 3
    } else width = 3
    if (bytes + width > maxBytes) break
    bytes += width
    i += units
  }
  return text.slice(0, i)
}

/** the indexes 0 … n−1, shuffled by a seeded Fisher–Yates when `shuffle` (an emulator's order of result lines) */
export const permutation = (n: number, shuffle: boolean, seed: number): Uint32Array => {
  const perm = new Uint32Array(n)
  for (let i = 0; i < n; i++) perm[i] = i
  if (!shuffle) return perm
  const random = prng(seed)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = perm[i]!
    perm[i] = perm[j]!
    perm[j] = t
  }
  return perm
}
