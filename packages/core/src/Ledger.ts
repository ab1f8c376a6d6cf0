/**
 * The ledger: durable run state on `effect/sql`, so a run can be killed at any
 * moment and resumed without losing a row or paying for a batch twice.
 *
 * Tables (one set of dialect-neutral statements, SQLite by default, Postgres
 * when runs are shared):
 *
 * - `offpeak_runs`: one row per run, with a small run number the per-row
 *   tables are keyed by, and its row and request counts.
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
import { Clock, Context, Effect, Layer, Option, Schema, Semaphore } from "effect"
import { Migrator, SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql"
import * as Holder from "./internal/lease.ts"
import { migrations } from "./internal/ledgerMigrations.ts"
import type { FailureKind, Usage } from "./Result.ts"

// ===== Models =====

/**
 * Where a run stands.
 *
 * @since 0.1.0
 * @category models
 */
export type RunState = "running" | "detached" | "completed" | "failed" | "cancelled"

/**
 * How a run sends its requests: `batch` (the provider's batch API), `sync`
 * (the synchronous API, one call per request), or `auto` (batches of fewer
 * than the pipeline's `syncBelow` requests go synchronously, the rest as batches).
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "batch" | "sync" | "auto"

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
  readonly mode: Mode
  readonly state: RunState
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
  /** `sync`: its requests go through the synchronous API, one call each, and it never has a remote id */
  readonly mode: "batch" | "sync"
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
  }
  | {
    readonly _tag: "Failed"
    readonly request: number
    readonly failure: Failure
    readonly retryable: boolean
    /** a tighter attempt limit for this failure (decode errors) */
    readonly maxAttempts?: number | undefined
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

/**
 * Another live process holds the lease: it works a run of this pipeline now.
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseHeld extends Schema.TaggedError<LeaseHeld>()("LeaseHeld", {
  scope: Schema.String,
  runId: Schema.String,
  host: Schema.String,
  pid: Schema.Int,
  acquiredAt: Schema.Finite,
  heartbeatAt: Schema.Finite,
  expiresAt: Schema.Finite,
  sameHost: Schema.Boolean
}) {
  override get message(): string {
    const at = (ms: number) => new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")
    const ago = Math.max(0, Math.round((Date.now() - this.heartbeatAt) / 1000))
    return `pipeline "${this.scope}" is being worked by run ${this.runId}: process ${this.pid} on ${this.host}, since ${
      at(this.acquiredAt)
    } (last heartbeat ${ago} s ago). Wait for it to end, or stop it (Ctrl-C detaches it; then \`offpeak resume ${this.runId}\`)` +
      (this.sameHost
        ? "."
        : `; if that machine is gone, its lease expires at ${at(this.expiresAt)} and a resume may take over then.`)
  }
}

/**
 * A ledger call failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class LedgerError extends Schema.TaggedError<LedgerError>()("LedgerError", {
  operation: Schema.String,
  message: Schema.String
}) {}

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
    /** default `batch` */
    readonly mode?: Mode | undefined
    /** the working directory the run was started from: a resume resolves relative paths from it */
    readonly cwd?: string | undefined
  }) => Effect.Effect<Run, LedgerError>
  readonly getRun: (id: string) => Effect.Effect<Option.Option<Run>, LedgerError>
  readonly listRuns: Effect.Effect<ReadonlyArray<Run>, LedgerError>
  readonly updateRun: (
    id: string,
    patch: {
      readonly state?: RunState
      readonly sourceDone?: boolean
      readonly message?: string | null
      readonly checkpoint?: { readonly value: string; readonly position: number }
      readonly snapshot?: { readonly low: string | null; readonly high: string }
    }
  ) => Effect.Effect<void, LedgerError>
  /** the checkpoint of the pipeline's latest completed run that has one */
  readonly lastCheckpoint: (pipeline: string) => Effect.Effect<Option.Option<string>, LedgerError>
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
      readonly mode?: "batch" | "sync" | undefined
    },
    requests: ReadonlyArray<number>
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
    readonly remoteId?: string
    readonly remoteMeta?: Readonly<Record<string, string>> | undefined
    readonly remoteState?: string
    readonly completed?: number
    readonly failed?: number
    readonly submitted?: boolean
    readonly ended?: boolean
  }) => Effect.Effect<void, LedgerError>
  readonly batches: (runId: string) => Effect.Effect<ReadonlyArray<Batch>, LedgerError>
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

// ===== Implementation =====

const CHUNK = 400

const chunks = <A>(items: ReadonlyArray<A>, size = CHUNK): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

/** a part's row as the SQLite thread sends it: item, request, output columns (see `rowsOf`) */
type PartValues = readonly [
  key: string,
  position: number | bigint,
  record: string | null,
  fingerprint: string | null,
  itemErrorKind: string | null,
  itemErrorMessage: string | null,
  itemErrorRaw: string | null,
  state: string | null,
  cached: number | bigint | null,
  errorKind: string | null,
  errorMessage: string | null,
  errorRaw: string | null,
  output: string | null,
  outputFormat: string | null,
  inputTokens: number | bigint | null,
  outputTokens: number | bigint | null,
  cachedInputTokens: number | bigint | null
]

const toNumber = (u: unknown): number => typeof u === "bigint" ? Number(u) : Number(u ?? 0)

/** the first 48 bits of a hex fingerprint: what the fingerprint index holds (collisions are resolved on the full text) */
const fp48 = (fingerprint: string): number => {
  const n = Number.parseInt(fingerprint.slice(0, 12), 16)
  return Number.isFinite(n) ? n : 0
}

const nowIso = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms).toISOString())

/** the driver's message and, when it is generic (`PgConnection: Query failed`), the server's reason */
const sqlMessage = (error: { readonly message: string; readonly reason?: { readonly cause?: unknown } }): string => {
  const cause = error.reason?.cause
  const detail = cause instanceof Error ? cause.message : ""
  return detail !== "" && !error.message.includes(detail) ? `${error.message}: ${detail}` : error.message
}

const mapError = (operation: string) => <A, R>(effect: Effect.Effect<A, SqlError.SqlError | LedgerError, R>) =>
  Effect.mapError(effect, (error) =>
    error._tag === "LedgerError" ? error : new LedgerError({ operation, message: sqlMessage(error as any) }))

