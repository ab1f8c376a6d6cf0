/**
 * What every path of a batch does with it in the ledger: a new batch's record, the requests still waiting for an
 * answer, the unsent requests of a cancelled run, and a batch done with (collected, its files removed).
 *
 * @internal
 */
import { Effect, Result as R } from "effect"
import * as path from "node:path"
import * as Failpoint from "../../Failpoint.ts"
import type * as Ledger from "../../Ledger.ts"
import * as Prices from "../../Prices.ts"
import type { Context } from "./context.ts"
import { DEFAULT_MAX_TOKENS } from "./context.ts"
import * as Files from "./files.ts"

/** batch lifecycle helpers for one run */
export const make = <Rec, A, Row>(ctx: Context<Rec, A, Row>) => {
  const { runId, ledger, batchDir } = ctx
  const { maxAttempts } = ctx.limits

  /** the id and file of batch number `seq` of the run (in the run's batch folder) */
  const batchFile = (seq: number) => {
    const id = `${runId}-b${String(seq).padStart(5, "0")}`
    return { id, file: path.join(batchDir, `${id}.jsonl`) }
  }

  /** a batch record numbered `seq` of `size.requests` lines, `size.bytes` bytes with their newlines */
  const newBatch = (
    seq: number,
    group: string,
    size: { readonly requests: number; readonly bytes: number },
    mode: Ledger.Batch["mode"],
    money: { readonly model: string | null; readonly worst: bigint | null }
  ) => {
    const { file, id } = batchFile(seq)
    return {
      id,
      runId,
      seq,
      state: "sealed",
      group,
      file,
      requestCount: size.requests,
      bytes: size.bytes,
      mode,
      spec: null,
      model: money.model,
      worst: money.worst,
      reserved: 0n,
      remoteId: null,
      remoteMeta: null,
      remoteState: null,
      completed: 0,
      failed: 0,
      createdAt: new Date().toISOString(),
      submittedAt: null,
      endedAt: null
    } satisfies Ledger.Batch
  }

  /**
   * Reserves the batch's worst case of the run's budget before it is sent (nothing to do without a budget). Refused:
   * its requests go back to the queue, untouched, for a resume with a higher budget, and the batch ends there.
   */
  const reserve = (batch: Ledger.Batch) =>
    Effect.gen(function*() {
      if (ctx.budget === null) return true
      const worst = batch.worst ?? (yield* boundOf(batch))
      while (true) {
        if (yield* ledger.reserve(runId, batch.id, worst)) {
          yield* Failpoint.hit("budget.reserved")
          return true
        }
        // batches in flight hold reservations that become their (smaller) real cost as they end: wait for them
        // before refusing; once nothing else is reserved the refusal is final
        const { reserved } = yield* ledger.spend(runId)
        if (reserved === 0n) break
        yield* Effect.sleep("500 millis")
      }
      yield* ledger.requeue(batch.id, "budget_refused")
      yield* Files.remove(batch.file)
      ctx.refused.batches++
      ctx.refused.requests += batch.requestCount
      yield* Effect.logWarning(
        `batch ${batch.id} (${batch.requestCount} requests, worst case ${Prices.formatUsd(worst)}) not sent: over the budget`
      )
      return false
    })

  /**
   * A batch sealed before the run had a budget has no worst case of its own: input tokens are at most its bytes, and
   * each request may answer `DEFAULT_MAX_TOKENS` (a bound, not an estimate).
   */
  const boundOf = (batch: Ledger.Batch) => {
    const cost = batch.model === null ? undefined : Prices.worstCase({
      inputTokens: batch.bytes,
      maxOutputTokens: batch.requestCount * DEFAULT_MAX_TOKENS
    }, {
      provider: ctx.provider.name,
      model: batch.model,
      mode: batch.mode === "sync" ? "sync" : "batch",
      overrides: ctx.pipeline.prices
    })
    return cost !== undefined && R.isSuccess(cost)
      ? Effect.succeed(cost.success.total)
      : Effect.fail(ctx.fail(`a budget is set, but batch ${batch.id} has no price (model ${batch.model ?? "unknown"})`))
  }

  /** custom id → request number of the batch's requests still waiting for a line */
  const requestsOf = (batch: Ledger.Batch) =>
    Effect.map(ledger.unsettled(runId, batch.id), (rows) => new Map(rows.map((r) => [r.fingerprint, r.id])))

  /** once the run is cancelled: the batch's requests never sent end `cancelled` */
  const cancelUnsent = (batch: Ledger.Batch) =>
    Effect.gen(function*() {
      const unsent = yield* ledger.unsettled(runId, batch.id)
      yield* ledger.recordOutcomes(runId, batch.id, unsent.map(({ id: request }): Ledger.Outcome => ({
        _tag: "Failed",
        request,
        failure: { kind: "cancelled", message: "the run was cancelled before this request was sent" },
        retryable: false
      })), maxAttempts)
    })

  /** every request of the batch is recorded: it is done with, and its files go */
  const markCollected = (batch: Ledger.Batch, patch: Parameters<Ledger.Service["updateBatch"]>[1] = {}) =>
    Effect.gen(function*() {
      yield* ledger.updateBatch(batch.id, { ...patch, state: "collected" })
      yield* Failpoint.hit("batch.collected")
      yield* Files.remove(batch.file)
    })

  return { batchFile, newBatch, requestsOf, cancelUnsent, markCollected, reserve }
}
