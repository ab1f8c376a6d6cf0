/**
 * File helpers the emulators and the adapters share.
 *
 * @internal
 */
import { Effect } from "effect"
import * as fs from "node:fs"

/** lets other requests run between slices of a long job */
export const yieldToEventLoop = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/** bytes read at a time */
const CHUNK = 1 << 20

/**
 * Calls `onLine(data, start, end, fileOffset, lineNo)` for every line of a
 * file (without its `\n` / `\r\n`), reading 1 MiB at a time and yielding to
 * the event loop between chunks. Lines are not decoded: the caller decodes
 * the ones it needs.
 */
export const forEachLine = (
  file: string,
  onLine: (data: Buffer, start: number, end: number, fileOffset: number, lineNo: number) => void
) =>
  Effect.acquireUseRelease(
    Effect.sync(() => fs.openSync(file, "r")),
    (fd) =>
      Effect.gen(function*() {
        const buffer = Buffer.allocUnsafe(CHUNK)
        let carry: Buffer | null = null
        let carryOffset = 0
        let position = 0
        let lineNo = 0
        while (true) {
          const n = fs.readSync(fd, buffer, 0, CHUNK, position)
          if (n === 0) break
          const data: Buffer = carry !== null ? Buffer.concat([carry, buffer.subarray(0, n)]) : buffer.subarray(0, n)
          const dataOffset = carry !== null ? carryOffset : position
          position += n
          let start = 0
          while (true) {
            const nl = data.indexOf(10, start)
            if (nl < 0) break
            const end = nl > start && data[nl - 1] === 13 ? nl - 1 : nl
            onLine(data, start, end, dataOffset + start, ++lineNo)
            start = nl + 1
          }
          carry = start < data.length ? Buffer.from(data.subarray(start)) : null
          carryOffset = dataOffset + start
          yield* yieldToEventLoop
        }
        if (carry !== null && carry.length > 0) {
          const end = carry[carry.length - 1] === 13 ? carry.length - 1 : carry.length
          onLine(carry, 0, end, carryOffset, ++lineNo)
        }
      }),
    (fd) => Effect.sync(() => fs.closeSync(fd))
  )

const isBlank = (data: Buffer, start: number, end: number) => {
  for (let i = start; i < end; i++) {
    const c = data[i]
    if (c !== 32 && c !== 9 && c !== 13) return false
  }
  return true
}

/** every non-blank line of a file (without its `\n` / `\r\n`), read 1 MiB at a time */
export async function* lines(file: string): AsyncGenerator<Buffer> {
  let carry: Buffer | null = null
  for await (const chunk of fs.createReadStream(file, { highWaterMark: CHUNK })) {
    const data: Buffer = carry !== null ? Buffer.concat([carry, chunk as Buffer]) : (chunk as Buffer)
    let start = 0
    while (true) {
      const nl = data.indexOf(10, start)
      if (nl < 0) break
      const end = nl > start && data[nl - 1] === 13 ? nl - 1 : nl
      if (!isBlank(data, start, end)) yield data.subarray(start, end)
      start = nl + 1
    }
    carry = start < data.length ? Buffer.from(data.subarray(start)) : null
  }
  if (carry !== null) {
    const end = carry[carry.length - 1] === 13 ? carry.length - 1 : carry.length
    if (!isBlank(carry, 0, end)) yield carry.subarray(0, end)
  }
}

const COMMA = Buffer.from(",")

/**
 * A JSON body made of a batch file's lines (each already a JSON value) joined by commas between `head` and `tail`
 * (e.g. `{"requests":[` and `]}`), as byte chunks of about 1 MiB: a request body streamed straight from the file,
 * never parsed nor held whole (a batch file can be hundreds of megabytes).
 */
export async function* joinedLines(file: string, head: string, tail: string): AsyncGenerator<Uint8Array> {
  const pending: Array<Buffer> = [Buffer.from(head)]
  let size = pending[0]!.length
  let first = true
  for await (const line of lines(file)) {
    if (!first) {
      pending.push(COMMA)
      size += 1
    }
    first = false
    // a view of the chunk just read (a fresh buffer each read): copied once, by the concat below
    pending.push(line)
    size += line.length
    if (size >= CHUNK) {
      yield Buffer.concat(pending)
      pending.length = 0
      size = 0
    }
  }
  pending.push(Buffer.from(tail))
  yield Buffer.concat(pending)
}
