/**
 * What every path of a batch does with it in the ledger: a new batch's record, the requests still waiting for an
 * answer, the unsent requests of a cancelled run, and a batch done with (collected, its files removed).
 *
 * @internal
 */
import { Effect } from "effect"
import * as path from "node:path"
import * as Failpoint from "../../Failpoint.ts"
import type * as Ledger from "../../Ledger.ts"
import * as Provider from "../../Provider.ts"
import type { Context } from "./context.ts"
import * as Files from "./files.ts"

/** batch lifecycle helpers for one run */
export const make = <Rec, A, Row>(ctx: Context<Rec, A, Row>) => {
  const { runId, ledger, batchDir } = ctx
  const { maxAttempts } = ctx.limits

  /** a batch record for `items`, numbered `seq`, its file in the run's batch folder */
  const newBatch = (
    seq: number,
    group: string,
    items: ReadonlyArray<{ readonly id: string; readonly line: string }>,
    mode: Ledger.Batch["mode"]
  ) => {
    const id = `${runId}-b${String(seq).padStart(5, "0")}`
    return {
      id,
      runId,
      seq,
      state: "sealed",
      group,
      file: path.join(batchDir, `${id}.jsonl`),
      requestCount: items.length,
      bytes: items.reduce((sum, item) => sum + Provider.lineBytes(item.line), 0),
      mode,
      spec: null,
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

  return { newBatch, requestsOf, cancelUnsent, markCollected }
}
