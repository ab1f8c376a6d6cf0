/**
 * Pull-driven reading of a UTF-8 text file in fixed-size chunks, fed through
 * an incremental parser. Shared by the CSV and JSONL sources.
 *
 * One pull reads one chunk (more only while the parser has no complete record
 * yet), so nothing is read faster than the consumer pulls, and memory is one
 * chunk plus the parser's unfinished record.
 *
 * @internal
 */
import { SourceError } from "@offpeak/core/Source"
import { Array as Arr, Cause, Effect, Stream } from "effect"
import type * as fs from "node:fs/promises"
import { open } from "node:fs/promises"
import * as Utf8 from "./utf8.ts"

/** @internal */
export const CHUNK_SIZE = 64 * 1024

/**
 * An incremental parser: `push` takes the next piece of decoded text with the
 * bytes in it that were not UTF-8 (offsets into that piece) and returns the
 * records it completes; `end` flushes at end of file. Returning a
 * `SourceError` fails the stream.
 *
 * @internal
 */
export interface Parser<Out> {
  readonly push: (text: string, invalid: ReadonlyArray<Utf8.Invalid>) => ReadonlyArray<Out> | SourceError
  readonly end: () => ReadonlyArray<Out> | SourceError
}

/** @internal */
export interface Options<Out> {
  readonly path: string
  readonly name: string
  /** a fresh parser for each run of the stream */
  readonly parser: () => Parser<Out>
  readonly chunkSize?: number | undefined
  /** test hook: called with the byte count of every chunk read */
  readonly onRead?: ((bytes: number) => void) | undefined
}

const describe = (cause: unknown): string => {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code
  switch (code) {
    case "ENOENT":
      return "no such file"
    case "EACCES":
    case "EPERM":
      return "permission denied"
    case "EISDIR":
      return "is a directory"
    default:
      return cause instanceof Error ? cause.message : String(cause)
  }
}

/**
 * The `SourceError` for a file that cannot be read: `tickets.csv: no such file`.
 *
 * @internal
 */
export const readError = (options: { readonly path: string; readonly name: string }, cause: unknown): SourceError =>
  new SourceError({
    source: options.name,
    message: `${options.name}: ${describe(cause)}${options.name === options.path ? "" : ` (${options.path})`}`
  })

/**
 * Streams the records `parser` makes of the file at `path`.
 *
 * @internal
 */
export const stream = <Out>(options: Options<Out>): Stream.Stream<Out, SourceError> =>
  Stream.unwrap(Effect.gen(function*() {
    const handle = yield* Effect.acquireRelease(
      Effect.tryPromise({ try: () => open(options.path, "r"), catch: (cause) => readError(options, cause) }),
      (handle: fs.FileHandle) => Effect.ignore(Effect.tryPromise(() => handle.close()))
    )
    const size = options.chunkSize ?? CHUNK_SIZE
    // room for the (at most 3) bytes of a character the previous chunk ended inside
    const bytes = Buffer.allocUnsafe(size + 3)
    const parser = options.parser()
    const onRead = options.onRead
    /** bytes at the front of `bytes`, carried over from the previous chunk */
    let carried = 0
    /** the file offset of `bytes[0]` */
    let offset = 0
    let done = false

    const read = Effect.tryPromise({
      try: () => handle.read(bytes, carried, size, null),
      catch: (cause) => readError(options, cause)
    })

    const decode = (end: number): Utf8.Decoded => {
      const decoded = Utf8.decode(bytes.subarray(0, end), offset)
      if (offset === 0 && decoded.text.charCodeAt(0) === 0xfeff) {
        // a byte order mark: not part of the first record
        return { text: decoded.text.slice(1), invalid: decoded.invalid.map((i) => ({ ...i, at: i.at - 1 })) }
      }
      return decoded
    }

    // reads chunks until the parser completes at least one record, or the file ends
    const pull: Effect.Effect<Arr.NonEmptyReadonlyArray<Out>, SourceError | Cause.Done> = Effect.suspend(() =>
      done ? Cause.done() : Effect.flatMap(read, ({ bytesRead }) => {
        let out: ReadonlyArray<Out> | SourceError = []
        if (bytesRead === 0) {
          done = true
          // bytes of a character the file ends inside: not UTF-8
          if (carried > 0) {
            const rest = decode(carried)
            out = parser.push(rest.text, rest.invalid)
          }
          if (!(out instanceof SourceError)) {
            const last = parser.end()
            out = last instanceof SourceError ? last : out.length === 0 ? last : [...out, ...last]
          }
        } else {
          onRead?.(bytesRead)
          const total = carried + bytesRead
          const end = Utf8.completeLength(bytes, total)
          if (end > 0) {
            const piece = decode(end)
            if (piece.text.length > 0) out = parser.push(piece.text, piece.invalid)
          }
          bytes.copyWithin(0, end, total)
          carried = total - end
          offset += end
        }
        if (out instanceof SourceError) {
          done = true
          return Effect.fail(out)
        }
        return Arr.isReadonlyArrayNonEmpty(out) ? Effect.succeed(out) : pull
      })
    )
    return Stream.fromPull(Effect.succeed(pull))
  }))
