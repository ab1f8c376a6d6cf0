/**
 * Over 400 lines on purpose: the models and the service contract of every seam, documented; the code is in
 * `internal/ledger/`, one module per seam.
 *
 * The ledger: durable run state on `effect/sql`, so a run can be killed at any
 * moment and resumed without losing a row or paying for a batch twice.
 *
 * Tables (one set of dialect-neutral statements, SQLite by default, Postgres
 * when runs are shared):
 *
 * - `offpeak_runs`: one row per run, with a small run number the per-row
 *   tables are keyed by, its row and request counts, and running totals of
 *   its money, tokens and cached/shared rows (added to in the transaction
 *   that records them: a summary never reads every row).
 * - `offpeak_items`: one row per input row, keyed by (run, position): key,
 *   record and its request. Written once: a row goes to the sinks with its
 *   request, except a row deliverable on its own (`own`: failed on admission,
 *   or its request settled before it was admitted), which records its part.
 * - `offpeak_requests`: one row per distinct request of a run, numbered by the
 *   position of the first row that asked for it
 *   (`queued → batched → succeeded | failed`, or back to `queued` for a
 *   retry). Rows with the same fingerprint share one request. Settled for
 *   good, a request gets the run's next numbers (`settled`, in the order
 *   requests settle) and keeps how many rows go out with it (`row_count`).
 * - `offpeak_outputs`: the output of each succeeded request, keyed by its
 *   settle number (appended); with the fingerprint index of
 *   `offpeak_requests`, the result cache across runs.
 * - `offpeak_batches`: one row per batch, with the remote id written before
 *   anything else happens after create.
 * - `offpeak_parts`: one row per sink part; a part's rows are fixed in the
 *   ledger before its file is written (a range of settle numbers, or rows on
 *   their own), its counts when it is committed.
 *
 * Every per-row table is written in source order (run number, then position),
 * so the database grows at its end instead of touching pages all over the file;
 * the only random-keyed index is the fingerprint prefix of requests.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"
import type { Option } from "effect"
import { Migrator, SqlClient } from "effect/sql"
import * as AdmissionLedger from "./internal/ledger/admission.ts"
import * as Batches from "./internal/ledger/batches.ts"
import * as Budget from "./internal/ledger/budget.ts"
import * as Cache from "./internal/ledger/cache.ts"
import { LedgerError } from "./internal/ledger/errors.ts"
import type { LeaseHeld } from "./internal/ledger/errors.ts"
import * as Inspect from "./internal/ledger/inspect.ts"
import * as Leases from "./internal/ledger/leases.ts"
import { migrations } from "./internal/ledger/migrations.ts"
import * as Outcomes from "./internal/ledger/outcomes.ts"
import * as Parts from "./internal/ledger/parts.ts"
import * as Runs from "./internal/ledger/runs.ts"
import * as Shared from "./internal/ledger/shared.ts"
import * as Prices from "./Prices.ts"
import type * as RunModule from "./Run.ts"
import type { FailureKind, Usage } from "./Result.ts"

// ===== Models =====

/**
 * A run as the ledger knows it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Run {
  readonly id: string
  readonly pipeline: string
  readonly module: string | null
  readonly provider: string
  /**
   * Where the run's requests go: `""` for the provider's own API, `"emulator"` for the local emulator, else the base
   * URL of a compatible host (`Provider.Service.endpoint`). A resume must send to the same place.
   */
  readonly endpoint: string
  readonly mode: RunModule.Mode
  readonly state: RunModule.State
  readonly sourceDone: boolean
  readonly createdAt: string
  readonly updatedAt: string
  readonly message: string | null
  /** the source's checkpoint after the last admitted row, and that row's position */
  readonly checkpoint: string | null
  readonly checkpointPosition: number | null
  /**
   * What the run reads of a checkpointed source: rows after `low` (none: from the start) up to `high` (the last row
   * when the run started); null for other sources, or before the run took its snapshot
   */
  readonly snapshot: { readonly low: string | null; readonly high: string } | null
  /** the working directory the run was started from (null for runs of older versions) */
  readonly cwd: string | null
  /** the run's budget (picodollars), if it has one */
  readonly budget: bigint | null
  /** the time by which the run must be done (epoch ms), if it has one */
  readonly deadline: number | null
  /** the name of the source it reads (null for runs of older versions) */
  readonly source: string | null
}

