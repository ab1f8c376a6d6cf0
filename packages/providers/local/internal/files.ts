/**
 * File helpers the emulators share.
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