interface RunRow {
  readonly id: string
  readonly pipeline: string
  readonly module: string | null
  readonly provider: string
  readonly mode: Mode
  readonly state: RunState
  readonly source_done: number | bigint
  readonly message: string | null
  readonly created_at: string
  readonly updated_at: string
  readonly checkpoint: string | null
  readonly checkpoint_position: number | bigint | null
  readonly snapshot_low: string | null
  readonly snapshot_high: string | null
  readonly cwd: string | null
}

const toRun = (row: RunRow): Run => ({
  id: row.id,
  pipeline: row.pipeline,
  module: row.module,
  provider: row.provider,
  mode: row.mode,
  state: row.state,
  sourceDone: toNumber(row.source_done) === 1,
  message: row.message,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  checkpoint: row.checkpoint,
  checkpointPosition: row.checkpoint_position === null ? null : toNumber(row.checkpoint_position),
  snapshot: row.snapshot_high === null ? null : { low: row.snapshot_low, high: row.snapshot_high },
  cwd: row.cwd
})

interface BatchRow {
  readonly id: string
  readonly run_id: string
  readonly seq: number | bigint
  readonly state: BatchState
  readonly grp: string
  readonly file: string
  readonly request_count: number | bigint
  readonly bytes: number | bigint
  readonly mode: "batch" | "sync"
  readonly remote_id: string | null
  readonly remote_meta: string | null
  readonly remote_state: string | null
  readonly completed: number | bigint
  readonly failed: number | bigint
  readonly created_at: string
  readonly submitted_at: string | null
  readonly ended_at: string | null
}

const toBatch = (row: BatchRow): Batch => ({
  id: row.id,
  runId: row.run_id,
  seq: toNumber(row.seq),
  state: row.state,
  group: row.grp,
  file: row.file,
  requestCount: toNumber(row.request_count),
  bytes: toNumber(row.bytes),
  mode: row.mode,
  remoteId: row.remote_id,
  remoteMeta: row.remote_meta === null ? null : JSON.parse(row.remote_meta),
  remoteState: row.remote_state,
  completed: toNumber(row.completed),
  failed: toNumber(row.failed),
  createdAt: row.created_at,
  submittedAt: row.submitted_at,
  endedAt: row.ended_at
})

type BatchInput = Parameters<Service["sealBatch"]>[0]

