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

/** @internal */
export const CHUNK_SIZE = 64 * 1024

/**
 * An incremental parser: `push` takes the next piece of decoded text and
 * returns the records it completes; `end` flushes at end of file.
 * Returning a `SourceError` fails the stream.
 *
 * @internal
 */
export interface Parser<Out> {
  /** `invalid`: the bytes behind `text` were not all UTF-8 (the decoder replaced them with U+FFFD) */
  readonly push: (text: string, invalid?: boolean) => ReadonlyArray<Out> | SourceError
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

const REPLACEMENT = "\uFFFD"

/**
 * True when decoding `chunk` replaced bytes that are not UTF-8: the text holds
 * more U+FFFD than the chunk holds encoded U+FFFD (EF BF BD). Cheap when the
 * text has none, which is the usual case.
 *
 * @internal
 */
export const hasInvalidBytes = (text: string, chunk: Uint8Array): boolean => {
  if (!text.includes(REPLACEMENT)) return false
  let decoded = 0
  for (let i = text.indexOf(REPLACEMENT); i !== -1; i = text.indexOf(REPLACEMENT, i + 1)) decoded++
  let encoded = 0
  for (let i = 0; i + 2 < chunk.length; i++) {
    if (chunk[i] === 0xef && chunk[i + 1] === 0xbf && chunk[i + 2] === 0xbd) encoded++
  }
  return decoded > encoded
}

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
    const bytes = Buffer.allocUnsafe(size)
    const decoder = new TextDecoder("utf-8")
    const parser = options.parser()
    const onRead = options.onRead
    let done = false

    const read = Effect.tryPromise({
      try: () => handle.read(bytes, 0, size, null),
      catch: (cause) => readError(options, cause)
    })

    // reads chunks until the parser completes at least one record, or the file ends
    const pull: Effect.Effect<Arr.NonEmptyReadonlyArray<Out>, SourceError | Cause.Done> = Effect.suspend(() =>
      done ? Cause.done() : Effect.flatMap(read, ({ bytesRead }) => {
        let out: ReadonlyArray<Out> | SourceError
        if (bytesRead === 0) {
          done = true
          const rest = decoder.decode()
          out = rest.length > 0 ? parser.push(rest) : []
          if (!(out instanceof SourceError)) {
            const last = parser.end()
            out = last instanceof SourceError ? last : out.length === 0 ? last : [...out, ...last]
          }
        } else {
          onRead?.(bytesRead)
          const chunk = bytes.subarray(0, bytesRead)
          const text = decoder.decode(chunk, { stream: true })
          out = parser.push(text, hasInvalidBytes(text, chunk))
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
