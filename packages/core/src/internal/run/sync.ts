/**
 * A `sync` batch: each of its requests still waiting for an answer goes through the provider's synchronous API (the
 * adapter's adaptive limit bounds how many run), and the answers are recorded in groups through the same ledger path
 * as a batch's result lines, with the same retries, dead letter and delivery. A resumed run sends only the requests
 * with no answer recorded: calls in flight at a crash are sent (and paid) again.
 *
 * @internal
 */
import { Effect, Semaphore, Stream } from "effect"
import * as Failpoint from "../../Failpoint.ts"
import type * as Ledger from "../../Ledger.ts"
import type * as Provider from "../../Provider.ts"
import type { RunError } from "../../Run.ts"
import * as Memory from "../memory.ts"
import type { Context } from "./context.ts"
import * as Files from "./files.ts"
import type * as Lifecycle from "./lifecycle.ts"
import { answered as answeredEvent } from "./outcomes.ts"

/** synchronous calls started at once per `sync` batch (the adapter's adaptive limit bounds how many run) */
const SYNC_CALLS = 64
/** answers of synchronous calls are recorded in groups of up to this many, or of what came within SYNC_RECORD_EVERY */
const SYNC_RECORD = 1_000
const SYNC_RECORD_EVERY = "250 millis"

/** synchronous batches for one run */
export const make = <Rec, A, Row>(
  ctx: Context<Rec, A, Row>,
  lifecycle: ReturnType<typeof Lifecycle.make>,
  toOutcome: (line: Provider.LineResult, request: number, batch: Ledger.Batch) => Ledger.Outcome,
  delivery: { readonly deliverParts: (whole: boolean) => Effect.Effect<void, RunError>; readonly deliver: Effect.Effect<void, RunError> }
) => {
  const { runId, ledger, provider, cancelling, retrying, fail } = ctx
  const { maxAttempts } = ctx.limits
  const { requestsOf, cancelUnsent, markCollected } = lifecycle
  const { deliverParts, deliver } = delivery

  /** sends a sync batch's waiting requests and records their answers */
  const send = (batch: Ledger.Batch) =>
    Effect.gen(function*() {
      const counts = { completed: batch.completed, failed: batch.failed }
      if (batch.state === "sealed" && !cancelling && !(yield* lifecycle.reserve(batch))) return
      if (cancelling) {
        yield* cancelUnsent(batch)
      } else {
        const requests = yield* requestsOf(batch)
        const items = (yield* Files.read(fail)(batch.file)).filter((item) => requests.has(item.id))
        if (batch.state === "sealed") yield* ledger.updateBatch(batch.id, { state: "submitted", remoteState: "sync", submitted: true })
        ctx.emit({ _tag: "BatchSubmitted", batchId: batch.id, requests: items.length, mode: "sync" })
        ctx.emit({ _tag: "BatchWatched", batchId: batch.id, mode: "sync" })
        let answered = 0
        yield* Stream.fromIterable(items).pipe(
          Stream.mapEffect((item) => {
            const request = requests.get(item.id)!
            return retrying(provider.sync(item.line)).pipe(
              Effect.map((line) => toOutcome(line, request, batch)),
              // a call that keeps failing (no answer about the request itself) is tried again in a later round
              Effect.catch((error) =>
                Effect.succeed<Ledger.Outcome>({
                  _tag: "Failed",
                  request,
                  failure: { kind: "provider_error", message: `${provider.name} synchronous call: ${error.message}` },
                  retryable: true
                })
              )
            )
          }, { concurrency: SYNC_CALLS, unordered: true }),
          Stream.groupedWithin(SYNC_RECORD, SYNC_RECORD_EVERY),
          Stream.runForEach((outcomes) =>
            Effect.gen(function*() {
              yield* ledger.recordOutcomes(runId, batch.id, outcomes, maxAttempts)
              yield* Failpoint.hit("results.recorded")
              ctx.emit(answeredEvent(batch.id, outcomes))
              for (const o of outcomes) o._tag === "Succeeded" ? counts.completed++ : counts.failed++
              answered += outcomes.length
              ctx.emit({ _tag: "BatchProgress", batchId: batch.id, done: answered, total: items.length, providerState: "sync" })
              yield* deliverParts(true)
            })
          ),
          Effect.ensuring(Effect.sync(() =>
            ctx.emit({ _tag: "BatchEnded", batchId: batch.id, mode: "sync", providerState: "sync", ...counts })
          )),
          Effect.tap(() => Effect.annotateCurrentSpan({ "offpeak.batch.completed": counts.completed, "offpeak.batch.failed": counts.failed })),
          Effect.withSpan("offpeak.batch.sync", { attributes: { "offpeak.batch.id": batch.id, "offpeak.batch.requests": items.length } }),
          Semaphore.withPermits(ctx.locks.slots, 1)
        )
      }
      yield* markCollected(batch, { remoteState: "sync", ended: true, ...counts })
      yield* deliver
      Memory.compact()
    })

  return { send }
}
