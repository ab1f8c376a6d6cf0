/**
 * Delivery: rows whose outcome is known go to the sinks in parts. A part's rows are fixed in the ledger before the
 * sinks write it, and the part is committed once they have; the next part is fixed and read while the one before is
 * written (two parts at most in memory). A value the sink refuses costs its own row (the part is split until it is
 * isolated); the sinks' dispositions are applied when the run completes.
 *
 * @internal
 */
import { Effect, Fiber, Option, Semaphore } from "effect"
import * as Failpoint from "../../Failpoint.ts"
import type * as Ledger from "../../Ledger.ts"
import type * as Result from "../../Result.ts"
import * as Sink from "../../Sink.ts"
import * as Memory from "../memory.ts"
import type { Context } from "./context.ts"

/** rows per part at most */
const PART_SIZE = 10_000
/** a delivery part holds about this much in memory (decoded records and outputs, the sink's encoding), 100 to 10,000 rows */
const PART_BYTES = 8 * 1024 * 1024

/** while parts are being written and no other can be fixed yet, how long before the ledger is asked again */
const LOOK_AGAIN = "100 millis"
/**
 * A part of at least this many rows that the sink refuses row by row, every one for the same reason, says the table is
 * wrong (a column's type, a vector's dimensions), not the rows: the run stops, resumable, instead of dead-lettering them
 */
const WHOLE_PART_REFUSED = 10

const message = (u: unknown) => u instanceof Error ? u.message : String(u)

/** a value as JSON for a dead letter's `raw` (bigints as strings; never throws) */
export const jsonText = (u: unknown): string => {
  try {
    return JSON.stringify(u, (_, v) => typeof v === "bigint" ? v.toString() : v) ?? String(u)
  } catch {
    return String(u)
  }
}

/** a stored float32 vector (base64) as the number array sinks take */
const fromF32 = (base64: string): Array<number> => {
  const bytes = Buffer.from(base64, "base64")
  // a view when the bytes are aligned (no copy), and a plain loop: `Array.from` of a typed array is several times slower
  const floats = bytes.byteOffset % 4 === 0
    ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2)
    : new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length))
  const out = new Array<number>(floats.length)
  for (let i = 0; i < floats.length; i++) out[i] = floats[i]!
  return out
}

/**
 * The disposition a run uses for a sink: the sink's own choice, else its default — except that an incremental
 * pipeline (each run delivers the rows that changed) merges or appends, never replaces. A choice the sink cannot do,
 * or `replace` for an incremental pipeline, comes back as a message starting with `!`.
 */
export const dispositionFor = (sink: Sink.Sink<any>, incremental: boolean): Sink.Disposition | `!${string}` => {
  const can = sink.dispositions ?? ["append"]
  if (sink.disposition !== undefined && !can.includes(sink.disposition)) {
    return `!${sink.name}: disposition "${sink.disposition}" is not one this sink can do (${can.join(", ")})`
  }
  const chosen: Sink.Disposition = sink.disposition ?? (incremental && can[0] === "replace"
    ? (can.includes("merge") ? "merge" : can.includes("append") ? "append" : "replace")
    : can[0])
  if (incremental && chosen === "replace") {
    const why = `an incremental pipeline delivers only the rows that changed; "replace" would keep only those`
    return `!${sink.name}: ${why} (choose "merge" or "append")`
  }
  return chosen
}