/**
 * A failure stored with an item or a request.
 *
 * @since 0.1.0
 * @category models
 */
export interface Failure {
  readonly kind: FailureKind
  readonly message: string
  readonly raw?: string | undefined
}

/**
 * One source row offered to {@link Service.admit}. `fingerprint` is null for
 * a row that already failed (`failure` says why).
 *
 * @since 0.1.0
 * @category models
 */
export interface AdmitRow {
  readonly key: string
  readonly position: number
  readonly fingerprint: string | null
  /** the record as JSON text (null when it could not be read) */
  readonly record: string | null
  readonly failure?: Failure | undefined
}

/**
 * What admission did with a chunk of rows.
 *
 * @since 0.1.0
 * @category models
 */
export interface Admission {
  /** indexes (into the admitted chunk) of rows whose request is new in this run and must be sent */
  readonly fresh: ReadonlyArray<number>
  /** rows admitted in this call */
  readonly admitted: number
  /** rows already admitted by an earlier attempt of this run (resume) */
  readonly skipped: number
  /** rows admitted whose result is already known (cache, an identical request, or a failure): ready to deliver */
  readonly ready: number
  /** rows whose key repeats an earlier row's key: admitted as failures */
  readonly duplicates: number
}

/**
 * Where a batch stands locally.
 *
 * - `sealed`: file written, requests assigned, nothing sent yet
 * - `submitting`: `submit` was called (a crash here is resolved with `find`)
 * - `submitted`: the remote id is known
 * - `ended`: the remote batch is terminal, results not yet recorded
 * - `collected`: every request of the batch is accounted for
 *
 * @since 0.1.0
 * @category models
 */
export type BatchState = "sealed" | "submitting" | "submitted" | "ended" | "collected"

/**
 * How a batch goes out (see {@link Batch.mode}).
 *
 * @since 0.1.0
 * @category models
 */
export type BatchMode = "batch" | "sync" | "table"

/**
 * A batch as the ledger knows it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Batch {
  readonly id: string
  readonly runId: string
  readonly seq: number
  readonly state: BatchState
  readonly group: string
  readonly file: string
  readonly requestCount: number
  readonly bytes: number
  /**
   * `batch`: a file of lines sent to the batch API; `sync`: its requests go through the synchronous API, one call each,
   * and it never has a remote id; `table`: a job over a table the source staged (pushdown), described by `spec`
   */
  readonly mode: BatchMode
  /** for a `table` batch: its staged tables (`Source.Staged`, as JSON) */
  readonly spec: string | null
  /** the model its requests ask */
  readonly model: string | null
  /** its requests' worst case at its price (picodollars), when a budget applies */
  readonly worst: bigint | null
  /** what is reserved of the run's budget for it until it is collected (picodollars) */
  readonly reserved: bigint
  readonly remoteId: string | null
  readonly remoteMeta: Readonly<Record<string, string>> | null
  readonly remoteState: string | null
  readonly completed: number
  readonly failed: number
  readonly createdAt: string
  readonly submittedAt: string | null
  readonly endedAt: string | null
}

/**
 * The outcome of one request of a batch.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome =
  | {
    readonly _tag: "Succeeded"
    /** the request's number (see {@link Service.unsettled}) */
    readonly request: number
    /** JSON text, or base64 little-endian float32 when `format` is `f32` (embeddings: a quarter of the size) */
    readonly output: string
    readonly format?: OutputFormat | undefined
    readonly usage: Usage
    /** what the answer cost at the mode's price, and would have cost synchronously (picodollars); absent when unpriced */
    readonly cost?: { readonly spent: bigint; readonly sync: bigint } | undefined
  }
  | {
    readonly _tag: "Failed"
    readonly request: number
    readonly failure: Failure
    readonly retryable: boolean
    /** a tighter attempt limit for this failure (decode errors) */
    readonly maxAttempts?: number | undefined
    /** what an answer that failed cost all the same (truncated, undecodable): it counts as spent */
    readonly cost?: { readonly spent: bigint; readonly sync: bigint } | undefined
  }

/**
 * How a stored output is encoded.
 *
 * @since 0.1.0
 * @category models
 */
export type OutputFormat = "json" | "f32"

/**
 * A part the sinks wrote: how many of its rows went to the sink and how many to the dead-letter sink.
 *
 * @since 0.1.0
 * @category models
 */
