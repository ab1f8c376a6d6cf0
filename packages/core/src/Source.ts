/**
 * Sources: typed streams of input records.
 *
 * A source reads its input as a stream of {@link Item}s: a decoded {@link Row},
 * or a {@link Malformed} row that could not be read or decoded. Malformed rows
 * are not errors of the stream: the pipeline sends them to the dead-letter sink
 * with their reason and goes on. A {@link SourceError} (missing file, lost
 * connection) stops the run; it is resumable.
 *
 * @since 0.1.0
 */
import type { Effect, Option, Stream } from "effect"
import { Schema } from "effect"

/**
 * A decoded record. `position` is its 1-based ordinal among the source's rows
 * (header excluded) and `line` the 1-based line where it starts, when the
 * source has lines.
 *
 * @since 0.1.0
 * @category models
 */
export interface Row<A> {
  readonly _tag: "Row"
  readonly position: number
  readonly line?: number | undefined
  readonly value: A
  /** where a source with a checkpoint column is: reading can continue after it ({@link Source.continueAfter}) */
  readonly checkpoint?: string | undefined
}

/**
 * A row that could not be read or decoded. `reason` names the field when one
 * is at fault (`row 17 (line 19): Expected a number, got "high" at ["priority"]`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Malformed {
  readonly _tag: "Malformed"
  readonly position: number
  readonly line?: number | undefined
  readonly reason: string
  /** the row's text as read (a CSV line, a JSON line, the row's values as JSON), so a user can find and fix it */
  readonly raw?: string | undefined
  /** the row's key, when the key field could be read although the row is malformed: the dead letter is filed under it */
  readonly key?: string | undefined
  readonly checkpoint?: string | undefined
}

/**
 * What a source emits.
 *
 * @since 0.1.0
 * @category models
 */
export type Item<A> = Row<A> | Malformed

/**
 * A source of records of type `A`. `schema` stores records in the ledger and
 * reads them back; `name` names the source in messages (a file path, a table).
 *
 * @since 0.1.0
 * @category models
 */
export interface Source<A> {
  readonly name: string
  readonly schema: Schema.Codec<A, any>
  readonly read: Stream.Stream<Item<A>, SourceError>
  /**
   * For sources read in the order of a checkpoint column (an id, an
   * `updated_at`): the same source reading only what comes after
   * `checkpoint`, its rows numbered from `startPosition`. The runner uses it
   * to resume a run after the last row it admitted, and, for
   * `Pipeline.make({ incremental: true })`, to start a run after the last
   * completed one, instead of reading everything again.
   */
  readonly continueAfter?: ((checkpoint: string, startPosition: number) => Source<A>) | undefined
  /**
   * For checkpointed sources: the snapshot a run reads. A new run takes
   * `high` (the checkpoint of the last row the source holds now) and reads
   * `upTo(high)`; rows changed or added after that sort past it and are the
   * next run's work, so a row edited while a run reads is never met twice nor
   * skipped. A resumed run reads `upTo(high).continueAfter(…)` with the same
   * `high`, kept in the ledger.
   */
  readonly snapshot?: Snapshot<A> | undefined
  /**
   * Counts the rows `read` yields if it ran now (a table or a query can). At
   * the end of a run the runner counts the run's whole range again and fails
   * the run (resumable, with the figures) when fewer rows were read than the
   * source holds: a row is never silently missing from a `completed` run.
   */
  readonly count?: Effect.Effect<number, SourceError> | undefined
  /**
   * For sources that live where a provider can read them (a BigQuery table): the run stages a table of requests
   * there and the provider's job reads it, writes its answers to a table of its own, and the source lands them — no
   * row passes through offpeak (see {@link Pushdown}). Used when the provider takes this kind of table.
   */
  readonly pushdown?: Pushdown | undefined
}

/**
 * One job's tables, as a {@link Pushdown} staged them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Staged {
  /** the kind of table (`bigquery`): the provider must take it (`Provider.Service.tables`) */
  readonly kind: string
  readonly model: string
  readonly input: string
  readonly output: string
  readonly keyColumns: ReadonlyArray<string>
  /** rows in `input` */
  readonly rows: number
}

/**
 * What a job's output holds once the job ended.
 *
 * @since 0.1.0
 * @category models
 */
export interface Tally {
  /** rows answered */
  readonly succeeded: number
  /** rows the provider failed (a status, no answer, an answer that does not decode) */
  readonly failed: number
}

/**
 * A row a job failed, for the dead letter.
 *
 * @since 0.1.0
 * @category models
 */
export interface TableFailure {
  readonly key: string
  readonly message: string
  readonly raw?: string | undefined
}

/**
 * A source that stages its rows, with the pipeline's request built server-side, as a table a provider's batch job
 * reads, and lands the job's answers where they belong. Every operation is idempotent: a run killed anywhere calls it
 * again with the same arguments.
 *
 * @since 0.1.0
 * @category models
 */
export interface Pushdown {
  /**
   * Stages the input of job `batchId`: every row of the source, or (`retryOf`) only the rows that failed in an
   * earlier job's output. The tables are named from `batchId`, so staging again replaces them.
   */
  readonly stage: (job: {
    readonly runId: string
    readonly batchId: string
    readonly retryOf?: Staged | undefined
  }) => Effect.Effect<Staged, SourceError>
  /** counts the answered and failed rows of an ended job's output */
  readonly tally: (job: Staged) => Effect.Effect<Tally, SourceError>
  /** lands the answered rows of an ended job's output (a MERGE on the key); idempotent. Returns how many rows */
  readonly land: (job: Staged, run: { readonly runId: string; readonly batchId: string }) => Effect.Effect<number, SourceError>
  /** the failed rows of an ended job's output, with the provider's reason */
  readonly failures: (job: Staged) => Stream.Stream<TableFailure, SourceError>
}

/**
 * How a checkpointed source bounds what one run reads (see {@link Source.snapshot}).
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot<A> {
  /** the checkpoint of the last row in the source's order now; none when the source is empty */
  readonly high: Effect.Effect<Option.Option<string>, SourceError>
  /** the same source reading only rows at or before `high` (inclusive) */
  readonly upTo: (high: string) => Source<A>
}

/**
 * The source cannot be read at all.
 *
 * @since 0.1.0
 * @category errors
 */
export class SourceError extends Schema.TaggedError<SourceError>()("SourceError", {
  source: Schema.String,
  message: Schema.String
}) {}
