/**
 * What every part of the ledger shares: the SQL client, the run and batch number caches, the fence every write
 * checks, the serial lane admission, settling and part assignment run in, and row conversions.
 *
 * @internal
 */
import { Array as Arr, Clock, Effect, Fiber, Semaphore } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import type { Batch, BatchMode, BatchState, Lease, Run, Service } from "../../Ledger.ts"
import type { Mode, State as RunState } from "../../Run.ts"
import type * as SqliteClient from "../../SqliteClient.ts"
import { LedgerError } from "./errors.ts"

export const CHUNK = 400

export const chunks = <A>(items: ReadonlyArray<A>, size = CHUNK): Array<Arr.NonEmptyReadonlyArray<A>> => {
  const out: Array<Arr.NonEmptyReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) {
    const chunk = items.slice(i, i + size)
    if (Arr.isArrayNonEmpty(chunk)) out.push(chunk)
  }
  return out
}


const LONE_SURROGATE = /\p{Cs}/u
const LONE_SURROGATES = /\p{Cs}/gu

export const toNumber = (u: unknown): number => typeof u === "bigint" ? Number(u) : Number(u ?? 0)

/** the first 48 bits of a hex fingerprint: what the fingerprint index holds (collisions are resolved on the full text) */
export const fp48 = (fingerprint: string): number => {
  const n = Number.parseInt(fingerprint.slice(0, 12), 16)
  return Number.isFinite(n) ? n : 0
}

export const nowIso = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms).toISOString())

/** the driver's message and, when it is generic (`PgConnection: Query failed`), the server's reason */
export const sqlMessage = (error: { readonly message: string; readonly reason?: unknown }): string => {
  const reason = error.reason
  const cause = typeof reason === "object" && reason !== null && "cause" in reason ? reason.cause : undefined
  const detail = cause instanceof Error ? cause.message : ""
  return detail !== "" && !error.message.includes(detail) ? `${error.message}: ${detail}` : error.message
}

export const mapError = (operation: string) => <A, R>(effect: Effect.Effect<A, SqlError.SqlError | LedgerError, R>) =>
  Effect.mapError(effect, (error) =>
    error._tag === "LedgerError" ? error : new LedgerError({ operation, message: sqlMessage(error) }))

export interface RunRow {
  readonly id: string
  readonly pipeline: string
  readonly module: string | null
  readonly provider: string
  readonly endpoint: string | null
  readonly mode: Mode
  readonly state: RunState
  readonly source_done: number | bigint
  readonly message: string | null
  readonly created_at: string
  readonly updated_at: string
  readonly checkpoint: string | null
  readonly checkpoint_position: number | bigint | null
  readonly budget: number | bigint | null
  readonly deadline: number | bigint | null
  readonly snapshot_low: string | null
  readonly snapshot_high: string | null
  readonly cwd: string | null
  readonly source?: string | null
}

export const toRun = (row: RunRow): Run => ({
  id: row.id,
  pipeline: row.pipeline,
  module: row.module,
  provider: row.provider,
  endpoint: row.endpoint ?? "",
  mode: row.mode,
  state: row.state,
  sourceDone: toNumber(row.source_done) === 1,
  message: row.message,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  checkpoint: row.checkpoint,
  checkpointPosition: row.checkpoint_position === null ? null : toNumber(row.checkpoint_position),
  snapshot: row.snapshot_high === null ? null : { low: row.snapshot_low, high: row.snapshot_high },
  cwd: row.cwd,
  budget: row.budget === null || row.budget === undefined ? null : BigInt(row.budget),
  deadline: row.deadline === null || row.deadline === undefined ? null : toNumber(row.deadline),
  source: row.source ?? null
})

export interface BatchRow {
  readonly id: string
  readonly run_id: string
  readonly seq: number | bigint
  readonly state: BatchState
  readonly grp: string
  readonly file: string
  readonly request_count: number | bigint
  readonly bytes: number | bigint
  readonly mode: BatchMode
  readonly spec: string | null
  readonly model: string | null
  readonly worst: number | bigint | null
  readonly reserved: number | bigint
  readonly remote_id: string | null
  readonly remote_meta: string | null
  readonly remote_state: string | null
  readonly completed: number | bigint
  readonly failed: number | bigint
  readonly created_at: string
  readonly submitted_at: string | null
  readonly ended_at: string | null
}

export const toBatch = (row: BatchRow): Batch => ({
  id: row.id,
  runId: row.run_id,
  seq: toNumber(row.seq),
  state: row.state,
  group: row.grp,
  file: row.file,
  requestCount: toNumber(row.request_count),
  bytes: toNumber(row.bytes),
  mode: row.mode,
  spec: row.spec,
  model: row.model,
  worst: row.worst === null ? null : BigInt(row.worst),
  reserved: BigInt(row.reserved ?? 0),
  remoteId: row.remote_id,
  remoteMeta: row.remote_meta === null ? null : JSON.parse(row.remote_meta),
  remoteState: row.remote_state,
  completed: toNumber(row.completed),
  failed: toNumber(row.failed),
  createdAt: row.created_at,
  submittedAt: row.submitted_at,
  endedAt: row.ended_at
})

export type BatchInput = Parameters<Service["sealBatch"]>[0]

