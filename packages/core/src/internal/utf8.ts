/**
 * Text to bytes for files: many strings encoded once, straight into one buffer. A string built with `+=` is a rope
 * that `Buffer.from` first flattens and then encodes, at a fraction of the speed (a batch file's 2,000 lines of ~1 KB:
 * 4–9 µs a line that way, under 1 µs a line this way).
 *
 * @internal
 */

/** the UTF-8 bytes of `count` texts (`text(i)`), one after the other, each followed by a newline when `newline` */
export const encode = (count: number, text: (i: number) => string, newline: boolean): Buffer => {
  let size = newline ? count : 0
  for (let i = 0; i < count; i++) size += Buffer.byteLength(text(i), "utf8")
  const out = Buffer.allocUnsafe(size)
  let offset = 0
  for (let i = 0; i < count; i++) {
    offset += out.write(text(i), offset, "utf8")
    if (newline) out[offset++] = 10
  }
  return out
}