export interface WrittenPart {
  readonly seq: number
  readonly delivered: number
  readonly dead: number
  /** rows of the part the sink refused (they went to the dead letter): recorded as `sink_refused` failures */
  readonly refused?: ReadonlyArray<{ readonly position: number; readonly message: string }> | undefined
}

/**
 * What a run spent and reserved, and the tokens of its answers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Spend {
  /** the cost of the answers recorded (picodollars) */
  readonly spent: bigint
  /** what the same answers would have cost through the synchronous API */
  readonly syncEquivalent: bigint
  /** reserved for batches not yet collected */
  readonly reserved: bigint
  readonly budget: bigint | null
  readonly inputTokens: number
  readonly outputTokens: number
  readonly cachedInputTokens: number
  /** answers recorded with no price (their model has none) */
  readonly unpriced: number
  /** rows answered from the result cache, and rows that shared a request with another row */
  readonly cachedRows: number
  readonly dedupedRows: number
}

/**
 * A run's tokens and cost in USD, from its `Spend`: what summaries, `offpeak status` and reports show.
 *
 * @example
 * ```ts
 * const { usage, cost } = Ledger.spendReport(yield* ledger.spend(runId))
 * cost.spentUsd // 0.0042
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export const spendReport = (spend: Spend) => ({
  usage: {
    inputTokens: spend.inputTokens,
    outputTokens: spend.outputTokens,
    cachedInputTokens: spend.cachedInputTokens
  },
  cost: {
    spentUsd: Prices.toUsd(spend.spent),
    syncEquivalentUsd: Prices.toUsd(spend.syncEquivalent),
    budgetUsd: spend.budget === null ? null : Prices.toUsd(spend.budget)
  }
})

/**
 * A row that ended failed, as `offpeak failures` lists it.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailedRow {
  readonly key: string
  readonly position: number
  readonly kind: FailureKind
  readonly message: string
  readonly raw: string | null
  /** how many times its request was sent (0: never, e.g. it failed on admission) */
  readonly attempts: number
}

/**
 * Everything the ledger knows of one row, as `offpeak inspect` shows it.
 *
 * @since 0.1.0
 * @category models
 */
export interface RowDetail {
  readonly key: string
  readonly position: number
  /** the record as JSON text */
  readonly record: string | null
  /** a failure on admission (or the sink's refusal) */
  readonly failure: Failure | null
  readonly request: {
    readonly fingerprint: string
    readonly state: string
    readonly attempts: number
    readonly cached: boolean
    /** the batch it was last sent in */
    readonly batch: { readonly id: string; readonly remoteId: string | null; readonly state: string; readonly mode: string } | null
    readonly failure: Failure | null
    /** the answer (JSON text, or base64 float32 for `f32`) */
    readonly output: string | null
    readonly format: OutputFormat | null
    readonly usage: Usage | null
  } | null
}

/**
 * One row of a part, with everything the sink and dead-letter sink need.
 *
 * @since 0.1.0
 * @category models
 */
export interface PartRow {
  readonly key: string
  readonly position: number
  readonly record: string | null
  readonly fingerprint: string | null
  readonly output: string | null
  readonly format: OutputFormat
  readonly usage: Usage | null
  readonly cached: boolean
  /** null when the row succeeded */
  readonly failure: Failure | null
}

/**
 * Counters of one run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Counts {
  readonly items: number
  /** the highest position admitted: equal to `items` while no row is missing (positions are 1, 2, 3, … per run) */
  readonly maxPosition: number
  readonly delivered: number
  readonly dead: number
  readonly pendingItems: number
  readonly requests: number
  readonly queued: number
  readonly batched: number
  readonly succeeded: number
  readonly failed: number
  readonly batches: number
  readonly openBatches: number
}

/**
 * The right to work a pipeline's runs: one process at a time holds it, renews it while it works and releases it on
 * exit. Every write the holder makes is fenced by `generation`: once another process took the lease over (this one
 * was paused past the expiry, or cut off), this one's writes fail.
 *
 * @since 0.1.0
 * @category models
 */
export interface Lease {
  /** what the lease covers: the pipeline's name (one live run per pipeline and ledger) */
  readonly scope: string
  readonly runId: string
  readonly owner: string
  readonly host: string
  readonly pid: number
  readonly generation: number
  readonly acquiredAt: number
  /** epoch ms after which another process may take the lease over (the holder renews it well before) */
  readonly expiresAt: number
  readonly ttlMs: number
}

