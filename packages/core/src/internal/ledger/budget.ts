/**
 * Money: what a run has spent (the cost of its answers), what it has reserved (the worst case of its batches at the
 * provider, until they are collected), and the reservation itself, checked against the budget in the transaction
 * that writes it, so spent + reserved never passes the budget, whatever process crashes when.
 *
 * @internal
 */
import { Effect } from "effect"
import type { Service } from "../../Ledger.ts"
import { mapError, toNumber } from "./shared.ts"
import type { Shared } from "./shared.ts"

/** a SUM of picodollars read exactly (as text: a JS number loses cents past $9,007) */
const money = (u: unknown): bigint => u === null || u === undefined ? 0n : BigInt(String(u).replace(/\.0+$/, ""))

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum, fence, forUpdate } = shared

  /** the run's running totals (kept by `recordOutcomes` and `admit`) and what its batches at the provider reserve */
  const totals = (runId: string, num: number, lock: boolean) =>
    Effect.gen(function*() {
      const run = yield* sql<{
        paid: string | null
        paid_sync: string | null
        input_tokens: number | bigint
        output_tokens: number | bigint
        cached_input_tokens: number | bigint
        unpriced: number | bigint
        cached_rows: number | bigint
        shared_rows: number | bigint
        budget: string | null
      }>`SELECT CAST(paid AS TEXT) AS paid, CAST(paid_sync AS TEXT) AS paid_sync, input_tokens, output_tokens,
                cached_input_tokens, unpriced, cached_rows, shared_rows, CAST(budget AS TEXT) AS budget
         FROM offpeak_runs WHERE num = ${num}${lock ? forUpdate : sql``}`
      // one row per batch of the run
      const reserved = yield* sql<{ reserved: string | null }>`
        SELECT CAST(SUM(reserved) AS TEXT) AS reserved FROM offpeak_batches WHERE run_id = ${runId} AND state <> 'collected'`
      const r = run[0]
      return {
        spent: money(r?.paid),
        syncEquivalent: money(r?.paid_sync),
        reserved: money(reserved[0]?.reserved),
        budget: r?.budget === null || r?.budget === undefined ? null : money(r.budget),
        inputTokens: toNumber(r?.input_tokens ?? 0),
        outputTokens: toNumber(r?.output_tokens ?? 0),
        cachedInputTokens: toNumber(r?.cached_input_tokens ?? 0),
        unpriced: toNumber(r?.unpriced ?? 0),
        cachedRows: toNumber(r?.cached_rows ?? 0),
        dedupedRows: toNumber(r?.shared_rows ?? 0)
      }
    })

  const spend: Service["spend"] = (runId) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      return yield* totals(runId, num, false)
    }).pipe(mapError("spend"))

  const reserve: Service["reserve"] = (runId, batchId, amount) =>
    Effect.gen(function*() {
      yield* fence(runId)
      const num = yield* runNum(runId)
      // the run's row is locked (Postgres) so two reservations of one run never both pass the check
      const { budget, spent, reserved } = yield* totals(runId, num, true)
      const held = yield* sql<{ reserved: number | bigint }>`SELECT reserved FROM offpeak_batches WHERE id = ${batchId}`
      if (money(held[0]?.reserved) > 0n) return true
      if (budget !== null && spent + reserved + amount > budget) return false
      yield* sql`UPDATE offpeak_batches SET reserved = ${amount} WHERE id = ${batchId}`
      return true
    }).pipe(sql.withTransaction, mapError("reserve"))

  return { spend, reserve }
}