/** delivery for one run */
export const make = <Rec, A, Row>(ctx: Context<Rec, A, Row>) => {
  const { runId, ledger, pipeline, deadLetter, fail, stats } = ctx
  const { decodeRecord, decodeOutput } = ctx.codecs

  /**
   * Rows per part, from the size of the outputs and records seen so far (an embedding decodes to ~12 KB of numbers;
   * a record of 50 KB of text is held as its JSON, its value and the sink's text of it)
   */
  const partSize = () => {
    const record = stats.records === 0 ? 2_048 : Math.max(2_048, (stats.recordBytes / stats.records) * 4)
    if (stats.outputs === 0) return Math.max(100, Math.min(1_000, Math.floor(PART_BYTES / record)))
    // a stored byte becomes ~8 in memory (an f32 becomes a JS number, then the sink's text of it), plus the record
    const perRow = (stats.outputBytes / stats.outputs) * 8 + record
    return Math.max(100, Math.min(PART_SIZE, Math.floor(PART_BYTES / perRow)))
  }
  const writePart = (seq: number, rows: ReadonlyArray<Ledger.PartRow>) =>
    Effect.gen(function*() {
      const succeeded: Array<Result.Succeeded<Rec, A>> = []
      const positions: Array<number> = []
      const failed: Array<Result.Failed<Rec>> = []
      // rows refused by the sink (or by `row()`): recorded as `sink_refused` with the part's commit
      const refusedRows: Array<{ readonly position: number; readonly message: string }> = []
      for (const row of rows) {
        let record: Rec | undefined
        try {
          record = row.record === null ? undefined : decodeRecord(JSON.parse(row.record))
        } catch (e) {
          record = undefined
          failed.push({
            _tag: "Failed",
            key: row.key,
            record,
            kind: "invalid_input",
            message: `stored record cannot be read back: ${message(e)}`,
            raw: row.record ?? undefined,
            position: row.position
          })
          continue
        }
        if (row.failure !== null || row.output === null) {
          failed.push({
            _tag: "Failed",
            key: row.key,
            record,
            kind: row.failure?.kind ?? "lost",
            message: row.failure?.message ?? "no result",
            raw: row.failure?.raw,
            position: row.position
          })
          continue
        }
        stats.outputBytes += row.format === "f32" ? row.output.length * 0.75 : row.output.length
        stats.outputs++
        const json = row.format === "f32" ? fromF32(row.output) : JSON.parse(row.output)
        succeeded.push({
          _tag: "Succeeded",
          key: row.key,
          record: record as Rec,
          output: (decodeOutput === undefined ? json : decodeOutput(json)) as A,
          usage: row.usage ?? { inputTokens: 0, outputTokens: 0 },
          cached: row.cached
        })
        positions.push(row.position)
      }
      const part = { runId, seq }
      if (succeeded.length > 0) {
        // the sink's rows; a row `row()` cannot make is refused on its own
        const toRow = pipeline.row
        const rows: Array<unknown> = []
        const kept: Array<Result.Succeeded<Rec, A>> = []
        const keptAt: Array<number> = []
        succeeded.forEach((result, i) => {
          try {
            rows.push(toRow === undefined ? result : toRow(result))
            kept.push(result)
            keptAt.push(positions[i]!)
          } catch (e) {
            const why = `the pipeline's row() failed: ${message(e)}`
            failed.push(refusedRow(result, positions[i]!, why))
            refusedRows.push({ position: positions[i]!, message: why })
          }
        })
        const refused = yield* writeIsolating(part, rows)
        for (const { index, reason } of refused) {
          const why = `${pipeline.sink.name} refused this row${reason.column !== undefined ? ` (column ${reason.column})` : ""}: ${reason.message}`
          failed.push(refusedRow(kept[index]!, keptAt[index]!, why, rows[index]))
          refusedRows.push({ position: keptAt[index]!, message: why })
        }
        succeeded.length = 0
        const bad = new Set(refused.map((r) => r.index))
        kept.forEach((result, i) => bad.has(i) || succeeded.push(result))
      }
      if (failed.length > 0) yield* deadLetter.write(part, failed)
      yield* Failpoint.hit("part.written")
      Memory.compact()
      ctx.emit({ _tag: "PartWritten", seq, delivered: succeeded.length, dead: failed.length, refused: refusedRows.length })
      yield* Effect.annotateCurrentSpan({ "offpeak.part.delivered": succeeded.length, "offpeak.part.dead": failed.length, "offpeak.part.refused": refusedRows.length })
      return { seq, delivered: succeeded.length, dead: failed.length, refused: refusedRows } satisfies Ledger.WrittenPart
    }).pipe(
      Effect.withSpan("offpeak.part.deliver", {
        attributes: { "offpeak.run.id": runId, "offpeak.part.seq": seq, "offpeak.part.rows": rows.length, "offpeak.sink": pipeline.sink.name }
      })
    )

  /** a delivered row the sink refused: it goes to the dead letter with the value the sink was given */
  const refusedRow = (
    result: Result.Succeeded<Rec, A>,
    position: number,
    why: string,
    row?: unknown
  ): Result.Failed<Rec> => ({
    _tag: "Failed",
    key: result.key,
    record: result.record,
    kind: "sink_refused",
    message: why,
    raw: row === undefined ? undefined : jsonText(row),
    position
  })

  /**
   * Writes a part's rows to the sink; when the sink refuses them for their values (`Sink.Refused`), the rows at
   * fault are isolated — the one the sink names, else by halving — and everything else is written once more as the
   * part: a poison value costs its own row, never the part or the run.
   */
  const writeIsolating = (part: Sink.Part, rows: ReadonlyArray<unknown>) =>
    Effect.gen(function*() {
      // how many rows the last write that went through held (writes are sequential; each a subset of the good rows)
      let lastWritten = -1
      /** not the rows: the table (a column's type or size, a vector's dimensions); the run stops, resumable */
      const tableAtFault = (what: string, reason: string) =>
        new Sink.SinkError({
          sink: pipeline.sink.name,
          message: `${pipeline.sink.name} refused ${what} for the same reason, so the table is at fault, not the rows: ` +
            `${reason.replace(/[.\s]+$/, "")}. Fix the table, then resume the run (nothing is paid again)`,
          reason: new Sink.Unavailable({ message: reason })
        })
      // rows the sink named one after the other for the same reason, nothing written yet: past WHOLE_PART_REFUSED,
      // the part's last row is tried alone, and refused alike it is the table (instead of a write for every row)
      let streak = 0
      let streakReason: string | undefined
      let probed = false
      const isolate = (
        indices: ReadonlyArray<number>
      ): Effect.Effect<Array<{ readonly index: number; readonly reason: Sink.Refused }>, Sink.SinkError> =>
        pipeline.sink.write(part, indices.map((i) => rows[i] as Row)).pipe(
          Effect.tap(() => Effect.sync(() => (lastWritten = indices.length))),
          Effect.as([]),
          Effect.catchIf(Sink.isRefused, (error) => {
            const reason = error.reason as Sink.Refused
            if (indices.length === 1) return Effect.succeed([{ index: indices[0]!, reason }])
            const named = reason.row
            if (named !== undefined && named >= 0 && named < indices.length) {
              const rest = indices.filter((_, i) => i !== named)
              const found = { index: indices[named]!, reason }
              streak = reason.message === streakReason ? streak + 1 : 1
              streakReason = reason.message
              if (!probed && streak >= WHOLE_PART_REFUSED && lastWritten < 0 && rest.length > 1) {
                probed = true
                return Effect.flatMap(isolate([rest.at(-1)!]), (alone) =>
                  alone[0]?.reason.message === reason.message
                    ? Effect.fail(tableAtFault(`the first ${streak} rows of part ${part.seq} it was given, and its last row alone,`, reason.message))
                    : Effect.map(isolate(rest), (more) => [found, ...more]))
              }
              return Effect.map(isolate(rest), (more) => [found, ...more])
            }
            const half = Math.ceil(indices.length / 2)
            return Effect.zipWith(isolate(indices.slice(0, half)), isolate(indices.slice(half)), (a, b) => [...a, ...b])
          })
        )
      const refused = yield* isolate(rows.map((_, i) => i))
      const reasons = new Set(refused.map((r) => r.reason.message))
      if (refused.length === rows.length && rows.length >= WHOLE_PART_REFUSED && reasons.size === 1) {
        // dead-lettering them all would complete the run with nothing delivered (and an incremental run's next one
        // would not read them again)
        return yield* tableAtFault(`every one of part ${part.seq}'s ${rows.length} rows`, [...reasons][0]!)
      }
      if (refused.length > 0) {
        // the part is what remains, written whole, unless the last write that went through was exactly that (a
        // trial write of a half leaves only that half in a part file)
        const bad = new Set(refused.map((r) => r.index))
        if (lastWritten !== rows.length - bad.size) {
          yield* pipeline.sink.write(part, rows.filter((_, i) => !bad.has(i)) as Array<Row>)
        }
        yield* Effect.logWarning(
          `part ${part.seq}: ${pipeline.sink.name} refused ${refused.length} row(s); they go to the dead letter`
        )
      }
      return refused
    })

  /** parts written at once: the sink's `concurrency` (1 unless the sink says its parts are independent) */
  const writers = Math.max(1, Math.floor(pipeline.sink.concurrency ?? 1))

  // true while every part this delivery fixed is committed (a call that ended early may have left some in `writing`)
  let allCommitted = false
  /**
   * Writes every part there is rows for; `whole`: only parts of `partSize()` rows (the rest waits for more). Parts a
   * crash left unwritten come first. Then the next part is fixed and read while the ones before are written (at most
   * `writers` parts being written and one being read, in memory and in `writing` at once), and a written part is
   * committed in the transaction that fixes a later one — in the order the parts were fixed.
   */
  const deliverParts = (whole: boolean) =>
    Effect.gen(function*() {
      if (!allCommitted) {
        for (const seq of yield* ledger.writingParts(runId)) {
          const written = yield* writePart(seq, yield* ledger.partRows(runId, seq))
          yield* ledger.commitPart(runId, written)
        }
      }
      allCommitted = false
      const writing: Array<Fiber.Fiber<Ledger.WrittenPart, Sink.SinkError>> = []
      let written: Ledger.WrittenPart | undefined
      while (true) {
        const next = yield* ledger.nextPart(runId, { limit: partSize(), whole, written })
        written = undefined
        if (Option.isNone(next)) {
          if (writing.length === 0) {
            allCommitted = true
            return
          }
          // nothing to fix yet while parts are written: look again once the oldest is written (it is committed with
          // that look) or after a moment, for the rows recorded meanwhile
          const done = yield* Effect.timeoutOption(Fiber.join(writing[0]!), LOOK_AGAIN)
          if (Option.isSome(done)) {
            writing.shift()
            written = done.value
          }
          continue
        }
        yield* Failpoint.hit("part.assigned")
        if (writing.length >= writers) written = yield* Fiber.join(writing.shift()!)
        writing.push(yield* Effect.forkChild(writePart(next.value.seq, next.value.rows)))
      }
    }).pipe(
      Semaphore.withPermits(ctx.locks.delivery, 1),
      Effect.mapError((e) => fail(`delivery: ${e.message}`))
    )
  const deliver = deliverParts(false)

  /**
   * Once the run's last part is written and the run completes: the sinks' dispositions (`replace` drops what earlier
   * runs wrote, now that this run's output is whole).
   */
  const finish = Effect.gen(function*() {
    const finishing = (sink: Sink.Sink<any>) => {
      const disposition = dispositionFor(sink, pipeline.incremental === true)
      return sink.finish === undefined || disposition.startsWith("!")
        ? Effect.void
        : sink.finish({ runId, disposition: disposition as Sink.Disposition }).pipe(
          Effect.mapError((e) => fail(`${sink.name}: ${e.message}`))
        )
    }
    yield* finishing(pipeline.sink)
    yield* finishing(deadLetter)
  })

  return { deliverParts, deliver, finish }
}