/**
 * Builds the ledger on the `SqlClient` in context, after running migrations.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Service, LedgerError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* migrate.pipe(Effect.mapError((e) => new LedgerError({ operation: "migrate", message: sqlMessage(e as any) })))

  // run ids → run numbers, and batch ids → batch numbers: both fixed once written
  const runNums = new Map<string, number>()
  const runNum = (runId: string) =>
    Effect.gen(function*() {
      const known = runNums.get(runId)
      if (known !== undefined) return known
      const rows = yield* sql<{ num: number | bigint | null }>`SELECT num FROM offpeak_runs WHERE id = ${runId}`
      if (rows.length === 0 || rows[0]!.num === null) {
        return yield* new LedgerError({ operation: "run", message: `no run "${runId}" in the ledger` })
      }
      const num = toNumber(rows[0]!.num)
      runNums.set(runId, num)
      return num
    })
  const batchSeqs = new Map<string, number>()
  const batchSeq = (batchId: string) =>
    Effect.gen(function*() {
      const known = batchSeqs.get(batchId)
      if (known !== undefined) return known
      const rows = yield* sql<{ seq: number | bigint }>`SELECT seq FROM offpeak_batches WHERE id = ${batchId}`
      if (rows.length === 0) return yield* new LedgerError({ operation: "batch", message: `no batch "${batchId}" in the ledger` })
      const seq = toNumber(rows[0]!.seq)
      batchSeqs.set(batchId, seq)
      return seq
    })

  /** which of these requests are in `state` (and in `batch`) */
  const inState = (num: number, ids: ReadonlyArray<number>, where: { readonly state: string; readonly batch?: number }) =>
    Effect.gen(function*() {
      const found: Array<number> = []
      for (const part of chunks(ids)) {
        const rows = yield* sql<{ id: number | bigint }>`
          SELECT id FROM offpeak_requests WHERE run = ${num} AND ${sql.in("id", part)} AND state = ${where.state}
          ${where.batch === undefined ? sql`` : sql`AND batch = ${where.batch}`}`
        for (const row of rows) found.push(toNumber(row.id))
      }
      return found
    })

  // Multi-row writes inside a transaction: SQLite keeps a statement journal (spilled to a temporary file) to undo one
  // statement alone on a constraint error, ~7 MB per 2,000 rows admitted. OR FAIL needs none; the ledger never goes
  // on after a failed statement anyway (its transaction is rolled back).
  const orFail = sql.onDialectOrElse({ sqlite: () => sql.literal(" OR FAIL"), orElse: () => sql.literal("") })

  // admission decides whether a row goes out with its request or on its own, and a part's rows are read from
  // the requests it covers: admitting, settling and assigning parts of one run never interleave in this process
  const serial = yield* Semaphore.make(1)
  const serially = <A, E, R>(effect: Effect.Effect<A, E, R>) => serial.withPermits(1)(effect)

  // ----- leases: one process works a pipeline's runs at a time, and every write it makes is fenced -----

  /** the leases this ledger holds, by run id: each write for such a run checks its lease in the write's transaction */
  const fences = new Map<string, Lease>()
  /** batch ids → run ids (fixed once written) */
  const batchRuns = new Map<string, string>()
  // Postgres: the lease row is share-locked until the write commits, so a takeover (an UPDATE of that row) waits for
  // writes in progress, and every write after it sees the new generation; SQLite transactions hold the write lock
  const forShare = sql.onDialectOrElse({ pg: () => sql.literal(" FOR SHARE"), orElse: () => sql.literal("") })
  const forUpdate = sql.onDialectOrElse({ pg: () => sql.literal(" FOR UPDATE"), orElse: () => sql.literal("") })

  /** fails when this ledger held the run's lease and another process has taken it over since */
  const fence = (runId: string) =>
    Effect.gen(function*() {
      const lease = fences.get(runId)
      if (lease === undefined) return
      const rows = yield* sql<{ generation: number | bigint; owner: string | null; host: string; pid: number | bigint }>`
        SELECT generation, owner, host, pid FROM offpeak_leases WHERE scope = ${lease.scope}${forShare}`
      const row = rows[0]
      if (row !== undefined && row.owner === lease.owner && toNumber(row.generation) === lease.generation) return
      return yield* new LedgerError({
        operation: "fence",
        message: `this process no longer owns pipeline "${lease.scope}" (run ${runId})${
          row?.owner ? `: process ${toNumber(row.pid)} on ${row.host} took it over` : ": its lease was released"
        }; nothing more is written`
      })
    })

  /** `fence` for the run of a batch */
  const fenceBatch = (batchId: string) =>
    Effect.gen(function*() {
      if (fences.size === 0) return
      let runId = batchRuns.get(batchId)
      if (runId === undefined) {
        const rows = yield* sql<{ run_id: string }>`SELECT run_id FROM offpeak_batches WHERE id = ${batchId}`
        if (rows.length === 0) return
        runId = rows[0]!.run_id
        batchRuns.set(batchId, runId)
      }
      yield* fence(runId)
    })

  interface LeaseRow {
    readonly scope: string
    readonly run_id: string
    readonly owner: string | null
    readonly host: string
    readonly pid: number | bigint
    readonly pid_start: string | null
    readonly generation: number | bigint
    readonly acquired_at: number | bigint
    readonly heartbeat_at: number | bigint
    readonly expires_at: number | bigint
  }

  let acquisitions = 0
  const acquireOnce = (options: { readonly scope: string; readonly runId: string; readonly ttlMs: number }) =>
    Effect.gen(function*() {
      const me = Holder.self()
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql<LeaseRow>`SELECT * FROM offpeak_leases WHERE scope = ${options.scope}${forUpdate}`
      const row = rows[0]
      if (row !== undefined && row.owner !== null) {
        const holder = { host: row.host, pid: toNumber(row.pid), pidStart: row.pid_start }
        const alive = Holder.isAlive(holder)
        if (alive === true || (alive === undefined && toNumber(row.expires_at) > now)) {
          return yield* new LeaseHeld({
            scope: options.scope,
            runId: row.run_id,
            host: row.host,
            pid: holder.pid,
            acquiredAt: toNumber(row.acquired_at),
            heartbeatAt: toNumber(row.heartbeat_at),
            expiresAt: toNumber(row.expires_at),
            sameHost: alive !== undefined
          })
        }
      }
      const lease: Lease = {
        scope: options.scope,
        runId: options.runId,
        // one owner per acquisition: two runs in one process are two owners
        owner: `${me.owner}:${++acquisitions}`,
        host: me.host,
        pid: me.pid,
        generation: toNumber(row?.generation ?? 0) + 1,
        acquiredAt: now,
        expiresAt: now + options.ttlMs,
        ttlMs: options.ttlMs
      }
      const values = {
        run_id: lease.runId,
        owner: lease.owner,
        host: lease.host,
        pid: lease.pid,
        pid_start: me.pidStart,
        generation: lease.generation,
        acquired_at: now,
        heartbeat_at: now,
        expires_at: lease.expiresAt
      }
      if (row === undefined) yield* sql`INSERT INTO offpeak_leases ${sql.insert({ scope: options.scope, ...values })}`
      else yield* sql`UPDATE offpeak_leases SET ${sql.update(values)} WHERE scope = ${options.scope}`
      return lease
    }).pipe(sql.withTransaction)

  const acquire: Service["acquire"] = (options) =>
    acquireOnce(options).pipe(
      // two processes inserting the first lease row of a scope at once: the loser looks again (and finds it held)
      Effect.retry({ times: 3, while: (e) => e._tag !== "LeaseHeld" && /offpeak_leases|unique|constraint/i.test(sqlMessage(e as any)) }),
      Effect.tap((lease) => Effect.sync(() => fences.set(lease.runId, lease))),
      Effect.mapError((e) => e._tag === "LeaseHeld" ? e : new LedgerError({ operation: "acquire", message: sqlMessage(e as any) }))
    )

  const renew: Service["renew"] = (lease) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql`UPDATE offpeak_leases SET heartbeat_at = ${now}, expires_at = ${now + lease.ttlMs}
        WHERE scope = ${lease.scope} AND owner = ${lease.owner} AND generation = ${lease.generation}
        RETURNING generation`.values
      if (rows.length === 0) {
        fences.delete(lease.runId)
        const held = yield* sql<LeaseRow>`SELECT * FROM offpeak_leases WHERE scope = ${lease.scope}`
        const by = held[0]?.owner ? `process ${toNumber(held[0].pid)} on ${held[0].host} holds it now` : "it was released"
        return yield* new LedgerError({ operation: "lease", message: `lost the lease of pipeline "${lease.scope}": ${by}` })
      }
      return { ...lease, expiresAt: now + lease.ttlMs }
    }).pipe(mapError("renew"))

  const release: Service["release"] = (lease) =>
    sql`UPDATE offpeak_leases SET owner = NULL, expires_at = 0
      WHERE scope = ${lease.scope} AND owner = ${lease.owner} AND generation = ${lease.generation}`.pipe(
      Effect.ensuring(Effect.sync(() => {
        if (fences.get(lease.runId)?.owner === lease.owner) fences.delete(lease.runId)
      })),
      Effect.asVoid,
      mapError("release")
    )

  const holder: Service["holder"] = (scope) =>
    sql<LeaseRow>`SELECT * FROM offpeak_leases WHERE scope = ${scope}`.pipe(
      Effect.map((rows) => {
        const row = rows[0]
        if (row === undefined || row.owner === null) return Option.none<LeaseHolder>()
        const pid = toNumber(row.pid)
        return Option.some({
          scope,
          runId: row.run_id,
          host: row.host,
          pid,
          acquiredAt: toNumber(row.acquired_at),
          heartbeatAt: toNumber(row.heartbeat_at),
          expiresAt: toNumber(row.expires_at),
          alive: Holder.isAlive({ host: row.host, pid, pidStart: row.pid_start })
        })
      }),
      mapError("holder")
    )

  /**
   * Numbers the requests `ids` settled for good in this transaction: request `id` becomes `offset + id`, every number
   * above the run's numbers so far; parts are ranges of these numbers. (Not dense: a transaction takes the span of its
   * request numbers, so a statement numbers all its requests at once.)
   */
  const settleOffset = (num: number, ids: ReadonlyArray<number>) =>
    Effect.gen(function*() {
      const top = yield* sql<{ settled: number | bigint | null }>`
        SELECT MAX(settled) AS settled FROM offpeak_requests WHERE run = ${num} AND settled IS NOT NULL`
      let min = Infinity
      for (const id of ids) if (id < min) min = id
      return Math.max(0, toNumber(top[0]?.settled ?? 0)) + 1 - min
    })

  const getRun = (id: string) =>
    sql<RunRow>`SELECT * FROM offpeak_runs WHERE id = ${id}`.pipe(
      Effect.map((rows) => rows.length === 0 ? Option.none() : Option.some(toRun(rows[0]!))),
      mapError("getRun")
    )

  const createRun: Service["createRun"] = (run) =>
    Effect.gen(function*() {
      const now = yield* nowIso
      // the run number is the next free one; two processes creating runs at once retry on the unique index
      yield* Effect.gen(function*() {
        yield* fence(run.id)
        yield* sql`INSERT INTO offpeak_runs
          (id, pipeline, module, provider, mode, state, source_done, message, checkpoint, checkpoint_position,
           cwd, created_at, updated_at, num, item_count, request_count)
        SELECT ${run.id}, ${run.pipeline}, ${run.module}, ${run.provider}, ${run.mode ?? "batch"}, 'running', 0, NULL,
           NULL, NULL, ${run.cwd ?? null},
           ${now}, ${now}, COALESCE(MAX(num), 0) + 1, 0, 0
        FROM offpeak_runs`
      }).pipe(
        sql.withTransaction,
        Effect.retry({
          times: 5,
          while: (e) => e._tag !== "LedgerError" && /offpeak_runs_num|offpeak_runs\.num/.test(sqlMessage(e as any))
        })
      )
      return {
        ...run,
        mode: run.mode ?? "batch",
        state: "running" as const,
        sourceDone: false,
        message: null,
        checkpoint: null,
        checkpointPosition: null,
        snapshot: null,
        cwd: run.cwd ?? null,
        createdAt: now,
        updatedAt: now
      }
    }).pipe(mapError("createRun"))

  const listRuns = sql<RunRow>`SELECT * FROM offpeak_runs ORDER BY created_at DESC, id DESC`.pipe(
    Effect.map((rows) => rows.map(toRun)),
    mapError("listRuns")
  )

  const updateRun: Service["updateRun"] = (id, patch) =>
    Effect.gen(function*() {
      const now = yield* nowIso
      const values: Record<string, unknown> = { updated_at: now }
      if (patch.state !== undefined) values.state = patch.state
      if (patch.sourceDone !== undefined) values.source_done = patch.sourceDone ? 1 : 0
      if (patch.message !== undefined) values.message = patch.message
      if (patch.checkpoint !== undefined) {
        values.checkpoint = patch.checkpoint.value
        values.checkpoint_position = patch.checkpoint.position
      }
      if (patch.snapshot !== undefined) {
        values.snapshot_low = patch.snapshot.low
        values.snapshot_high = patch.snapshot.high
      }
      yield* fence(id)
      yield* sql`UPDATE offpeak_runs SET ${sql.update(values)} WHERE id = ${id}`
    }).pipe(sql.withTransaction, mapError("updateRun"))

  const lastCheckpoint: Service["lastCheckpoint"] = (pipeline) =>
    sql<{ checkpoint: string }>`SELECT checkpoint FROM offpeak_runs
      WHERE pipeline = ${pipeline} AND state = 'completed' AND checkpoint IS NOT NULL
      ORDER BY created_at DESC, id DESC LIMIT 1`.pipe(
      Effect.map((rows) => rows.length === 0 ? Option.none<string>() : Option.some(rows[0]!.checkpoint)),
      mapError("lastCheckpoint")
    )

  const admit: Service["admit"] = (runId, rows) =>
    Effect.gen(function*() {
      if (rows.length === 0) return { fresh: [], admitted: 0, skipped: 0, ready: 0, duplicates: 0 }
      yield* fence(runId)
      const num = yield* runNum(runId)
      // 1. positions already admitted (a resumed read) are skipped
      let lo = Infinity
      let hi = -Infinity
      for (const r of rows) {
        if (r.position < lo) lo = r.position
        if (r.position > hi) hi = r.position
      }
      const admittedPositions = new Set<number>()
      const found = yield* sql<{ position: number | bigint }>`
        SELECT position FROM offpeak_items WHERE run = ${num} AND position >= ${lo} AND position <= ${hi}`
      for (const row of found) admittedPositions.add(toNumber(row.position))
      let skipped = 0
      const candidates: Array<{ readonly index: number; readonly row: AdmitRow }> = []
      const seenPositions = new Set<number>()
      for (let index = 0; index < rows.length; index++) {
        const row = rows[index]!
        if (admittedPositions.has(row.position) || seenPositions.has(row.position)) {
          skipped++
          continue
        }
        seenPositions.add(row.position)
        candidates.push({ index, row })
      }
      // 2. a key seen before (in this run, or earlier in the chunk) makes the row a duplicate
      const known = new Map<string, number>()
      for (const part of chunks([...new Set(candidates.map((c) => c.row.key))])) {
        const hits = yield* sql<{ key: string; position: number | bigint }>`
          SELECT key, position FROM offpeak_items WHERE run = ${num} AND ${sql.in("key", part)}`
        for (const hit of hits) known.set(hit.key, toNumber(hit.position))
      }
      let duplicates = 0
      const accepted: Array<{ readonly index: number; readonly row: AdmitRow }> = []
      for (const candidate of candidates) {
        const row = candidate.row
        const first = known.get(row.key)
        if (first === undefined) {
          known.set(row.key, row.position)
          accepted.push(candidate)
          continue
        }
        // the same key at another position: a duplicate, admitted once as a failure under its own key
        duplicates++
        accepted.push({
          index: candidate.index,
          row: {
            key: `${row.key}#${row.position}`,
            position: row.position,
            fingerprint: null,
            record: row.record,
            failure: {
              kind: "invalid_input",
              message: `duplicate key ${JSON.stringify(row.key)}: first seen at row ${first}; this row is not sent`
            }
          }
        })
      }
      // 3. requests this run already has, and results cached by earlier runs
      const fingerprints = [...new Set(accepted.flatMap((a) => a.row.fingerprint === null ? [] : [a.row.fingerprint]))]
      const existing = new Map<string, { readonly id: number; readonly state: string }>()
      const cachedFrom = new Map<string, { readonly run: number; readonly id: number }>()
      for (const part of chunks(fingerprints)) {
        const wanted = new Set(part)
        const hits = yield* sql<{ run: number | bigint; id: number | bigint; fingerprint: string; state: string }>`
          SELECT run, id, fingerprint, state FROM offpeak_requests
          WHERE ${sql.in("fp48", [...new Set(part.map(fp48))])} AND (run = ${num} OR state = 'succeeded')`
        for (const hit of hits) {
          if (!wanted.has(hit.fingerprint)) continue
          const run = toNumber(hit.run)
          if (run === num) existing.set(hit.fingerprint, { id: toNumber(hit.id), state: hit.state })
          // else the latest run's answer
          else if ((cachedFrom.get(hit.fingerprint)?.run ?? -1) < run) cachedFrom.set(hit.fingerprint, { run, id: toNumber(hit.id) })
        }
      }
      // 4. new requests, numbered by the position of their first row
      const fresh: Array<number> = []
      const created = new Map<string, { readonly id: number; readonly cached: boolean }>()
      // rows that go out with each request (own = 0), by request number
      const joining = new Map<number, number>()
      let ready = 0
      const itemRows: Array<Record<string, unknown>> = []
      for (const { index, row } of accepted) {
        let request: number | null = null
        // a row with no request, or whose request settled before, goes out on its own; any other with its request
        let own = row.fingerprint === null
        let isReady = own
        if (row.fingerprint !== null) {
          const have = existing.get(row.fingerprint)
          const made = created.get(row.fingerprint)
          if (have !== undefined) {
            request = have.id
            own = isReady = have.state === "succeeded" || have.state === "failed"
          } else if (made !== undefined) {
            request = made.id
            isReady = made.cached
          } else {
            const cached = cachedFrom.has(row.fingerprint)
            created.set(row.fingerprint, { id: row.position, cached })
            request = row.position
            isReady = cached
            if (!cached) fresh.push(index)
          }
        }
        if (isReady) ready++
        if (!own && request !== null) joining.set(request, (joining.get(request) ?? 0) + 1)
        itemRows.push({
          run: num,
          position: row.position,
          key: row.key,
          request,
          own: own ? 1 : 0,
          part: null,
          record: row.record,
          error_kind: row.failure?.kind ?? null,
          error_message: row.failure?.message ?? null,
          error_raw: row.failure?.raw ?? null
        })
      }
      // a request answered from the cache is settled at once
      const cachedIds = [...created.values()].flatMap((made) => made.cached ? [made.id] : [])
      const offset = cachedIds.length === 0 ? 0 : yield* settleOffset(num, cachedIds)
      const requestRows = [...created].map(([fingerprint, made]) => ({
        run: num,
        id: made.id,
        fingerprint,
        fp48: fp48(fingerprint),
        state: made.cached ? "succeeded" : "queued",
        batch: null,
        attempts: 0,
        cached: made.cached ? 1 : 0,
        settled: made.cached ? offset + made.id : null,
        row_count: joining.get(made.id) ?? 0
      }))
      for (const part of chunks(requestRows, 100)) {
        yield* sql`INSERT${orFail} INTO offpeak_requests ${sql.insert(part as any)}`
      }
      // more rows for a request admitted before and not settled yet
      for (const have of existing.values()) {
        const n = joining.get(have.id)
        if (n !== undefined) {
          yield* sql`UPDATE${orFail} offpeak_requests SET row_count = row_count + ${n} WHERE run = ${num} AND id = ${have.id}`
        }
      }
      // cached answers are copied into this run, so its rows never depend on another run's
      const bySource = new Map<number, Array<readonly [number, number]>>()
      for (const [fingerprint, made] of created) {
        if (!made.cached) continue
        const from = cachedFrom.get(fingerprint)!
        const list = bySource.get(from.run) ?? []
        list.push([from.id, made.id])
        bySource.set(from.run, list)
      }
      for (const [fromRun, pairs] of bySource) {
        for (const part of chunks(pairs)) {
          const target = new Map(part)
          const outputs = yield* sql<{
            id: number | bigint
            output: string
            output_format: string
            input_tokens: number | bigint
            output_tokens: number | bigint
            cached_input_tokens: number | bigint | null
          }>`SELECT r.id AS id, o.output AS output, o.output_format AS output_format, o.input_tokens AS input_tokens,
                    o.output_tokens AS output_tokens, o.cached_input_tokens AS cached_input_tokens
            FROM offpeak_requests r JOIN offpeak_outputs o ON o.run = r.run AND o.settled = r.settled
            WHERE r.run = ${fromRun} AND ${sql.in("r.id", part.map(([id]) => id))}`
          if (outputs.length === 0) continue
          yield* sql`INSERT${orFail} INTO offpeak_outputs ${
            sql.insert(outputs.map((o) => ({
              run: num,
              settled: offset + target.get(toNumber(o.id))!,
              output: o.output,
              output_format: o.output_format,
              input_tokens: toNumber(o.input_tokens),
              output_tokens: toNumber(o.output_tokens),
              cached_input_tokens: o.cached_input_tokens === null ? null : toNumber(o.cached_input_tokens)
            })) as any)
          }`
        }
      }
      for (const part of chunks(itemRows, 50)) {
        yield* sql`INSERT${orFail} INTO offpeak_items ${sql.insert(part as any)}`
      }
      yield* sql`UPDATE offpeak_runs SET item_count = item_count + ${itemRows.length},
        request_count = request_count + ${requestRows.length} WHERE num = ${num}`
      return { fresh, admitted: accepted.length, skipped, ready, duplicates }
    }).pipe(sql.withTransaction, serially, mapError("admit"))

  const queued: Service["queued"] = (runId, options) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const rows = yield* sql<{ id: number | bigint; fingerprint: string; record: string }>`
        SELECT r.id AS id, r.fingerprint AS fingerprint, i.record AS record
        FROM offpeak_requests r JOIN offpeak_items i ON i.run = r.run AND i.position = r.id
        WHERE r.run = ${num} AND r.state = 'queued' AND r.id > ${options.after}
        ORDER BY r.id
        LIMIT ${options.limit}`
      return rows.map((r) => ({ id: toNumber(r.id), fingerprint: r.fingerprint, record: r.record }))
    }).pipe(mapError("queued"))

  const nextBatchSeq: Service["nextBatchSeq"] = (runId) =>
    sql<{ seq: number | bigint | null }>`SELECT MAX(seq) AS seq FROM offpeak_batches WHERE run_id = ${runId}`.pipe(
      Effect.map((rows) => toNumber(rows[0]?.seq ?? 0) + 1),
      mapError("nextBatchSeq")
    )

  const insertBatch = (batch: BatchInput, now: string) =>
    sql`INSERT INTO offpeak_batches ${
      sql.insert({
        id: batch.id,
        run_id: batch.runId,
        seq: batch.seq,
        state: "sealed",
        grp: batch.group,
        file: batch.file,
        request_count: batch.requestCount,
        bytes: batch.bytes,
        mode: batch.mode ?? "batch",
        remote_id: null,
        remote_meta: null,
        remote_state: null,
        completed: 0,
        failed: 0,
        created_at: now,
        submitted_at: null,
        ended_at: null
      })
    }`.pipe(Effect.tap(() =>
      Effect.sync(() => {
        batchSeqs.set(batch.id, batch.seq)
        batchRuns.set(batch.id, batch.runId)
      })
    ))

  /** moves the requests in `from` into `batch`, checking every line of its file belongs to it alone */
  const assign = (
    num: number,
    batch: BatchInput,
    requests: ReadonlyArray<number>,
    from: { readonly state: string; readonly batch?: number }
  ) =>
    Effect.gen(function*() {
      const ids = yield* inState(num, [...new Set(requests)], from)
      // every line of the file must belong to this batch alone, or a request would be paid twice
      if (ids.length !== requests.length) {
        return yield* new LedgerError({
          operation: "sealBatch",
          message: `batch ${batch.id}: ${requests.length} lines but ${ids.length} queued requests`
        })
      }
      for (const part of chunks(ids)) {
        yield* sql`UPDATE${orFail} offpeak_requests SET state = 'batched', batch = ${batch.seq}
          WHERE run = ${num} AND ${sql.in("id", part)}`
      }
    })

  const sealBatch: Service["sealBatch"] = (batch, requests) =>
    Effect.gen(function*() {
      yield* fence(batch.runId)
      const num = yield* runNum(batch.runId)
      const now = yield* nowIso
      yield* insertBatch(batch, now)
      yield* assign(num, batch, requests, { state: "queued" })
    }).pipe(sql.withTransaction, mapError("sealBatch"))

  const splitBatch: Service["splitBatch"] = (batchId, parts) =>
    Effect.gen(function*() {
      yield* fenceBatch(batchId)
      const now = yield* nowIso
      const old = yield* batchSeq(batchId)
      for (const { batch, requests } of parts) {
        const num = yield* runNum(batch.runId)
        yield* insertBatch(batch, now)
        yield* assign(num, batch, requests, { state: "batched", batch: old })
      }
      yield* sql`UPDATE offpeak_batches SET state = 'collected', remote_state = COALESCE(remote_state, 'split')
        WHERE id = ${batchId}`
    }).pipe(sql.withTransaction, mapError("splitBatch"))

  const updateBatch: Service["updateBatch"] = (id, patch) =>
    Effect.gen(function*() {
      const now = yield* nowIso
      const values: Record<string, unknown> = {}
      if (patch.state !== undefined) values.state = patch.state
      if (patch.remoteId !== undefined) values.remote_id = patch.remoteId
      if (patch.remoteMeta !== undefined) values.remote_meta = JSON.stringify(patch.remoteMeta)
      if (patch.remoteState !== undefined) values.remote_state = patch.remoteState
      if (patch.completed !== undefined) values.completed = patch.completed
      if (patch.failed !== undefined) values.failed = patch.failed
      if (patch.submitted) values.submitted_at = now
      if (patch.ended) values.ended_at = now
      if (Object.keys(values).length === 0) return
      yield* fenceBatch(id)
      yield* sql`UPDATE offpeak_batches SET ${sql.update(values)} WHERE id = ${id}`
    }).pipe(sql.withTransaction, mapError("updateBatch"))

  const batches: Service["batches"] = (runId) =>
    sql<BatchRow>`SELECT * FROM offpeak_batches WHERE run_id = ${runId} ORDER BY seq`.pipe(
      Effect.map((rows) => rows.map(toBatch)),
      mapError("batches")
    )

  const openBatches: Service["openBatches"] = (runId) =>
    sql<BatchRow>`SELECT * FROM offpeak_batches WHERE run_id = ${runId} AND state <> 'collected' ORDER BY seq`.pipe(
      Effect.map((rows) => rows.map(toBatch)),
      mapError("openBatches")
    )

  const recordOutcomes: Service["recordOutcomes"] = (runId, batchId, outcomes, maxAttempts) =>
    Effect.gen(function*() {
      if (outcomes.length === 0) return
      yield* fence(runId)
      const num = yield* runNum(runId)
      const seq = yield* batchSeq(batchId)
      // the first line for a request counts
      const first = new Map<number, Outcome>()
      for (const o of outcomes) if (!first.has(o.request)) first.set(o.request, o)
      // requests settled for good are numbered (in request order, so outputs are appended in key order)
      const offset = yield* settleOffset(num, [...first.keys()])
      // only requests still in this batch change: a line seen twice (a re-download) or for another batch does not
      const settledNow = new Set<number>()
      const answered = [...first.values()].flatMap((o) => o._tag === "Succeeded" ? [o.request] : []).sort((a, b) => a - b)
      for (const part of chunks(answered, 5_000)) {
        const rows = yield* sql`UPDATE${orFail} offpeak_requests
          SET state = 'succeeded', settled = ${offset} + id
          WHERE run = ${num} AND ${sql.in("id", part)} AND state = 'batched' AND batch = ${seq}
          RETURNING id`.values
        for (const [id] of rows) settledNow.add(toNumber(id))
      }
      // (an earlier attempt's error stays on a succeeded request for the record; its rows never read it)
      const succeeded = answered.flatMap((id) =>
        settledNow.has(id) ? [{ id, outcome: first.get(id) as Extract<Outcome, { _tag: "Succeeded" }> }] : []
      )
      const unanswered = [...first.values()].flatMap((o) => o._tag === "Failed" ? [o.request] : [])
      const failed = (yield* inState(num, unanswered, { state: "batched", batch: seq })).map((id) => ({
        id,
        outcome: first.get(id) as Extract<Outcome, { _tag: "Failed" }>
      }))
      for (const part of chunks(succeeded, 100)) {
        yield* sql`INSERT${orFail} INTO offpeak_outputs ${
          sql.insert(part.map(({ id, outcome: o }) => ({
            run: num,
            settled: offset + id,
            output: o.output,
            output_format: o.format ?? "json",
            input_tokens: o.usage.inputTokens,
            output_tokens: o.usage.outputTokens,
            cached_input_tokens: o.usage.cachedInputTokens ?? null
          })) as any)
        }`
      }
      for (const { id, outcome: o } of failed) {
        const limit = Math.min(maxAttempts, o.maxAttempts ?? maxAttempts)
        const rows = yield* sql<{ attempts: number | bigint }>`SELECT attempts FROM offpeak_requests
          WHERE run = ${num} AND id = ${id}`
        const attempts = toNumber(rows[0]?.attempts) + 1
        const retry = o.retryable && attempts < limit
        yield* sql`UPDATE${orFail} offpeak_requests SET
            attempts = ${attempts}, state = ${retry ? "queued" : "failed"}, batch = ${retry ? null : seq},
            settled = ${retry ? null : offset + id},
            error_kind = ${o.failure.kind}, error_message = ${o.failure.message}, error_raw = ${o.failure.raw ?? null}
          WHERE run = ${num} AND id = ${id}`
      }
    }).pipe(sql.withTransaction, serially, mapError("recordOutcomes"))

  const failQueued: Service["failQueued"] = (runId, requests, failure) =>
    Effect.gen(function*() {
      yield* fence(runId)
      const num = yield* runNum(runId)
      const ids = yield* inState(num, requests, { state: "queued" })
      if (ids.length === 0) return
      const offset = yield* settleOffset(num, ids)
      for (const part of chunks(ids)) {
        yield* sql`UPDATE${orFail} offpeak_requests SET state = 'failed', settled = ${offset} + id,
            error_kind = ${failure.kind}, error_message = ${failure.message}, error_raw = ${failure.raw ?? null}
          WHERE run = ${num} AND ${sql.in("id", part)}`
      }
    }).pipe(sql.withTransaction, serially, mapError("failQueued"))

  const unsettled: Service["unsettled"] = (runId, batchId) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const seq = yield* batchSeq(batchId)
      const rows = yield* sql`SELECT id, fingerprint FROM offpeak_requests
        WHERE run = ${num} AND batch = ${seq} AND state = 'batched' ORDER BY id`.values
      return rows.map(([id, fingerprint]) => ({ id: toNumber(id), fingerprint: fingerprint as string }))
    }).pipe(mapError("unsettled"))

  /** where a part's rows come from: its own rows (`i.part`), or the rows of its range of settled requests */
  const partSource = (runId: string, seq: number) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const parts = yield* sql<{ lo: number | bigint | null; hi: number | bigint | null }>`
        SELECT lo, hi FROM offpeak_parts WHERE run_id = ${runId} AND seq = ${seq}`
      const part = parts[0]
      if (part === undefined) return yield* new LedgerError({ operation: "part", message: `no part ${seq} in run "${runId}"` })
      return part.lo === null
        ? {
          from: sql`offpeak_items i LEFT JOIN offpeak_requests r ON r.run = i.run AND r.id = i.request`,
          where: sql`i.run = ${num} AND i.part = ${seq}`,
          order: sql`i.position`
        }
        : {
          from: sql`offpeak_requests r JOIN offpeak_items i ON i.run = r.run AND i.request = r.id AND i.own = 0`,
          where: sql`r.run = ${num} AND r.settled >= ${toNumber(part.lo)} AND r.settled <= ${toNumber(part.hi)}`,
          // the order of the range's index, so the query walks the range and nothing else
          order: sql`r.settled, i.position`
        }
    })

  /** `assignPart` inside the caller's transaction */
  const assignIn = (runId: string, limit: number, options?: { readonly whole?: boolean }) =>
    Effect.gen(function*() {
      yield* fence(runId)
      const num = yield* runNum(runId)
      const whole = options?.whole === true
      const last = yield* sql<{ seq: number | bigint | null }>`
        SELECT MAX(seq) AS seq FROM offpeak_parts WHERE run_id = ${runId}`
      const seq = toNumber(last[0]?.seq ?? 0) + 1
      const insertPart = (lo: number | null, hi: number | null) =>
        sql`INSERT INTO offpeak_parts ${sql.insert({ run_id: runId, seq, state: "writing", delivered: 0, dead: 0, lo, hi })}`
      // rows deliverable on their own first
      const own = yield* sql<{ position: number | bigint }>`
        SELECT position FROM offpeak_items WHERE run = ${num} AND own = 1 AND part IS NULL ORDER BY position LIMIT ${limit}`
      if (own.length > 0 && (!whole || own.length >= limit)) {
        yield* insertPart(null, null)
        for (const part of chunks(own.map((r) => toNumber(r.position)))) {
          yield* sql`UPDATE${orFail} offpeak_items SET part = ${seq} WHERE run = ${num} AND ${sql.in("position", part)}`
        }
        return Option.some(seq)
      }
      // then the next range of settled requests, each with the rows that go out with it
      const done = yield* sql<{ hi: number | bigint | null }>`
        SELECT MAX(hi) AS hi FROM offpeak_parts WHERE run_id = ${runId} AND hi IS NOT NULL`
      const after = Math.max(0, toNumber(done[0]?.hi ?? 0))
      const requests = yield* sql<{ settled: number | bigint; n: number | bigint }>`
        SELECT settled, row_count AS n FROM offpeak_requests
        WHERE run = ${num} AND settled > ${after}
        ORDER BY settled
        LIMIT ${limit}`
      let rows = 0
      let hi = after
      for (const request of requests) {
        hi = toNumber(request.settled)
        rows += toNumber(request.n)
        if (rows >= limit) break
      }
      if (requests.length === 0 || (whole && rows < limit && requests.length < limit)) return Option.none<number>()
      yield* insertPart(after + 1, hi)
      return Option.some(seq)
    })

  const assignPart: Service["assignPart"] = (runId, limit, options) =>
    assignIn(runId, limit, options).pipe(sql.withTransaction, serially, mapError("assignPart"))

  const writingParts: Service["writingParts"] = (runId) =>
    sql<{ seq: number | bigint }>`SELECT seq FROM offpeak_parts WHERE run_id = ${runId} AND state = 'writing' ORDER BY seq`
      .pipe(Effect.map((rows) => rows.map((r) => toNumber(r.seq))), mapError("writingParts"))

  const rowsOf = (runId: string, seq: number) =>
    Effect.gen(function*() {
      const source = yield* partSource(runId, seq)
      // rows as arrays: half the work of objects to build in the SQLite thread and to copy out of it
      const rows = yield* sql`
        SELECT i.key, i.position, i.record, r.fingerprint,
               i.error_kind, i.error_message, i.error_raw,
               r.state, r.cached, r.error_kind, r.error_message, r.error_raw,
               o.output, o.output_format, o.input_tokens, o.output_tokens, o.cached_input_tokens
        FROM ${source.from}
        LEFT JOIN offpeak_outputs o ON o.run = i.run AND o.settled = r.settled AND r.state = 'succeeded'
        WHERE ${source.where}
        ORDER BY ${source.order}`.values
      return rows.map((row): PartRow => {
        const [
          key,
          position,
          record,
          fingerprint,
          itemErrorKind,
          itemErrorMessage,
          itemErrorRaw,
          state,
          cached,
          errorKind,
          errorMessage,
          errorRaw,
          output,
          outputFormat,
          inputTokens,
          outputTokens,
          cachedInputTokens
        ] = row as PartValues
        const failure: Failure | null = itemErrorKind !== null
          ? { kind: itemErrorKind as FailureKind, message: itemErrorMessage ?? "", raw: itemErrorRaw ?? undefined }
          : state === "succeeded" && output !== null
          ? null
          : {
            kind: (errorKind ?? "lost") as FailureKind,
            message: errorMessage ?? "no result recorded",
            raw: errorRaw ?? undefined
          }
        return {
          key,
          position: toNumber(position),
          record,
          fingerprint,
          output: failure === null ? output : null,
          format: outputFormat === "f32" ? "f32" : "json",
          usage: failure === null
            ? {
              inputTokens: toNumber(inputTokens),
              outputTokens: toNumber(outputTokens),
              cachedInputTokens: cachedInputTokens === null ? undefined : toNumber(cachedInputTokens)
            }
            : null,
          cached: toNumber(cached) === 1,
          failure
        }
      })
    })

  const partRows: Service["partRows"] = (runId, seq) => rowsOf(runId, seq).pipe(mapError("partRows"))

  const commitIn = (runId: string, written: WrittenPart) =>
    fence(runId).pipe(
      Effect.andThen(sql`UPDATE offpeak_parts SET state = 'committed', delivered = ${written.delivered}, dead = ${written.dead}
      WHERE run_id = ${runId} AND seq = ${written.seq} AND state = 'writing'`),
      Effect.asVoid
    )

  const commitPart: Service["commitPart"] = (runId, written) =>
    commitIn(runId, written).pipe(sql.withTransaction, mapError("commitPart"))

  const nextPart: Service["nextPart"] = (runId, options) =>
    Effect.gen(function*() {
      if (options.written !== undefined) yield* commitIn(runId, options.written)
      const seq = yield* assignIn(runId, options.limit, options)
      if (Option.isNone(seq)) return Option.none()
      return Option.some({ seq: seq.value, rows: yield* rowsOf(runId, seq.value) })
    }).pipe(sql.withTransaction, serially, mapError("nextPart"))

  const counts: Service["counts"] = (runId) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const run = yield* sql<{ item_count: number | bigint; request_count: number | bigint }>`
        SELECT item_count, request_count FROM offpeak_runs WHERE num = ${num}`
      const parts = yield* sql<{ delivered: number | bigint | null; dead: number | bigint | null }>`
        SELECT SUM(delivered) AS delivered, SUM(dead) AS dead FROM offpeak_parts
        WHERE run_id = ${runId} AND state = 'committed'`
      // each count reads a partial index holding only the requests in that state
      const top = yield* sql<{ position: number | bigint | null }>`
        SELECT MAX(position) AS position FROM offpeak_items WHERE run = ${num}`
      const queuedN = yield* sql<{ n: number | bigint }>`
        SELECT COUNT(*) AS n FROM offpeak_requests WHERE run = ${num} AND state = 'queued'`
      const batchedN = yield* sql<{ n: number | bigint }>`
        SELECT COUNT(*) AS n FROM offpeak_requests WHERE run = ${num} AND state = 'batched'`
      const failedN = yield* sql<{ n: number | bigint }>`
        SELECT COUNT(*) AS n FROM offpeak_requests WHERE run = ${num} AND state = 'failed'`
      const batchRows = yield* sql<{ state: string; n: number | bigint }>`
        SELECT state, COUNT(*) AS n FROM offpeak_batches WHERE run_id = ${runId} GROUP BY state`
      const items = toNumber(run[0]?.item_count)
      const requests = toNumber(run[0]?.request_count)
      const delivered = toNumber(parts[0]?.delivered)
      const dead = toNumber(parts[0]?.dead)
      const queued = toNumber(queuedN[0]?.n)
      const batched = toNumber(batchedN[0]?.n)
      const failed = toNumber(failedN[0]?.n)
      const allBatches = batchRows.reduce((sum, r) => sum + toNumber(r.n), 0)
      return {
        items,
        maxPosition: toNumber(top[0]?.position ?? 0),
        delivered,
        dead,
        pendingItems: items - delivered - dead,
        requests,
        queued,
        batched,
        succeeded: requests - queued - batched - failed,
        failed,
        batches: allBatches,
        openBatches: allBatches - batchRows.filter((r) => r.state === "collected").reduce((sum, r) => sum + toNumber(r.n), 0)
      }
    }).pipe(mapError("counts"))

  return Ledger.of({
    createRun,
    getRun,
    listRuns,
    updateRun,
    lastCheckpoint,
    admit,
    queued,
    nextBatchSeq,
    sealBatch,
    splitBatch,
    updateBatch,
    batches,
    openBatches,
    recordOutcomes,
    failQueued,
    unsettled,
    assignPart,
    nextPart,
    writingParts,
    partRows,
    commitPart,
    counts,
    acquire,
    renew,
    release,
    holder
  })
})

/**
 * The ledger on the `SqlClient` provided to the layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Ledger, LedgerError, SqlClient.SqlClient> = Layer.effect(Ledger, make)
