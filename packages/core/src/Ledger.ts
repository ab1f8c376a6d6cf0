/**
 * The ledger: durable run state on `effect/sql`, so a run can be killed at any
 * moment and resumed without losing a row or paying for a batch twice.
 *
 * Tables (one set of dialect-neutral statements, SQLite by default, Postgres
 * when runs are shared):
 *
 * - `offpeak_runs`: one row per run.
 * - `offpeak_items`: one row per input row (key, position, record, state:
 *   `pending → delivering(part) → delivered | dead`).
 * - `offpeak_requests`: one row per distinct request of a run, keyed by
 *   fingerprint (`queued → batched → succeeded | failed`, or back to `queued`
 *   for a retry). Rows with the same fingerprint share one request.
 * - `offpeak_batches`: one row per batch, with the remote id written before
 *   anything else happens after create.
 * - `offpeak_parts`: one row per sink part; a part's rows are fixed in the
 *   ledger before its file is written.
 * - `offpeak_results`: the result cache, fingerprint → output, across runs.
 *
 * @since 0.1.0
 */
import { Clock, Context, Effect, Layer, Option, Schema } from "effect"
import { Migrator, SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql"
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
  readonly state: RunState
  readonly sourceDone: boolean
  readonly createdAt: string
  readonly updatedAt: string
  readonly message: string | null
  /** the source's checkpoint after the last admitted row, and that row's position */
  readonly checkpoint: string | null
  readonly checkpointPosition: number | null
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
    readonly fingerprint: string
    /** JSON text, or base64 little-endian float32 when `format` is `f32` (embeddings: a quarter of the size) */
    readonly output: string
    readonly format?: OutputFormat | undefined
    readonly usage: Usage
  }
  | {
    readonly _tag: "Failed"
    readonly fingerprint: string
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
    }
  ) => Effect.Effect<void, LedgerError>
  /** the checkpoint of the pipeline's latest completed run that has one */
  readonly lastCheckpoint: (pipeline: string) => Effect.Effect<Option.Option<string>, LedgerError>
  /** admits a chunk of rows in one transaction */
  readonly admit: (runId: string, rows: ReadonlyArray<AdmitRow>) => Effect.Effect<Admission, LedgerError>
  /** queued requests (new after a crash, or waiting for a retry), one record each, in pages */
  readonly queued: (
    runId: string,
    options: { readonly after: string; readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<{ readonly fingerprint: string; readonly record: string }>, LedgerError>
  readonly nextBatchSeq: (runId: string) => Effect.Effect<number, LedgerError>
  /** records a sealed batch and assigns its requests to it, in one transaction */
  readonly sealBatch: (
    batch: {
      readonly id: string
      readonly runId: string
      readonly seq: number
      readonly group: string
      readonly file: string
      readonly requestCount: number
      readonly bytes: number
    },
    fingerprints: ReadonlyArray<string>
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
      readonly fingerprints: ReadonlyArray<string>
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
  /** records outcomes of requests still assigned to `batchId`; retryable failures go back to the queue until `maxAttempts` */
  readonly recordOutcomes: (
    runId: string,
    batchId: string,
    outcomes: ReadonlyArray<Outcome>,
    maxAttempts: number
  ) => Effect.Effect<void, LedgerError>
  /** fails queued requests that can no longer be sent (too large, changed pipeline) */
  readonly failQueued: (
    runId: string,
    fingerprints: ReadonlyArray<string>,
    failure: Failure
  ) => Effect.Effect<void, LedgerError>
  /** every request still assigned to `batchId` that no result line accounted for */
  readonly unsettled: (runId: string, batchId: string) => Effect.Effect<ReadonlyArray<string>, LedgerError>
  /** assigns up to `limit` deliverable rows to a new part; none when nothing is ready */
  readonly assignPart: (runId: string, limit: number) => Effect.Effect<Option.Option<number>, LedgerError>
  /** parts assigned but not committed (a crash between assign and commit) */
  readonly writingParts: (runId: string) => Effect.Effect<ReadonlyArray<number>, LedgerError>
  readonly partRows: (runId: string, seq: number) => Effect.Effect<ReadonlyArray<PartRow>, LedgerError>
  readonly commitPart: (runId: string, seq: number) => Effect.Effect<void, LedgerError>
  readonly counts: (runId: string) => Effect.Effect<Counts, LedgerError>
}

/**
 * The ledger service tag.
 *
 * @since 0.1.0
 * @category services
 */
export class Ledger extends Context.Service<Ledger, Service>()("@offpeak/core/Ledger") {}

// ===== Migrations =====

const migrations = Migrator.fromRecord({
  "0001_ledger": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE offpeak_runs (
      id TEXT PRIMARY KEY,
      pipeline TEXT NOT NULL,
      module TEXT,
      provider TEXT NOT NULL,
      state TEXT NOT NULL,
      source_done INTEGER NOT NULL DEFAULT 0,
      message TEXT,
      checkpoint TEXT,
      checkpoint_position INTEGER,
      created_at TEXT NOT NULL,
      updated_at TEXT NOT NULL
    )`
    yield* sql`CREATE TABLE offpeak_items (
      run_id TEXT NOT NULL,
      key TEXT NOT NULL,
      position INTEGER NOT NULL,
      fingerprint TEXT,
      record TEXT,
      state TEXT NOT NULL,
      part INTEGER,
      error_kind TEXT,
      error_message TEXT,
      error_raw TEXT,
      PRIMARY KEY (run_id, key)
    )`
    // partial indexes: each hot query names the state it looks for, so the planner never scans a whole run
    yield* sql`CREATE INDEX offpeak_items_fingerprint ON offpeak_items (run_id, fingerprint)`
    yield* sql`CREATE INDEX offpeak_items_pending ON offpeak_items (run_id, position) WHERE state = 'pending'`
    yield* sql`CREATE INDEX offpeak_items_part ON offpeak_items (run_id, part) WHERE part IS NOT NULL`
    yield* sql`CREATE TABLE offpeak_requests (
      run_id TEXT NOT NULL,
      fingerprint TEXT NOT NULL,
      state TEXT NOT NULL,
      batch_id TEXT,
      attempts INTEGER NOT NULL DEFAULT 0,
      cached INTEGER NOT NULL DEFAULT 0,
      error_kind TEXT,
      error_message TEXT,
      error_raw TEXT,
      PRIMARY KEY (run_id, fingerprint)
    )`
    yield* sql`CREATE INDEX offpeak_requests_queued ON offpeak_requests (run_id, fingerprint) WHERE state = 'queued'`
    yield* sql`CREATE INDEX offpeak_requests_batched ON offpeak_requests (batch_id, fingerprint) WHERE state = 'batched'`
    yield* sql`CREATE TABLE offpeak_batches (
      id TEXT PRIMARY KEY,
      run_id TEXT NOT NULL,
      seq INTEGER NOT NULL,
      state TEXT NOT NULL,
      grp TEXT NOT NULL,
      file TEXT NOT NULL,
      request_count INTEGER NOT NULL,
      bytes INTEGER NOT NULL,
      remote_id TEXT,
      remote_meta TEXT,
      remote_state TEXT,
      completed INTEGER NOT NULL DEFAULT 0,
      failed INTEGER NOT NULL DEFAULT 0,
      created_at TEXT NOT NULL,
      submitted_at TEXT,
      ended_at TEXT
    )`
    yield* sql`CREATE UNIQUE INDEX offpeak_batches_seq ON offpeak_batches (run_id, seq)`
    yield* sql`CREATE TABLE offpeak_parts (
      run_id TEXT NOT NULL,
      seq INTEGER NOT NULL,
      state TEXT NOT NULL,
      PRIMARY KEY (run_id, seq)
    )`
    yield* sql`CREATE TABLE offpeak_results (
      fingerprint TEXT PRIMARY KEY,
      output TEXT NOT NULL,
      output_format TEXT NOT NULL DEFAULT 'json',
      input_tokens INTEGER NOT NULL,
      output_tokens INTEGER NOT NULL,
      cached_input_tokens INTEGER,
      created_at TEXT NOT NULL
    )`
  })
})

/**
 * Runs the ledger's migrations (idempotent).
 *
 * @since 0.1.0
 * @category constructors
 */
export const migrate = Migrator.make({})({ loader: migrations, table: "offpeak_migrations" })

// ===== Implementation =====

const CHUNK = 400

const chunks = <A>(items: ReadonlyArray<A>, size = CHUNK): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

const toNumber = (u: unknown): number => typeof u === "bigint" ? Number(u) : Number(u ?? 0)

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
  readonly state: RunState
  readonly source_done: number | bigint
  readonly message: string | null
  readonly created_at: string
  readonly updated_at: string
  readonly checkpoint: string | null
  readonly checkpoint_position: number | bigint | null
}

const toRun = (row: RunRow): Run => ({
  id: row.id,
  pipeline: row.pipeline,
  module: row.module,
  provider: row.provider,
  state: row.state,
  sourceDone: toNumber(row.source_done) === 1,
  message: row.message,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  checkpoint: row.checkpoint,
  checkpointPosition: row.checkpoint_position === null ? null : toNumber(row.checkpoint_position)
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
  remoteId: row.remote_id,
  remoteMeta: row.remote_meta === null ? null : JSON.parse(row.remote_meta),
  remoteState: row.remote_state,
  completed: toNumber(row.completed),
  failed: toNumber(row.failed),
  createdAt: row.created_at,
  submittedAt: row.submitted_at,
  endedAt: row.ended_at
})

/**
 * Builds the ledger on the `SqlClient` in context, after running migrations.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Service, LedgerError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* migrate.pipe(Effect.mapError((e) => new LedgerError({ operation: "migrate", message: sqlMessage(e as any) })))

  const getRun = (id: string) =>
    sql<RunRow>`SELECT * FROM offpeak_runs WHERE id = ${id}`.pipe(
      Effect.map((rows) => rows.length === 0 ? Option.none() : Option.some(toRun(rows[0]!))),
      mapError("getRun")
    )

  const createRun: Service["createRun"] = (run) =>
    Effect.gen(function*() {
      const now = yield* nowIso
      yield* sql`INSERT INTO offpeak_runs ${
        sql.insert({
          id: run.id,
          pipeline: run.pipeline,
          module: run.module,
          provider: run.provider,
          state: "running",
          source_done: 0,
          message: null,
          checkpoint: null,
          checkpoint_position: null,
          created_at: now,
          updated_at: now
        })
      }`
      return {
        ...run,
        state: "running" as const,
        sourceDone: false,
        message: null,
        checkpoint: null,
        checkpointPosition: null,
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
      yield* sql`UPDATE offpeak_runs SET ${sql.update(values)} WHERE id = ${id}`
    }).pipe(mapError("updateRun"))

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
      // 1. keys already admitted (resume) or repeated (duplicates)
      const known = new Map<string, number>()
      // a row's key, and the key it gets if it turns out to repeat an earlier row's key
      for (const part of chunks([...new Set(rows.flatMap((r) => [r.key, `${r.key}#${r.position}`]))])) {
        const found = yield* sql<{ key: string; position: number | bigint }>`
          SELECT key, position FROM offpeak_items WHERE run_id = ${runId} AND ${sql.in("key", part)}`
        for (const row of found) known.set(row.key, toNumber(row.position))
      }
      let skipped = 0
      let duplicates = 0
      const accepted: Array<{ readonly index: number; readonly row: AdmitRow }> = []
      const seenInChunk = new Map<string, number>()
      for (let index = 0; index < rows.length; index++) {
        const row = rows[index]!
        const first = known.get(row.key) ?? seenInChunk.get(row.key)
        if (first === undefined) {
          seenInChunk.set(row.key, row.position)
          accepted.push({ index, row })
          continue
        }
        if (first === row.position) {
          skipped++
          continue
        }
        // the same key at another position: a duplicate, admitted once as a failure under its own key
        const dupKey = `${row.key}#${row.position}`
        if (known.has(dupKey) || seenInChunk.has(dupKey)) {
          skipped++
          continue
        }
        duplicates++
        seenInChunk.set(dupKey, row.position)
        accepted.push({
          index,
          row: {
            key: dupKey,
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
      // 2. which requests are new, known to this run, or cached across runs
      const fingerprints = [...new Set(accepted.flatMap((a) => a.row.fingerprint === null ? [] : [a.row.fingerprint]))]
      const existing = new Map<string, string>()
      for (const part of chunks(fingerprints)) {
        const found = yield* sql<{ fingerprint: string; state: string }>`
          SELECT fingerprint, state FROM offpeak_requests WHERE run_id = ${runId} AND ${sql.in("fingerprint", part)}`
        for (const row of found) existing.set(row.fingerprint, row.state)
      }
      const unknown = fingerprints.filter((f) => !existing.has(f))
      const cached = new Set<string>()
      for (const part of chunks(unknown)) {
        const found = yield* sql<{ fingerprint: string }>`
          SELECT fingerprint FROM offpeak_results WHERE ${sql.in("fingerprint", part)}`
        for (const row of found) cached.add(row.fingerprint)
      }
      const fresh: Array<number> = []
      const freshSet = new Set<string>()
      let ready = 0
      for (const { index, row } of accepted) {
        if (row.fingerprint === null) {
          ready++
          continue
        }
        const state = existing.get(row.fingerprint)
        if (state === "succeeded" || state === "failed" || cached.has(row.fingerprint)) {
          ready++
        } else if (state === undefined && !freshSet.has(row.fingerprint)) {
          freshSet.add(row.fingerprint)
          fresh.push(index)
        }
      }
      const requestRows = unknown.map((fingerprint) => ({
        run_id: runId,
        fingerprint,
        state: cached.has(fingerprint) ? "succeeded" : "queued",
        batch_id: null,
        attempts: 0,
        cached: cached.has(fingerprint) ? 1 : 0
      }))
      for (const part of chunks(requestRows, 100)) {
        yield* sql`INSERT INTO offpeak_requests ${sql.insert(part as any)}`
      }
      const itemRows = accepted.map(({ row }) => ({
        run_id: runId,
        key: row.key,
        position: row.position,
        fingerprint: row.fingerprint,
        record: row.record,
        state: "pending",
        part: null,
        error_kind: row.failure?.kind ?? null,
        error_message: row.failure?.message ?? null,
        error_raw: row.failure?.raw ?? null
      }))
      for (const part of chunks(itemRows, 50)) {
        yield* sql`INSERT INTO offpeak_items ${sql.insert(part as any)}`
      }
      return { fresh, admitted: accepted.length, skipped, ready, duplicates }
    }).pipe(sql.withTransaction, mapError("admit"))

  const queued: Service["queued"] = (runId, options) =>
    sql<{ fingerprint: string; record: string }>`
      SELECT r.fingerprint AS fingerprint,
             (SELECT i.record FROM offpeak_items i
               WHERE i.run_id = r.run_id AND i.fingerprint = r.fingerprint ORDER BY i.position LIMIT 1) AS record
      FROM offpeak_requests r
      WHERE r.run_id = ${runId} AND r.state = 'queued' AND r.fingerprint > ${options.after}
      ORDER BY r.fingerprint
      LIMIT ${options.limit}`.pipe(mapError("queued"))

  const nextBatchSeq: Service["nextBatchSeq"] = (runId) =>
    sql<{ seq: number | bigint | null }>`SELECT MAX(seq) AS seq FROM offpeak_batches WHERE run_id = ${runId}`.pipe(
      Effect.map((rows) => toNumber(rows[0]?.seq ?? 0) + 1),
      mapError("nextBatchSeq")
    )

  const insertBatch = (batch: Parameters<Service["sealBatch"]>[0], now: string) =>
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
          remote_id: null,
          remote_meta: null,
          remote_state: null,
          completed: 0,
          failed: 0,
          created_at: now,
          submitted_at: null,
          ended_at: null
        })
      }`

  const checkAssigned = (batch: Parameters<Service["sealBatch"]>[0], expected: number) =>
    Effect.gen(function*() {
      // every line of the file must belong to this batch alone, or a request would be paid twice
      const assigned = yield* sql<{ n: number | bigint }>`SELECT COUNT(*) AS n FROM offpeak_requests
        WHERE run_id = ${batch.runId} AND batch_id = ${batch.id} AND state = 'batched'`
      if (toNumber(assigned[0]?.n) !== expected) {
        return yield* new LedgerError({
          operation: "sealBatch",
          message: `batch ${batch.id}: ${expected} lines but ${toNumber(assigned[0]?.n)} queued requests`
        })
      }
    })

  const sealBatch: Service["sealBatch"] = (batch, fingerprints) =>
    Effect.gen(function*() {
      const now = yield* nowIso
      yield* insertBatch(batch, now)
      for (const part of chunks(fingerprints)) {
        yield* sql`UPDATE offpeak_requests SET state = 'batched', batch_id = ${batch.id}
          WHERE run_id = ${batch.runId} AND state = 'queued' AND ${sql.in("fingerprint", part)}`
      }
      yield* checkAssigned(batch, fingerprints.length)
    }).pipe(sql.withTransaction, mapError("sealBatch"))

  const splitBatch: Service["splitBatch"] = (batchId, parts) =>
    Effect.gen(function*() {
      const now = yield* nowIso
      for (const { batch, fingerprints } of parts) {
        yield* insertBatch(batch, now)
        for (const part of chunks(fingerprints)) {
          yield* sql`UPDATE offpeak_requests SET batch_id = ${batch.id}
            WHERE run_id = ${batch.runId} AND batch_id = ${batchId} AND state = 'batched' AND ${sql.in("fingerprint", part)}`
        }
        yield* checkAssigned(batch, fingerprints.length)
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
      yield* sql`UPDATE offpeak_batches SET ${sql.update(values)} WHERE id = ${id}`
    }).pipe(mapError("updateBatch"))

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
      const now = yield* nowIso
      const succeeded = outcomes.filter((o) => o._tag === "Succeeded")
      for (const part of chunks(succeeded, 100)) {
        yield* sql`INSERT INTO offpeak_results ${
          sql.insert(part.map((o) => ({
            fingerprint: o.fingerprint,
            output: o.output,
            output_format: o.format ?? "json",
            input_tokens: o.usage.inputTokens,
            output_tokens: o.usage.outputTokens,
            cached_input_tokens: o.usage.cachedInputTokens ?? null,
            created_at: now
          })) as any)
        } ON CONFLICT (fingerprint) DO NOTHING`
        yield* sql`UPDATE offpeak_requests SET state = 'succeeded', error_kind = NULL, error_message = NULL, error_raw = NULL
          WHERE run_id = ${runId} AND batch_id = ${batchId} AND state = 'batched'
          AND ${sql.in("fingerprint", part.map((o) => o.fingerprint))}`
      }
      for (const o of outcomes) {
        if (o._tag !== "Failed") continue
        const retry = o.retryable ? 1 : 0
        const limit = Math.min(maxAttempts, o.maxAttempts ?? maxAttempts)
        yield* sql`UPDATE offpeak_requests SET
            attempts = attempts + 1,
            state = CASE WHEN ${retry} = 1 AND attempts + 1 < ${limit} THEN 'queued' ELSE 'failed' END,
            batch_id = CASE WHEN ${retry} = 1 AND attempts + 1 < ${limit} THEN NULL ELSE batch_id END,
            error_kind = ${o.failure.kind}, error_message = ${o.failure.message}, error_raw = ${o.failure.raw ?? null}
          WHERE run_id = ${runId} AND batch_id = ${batchId} AND state = 'batched' AND fingerprint = ${o.fingerprint}`
      }
    }).pipe(sql.withTransaction, mapError("recordOutcomes"))

  const failQueued: Service["failQueued"] = (runId, fingerprints, failure) =>
    Effect.gen(function*() {
      for (const part of chunks(fingerprints)) {
        yield* sql`UPDATE offpeak_requests SET state = 'failed',
            error_kind = ${failure.kind}, error_message = ${failure.message}, error_raw = ${failure.raw ?? null}
          WHERE run_id = ${runId} AND state = 'queued' AND ${sql.in("fingerprint", part)}`
      }
    }).pipe(sql.withTransaction, mapError("failQueued"))

  const unsettled: Service["unsettled"] = (runId, batchId) =>
    sql<{ fingerprint: string }>`SELECT fingerprint FROM offpeak_requests
      WHERE run_id = ${runId} AND batch_id = ${batchId} AND state = 'batched'`.pipe(
      Effect.map((rows) => rows.map((r) => r.fingerprint)),
      mapError("unsettled")
    )

  const assignPart: Service["assignPart"] = (runId, limit) =>
    Effect.gen(function*() {
      const keys = yield* sql<{ key: string }>`
        SELECT i.key AS key FROM offpeak_items i
        LEFT JOIN offpeak_requests r ON r.run_id = i.run_id AND r.fingerprint = i.fingerprint
        WHERE i.run_id = ${runId} AND i.state = 'pending'
          AND (i.fingerprint IS NULL OR r.state = 'succeeded' OR r.state = 'failed')
        ORDER BY i.position
        LIMIT ${limit}`
      if (keys.length === 0) return Option.none<number>()
      const rows = yield* sql<{ seq: number | bigint | null }>`
        SELECT MAX(seq) AS seq FROM offpeak_parts WHERE run_id = ${runId}`
      const seq = toNumber(rows[0]?.seq ?? 0) + 1
      yield* sql`INSERT INTO offpeak_parts ${sql.insert({ run_id: runId, seq, state: "writing" })}`
      for (const part of chunks(keys.map((k) => k.key))) {
        // the keys were selected as pending in this transaction: look them up by primary key
        yield* sql`UPDATE offpeak_items SET state = 'delivering', part = ${seq}
          WHERE run_id = ${runId} AND ${sql.in("key", part)}`
      }
      return Option.some(seq)
    }).pipe(sql.withTransaction, mapError("assignPart"))

  const writingParts: Service["writingParts"] = (runId) =>
    sql<{ seq: number | bigint }>`SELECT seq FROM offpeak_parts WHERE run_id = ${runId} AND state = 'writing' ORDER BY seq`
      .pipe(Effect.map((rows) => rows.map((r) => toNumber(r.seq))), mapError("writingParts"))

  const partRows: Service["partRows"] = (runId, seq) =>
    sql<{
      key: string
      position: number | bigint
      record: string | null
      fingerprint: string | null
      item_error_kind: string | null
      item_error_message: string | null
      item_error_raw: string | null
      req_state: string | null
      req_cached: number | bigint | null
      req_error_kind: string | null
      req_error_message: string | null
      req_error_raw: string | null
      output: string | null
      output_format: string | null
      input_tokens: number | bigint | null
      output_tokens: number | bigint | null
      cached_input_tokens: number | bigint | null
    }>`
      SELECT i.key AS key, i.position AS position, i.record AS record, i.fingerprint AS fingerprint,
             i.error_kind AS item_error_kind, i.error_message AS item_error_message, i.error_raw AS item_error_raw,
             r.state AS req_state, r.cached AS req_cached,
             r.error_kind AS req_error_kind, r.error_message AS req_error_message, r.error_raw AS req_error_raw,
             o.output AS output, o.output_format AS output_format, o.input_tokens AS input_tokens, o.output_tokens AS output_tokens,
             o.cached_input_tokens AS cached_input_tokens
      FROM offpeak_items i
      LEFT JOIN offpeak_requests r ON r.run_id = i.run_id AND r.fingerprint = i.fingerprint
      LEFT JOIN offpeak_results o ON o.fingerprint = i.fingerprint AND r.state = 'succeeded'
      WHERE i.run_id = ${runId} AND i.part = ${seq}
      ORDER BY i.position`.pipe(
      Effect.map((rows) =>
        rows.map((row): PartRow => {
          const failure: Failure | null = row.item_error_kind !== null
            ? {
              kind: row.item_error_kind as FailureKind,
              message: row.item_error_message ?? "",
              raw: row.item_error_raw ?? undefined
            }
            : row.req_state === "succeeded" && row.output !== null
            ? null
            : {
              kind: (row.req_error_kind ?? "lost") as FailureKind,
              message: row.req_error_message ?? "no result recorded",
              raw: row.req_error_raw ?? undefined
            }
          return {
            key: row.key,
            position: toNumber(row.position),
            record: row.record,
            fingerprint: row.fingerprint,
            output: failure === null ? row.output : null,
            format: row.output_format === "f32" ? "f32" : "json",
            usage: failure === null
              ? {
                inputTokens: toNumber(row.input_tokens),
                outputTokens: toNumber(row.output_tokens),
                cachedInputTokens: row.cached_input_tokens === null ? undefined : toNumber(row.cached_input_tokens)
              }
              : null,
            cached: toNumber(row.req_cached) === 1,
            failure
          }
        })
      ),
      mapError("partRows")
    )

  const commitPart: Service["commitPart"] = (runId, seq) =>
    Effect.gen(function*() {
      yield* sql`UPDATE offpeak_items SET state = CASE
          WHEN error_kind IS NULL AND EXISTS (
            SELECT 1 FROM offpeak_requests r
            WHERE r.run_id = offpeak_items.run_id AND r.fingerprint = offpeak_items.fingerprint AND r.state = 'succeeded'
          ) THEN 'delivered' ELSE 'dead' END
        WHERE run_id = ${runId} AND part = ${seq} AND state = 'delivering'`
      yield* sql`UPDATE offpeak_parts SET state = 'committed' WHERE run_id = ${runId} AND seq = ${seq}`
    }).pipe(sql.withTransaction, mapError("commitPart"))

  const counts: Service["counts"] = (runId) =>
    Effect.gen(function*() {
      const items = yield* sql<{ state: string; n: number | bigint }>`
        SELECT state, COUNT(*) AS n FROM offpeak_items WHERE run_id = ${runId} GROUP BY state`
      const requests = yield* sql<{ state: string; n: number | bigint }>`
        SELECT state, COUNT(*) AS n FROM offpeak_requests WHERE run_id = ${runId} GROUP BY state`
      const batchRows = yield* sql<{ state: string; n: number | bigint }>`
        SELECT state, COUNT(*) AS n FROM offpeak_batches WHERE run_id = ${runId} GROUP BY state`
      const pick = (rows: ReadonlyArray<{ state: string; n: number | bigint }>, ...states: Array<string>) =>
        rows.filter((r) => states.includes(r.state)).reduce((sum, r) => sum + toNumber(r.n), 0)
      const all = (rows: ReadonlyArray<{ state: string; n: number | bigint }>) =>
        rows.reduce((sum, r) => sum + toNumber(r.n), 0)
      return {
        items: all(items),
        delivered: pick(items, "delivered"),
        dead: pick(items, "dead"),
        pendingItems: pick(items, "pending", "delivering"),
        requests: all(requests),
        queued: pick(requests, "queued"),
        batched: pick(requests, "batched"),
        succeeded: pick(requests, "succeeded"),
        failed: pick(requests, "failed"),
        batches: all(batchRows),
        openBatches: all(batchRows) - pick(batchRows, "collected")
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
    writingParts,
    partRows,
    commitPart,
    counts
  })
})

/**
 * The ledger on the `SqlClient` provided to the layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Ledger, LedgerError, SqlClient.SqlClient> = Layer.effect(Ledger, make)
