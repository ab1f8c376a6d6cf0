/**
 * A set of fingerprints held in typed arrays: the first 64 bits of each (two 32-bit halves), open addressing, grown
 * at half load. 8 bytes a slot, so 16–32 bytes per distinct request (a `Set<string>` of the 64-hex texts takes
 * several times that: `packages/core/test/Estimate.test.ts` measures both). Two different requests share their first
 * 64 bits with odds of about n² / 2⁶⁵ (3 × 10⁻⁸ for a million requests); such a pair would count as one request.
 *
 * @internal
 */

/** a set of 64-hex fingerprints */
export interface FingerprintSet {
  /** adds it; false when it was there already */
  readonly add: (fingerprint: string) => boolean
  readonly has: (fingerprint: string) => boolean
  readonly size: () => number
  /** bytes of the typed arrays */
  readonly bytes: () => number
}

const halves = (fingerprint: string): readonly [number, number] => {
  const hi = Number.parseInt(fingerprint.slice(0, 8), 16)
  const lo = Number.parseInt(fingerprint.slice(8, 16), 16)
  if (!Number.isFinite(hi) || !Number.isFinite(lo)) throw new TypeError(`not a fingerprint: ${fingerprint}`)
  return [hi >>> 0, lo >>> 0]
}

/** an empty set with room for `capacity` entries before it grows */
export const make = (capacity = 1 << 12): FingerprintSet => {
  let slots = 1
  while (slots < capacity * 2) slots <<= 1
  let his = new Uint32Array(slots)
  let los = new Uint32Array(slots)
  // (0, 0) marks an empty slot: the fingerprint whose first 64 bits are zero is kept aside
  let zero = false
  let size = 0

  const find = (hi: number, lo: number): number => {
    const mask = his.length - 1
    let i = (lo ^ Math.imul(hi, 0x9e3779b1)) & mask
    while (his[i] !== 0 || los[i] !== 0) {
      if (his[i] === hi && los[i] === lo) return i
      i = (i + 1) & mask
    }
    return -1 - i
  }

  const grow = () => {
    const oldHi = his
    const oldLo = los
    his = new Uint32Array(oldHi.length * 2)
    los = new Uint32Array(oldLo.length * 2)
    for (let j = 0; j < oldHi.length; j++) {
      if (oldHi[j] === 0 && oldLo[j] === 0) continue
      const at = -1 - find(oldHi[j]!, oldLo[j]!)
      his[at] = oldHi[j]!
      los[at] = oldLo[j]!
    }
  }

  return {
    add: (fingerprint) => {
      const [hi, lo] = halves(fingerprint)
      if (hi === 0 && lo === 0) {
        if (zero) return false
        zero = true
        size++
        return true
      }
      const at = find(hi, lo)
      if (at >= 0) return false
      his[-1 - at] = hi
      los[-1 - at] = lo
      size++
      if (size * 2 > his.length) grow()
      return true
    },
    has: (fingerprint) => {
      const [hi, lo] = halves(fingerprint)
      return hi === 0 && lo === 0 ? zero : find(hi, lo) >= 0
    },
    size: () => size,
    bytes: () => his.byteLength + los.byteLength
  }
}