/** the state every part of the ledger works with, built once per ledger */
export const make = (sql: SqlClient.SqlClient) =>
  Effect.gen(function*() {
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


    // Multi-row writes inside a transaction: SQLite keeps a statement journal (spilled to a temporary file) to undo one
    // statement alone on a constraint error, ~7 MB per 2,000 rows admitted. OR FAIL needs none; the ledger never goes
    // on after a failed statement anyway (its transaction is rolled back).
    const orFail = sql.onDialectOrElse({ sqlite: () => sql.literal(" OR FAIL"), orElse: () => sql.literal("") })

    // ----- many rows per statement -----

    // on offpeak's SQLite client, rows to insert are one message to its thread (arrays of values: no SQL text, no
    // compiled list of placeholders, no flat copy of every value on this thread); elsewhere (Postgres) multi-row INSERTs
    const many = "writeMany" in sql ? (sql as SqliteClient.Service) : undefined
    const insertSql = new Map<string, string>()

    /**
     * Inserts `rows` (each the values of `columns`, in order) into `table`, inside the caller's transaction: on SQLite
     * one message, which its thread runs as multi-row INSERTs of up to 999 values (no answer awaited: a failure fails
     * the transaction's next statement, and it is rolled back); elsewhere multi-row INSERTs of `chunk` rows.
     */
    const insertRows = (
      table: string,
      columns: ReadonlyArray<string>,
      rows: ReadonlyArray<ReadonlyArray<unknown>>,
      chunk = 100
    ): Effect.Effect<void, SqlError.SqlError> => {
      if (rows.length === 0) return Effect.void
      if (many !== undefined) {
        const key = `${table}(${columns.join(",")})`
        let text = insertSql.get(key)
        if (text === undefined) {
          text = `INSERT OR FAIL INTO ${table} (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`
          insertSql.set(key, text)
        }
        return many.writeMany(text, rows)
      }
      return Effect.forEach(chunks(rows, chunk), (part) => {
        const records = part.map((row) => {
          const record: Record<string, unknown> = {}
          columns.forEach((column, i) => (record[column] = row[i]))
          return record
        })
        return sql`INSERT${orFail} INTO ${sql.literal(table)} ${sql.insert(records as Arr.NonEmptyArray<Record<string, unknown>>)}`
      }, { discard: true })
    }

    /**
     * `column IN (values)` as one parameter whatever the number of values: a JSON array that SQLite (`json_each`) or
     * Postgres (`jsonb_array_elements_text`) expands, so the statement is the same text for every list (prepared once)
     * and the list crosses to the SQLite thread as one string.
     */
    const inList = (column: string, values: ReadonlyArray<number> | ReadonlyArray<string>) => {
      // as a bound string would be: a lone surrogate becomes U+FFFD (JSON would carry it escaped, and SQLite decode it apart)
      const json = JSON.stringify(
        typeof values[0] === "string"
          ? (values as ReadonlyArray<string>).map((v) => LONE_SURROGATE.test(v) ? v.replace(LONE_SURROGATES, "\uFFFD") : v)
          : values
      )
      return sql.onDialectOrElse({
        pg: () =>
          typeof values[0] === "string"
            ? sql`${sql.literal(column)} IN (SELECT jsonb_array_elements_text(${json}::jsonb))`
            : sql`${sql.literal(column)} IN (SELECT jsonb_array_elements_text(${json}::jsonb)::bigint)`,
        orElse: () => sql`${sql.literal(column)} IN (SELECT value FROM json_each(${json}))`
      })
    }

    /**
     * Per run number, where known: at least as many rows as are deliverable and in no part yet. A part assignment
     * that finds too few rows for a whole part sets it to what it counted, and settling or admitting rows adds theirs
     * (counting more than there are only costs a look at the ledger); anything else leaves it unknown. While it is
     * below a whole part, asking for one needs no transaction at all (most asks during a batch's collection).
     */
    const deliverable = new Map<number, number>()
    const addDeliverable = (num: number, rows: number) => {
      const known = deliverable.get(num)
      if (known !== undefined) deliverable.set(num, known + rows)
    }

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

    /**
     * `fence`, sent now and waited for by the effect it returns, which the transaction runs before it commits: the
     * check's round trip overlaps the statements after it. Inside the transaction the lease cannot change under it
     * (SQLite holds the write lock; Postgres share-locks the lease row when the check reads it, and a takeover
     * committed before that read fails the check, so the whole transaction rolls back).
     */
    const fenceStarted = (runId: string): Effect.Effect<Effect.Effect<void, LedgerError | SqlError.SqlError>> =>
      fences.has(runId) ? Effect.map(Effect.forkChild(fence(runId)), Fiber.join) : Effect.succeed(Effect.void)

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

    /** which of these requests are in `state` (and in `batch`) */
    const inState = (num: number, ids: ReadonlyArray<number>, where: { readonly state: string; readonly batch?: number }) =>
      ids.length === 0 ? Effect.succeed([] as Array<number>) : Effect.map(
        sql`SELECT id FROM offpeak_requests WHERE run = ${num} AND ${inList("id", ids)} AND state = ${where.state}
          ${where.batch === undefined ? sql`` : sql`AND batch = ${where.batch}`}`.values,
        (rows) => rows.map((row) => toNumber(row[0]))
      )

    return {
      sql,
      runNum,
      batchSeq,
      batchSeqs,
      batchRuns,
      fences,
      inState,
      orFail,
      serially,
      forUpdate,
      fence,
      fenceStarted,
      fenceBatch,
      settleOffset,
      insertRows,
      inList,
      deliverable,
      addDeliverable
    }
  })

/** what {@link make} builds */
export type Shared = Effect.Success<ReturnType<typeof make>>
