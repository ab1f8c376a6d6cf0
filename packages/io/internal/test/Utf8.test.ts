import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { isUtf8 } from "node:buffer"
import * as TextFile from "../textFile.ts"
import * as Utf8 from "../utf8.ts"
import { file } from "./support.ts"

/** a deterministic PRNG (mulberry32) */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** random bytes rich in UTF-8 edge cases: valid characters of every length, U+FFFD, stray, cut and overlong sequences */
const randomBytes = (rand: () => number, length: number): Buffer => {
  const pieces: Array<Buffer> = []
  const valid = ["a", "\n", "é", "€", "\uFFFD", "😀", "\u{10FFFF}", "\u07FF", "\uFEFF"]
  const invalid = [[0x80], [0xbf], [0xc0, 0xaf], [0xc1], [0xe0, 0x80], [0xed, 0xa0, 0x80], [0xf0, 0x8f], [0xf4, 0x90], [0xf5], [0xff], [0xe2, 0x82], [0xf0, 0x9f, 0x98], [0xc3]]
  let n = 0
  while (n < length) {
    const r = rand()
    const piece = r < 0.6
      ? Buffer.from(valid[Math.floor(rand() * valid.length)]!)
      : r < 0.9
      ? Buffer.from(invalid[Math.floor(rand() * invalid.length)]!)
      : Buffer.from([Math.floor(rand() * 256)])
    pieces.push(piece)
    n += piece.length
  }
  return Buffer.concat(pieces)
}

const lossy = new TextDecoder("utf-8", { ignoreBOM: true })

const count = (haystack: Buffer, needle: Buffer) => {
  let n = 0
  for (let i = haystack.indexOf(needle); i !== -1; i = haystack.indexOf(needle, i + 1)) n++
  return n
}

describe("Utf8", () => {
  it("decodes as TextDecoder does and reports exactly the U+FFFD that stand for bytes that are not UTF-8", () => {
    const rand = prng(7)
    let reported = 0
    let real = 0
    for (let round = 0; round < 3_000; round++) {
      const bytes = randomBytes(rand, Math.floor(rand() * 40))
      const decoded = Utf8.decode(bytes, 100)
      const text = lossy.decode(bytes)
      assert.strictEqual(decoded.text, text, bytes.toString("hex"))
      // every U+FFFD of the text is either reported or an EF BF BD of the file
      const replacements = [...text].filter((c) => c === "\uFFFD").length
      const encoded = count(bytes, Buffer.from([0xef, 0xbf, 0xbd]))
      assert.strictEqual(decoded.invalid.length, replacements - encoded, bytes.toString("hex"))
      assert.strictEqual(decoded.invalid.length === 0, isUtf8(bytes))
      for (const bad of decoded.invalid) {
        assert.strictEqual(text[bad.at], "\uFFFD")
        const first = bytes[bad.offset - 100]!
        assert.strictEqual(bad.bytes.slice(0, 2), first.toString(16).toUpperCase().padStart(2, "0"))
      }
      reported += decoded.invalid.length
      real += encoded
    }
    console.log(`Utf8.decode: 3,000 random byte strings, ${reported} invalid sequences reported, ${real} real U+FFFD kept`)
    assert.isAbove(reported, 1_000)
    assert.isAbove(real, 100)
  })

  it("holds back only the bytes of a character cut at the end", () => {
    const cases: ReadonlyArray<readonly [Array<number>, number]> = [
      [[0x61], 1],
      [[0x61, 0xc3], 1], // é cut after 1 of 2
      [[0xe2, 0x82], 0], // € cut after 2 of 3
      [[0x61, 0xe2], 1],
      [[0x61, 0xf0, 0x9f, 0x98], 1], // 😀 cut after 3 of 4
      [[0xf0, 0x9f, 0x98, 0x80], 4], // 😀 whole
      [[0x61, 0x80, 0x80, 0x80], 4], // stray continuations: nothing to wait for
      [[0xff], 1],
      [[0xef, 0xbf, 0xbd], 3] // a whole U+FFFD
    ]
    for (const [bytes, expected] of cases) {
      assert.strictEqual(Utf8.completeLength(Uint8Array.from(bytes), bytes.length), expected, JSON.stringify(bytes))
    }
  })

  it.effect("the chunked reader gives the text and invalid offsets of a whole decode, at every chunk size", () =>
    Effect.gen(function*() {
      const rand = prng(11)
      const bytes = randomBytes(rand, 600)
      const p = file(bytes, "random.bin")
      const whole = Utf8.decode(bytes, 0)
      const strip = whole.text.startsWith("\uFEFF") ? 1 : 0
      const expected = {
        text: whole.text.slice(strip),
        invalid: whole.invalid.map((i) => ({ ...i, at: i.at - strip }))
      }
      for (let chunkSize = 1; chunkSize <= 9; chunkSize++) {
        let text = ""
        const invalid: Array<Utf8.Invalid> = []
        yield* Stream.runDrain(TextFile.stream({
          path: p,
          name: "random.bin",
          chunkSize,
          parser: () => ({
            push: (piece, bad) => {
              for (const b of bad) invalid.push({ ...b, at: text.length + b.at })
              text += piece
              return []
            },
            end: () => []
          })
        }))
        assert.strictEqual(text, expected.text, `chunk size ${chunkSize}`)
        assert.deepStrictEqual(invalid, expected.invalid, `chunk size ${chunkSize}`)
      }
      console.log(`chunked reader: ${bytes.length} random bytes, ${expected.invalid.length} invalid sequences, same result at chunk sizes 1–9`)
    }))
})
