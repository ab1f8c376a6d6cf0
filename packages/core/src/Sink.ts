/**
 * Sinks: where results go.
 *
 * A sink writes rows in parts. The pipeline numbers parts, records which rows
 * each part holds in the ledger before writing it, and marks them delivered
 * after the write returns. A crash in between writes the same part again, so a
 * sink must make `write` idempotent per part: writing the same part twice
 * replaces it (files), or upserts on a key (databases). That is what makes
 * every row land exactly once.
 *
 * @since 0.1.0
 */
import type { Effect } from "effect"
import { Schema } from "effect"

/**
 * The identity of one part: run id and sequence number within the run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Part {
  readonly runId: string
  readonly seq: number
}

/**
 * What a new run of a pipeline does to the output earlier runs left in the sink (as dlt's write dispositions):
 *
 * - `append`: earlier output stays; this run's rows are added (an incremental pipeline writing files).
 * - `replace`: once this run completes, the sink holds this run's rows only (earlier runs' output is removed then,
 *   not before: a failed run leaves the earlier output in place).
 * - `merge`: rows are upserted on the pipeline's key; earlier rows of other keys stay (a database table).
 *
 * A resumed run always continues its own output; parts are idempotent whatever the disposition.
 *
 * @since 0.1.0
 * @category models
 */
export type Disposition = "append" | "replace" | "merge"

/**
 * A sink of rows of type `A`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Sink<A> {
  readonly name: string
  /**
   * Writes one part; writing the same part again replaces it. A part the sink refuses because of its data fails
   * with a {@link Refused} reason: the pipeline then splits the part until the refused rows are isolated, sends them
   * to the dead letter and delivers the rest.
   */
  readonly write: (part: Part, rows: ReadonlyArray<A>) => Effect.Effect<void, SinkError>
  /** the dispositions this sink can do, its default first (a sink that says nothing: `append`, nothing is removed) */
  readonly dispositions?: readonly [Disposition, ...Array<Disposition>] | undefined
  /** the disposition chosen for this sink (default: the first of `dispositions`) */
  readonly disposition?: Disposition | undefined
  /**
   * How many parts the sink can take at once (default 1). Above 1 only for a sink whose parts are independent writes
   * (each part in a transaction of its own, distinct keys): the run then writes that many parts concurrently and
   * commits each in the ledger once it is written; after a crash every part that was being written is written again.
   */
  readonly concurrency?: number | undefined
  /**
   * Called once when a run has written its last part and is about to end `completed`: a `replace` sink removes
   * what other runs wrote. Idempotent (a crash here calls it again on resume).
   */
  readonly finish?: ((run: { readonly runId: string; readonly disposition: Disposition }) => Effect.Effect<void, SinkError>) | undefined
}

/**
 * The sink refused the data itself (a value it cannot store: a NUL byte, a string over a column's length, a type
 * error): writing the same rows again fails the same way. `row` is the index, in the rows passed to `write`, of the
 * row at fault when the sink can tell; `column` the column.
 *
 * @since 0.1.0
 * @category errors
 */
export class Refused extends Schema.TaggedError<Refused>()("Refused", {
  message: Schema.String,
  row: Schema.optional(Schema.Int),
  column: Schema.optional(Schema.String)
}) {}

/**
 * The sink could not be reached or failed for a reason that is not the rows' (connection lost, disk full): the run
 * stops, resumable.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", {
  message: Schema.String
}) {}

/**
 * A part could not be written. Without a `reason` it counts as {@link Unavailable}.
 *
 * @since 0.1.0
 * @category errors
 */
export class SinkError extends Schema.TaggedError<SinkError>()("SinkError", {
  sink: Schema.String,
  message: Schema.String,
  reason: Schema.optional(Schema.Union([Refused, Unavailable]))
}) {}

/**
 * True when the sink refused the rows themselves (see {@link Refused}).
 *
 * @since 0.1.0
 * @category predicates
 */
export const isRefused = (error: SinkError): boolean => error.reason?._tag === "Refused"

/**
 * The disposition a sink uses: its chosen one, else its default.
 *
 * @since 0.1.0
 * @category getters
 */
export const dispositionOf = (sink: Sink<any>): Disposition => sink.disposition ?? sink.dispositions?.[0] ?? "append"
