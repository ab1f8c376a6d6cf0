/**
 * Test helpers shared by the CSV and JSONL source tests: files whose
 * multi-byte characters straddle chunk boundaries, and temp files.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** a fresh temp folder */
export const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `offpeak-${prefix}-`))

/** writes `content` to a new temp file and returns its path */
export const file = (content: string | Uint8Array, name: string) => {
  const p = path.join(tmpDir("src"), name)
  fs.writeFileSync(p, content)
  return p
}

/** multi-byte characters of every UTF-8 length, U+FFFD among them (a character like any other) */
export const CHARS: ReadonlyArray<string> = ["é", "€", "\uFFFD", "😀"]

/**
 * A file of `boundaries` rows after `head` where, in row `j`, `char` starts
 * `split` bytes before byte `j * chunk`: read `chunk` bytes at a time, the
 * character is cut after its first `split` bytes at every chunk boundary.
 * `row(j, body)` renders a row around its body; returns the text and each
 * row's body.
 */
export const straddling = (options: {
  readonly head: string
  readonly chunk: number
  readonly boundaries: number
  readonly char: string
  readonly split: number
  readonly row: (j: number, body: string) => string
}) => {
  let text = options.head
  const bodies: Array<string> = []
  for (let j = 1; j <= options.boundaries; j++) {
    const target = j * options.chunk - options.split
    const before = options.row(j, "@@body@@").split("@@body@@")[0]!
    const pad = target - Buffer.byteLength(text + before)
    if (pad < 0) throw new Error(`chunk ${options.chunk} is too small for the rows`)
    const body = `${"x".repeat(pad)}${options.char} ok`
    bodies.push(body)
    text += options.row(j, body)
  }
  const bytes = Buffer.from(text)
  const encoded = Buffer.from(options.char)
  for (let j = 1; j <= options.boundaries; j++) {
    const at = j * options.chunk - options.split
    if (bytes.indexOf(encoded, at) !== at) throw new Error(`row ${j}: the character is not at byte ${at}`)
  }
  return { bytes, bodies }
}

/** every (character, split) pair: the split positions inside each character */
export const splits = (): ReadonlyArray<readonly [char: string, split: number]> =>
  CHARS.flatMap((char) => Array.from({ length: Buffer.byteLength(char) - 1 }, (_, i) => [char, i + 1] as const))
