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

  const totals = (runId: string, num: number) =>
    Effect.gen(function*() {
      const outputs = yield* sql<{
        spent: string | null
        sync: string | null
        input: number | bigint | null
        output: number | bigint | null
        cached: number | bigint | null
        unpriced: number | bigint | null
      }>`SELECT CAST(SUM(o.cost) AS TEXT) AS spent, CAST(SUM(o.sync_cost) AS TEXT) AS sync,
                SUM(o.input_tokens) AS input, SUM(o.output_tokens) AS output, SUM(o.cached_input_tokens) AS cached,
                SUM(CASE WHEN o.cost IS NULL THEN 1 ELSE 0 END) AS unpriced
         FROM offpeak_outputs o JOIN offpeak_requests r ON r.run = o.run AND r.settled = o.settled
         WHERE o.run = ${num} AND r.cached = 0`
      // answers that failed all the same (truncated, undecodable) were paid too
      const failed = yield* sql<{ spent: string | null; sync: string | null }>`
        SELECT CAST(SUM(spent) AS TEXT) AS spent, CAST(SUM(sync_spent) AS TEXT) AS sync FROM offpeak_requests
        WHERE run = ${num} AND spent IS NOT NULL`
      const reserved = yield* sql<{ reserved: string | null }>`
        SELECT CAST(SUM(reserved) AS TEXT) AS reserved FROM offpeak_batches WHERE run_id = ${runId} AND state <> 'collected'`
      return {
        outputs: outputs[0],
        spent: money(outputs[0]?.spent) + money(failed[0]?.spent),
        sync: money(outputs[0]?.sync) + money(failed[0]?.sync),
        reserved: money(reserved[0]?.reserved)
      }
    })

  const spend: Service["spend"] = (runId) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const { outputs: o, spent, sync, reserved } = yield* totals(runId, num)
      const run = yield* sql<{ budget: string | null }>`SELECT CAST(budget AS TEXT) AS budget FROM offpeak_runs WHERE num = ${num}`
      const rows = yield* sql<{ cached: number | bigint | null; shared: number | bigint | null }>`
        SELECT SUM(CASE WHEN r.cached = 1 THEN 1 ELSE 0 END) AS cached,
               SUM(CASE WHEN r.cached = 0 AND r.id <> i.position THEN 1 ELSE 0 END) AS shared
        FROM offpeak_items i JOIN offpeak_requests r ON r.run = i.run AND r.id = i.request
        WHERE i.run = ${num}`
      return {
        spent,
        syncEquivalent: sync,
        reserved,
        budget: run[0]?.budget === null || run[0]?.budget === undefined ? null : money(run[0].budget),
        inputTokens: toNumber(o?.input ?? 0),
        outputTokens: toNumber(o?.output ?? 0),
        cachedInputTokens: toNumber(o?.cached ?? 0),
        unpriced: toNumber(o?.unpriced ?? 0),
        cachedRows: toNumber(rows[0]?.cached ?? 0),
        dedupedRows: toNumber(rows[0]?.shared ?? 0)
      }
    }).pipe(mapError("spend"))

  const reserve: Service["reserve"] = (runId, batchId, amount) =>
    Effect.gen(function*() {
      yield* fence(runId)
      const num = yield* runNum(runId)
      // the run's row is locked (Postgres) so two reservations of one run never both pass the check
      const run = yield* sql<{ budget: string | null }>`
        SELECT CAST(budget AS TEXT) AS budget FROM offpeak_runs WHERE num = ${num}${forUpdate}`
      const held = yield* sql<{ reserved: number | bigint }>`SELECT reserved FROM offpeak_batches WHERE id = ${batchId}`
      if (money(held[0]?.reserved) > 0n) return true
      const budget = run[0]?.budget === null || run[0]?.budget === undefined ? null : money(run[0].budget)
      if (budget !== null) {
        const { spent, reserved } = yield* totals(runId, num)
        if (spent + reserved + amount > budget) return false
      }
      yield* sql`UPDATE offpeak_batches SET reserved = ${amount} WHERE id = ${batchId}`
      return true
    }).pipe(sql.withTransaction, mapError("reserve"))

  return { spend, reserve }
}