/**
 * Who holds a lease now.
 *
 * @since 0.1.0
 * @category models
 */
export interface LeaseHolder {
  readonly scope: string
  readonly runId: string
  readonly host: string
  readonly pid: number
  readonly acquiredAt: number
  readonly heartbeatAt: number
  readonly expiresAt: number
  /** false: its process is gone (same host), true: alive (same host), undefined: on another host */
  readonly alive: boolean | undefined
}

export {
  /**
   * Another live process holds the lease: it works a run of this pipeline now. The message names it (process, host,
   * since when) and says what to do.
   *
   * @since 0.1.0
   * @category errors
   */
  LeaseHeld,
  /**
   * A ledger call failed; `operation` names it (`fence` when this process no longer owns the run).
   *
   * @since 0.1.0
   * @category errors
   */
  LedgerError
} from "./internal/ledger/errors.ts"

// ===== Service Interface =====

/**
 * The ledger's operations.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly createRun: (run: {
    readonly id: string
    readonly pipeline: string
    readonly module: string | null
    readonly provider: string
    /** where the requests go (`Provider.Service.endpoint`); the result cache is shared only within one */
    readonly endpoint?: string | undefined
    /** default `batch` */
    readonly mode?: RunModule.Mode | undefined
    /** the working directory the run was started from: a resume resolves relative paths from it */
    readonly cwd?: string | undefined
    /** the name of the source it reads (`Source.name`: a file, a table); an incremental run goes on from its own */
    readonly source?: string | undefined
  }) => Effect.Effect<Run, LedgerError>
  readonly getRun: (id: string) => Effect.Effect<Option.Option<Run>, LedgerError>
  readonly listRuns: Effect.Effect<ReadonlyArray<Run>, LedgerError>
  readonly updateRun: (
    id: string,
    patch: {
      readonly state?: RunModule.State
      readonly sourceDone?: boolean
      readonly message?: string | null
      readonly checkpoint?: { readonly value: string; readonly position: number }
      readonly snapshot?: { readonly low: string | null; readonly high: string }
      /** the run's budget (picodollars); null: none */
      readonly budget?: bigint | null
      /** the run's deadline (epoch ms); null: none */
      readonly deadline?: number | null
      /** where its requests go from now on (only while nothing was sent: see `Run.endpoint`) */
      readonly endpoint?: string
    }
  ) => Effect.Effect<void, LedgerError>
  /** how long the latest batches (at most 50) of this provider took, from submit to end, in ms, slowest first */
  readonly batchDurations: (provider: string) => Effect.Effect<ReadonlyArray<number>, LedgerError>
  /**
   * The checkpoint of the pipeline's latest completed run that has one, of the same source and endpoint when given
   * (a run of another table, or one against the local emulator, says nothing of where this one stands; runs of
   * versions that did not record their source count as the same source)
   */
  readonly lastCheckpoint: (
    pipeline: string,
    of?: { readonly source?: string | undefined; readonly endpoint?: string | undefined }
  ) => Effect.Effect<Option.Option<string>, LedgerError>
  /** admits a chunk of rows in one transaction */
  readonly admit: (runId: string, rows: ReadonlyArray<AdmitRow>) => Effect.Effect<Admission, LedgerError>
  /** queued requests (new after a crash, or waiting for a retry), one record each, in pages of request numbers after `after` */
  readonly queued: (
    runId: string,
    options: { readonly after: number; readonly limit: number }
  ) => Effect.Effect<
    ReadonlyArray<{ readonly id: number; readonly fingerprint: string; readonly record: string }>,
    LedgerError
  >
  readonly nextBatchSeq: (runId: string) => Effect.Effect<number, LedgerError>
  /** records a sealed batch and assigns its queued requests (by number) to it, in one transaction */
  readonly sealBatch: (
    batch: {
      readonly id: string
      readonly runId: string
      readonly seq: number
      readonly group: string
      readonly file: string
      readonly requestCount: number
      readonly bytes: number
      /** default `batch` */
      readonly mode?: BatchMode | undefined
      readonly spec?: string | null | undefined
      readonly model?: string | null | undefined
      readonly worst?: bigint | null | undefined
    },
    requests: ReadonlyArray<number>,
    /** another batch marked collected, with its final counts, in the same transaction (a table job that a retry job follows) */
    collect?: { readonly id: string; readonly completed: number; readonly failed: number }
  ) => Effect.Effect<void, LedgerError>
  /**
   * Replaces a batch the provider refused (too large, over its token limit) by
   * new sealed batches taking its requests, in one transaction; the old batch
   * ends `collected`.
   */
  readonly splitBatch: (
    batchId: string,
    parts: ReadonlyArray<{
      readonly batch: {
        readonly id: string
        readonly runId: string
        readonly seq: number
        readonly group: string
        readonly file: string
        readonly requestCount: number
        readonly bytes: number
      }
      readonly requests: ReadonlyArray<number>
    }>
  ) => Effect.Effect<void, LedgerError>
  readonly updateBatch: (id: string, patch: {
    readonly state?: BatchState
    /** a batch not sent yet may change how it goes out (the deadline sends it synchronously) */
    readonly mode?: BatchMode
    readonly remoteId?: string
    readonly remoteMeta?: Readonly<Record<string, string>> | undefined
    readonly remoteState?: string
    readonly completed?: number
    readonly failed?: number
    readonly submitted?: boolean
    readonly ended?: boolean
  }) => Effect.Effect<void, LedgerError>
  readonly batches: (runId: string) => Effect.Effect<ReadonlyArray<Batch>, LedgerError>
  /**
   * A batch that will not be sent (the budget refused it): its requests go back to the queue, their attempts
   * untouched, and the batch ends collected with `remoteState` = `reason`; one transaction.
   */
  readonly requeue: (batchId: string, reason: string) => Effect.Effect<void, LedgerError>
  /** batches not yet collected, oldest first */
  readonly openBatches: (runId: string) => Effect.Effect<ReadonlyArray<Batch>, LedgerError>
  /**
   * Records outcomes of requests still assigned to `batchId` (any other is skipped: a line seen twice changes
   * nothing); retryable failures go back to the queue until `maxAttempts`.
   */
  readonly recordOutcomes: (
    runId: string,
    batchId: string,
    outcomes: ReadonlyArray<Outcome>,
    maxAttempts: number
  ) => Effect.Effect<void, LedgerError>
  /** fails queued requests (by number) that can no longer be sent (too large, changed pipeline) */
  readonly failQueued: (
    runId: string,
    requests: ReadonlyArray<number>,
    failure: Failure
  ) => Effect.Effect<void, LedgerError>
  /** every request still assigned to `batchId` that no result line accounted for: its number and fingerprint (custom id) */
  readonly unsettled: (
    runId: string,
    batchId: string
  ) => Effect.Effect<ReadonlyArray<{ readonly id: number; readonly fingerprint: string }>, LedgerError>
  /**
   * Fixes the rows of a new part of about `limit` rows; none when nothing is deliverable (with `whole`, when fewer
   * than `limit` rows are). Rows deliverable on their own come first; then the next range of requests in the order
   * they settled for good, with every row that asked for them (a request's rows never split across parts), so rows
   * go out while the rest of their batch is still being recorded.
   */
  readonly assignPart: (
    runId: string,
    limit: number,
    options?: { readonly whole?: boolean }
  ) => Effect.Effect<Option.Option<number>, LedgerError>
  /**
   * Commits the part just written (`written`, as `commitPart`), then fixes the next part (as `assignPart`) and reads
   * its rows, in one transaction: a delivery waits for the database once a part.
   */
  readonly nextPart: (
    runId: string,
    options: {
      readonly limit: number
      readonly whole?: boolean
      readonly written?: WrittenPart | undefined
    }
  ) => Effect.Effect<Option.Option<{ readonly seq: number; readonly rows: ReadonlyArray<PartRow> }>, LedgerError>
  /** parts assigned but not committed (a crash between assign and commit) */
  readonly writingParts: (runId: string) => Effect.Effect<ReadonlyArray<number>, LedgerError>
  readonly partRows: (runId: string, seq: number) => Effect.Effect<ReadonlyArray<PartRow>, LedgerError>
  /** marks part `written.seq` committed, with how many of its rows the sink and the dead-letter sink took */
  readonly commitPart: (runId: string, written: WrittenPart) => Effect.Effect<void, LedgerError>
  readonly counts: (runId: string) => Effect.Effect<Counts, LedgerError>
  /**
   * Takes the lease of `scope` for `runId` (atomically): refused with {@link LeaseHeld} while a live process holds
   * it; a holder whose process is gone (same host) or whose lease expired is taken over. From then on every write
   * this ledger makes for `runId` checks the lease in its transaction.
   */
  readonly acquire: (options: {
    readonly scope: string
    readonly runId: string
    readonly ttlMs: number
  }) => Effect.Effect<Lease, LedgerError | LeaseHeld>
  /** extends the lease by its ttl; fails when another process took it over (the lease is lost for good) */
  readonly renew: (lease: Lease) => Effect.Effect<Lease, LedgerError>
  /** gives the lease up (no-op when it was lost); this ledger's writes for the run are no longer fenced by it */
  readonly release: (lease: Lease) => Effect.Effect<void, LedgerError>
  /** who holds the lease of `scope`, if anyone (a released lease has no holder) */
  readonly holder: (scope: string) => Effect.Effect<Option.Option<LeaseHolder>, LedgerError>
  /**
   * What a run has spent (the cost of its answers) and has reserved (the worst case of its batches at the provider),
   * and its token totals: answers copied from the result cache cost nothing and count no token.
   */
  readonly spend: (runId: string) => Effect.Effect<Spend, LedgerError>
  /**
   * Reserves `amount` (picodollars) of the run's budget for a batch about to be sent, atomically: refused (`false`)
   * when spent + reserved + amount would pass the budget. A batch that holds a reservation already keeps it (a resume
   * after a crash between reservation and submit reserves nothing twice). Without a budget it always succeeds.
   */
  readonly reserve: (runId: string, batchId: string, amount: bigint) => Effect.Effect<boolean, LedgerError>
  /** how many rows ended failed, by kind */
  readonly failureCounts: (runId: string) => Effect.Effect<ReadonlyArray<{ readonly kind: FailureKind; readonly rows: number }>, LedgerError>
  /** the rows that ended failed, in source order, of one kind or all, after a position */
  readonly failures: (
    runId: string,
    options: { readonly kind?: FailureKind | undefined; readonly after?: number | undefined; readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<FailedRow>, LedgerError>
  /** one row of a run by its key: its record, its request, the batch that carried it and its answer */
  readonly inspect: (runId: string, key: string) => Effect.Effect<Option.Option<RowDetail>, LedgerError>
  /**
   * Of these fingerprints, the ones the result cache answers (a request that succeeded in any run): a new run copies
   * their answers and sends nothing for them. A read; what `offpeak estimate` counts as free.
   */
  readonly cachedAnswers: (
    fingerprints: ReadonlyArray<string>,
    /** only answers of runs of this provider and endpoint (as a run of it would reuse) */
    scope?: { readonly provider: string; readonly endpoint?: string | undefined }
  ) => Effect.Effect<ReadonlySet<string>, LedgerError>
  /** the answers a run paid for (result-cache copies excluded): how many, and their input and output tokens */
  readonly paidAnswers: (
    runId: string
  ) => Effect.Effect<{ readonly answers: number; readonly inputTokens: number; readonly outputTokens: number }, LedgerError>
}

/**
 * The ledger service tag.
 *
 * @since 0.1.0
 * @category services
 */
export class Ledger extends Context.Service<Ledger, Service>()("@offpeak/core/Ledger") {}

/**
 * Runs the ledger's migrations (idempotent).
 *
 * @since 0.1.0
 * @category constructors
 */
export const migrate = Migrator.make({})({ loader: Migrator.fromRecord(migrations), table: "offpeak_migrations" })

/**
 * Builds the ledger on the `SqlClient` in context, after running migrations.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Service, LedgerError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* migrate.pipe(Effect.mapError((e) => new LedgerError({ operation: "migrate", message: Shared.sqlMessage(e) })))
  const shared = yield* Shared.make(sql)
  return Ledger.of({
    ...Runs.make(shared),
    ...Leases.make(shared),
    ...AdmissionLedger.make(shared),
    ...Batches.make(shared),
    ...Outcomes.make(shared),
    ...Parts.make(shared),
    ...Inspect.make(shared),
    ...Budget.make(shared),
    ...Cache.make(shared)
  })
})

/**
 * The ledger on the `SqlClient` provided to the layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Ledger, LedgerError, SqlClient.SqlClient> = Layer.effect(Ledger, make)
