/**
 * Runs: create, read, update, the checkpoint of a pipeline's last completed run, and a run's counters.
 *
 * @internal
 */
import { Effect, Option } from "effect"
import type { Service } from "../../Ledger.ts"
import { toNumber, nowIso, sqlMessage, mapError, toRun } from "./shared.ts"
import type { Shared, RunRow } from "./shared.ts"
import * as Redact from "../../Redact.ts"

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum, fence } = shared

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
          (id, pipeline, module, provider, endpoint, mode, state, source_done, message, checkpoint, checkpoint_position,
           cwd, source, created_at, updated_at, num, item_count, request_count)
        SELECT ${run.id}, ${run.pipeline}, ${run.module}, ${run.provider}, ${run.endpoint ?? ""}, ${run.mode ?? "batch"},
           'running', 0, NULL, NULL, NULL, ${run.cwd ?? null}, ${run.source ?? null},
           ${now}, ${now}, COALESCE(MAX(num), 0) + 1, 0, 0
        FROM offpeak_runs`
      }).pipe(
        sql.withTransaction,
        Effect.retry({
          times: 5,
          while: (e) => e._tag !== "LedgerError" && /offpeak_runs_num|offpeak_runs\.num/.test(sqlMessage(e))
        })
      )
      return {
        ...run,
        endpoint: run.endpoint ?? "",
        mode: run.mode ?? "batch",
        state: "running" as const,
        sourceDone: false,
        message: null,
        checkpoint: null,
        checkpointPosition: null,
        snapshot: null,
        cwd: run.cwd ?? null,
        source: run.source ?? null,
        budget: null,
        deadline: null,
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
      if (patch.message !== undefined) values.message = patch.message === null ? null : Redact.text(patch.message)
      if (patch.checkpoint !== undefined) {
        values.checkpoint = patch.checkpoint.value
        values.checkpoint_position = patch.checkpoint.position
      }
      if (patch.budget !== undefined) values.budget = patch.budget
      if (patch.deadline !== undefined) values.deadline = patch.deadline
      if (patch.endpoint !== undefined) values.endpoint = patch.endpoint
      if (patch.snapshot !== undefined) {
        values.snapshot_low = patch.snapshot.low
        values.snapshot_high = patch.snapshot.high
      }
      yield* fence(id)
      yield* sql`UPDATE offpeak_runs SET ${sql.update(values)} WHERE id = ${id}`
    }).pipe(sql.withTransaction, mapError("updateRun"))

  const batchDurations: Service["batchDurations"] = (provider) =>
    sql<{ submitted_at: string; ended_at: string }>`
      SELECT b.submitted_at, b.ended_at FROM offpeak_batches b JOIN offpeak_runs r ON r.id = b.run_id
      WHERE r.provider = ${provider} AND b.mode = 'batch' AND b.submitted_at IS NOT NULL AND b.ended_at IS NOT NULL
      ORDER BY b.ended_at DESC LIMIT 50`.pipe(
      Effect.map((rows) =>
        rows.map((r) => Date.parse(r.ended_at) - Date.parse(r.submitted_at)).filter((ms) => ms >= 0).sort((a, b) => b - a)
      ),
      mapError("batchDurations")
    )

  const lastCheckpoint: Service["lastCheckpoint"] = (pipeline, of) =>
    sql<{ checkpoint: string }>`SELECT checkpoint FROM offpeak_runs
      WHERE pipeline = ${pipeline} AND state = 'completed' AND checkpoint IS NOT NULL${
      of?.source === undefined ? sql`` : sql` AND (source IS NULL OR source = ${of.source})`
    }${of?.endpoint === undefined ? sql`` : sql` AND endpoint = ${of.endpoint}`}
      ORDER BY created_at DESC, id DESC LIMIT 1`.pipe(
      Effect.map((rows) => rows.length === 0 ? Option.none<string>() : Option.some(rows[0]!.checkpoint)),
      mapError("lastCheckpoint")
    )

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
      // a pushdown run's rows never pass through the process: its jobs' tallies are its counts (the first job holds
      // every row; each later job the rows the one before failed; the last collected job's failures are dead)
      const jobs = yield* sql<{ state: string; request_count: number | bigint; completed: number | bigint; failed: number | bigint }>`
        SELECT state, request_count, completed, failed FROM offpeak_batches
        WHERE run_id = ${runId} AND mode = 'table' ORDER BY seq`
      const lastJob = jobs.at(-1)
      const items = jobs.length > 0 ? toNumber(jobs[0]!.request_count) : toNumber(run[0]?.item_count)
      const requests = jobs.length > 0 ? items : toNumber(run[0]?.request_count)
      const delivered = jobs.length > 0
        ? jobs.reduce((sum, j) => sum + (j.state === "collected" ? toNumber(j.completed) : 0), 0)
        : toNumber(parts[0]?.delivered)
      const dead = lastJob !== undefined
        ? (lastJob.state === "collected" ? toNumber(lastJob.failed) : 0)
        : toNumber(parts[0]?.dead)
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
        succeeded: jobs.length > 0 ? delivered : requests - queued - batched - failed,
        failed: jobs.length > 0 ? dead : failed,
        batches: allBatches,
        openBatches: allBatches - batchRows.filter((r) => r.state === "collected").reduce((sum, r) => sum + toNumber(r.n), 0)
      }
    }).pipe(mapError("counts"))

  return { getRun, createRun, listRuns, updateRun, lastCheckpoint, counts, batchDurations }
}
