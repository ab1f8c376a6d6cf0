/**
 * Outcomes: the answers of a batch's requests recorded (the first line for a request counts), retryable failures
 * back in the queue until their last attempt, settled requests numbered in the order they settle.
 *
 * @internal
 */
import { Array as Arr, Effect } from "effect"
import type { Outcome, Service } from "../../Ledger.ts"
import { chunks, toNumber, mapError } from "./shared.ts"
import type { Shared } from "./shared.ts"
import * as Redact from "../../Redact.ts"

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum, batchSeq, inState, orFail, serially, fence, settleOffset } = shared

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
          sql.insert(Arr.map(part, ({ id, outcome: o }) => ({
            run: num,
            settled: offset + id,
            output: o.output,
            output_format: o.format ?? "json",
            input_tokens: o.usage.inputTokens,
            output_tokens: o.usage.outputTokens,
            cached_input_tokens: o.usage.cachedInputTokens ?? null,
            cost: o.cost?.spent ?? null,
            sync_cost: o.cost?.sync ?? null
          })))
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
            error_kind = ${o.failure.kind}, error_message = ${Redact.text(o.failure.message)},
            error_raw = ${o.failure.raw === undefined ? null : Redact.text(o.failure.raw)}
            ${o.cost === undefined ? sql`` : sql`, spent = COALESCE(spent, 0) + ${o.cost.spent},
            sync_spent = COALESCE(sync_spent, 0) + ${o.cost.sync}`}
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
            error_kind = ${failure.kind}, error_message = ${Redact.text(failure.message)},
            error_raw = ${failure.raw === undefined ? null : Redact.text(failure.raw)}
          WHERE run = ${num} AND ${sql.in("id", part)}`
      }
    }).pipe(sql.withTransaction, serially, mapError("failQueued"))

  return { recordOutcomes, failQueued }
}
