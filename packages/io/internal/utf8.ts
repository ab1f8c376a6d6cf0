/**
 * UTF-8 decoding of a file read in chunks, reporting where bytes that are not
 * UTF-8 were.
 *
 * A character split across two chunks is never decoded in halves: the reader
 * keeps the incomplete trailing bytes of a chunk ({@link completeLength}) and
 * puts them in front of the next one. Each piece is then decoded on its own
 * ({@link decode}): a fatal decoder validates it on the fast path, and only a
 * piece with bytes that are not UTF-8 is decoded again, byte by byte, to say
 * which U+FFFD of its text stand for such bytes (a U+FFFD written in the file,
 * EF BF BD, is a character like any other and is never reported).
 *
 * @internal
 */

/**
 * Bytes that are not UTF-8, replaced by one U+FFFD in the decoded text (one
 * per maximal invalid subsequence, as the WHATWG decoder does).
 *
 * @internal
 */
export interface Invalid {
  /** UTF-16 offset, in the decoded text, of the U+FFFD that stands for the bytes */
  readonly at: number
  /** byte offset of the first of the bytes in the file */
  readonly offset: number
  /** the bytes in hex, `E9` or `F0 9F 98` */
  readonly bytes: string
}

/** @internal */
export interface Decoded {
  readonly text: string
  /** in the order of `at`; empty when every byte was UTF-8 */
  readonly invalid: ReadonlyArray<Invalid>
}

const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
const lossy = new TextDecoder("utf-8", { ignoreBOM: true })

const NONE: ReadonlyArray<Invalid> = []

/**
 * The length of the longest prefix of `bytes[0, end)` that does not end inside
 * a multi-byte sequence: the bytes after it are the start of a character the
 * next chunk completes, and must be decoded with it. Looks at most 3 bytes
 * back; bytes that cannot start a longer character are not held back.
 *
 * @internal
 */
export const completeLength = (bytes: Uint8Array, end: number): number => {
  for (let k = 1; k <= 3 && k <= end; k++) {
    const b = bytes[end - k]!
    if (b < 0x80) return end
    if (b < 0xc0) continue // a continuation byte: look further back for its lead
    const length = b >= 0xf8 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2
    return length > k ? end - k : end
  }
  return end
}

const hex = (bytes: Uint8Array, from: number, to: number): string => {
  let out = ""
  for (let i = from; i < to; i++) out += (i > from ? " " : "") + bytes[i]!.toString(16).toUpperCase().padStart(2, "0")
  return out
}

/**
 * Decodes `bytes` (whole characters, see {@link completeLength}; a sequence
 * cut at the end is invalid) whose first byte is at `offset` in the file.
 * The text is what `TextDecoder` gives; `invalid` says which of its U+FFFD
 * replaced bytes that are not UTF-8.
 *
 * @internal
 */
export const decode = (bytes: Uint8Array, offset: number): Decoded => {
  try {
    return { text: fatal.decode(bytes), invalid: NONE }
  } catch {
    return decodeReporting(bytes, offset)
  }
}

/** the slow path: maximal subparts per the WHATWG UTF-8 decoder, valid runs decoded in bulk */
const decodeReporting = (bytes: Uint8Array, offset: number): Decoded => {
  const invalid: Array<Invalid> = []
  const n = bytes.length
  let text = ""
  let run = 0
  let i = 0
  while (i < n) {
    const b = bytes[i]!
    if (b < 0x80) {
      i++
      continue
    }
    let need = 0
    let lo = 0x80
    let hi = 0xbf
    if (b >= 0xc2 && b <= 0xdf) need = 1
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2
      if (b === 0xe0) lo = 0xa0
      else if (b === 0xed) hi = 0x9f
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3
      if (b === 0xf0) lo = 0x90
      else if (b === 0xf4) hi = 0x8f
    }
    // the bytes of the sequence that are valid so far: a bad lead is 1 byte, else the lead and its good continuations
    let length = 1
    if (need > 0) {
      while (length <= need && i + length < n) {
        const c = bytes[i + length]!
        if (c < lo || c > hi) break
        lo = 0x80
        hi = 0xbf
        length++
      }
      if (length > need) {
        i += length
        continue
      }
    }
    if (i > run) text += lossy.decode(bytes.subarray(run, i))
    invalid.push({ at: text.length, offset: offset + i, bytes: hex(bytes, i, i + length) })
    text += "\uFFFD"
    i += length
    run = i
  }
  if (n > run) text += lossy.decode(bytes.subarray(run, n))
  return { text, invalid }
}
