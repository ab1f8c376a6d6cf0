/**
 * How much a pipeline's source holds, told before it is read, for the progress bar when the runner does not say
 * (`SourceSized`): a source that can count its rows counts them; a file source whose name is its path has its records
 * counted by line (an estimate: a quoted field may span lines). Best effort and bounded: anything that fails or takes
 * longer than a few seconds gives no size.
 *
 * @internal
 */
import { Duration, Effect, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type * as Pipeline from "../../Pipeline.ts"
import type * as RunEvent from "../../RunEvent.ts"

/** files larger than this are not counted (their size alone would be a guess) */
const MAX_COUNTED_BYTES = 1024 * 1024 * 1024

/** newlines in a file, read in chunks off the main work (a stream, so the event loop keeps turning) */
const countLines = (file: string) =>
  Effect.callback<{ readonly lines: number; readonly endsWithNewline: boolean }, Error>((resume) => {
    let lines = 0
    let last = 10
    const stream = fs.createReadStream(file, { highWaterMark: 1024 * 1024 })
    stream.on("data", (chunk) => {
      const bytes = chunk as Buffer
      for (let i = bytes.indexOf(10); i >= 0; i = bytes.indexOf(10, i + 1)) lines++
      if (bytes.length > 0) last = bytes[bytes.length - 1]!
    })
    stream.on("error", (e) => resume(Effect.fail(e)))
    stream.on("end", () => resume(Effect.succeed({ lines, endsWithNewline: last === 10 })))
    return Effect.sync(() => stream.destroy())
  })

/**
 * The size of `pipeline`'s source as a `SourceSized` event, if it can be told within a few seconds. A source that
 * counts is counted only when the runner has not said its size (`sized`) a moment after the start: the runner counts
 * such sources itself, and a table is not counted twice.
 */
export const of = (
  pipeline: Pipeline.Pipeline<unknown, unknown>,
  sized: () => boolean
): Effect.Effect<Option.Option<RunEvent.SourceSized>> =>
  Effect.gen(function*() {
    const source = pipeline.source
    if (source.count !== undefined) {
      yield* Effect.sleep("2 seconds")
      if (sized()) return Option.none()
      const rows = yield* source.count
      // an incremental run reads only part of what the source holds
      return Option.some<RunEvent.SourceSized>({ _tag: "SourceSized", rows, estimate: pipeline.incremental === true })
    }
    const file = path.resolve(source.name)
    const stat = yield* Effect.try(() => fs.statSync(file))
    if (!stat.isFile() || stat.size > MAX_COUNTED_BYTES) return Option.none()
    if (stat.size === 0) return Option.some<RunEvent.SourceSized>({ _tag: "SourceSized", rows: 0, estimate: false })
    const { lines, endsWithNewline } = yield* countLines(file)
    const records = lines + (endsWithNewline ? 0 : 1)
    // a CSV's first line is its header
    const header = /\.(csv|tsv)$/i.test(file) ? 1 : 0
    return Option.some<RunEvent.SourceSized>({ _tag: "SourceSized", rows: Math.max(0, records - header), estimate: true })
  }).pipe(
    Effect.timeout(Duration.seconds(8)),
    Effect.catch(() => Effect.succeed(Option.none<RunEvent.SourceSized>()))
  )
