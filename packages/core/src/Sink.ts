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
 * A sink of rows of type `A`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Sink<A> {
  readonly name: string
  /** writes one part; writing the same part again replaces it */
  readonly write: (part: Part, rows: ReadonlyArray<A>) => Effect.Effect<void, SinkError>
}

/**
 * A part could not be written.
 *
 * @since 0.1.0
 * @category errors
 */
export class SinkError extends Schema.TaggedError<SinkError>()("SinkError", {
  sink: Schema.String,
  message: Schema.String
}) {}
