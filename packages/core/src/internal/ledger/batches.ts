/**
 * Batches: sealed with their requests in one transaction, split, updated as they go through the provider.
 *
 * @internal
 */
import { Effect } from "effect"
import type { Service } from "../../Ledger.ts"
import { LedgerError } from "./errors.ts"
import { toNumber, nowIso, mapError, toBatch } from "./shared.ts"
import type { Shared, BatchRow, BatchInput } from "./shared.ts"

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum, batchSeq, batchSeqs, batchRuns, orFail, fence, fenceBatch, inList } = shared

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
        spec: batch.spec ?? null,
        model: batch.model ?? null,
        worst: batch.worst ?? null,
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


  const assign = (
    num: number,
    batch: BatchInput,
    requests: ReadonlyArray<number>,
    from: { readonly state: string; readonly batch?: number }
  ) =>
    Effect.gen(function*() {
      const ids = [...new Set(requests)]
      // one statement moves them, and how many moved is counted (the transaction is rolled back when one was not there)
      const update = sql`UPDATE${orFail} offpeak_requests SET state = 'batched', batch = ${batch.seq}
        WHERE run = ${num} AND ${inList("id", ids)} AND state = ${from.state}
        ${from.batch === undefined ? sql`` : sql`AND batch = ${from.batch}`}`
      const counted = ids.length === 0 ? Effect.succeed([[0]]) : sql.onDialectOrElse({
        pg: () => sql`WITH moved AS (${update} RETURNING 1) SELECT COUNT(*) FROM moved`.values,
        orElse: () => Effect.andThen(update, sql`SELECT changes()`.values)
      })
      const moved = toNumber((yield* counted)[0]?.[0])
      // every line of the file must belong to this batch alone, or a request would be paid twice
      if (moved !== requests.length) {
        return yield* new LedgerError({
          operation: "sealBatch",
          message: `batch ${batch.id}: ${requests.length} lines but ${moved} queued requests`
        })
      }
    })

  const sealBatch: Service["sealBatch"] = (batch, requests, collect) =>
    Effect.gen(function*() {
      yield* fence(batch.runId)
      const num = yield* runNum(batch.runId)
      const now = yield* nowIso
      yield* insertBatch(batch, now)
      yield* assign(num, batch, requests, { state: "queued" })
      if (collect !== undefined) {
        yield* sql`UPDATE offpeak_batches SET state = 'collected', completed = ${collect.completed},
          failed = ${collect.failed} WHERE id = ${collect.id}`
      }
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
      if (patch.mode !== undefined) values.mode = patch.mode
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

  const requeue: Service["requeue"] = (batchId, reason) =>
    Effect.gen(function*() {
      yield* fenceBatch(batchId)
      const seq = yield* batchSeq(batchId)
      const rows = yield* sql<{ run_id: string }>`SELECT run_id FROM offpeak_batches WHERE id = ${batchId}`
      const num = yield* runNum(rows[0]!.run_id)
      yield* sql`UPDATE offpeak_requests SET state = 'queued', batch = NULL
        WHERE run = ${num} AND batch = ${seq} AND state = 'batched'`
      yield* sql`UPDATE offpeak_batches SET state = 'collected', remote_state = ${reason} WHERE id = ${batchId}`
    }).pipe(sql.withTransaction, mapError("requeue"))

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

  const unsettled: Service["unsettled"] = (runId, batchId) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const seq = yield* batchSeq(batchId)
      const rows = yield* sql`SELECT id, fingerprint FROM offpeak_requests
        WHERE run = ${num} AND batch = ${seq} AND state = 'batched' ORDER BY id`.values
      return rows.map(([id, fingerprint]) => ({ id: toNumber(id), fingerprint: fingerprint as string }))
    }).pipe(mapError("unsettled"))

  return { nextBatchSeq, sealBatch, splitBatch, updateBatch, batches, openBatches, unsettled, requeue }
}
