/**
 * What a run reports as it goes: each stage of the runner emits events (a chunk of rows read, a batch sealed,
 * submitted, polled, ended, split, a part delivered, a retry round, a back-off), never per row. The CLI's progress
 * line, `Progress.Counters`, and any observer given to `Pipeline.run({ onEvent })` consume the same events.
 *
 * @since 0.1.0
 */
import type * as Run from "./Run.ts"

/**
 * The run started (or was resumed): what the ledger already had.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunStarted {
  readonly _tag: "RunStarted"
  readonly runId: string
  readonly pipeline: string
  readonly mode: Run.Mode
  readonly resumed: boolean
  /** rows already delivered and dead-lettered by earlier attempts */
  readonly delivered: number
  readonly dead: number
  /** batches left open by earlier attempts, taken up now */
  readonly openBatches: number
  /** source rows earlier attempts admitted (a resume reads on after them) */
  readonly admitted?: number | undefined
}

/**
 * A chunk of source rows was admitted (`skipped`: rows an earlier attempt had admitted already).
 *
 * @since 0.1.0
 * @category models
 */
export interface RowsRead {
  readonly _tag: "RowsRead"
  readonly rows: number
  readonly skipped: number
  /** for a source sized in bytes: how far into it the chunk's last row ends */
  readonly bytes?: number | undefined
}

/**
 * The source was read to its end; `counted`: the rows it said the run's range holds, every one read.
 *
 * @since 0.1.0
 * @category models
 */
export interface SourceEnded {
  readonly _tag: "SourceEnded"
  readonly rows: number
  readonly counted?: number | undefined
}

/**
 * A batch's file was written and the ledger knows it.
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchSealed {
  readonly _tag: "BatchSealed"
  readonly batchId: string
  readonly requests: number
  readonly bytes: number
  readonly mode: "batch" | "sync" | "table"
}

/**
 * The provider refused a batch as too large (or over its enqueued-token limit): it became two.
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchSplit {
  readonly _tag: "BatchSplit"
  readonly batchId: string
  readonly into: readonly [number, number]
  readonly reason: string
}

/**
 * A batch went out: created at the provider (`remoteId`), or its requests started through the synchronous API.
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchSubmitted {
  readonly _tag: "BatchSubmitted"
  readonly batchId: string
  readonly remoteId?: string | undefined
  readonly requests: number
  readonly mode: "batch" | "sync" | "table"
}

/**
 * This process watches a batch at the provider (polls it), or sends its synchronous calls, from now until it ends.
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchWatched {
  readonly _tag: "BatchWatched"
  readonly batchId: string
  readonly mode: "batch" | "sync" | "table"
}

/**
 * How far a batch at the provider is (`done`: requests answered so far, `total` when known).
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchProgress {
  readonly _tag: "BatchProgress"
  readonly batchId: string
  readonly done: number
  readonly total: number
  readonly providerState: string
}

/**
 * A batch reached its end at the provider (or its synchronous calls are all answered).
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchEnded {
  readonly _tag: "BatchEnded"
  readonly batchId: string
  readonly mode: "batch" | "sync" | "table"
  readonly providerState: string
  readonly completed: number
  readonly failed: number
}

/**
 * A part went to the sinks: rows delivered, rows dead-lettered, and of those how many the sink refused.
 *
 * @since 0.1.0
 * @category models
 */
export interface PartWritten {
  readonly _tag: "PartWritten"
  readonly seq: number
  readonly delivered: number
  readonly dead: number
  readonly refused: number
}

/**
 * Requests that failed retryably go out again after a pause.
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryRound {
  readonly _tag: "RetryRound"
  readonly round: number
  readonly requests: number
  readonly waitMs: number
  /** why the requests go out again: how many failed with each kind last time (e.g. `expired`, `provider_error`) */
  readonly reasons?: ReadonlyArray<{ readonly kind: string; readonly requests: number }> | undefined
}

/**
 * A provider call failed transiently (unreachable, 429, 5xx) and is tried again after `delayMs`.
 *
 * @since 0.1.0
 * @category models
 */
export interface BackingOff {
  readonly _tag: "BackingOff"
  readonly operation: string
  readonly reason: string
  readonly delayMs: number
}

/**
 * A provider call could not reach the provider (connection refused, host not found, timed out): `message` names the
 * host and the cause, `nextAttemptAt` (epoch ms) is when the call is tried again.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProviderUnreachable {
  readonly _tag: "ProviderUnreachable"
  readonly provider: string
  readonly operation: string
  readonly message: string
  readonly delayMs: number
  readonly nextAttemptAt: number
}

/**
 * Answers of a batch were recorded: how many, their tokens, and what they cost at the mode's price and would have
 * cost synchronously (picodollars, see `Prices`; absent for answers with no price).
 *
 * @since 0.1.0
 * @category models
 */
export interface Answered {
  readonly _tag: "Answered"
  readonly batchId: string
  readonly succeeded: number
  readonly failed: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly cachedInputTokens: number
  /** what they cost (USD; summed exactly in the ledger), and would have cost synchronously */
  readonly spentUsd: number
  readonly syncEquivalentUsd: number
}

/**
 * How much the run's source holds, for a progress bar: `rows` (a table's count, a file's records) or `bytes` (a
 * file's size, with `RowsRead.bytes` as the reading goes); `estimate` when it is approximate.
 *
 * @since 0.1.0
 * @category models
 */
export interface SourceSized {
  readonly _tag: "SourceSized"
  readonly rows?: number | undefined
  readonly bytes?: number | undefined
  readonly estimate?: boolean | undefined
}

/**
 * The run ended (completed, failed, cancelled) or was detached.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunEnded {
  readonly _tag: "RunEnded"
  readonly state: Run.State
  readonly message?: string | undefined
}

/**
 * Any event of a run.
 *
 * @since 0.1.0
 * @category models
 */
export type RunEvent =
  | RunStarted
  | RowsRead
  | SourceEnded
  | BatchSealed
  | BatchSplit
  | BatchSubmitted
  | BatchWatched
  | BatchProgress
  | BatchEnded
  | PartWritten
  | RetryRound
  | BackingOff
  | ProviderUnreachable
  | Answered
  | SourceSized
  | RunEnded
