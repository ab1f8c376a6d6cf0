/**
 * Reads of the result cache for estimates: which requests another run has already answered (a new run gets them
 * free), and what a run's paid answers were like (how many, their tokens) — the mean answer length a sample run gives.
 * Nothing here writes.
 *
 * @internal
 */
import { Effect } from "effect"
import type { Service } from "../../Ledger.ts"
import { chunks, fp48, mapError, toNumber } from "./shared.ts"
import type { Shared } from "./shared.ts"

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum } = shared

  // as admission's step 3: a request that succeeded in a run of the same provider and endpoint is in the cache (found
  // through the fingerprint index, full fingerprints compared)
  const cachedAnswers: Service["cachedAnswers"] = (fingerprints, scope) =>
    Effect.gen(function*() {
      const found = new Set<string>()
      const runs = scope === undefined
        ? sql``
        : sql`AND run IN (SELECT num FROM offpeak_runs WHERE provider = ${scope.provider} AND endpoint = ${scope.endpoint ?? ""})`
      for (const part of chunks([...new Set(fingerprints)])) {
        const wanted = new Set(part)
        const hits = yield* sql<{ fingerprint: string }>`
          SELECT DISTINCT fingerprint FROM offpeak_requests
          WHERE ${sql.in("fp48", [...new Set(part.map(fp48))])} AND state = 'succeeded' ${runs}`
        for (const hit of hits) if (wanted.has(hit.fingerprint)) found.add(hit.fingerprint)
      }
      return found as ReadonlySet<string>
    }).pipe(mapError("cachedAnswers"))

  const paidAnswers: Service["paidAnswers"] = (runId) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      // the run's running totals (kept by recordOutcomes)
      const rows = yield* sql<{ n: number | bigint | null; input: number | bigint | null; output: number | bigint | null }>`
        SELECT answers AS n, input_tokens AS input, output_tokens AS output FROM offpeak_runs WHERE num = ${num}`
      return {
        answers: toNumber(rows[0]?.n ?? 0),
        inputTokens: toNumber(rows[0]?.input ?? 0),
        outputTokens: toNumber(rows[0]?.output ?? 0)
      }
    }).pipe(mapError("paidAnswers"))

  return { cachedAnswers, paidAnswers }
}
