/**
 * Outcomes: the answers of a batch's requests recorded (the first line for a request counts), retryable failures
 * back in the queue until their last attempt, settled requests numbered in the order they settle.
 *
 * @internal
 */
import { Effect } from "effect"
import type { Outcome, Service } from "../../Ledger.ts"
import { toNumber, mapError } from "./shared.ts"
import type { Shared } from "./shared.ts"
import * as Redact from "../../Redact.ts"

const OUTPUT_COLUMNS = [
  "run",
  "settled",
  "output",
  "output_format",
  "input_tokens",
  "output_tokens",
  "cached_input_tokens",
  "cost",
  "sync_cost"
]

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum, batchSeq, inState, orFail, serially, fence, fenceStarted, settleOffset, insertRows, inList, deliverable, addDeliverable } = shared

  const recordOutcomes: Service["recordOutcomes"] = (runId, batchId, outcomes, maxAttempts) =>
    Effect.gen(function*() {
      if (outcomes.length === 0) return
      const fenced = yield* fenceStarted(runId)
      const num = yield* runNum(runId)
      const seq = yield* batchSeq(batchId)
      // the first line for a request counts
      const first = new Map<number, Outcome>()
      let min = Infinity
      for (const o of outcomes) {
        if (first.has(o.request)) continue
        first.set(o.request, o)
        if (o.request < min) min = o.request
      }
      // requests settled for good are numbered (in request order, so outputs are appended in key order): request `id`
      // becomes `offset + id`, above every number of the run so far (see `Shared.settleOffset`); the answered ones
      // take theirs in the UPDATE that settles them, which answers the offset
      let offset: number | undefined
      // only requests still in this batch change: a line seen twice (a re-download) or for another batch does not
      const settledNow = new Set<number>()
      // the rows these requests take to delivery (see `Shared.deliverable`)
      let settledRows = 0
      const answered = [...first.values()].flatMap((o) => o._tag === "Succeeded" ? [o.request] : []).sort((a, b) => a - b)
      if (answered.length > 0) {
        const rows = yield* sql`UPDATE${orFail} offpeak_requests
          SET state = 'succeeded', settled = (
            SELECT CASE WHEN MAX(settled) > 0 THEN MAX(settled) ELSE 0 END
            FROM offpeak_requests WHERE run = ${num} AND settled IS NOT NULL
          ) + ${1 - min} + id
          WHERE run = ${num} AND ${inList("id", answered)} AND state = 'batched' AND batch = ${seq}
          RETURNING id, row_count, settled`.values
        for (const [id, n, settled] of rows) {
          settledNow.add(toNumber(id))
          settledRows += toNumber(n)
          offset ??= toNumber(settled) - toNumber(id)
        }
      }
      // (an earlier attempt's error stays on a succeeded request for the record; its rows never read it)
      const succeeded = answered.flatMap((id) =>
        settledNow.has(id) ? [{ id, outcome: first.get(id) as Extract<Outcome, { _tag: "Succeeded" }> }] : []
      )
      const unanswered = [...first.values()].flatMap((o) => o._tag === "Failed" ? [o.request] : [])
      // the failed requests still in this batch, with their attempts so far
      const failed: Array<{ id: number; attempts: number; rows: number; outcome: Extract<Outcome, { _tag: "Failed" }> }> = []
      if (unanswered.length > 0) {
        const rows = yield* sql`SELECT id, attempts, row_count FROM offpeak_requests
          WHERE run = ${num} AND ${inList("id", unanswered)} AND state = 'batched' AND batch = ${seq}`.values
        for (const [id, attempts, n] of rows) {
          failed.push({
            id: toNumber(id),
            attempts: toNumber(attempts),
            rows: toNumber(n),
            outcome: first.get(toNumber(id)) as Extract<Outcome, { _tag: "Failed" }>
          })
        }
      }
      yield* insertRows(
        "offpeak_outputs",
        OUTPUT_COLUMNS,
        succeeded.map(({ id, outcome: o }) => [
          num,
          offset! + id,
          o.output,
          o.format ?? "json",
          o.usage.inputTokens,
          o.usage.outputTokens,
          o.usage.cachedInputTokens ?? null,
          o.cost?.spent ?? null,
          o.cost?.sync ?? null
        ])
      )
      // the run's running totals: what this batch's answers cost (failed ones too: truncated, undecodable) and used
      const add = { paid: 0n, sync: 0n, input: 0, output: 0, cachedInput: 0, unpriced: 0 }
      for (const { outcome: o } of succeeded) {
        add.input += o.usage.inputTokens
        add.output += o.usage.outputTokens
        add.cachedInput += o.usage.cachedInputTokens ?? 0
        if (o.cost === undefined) add.unpriced++
        else {
          add.paid += o.cost.spent
          add.sync += o.cost.sync
        }
      }
      for (const { outcome: o } of failed) {
        if (o.cost === undefined) continue
        add.paid += o.cost.spent
        add.sync += o.cost.sync
      }
      if (succeeded.length > 0 || add.paid > 0n || add.sync > 0n) {
        yield* sql`UPDATE offpeak_runs SET paid = paid + ${add.paid}, paid_sync = paid_sync + ${add.sync},
            answers = answers + ${succeeded.length}, input_tokens = input_tokens + ${add.input},
            output_tokens = output_tokens + ${add.output}, cached_input_tokens = cached_input_tokens + ${add.cachedInput},
            unpriced = unpriced + ${add.unpriced}
          WHERE num = ${num}`
      }
      // nothing settled above and a failure to number: the run's numbers so far give the offset
      if (offset === undefined && failed.length > 0) offset = yield* settleOffset(num, [...first.keys()])
      for (const { id, attempts: sofar, rows, outcome: o } of failed) {
        const limit = Math.min(maxAttempts, o.maxAttempts ?? maxAttempts)
        const attempts = sofar + 1
        const retry = o.retryable && attempts < limit
        if (!retry) settledRows += rows
        yield* sql`UPDATE${orFail} offpeak_requests SET
            attempts = ${attempts}, state = ${retry ? "queued" : "failed"}, batch = ${retry ? null : seq},
            settled = ${retry ? null : offset! + id},
            error_kind = ${o.failure.kind}, error_message = ${Redact.text(o.failure.message)},
            error_raw = ${o.failure.raw === undefined ? null : Redact.text(o.failure.raw)}
            ${o.cost === undefined ? sql`` : sql`, spent = COALESCE(spent, 0) + ${o.cost.spent},
            sync_spent = COALESCE(sync_spent, 0) + ${o.cost.sync}`}
          WHERE run = ${num} AND id = ${id}`
      }
      yield* fenced
      // (before the commit: a transaction rolled back leaves the count above the rows, which only costs a look)
      addDeliverable(num, settledRows)
    }).pipe(sql.withTransaction, serially, mapError("recordOutcomes"))

  const failQueued: Service["failQueued"] = (runId, requests, failure) =>
    Effect.gen(function*() {
      yield* fence(runId)
      const num = yield* runNum(runId)
      const ids = yield* inState(num, requests, { state: "queued" })
      if (ids.length === 0) return
      const offset = yield* settleOffset(num, ids)
      deliverable.delete(num)
      yield* sql`UPDATE${orFail} offpeak_requests SET state = 'failed', settled = ${offset} + id,
          error_kind = ${failure.kind}, error_message = ${Redact.text(failure.message)},
          error_raw = ${failure.raw === undefined ? null : Redact.text(failure.raw)}
        WHERE run = ${num} AND ${inList("id", ids)}`
    }).pipe(sql.withTransaction, serially, mapError("failQueued"))

  return { recordOutcomes, failQueued }
}
