/**
 * A run pushed down: the source stages a table of requests where the provider reads it, the provider's job writes
 * its answers to a table of its own, and the source lands them — no row passes through this process. Each job is a
 * ledger batch (`mode: "table"`, its staged tables in `spec`) with the same lifecycle as a file batch: sealed, created
 * once (a crash between create and the ledger write is resolved by the provider's `find`), polled in a slot, then its
 * output tallied and landed; rows the job failed are staged again as a smaller job (up to `retry.maxAttempts` jobs),
 * then dead-lettered with the provider's reason. Sealing the follow-up job and collecting the one before is one ledger
 * transaction, and every step on the tables is idempotent, so a run killed anywhere resumes where it was.
 *
 * @internal
 */
import { Effect, Function, Option, Schema, Semaphore, Stream } from "effect"
import * as Failpoint from "../../Failpoint.ts"
import type * as Ledger from "../../Ledger.ts"
import * as Provider from "../../Provider.ts"
import * as ProviderError from "../../ProviderError.ts"
import type * as Result from "../../Result.ts"
import type * as Run from "../../Run.ts"
import type * as Source from "../../Source.ts"
import * as Telemetry from "../telemetry.ts"
import type { Context } from "./context.ts"
import { orFail as orFailOf, reportingEnd } from "./context.ts"
import * as Delivery from "./delivery.ts"
import * as Retry from "./retry.ts"
import type { Outcome } from "./run.ts"

const Staged = Schema.Struct({
  kind: Schema.String,
  model: Schema.String,
  input: Schema.String,
  output: Schema.String,
  keyColumns: Schema.Array(Schema.String),
  rows: Schema.Finite
})
const decodeStaged = Schema.decodeUnknownSync(Schema.fromJsonString(Staged))

/** failed rows dead-lettered per write */
const DEAD_CHUNK = 5_000

/** runs `ctx`'s pipeline pushed down through `pushdown` */
export const run = <Rec, A, Row>(ctx: Context<Rec, A, Row>, pushdown: Source.Pushdown) =>
  Effect.gen(function*() {
    const { runId, ledger, provider, cancelling, retrying, fail } = ctx
    const { maxAttempts } = ctx.limits
    const orFail = orFailOf(ctx)
    const jobId = (seq: number) => `${runId}-b${String(seq).padStart(5, "0")}`

    /** seals job `seq` over `staged`; `after` is collected in the same transaction */
    const seal = (seq: number, staged: Source.Staged, after?: { readonly id: string; readonly completed: number; readonly failed: number }) =>
      Effect.gen(function*() {
        if (!(provider.tables ?? []).includes(staged.kind)) {
          return yield* fail(
            `${provider.name} cannot run a job over a ${staged.kind} table (it takes: ${(provider.tables ?? []).join(", ") || "none"})`
          )
        }
        const batch = {
          id: jobId(seq),
          runId,
          seq,
          group: staged.model,
          file: staged.input,
          requestCount: staged.rows,
          bytes: 0,
          mode: "table" as const,
          spec: JSON.stringify(staged)
        }
        yield* orFail(ledger.sealBatch(batch, [], after))
        yield* Failpoint.hit("batch.sealed")
        ctx.emit({ _tag: "BatchSealed", batchId: batch.id, requests: staged.rows, bytes: 0, mode: "table" })
      })

    /** one job, from whatever state the ledger has it in, to collected (and its follow-up sealed) */
    const drive = (job: Ledger.Batch): Effect.Effect<void, Run.RunError> =>
      Effect.gen(function*() {
        const staged: Source.Staged = decodeStaged(job.spec ?? "")
        const submission: Provider.Table = {
          _tag: "Table",
          batchId: job.id,
          runId,
          sealedAt: Date.parse(job.createdAt),
          ...staged
        }
        let state = job.state
        let remote: Provider.RemoteBatch | undefined = job.remoteId === null
          ? undefined
          : { id: job.remoteId, meta: job.remoteMeta ?? undefined }
        let submittedAt = job.submittedAt === null ? Date.now() : Date.parse(job.submittedAt)
        const markSubmitted = (found: Provider.RemoteBatch) =>
          Effect.gen(function*() {
            remote = found
            submittedAt = Date.now()
            yield* ledger.updateBatch(job.id, { state: "submitted", remoteId: found.id, remoteMeta: found.meta, submitted: true })
            yield* Failpoint.hit("batch.submitted")
            state = "submitted"
            yield* Effect.annotateCurrentSpan("offpeak.batch.remote_id", found.id)
            ctx.emit({ _tag: "BatchSubmitted", batchId: job.id, remoteId: found.id, requests: staged.rows, mode: "table" })
          })
        let last: Provider.Status | undefined
        let polls = 0
        yield* Effect.gen(function*() {
          yield* Effect.gen(function*() {
            if (state === "submitting") {
              // a crash between create and the ledger write: adopt the job the provider already has
              const found = yield* retrying(provider.find(submission))
              if (Option.isSome(found)) yield* markSubmitted(found.value)
              else state = "sealed"
            }
            if (state === "sealed" && cancelling) {
              yield* ledger.updateBatch(job.id, { state: "collected", remoteState: "cancelled" })
              state = "collected"
            }
            if (state === "sealed") {
              yield* ctx.renewLease
              yield* ledger.updateBatch(job.id, { state: "submitting" })
              const created = yield* ctx.createOnce(submission)
              yield* Failpoint.hit("batch.created")
              yield* markSubmitted(created)
            }
          }).pipe(
            state === "sealed" || state === "submitting" ? Effect.withSpan("offpeak.batch.submit", Telemetry.batchSpan(job)) : Function.identity,
            Semaphore.withPermits(ctx.locks.creating, 1)
          )
          if (remote !== undefined) yield* Effect.annotateCurrentSpan("offpeak.batch.remote_id", remote.id)
          if (state === "submitted" && cancelling) {
            yield* retrying(provider.cancel(remote!)).pipe(
              Effect.catch((error) => Effect.logWarning(`cancel ${remote!.id}: ${error.message}`))
            )
          }
          if (state === "submitted") {
            ctx.emit({ _tag: "BatchWatched", batchId: job.id, mode: "table" })
            yield* ProviderError.retryNotFound(retrying(provider.status(remote!)), { since: submittedAt, grace: Retry.NOT_FOUND_GRACE }).pipe(
              Effect.tap((status) =>
                Effect.gen(function*() {
                  yield* Failpoint.hit("batch.polled")
                  last = status
                  yield* Effect.annotateCurrentSpan({ "offpeak.batch.polls": ++polls, ...Telemetry.statusAttributes(status) })
                  ctx.emit({
                    _tag: "BatchProgress",
                    batchId: job.id,
                    done: status.counts.completed + status.counts.failed,
                    total: status.counts.total,
                    providerState: status.providerState
                  })
                  yield* ledger.updateBatch(job.id, {
                    remoteState: status.providerState,
                    completed: status.counts.completed,
                    failed: status.counts.failed
                  })
                })
              ),
              Effect.repeat({ schedule: provider.pollSchedule, until: (s) => Provider.isTerminal(s.state) }),
              reportingEnd(ctx, job.id, "table", () => last),
              Effect.withSpan("offpeak.batch.poll", Telemetry.batchSpan(job))
            )
            if (last !== undefined) yield* Effect.annotateCurrentSpan(Telemetry.statusAttributes(last))
            yield* ledger.updateBatch(job.id, { state: "ended", ended: true })
            state = "ended"
          }
        }).pipe(Semaphore.withPermits(ctx.locks.slots, 1))
        if (state !== "ended" || remote === undefined) return
        const final = last ?? (yield* retrying(provider.status(remote)))
        // a job that failed as a whole (no output) is sent again over the same rows, as long as attempts are left
        const tally = final.state === "failed"
          ? { succeeded: 0, failed: staged.rows }
          : yield* orFail(pushdown.tally(staged)).pipe(Effect.withSpan("offpeak.batch.collect", Telemetry.batchSpan(job)))
        if (final.state !== "failed") {
          yield* orFail(pushdown.land(staged, { runId, batchId: job.id })).pipe(Effect.withSpan("offpeak.part.deliver", Telemetry.batchSpan(job)))
          yield* Failpoint.hit("part.written")
          ctx.emit({ _tag: "PartWritten", seq: job.seq, delivered: tally.succeeded, dead: 0, refused: 0 })
        }
        const counts = { id: job.id, completed: tally.succeeded, failed: tally.failed }
        if (tally.failed > 0 && job.seq < maxAttempts && !cancelling) {
          const why = final.state === "failed"
            ? `job ${remote.id} failed (${Retry.summaryOf(final.issues)}): sent again`
            : `${tally.failed} rows failed in job ${remote.id}: sent again as a job of their own`
          yield* Effect.logWarning(why)
          ctx.emit({ _tag: "RetryRound", round: job.seq, requests: tally.failed, waitMs: 0 })
          const next = yield* orFail(pushdown.stage({
            runId,
            batchId: jobId(job.seq + 1),
            ...(final.state === "failed" ? (job.seq > 1 ? { retryOf: previousOf(job.seq) } : {}) : { retryOf: staged })
          }))
          yield* seal(job.seq + 1, next, counts)
          return
        }
        // the rows no attempt is left for go to the dead letter with the provider's reason (parts numbered per job)
        if (tally.failed > 0 && final.state !== "failed") {
          yield* Effect.scoped(
            Effect.gen(function*() {
              let part = 0
              yield* pushdown.failures(staged).pipe(
                Stream.map((f): Result.Failed<Rec> => ({
                  _tag: "Failed",
                  key: f.key,
                  record: undefined,
                  kind: "provider_error",
                  message: f.message,
                  raw: f.raw,
                  position: 0
                })),
                Stream.grouped(DEAD_CHUNK),
                Stream.runForEach((rows) =>
                  ctx.deadLetter.write({ runId, seq: job.seq * 1_000_000 + ++part }, rows).pipe(
                    Effect.mapError((e) => fail(`dead letter: ${e.message}`))
                  )
                ),
                orFail
              )
            })
          )
          ctx.emit({ _tag: "PartWritten", seq: job.seq, delivered: 0, dead: tally.failed, refused: 0 })
        }
        if (final.state === "failed") {
          return yield* fail(`job ${remote.id} failed (${Retry.summaryOf(final.issues)}) and no attempt is left`)
        }
        yield* orFail(ledger.updateBatch(job.id, { state: "collected", completed: tally.succeeded, failed: tally.failed }))
        yield* Failpoint.hit("batch.collected")
      }).pipe(
        Effect.mapError((e) => e._tag === "RunError" ? e : fail(`job ${job.id}: ${e.message}`)),
        Effect.withSpan("offpeak.batch", Telemetry.batchSpan(job, { provider: provider.name, full: true }))
      )

    /** the staged tables of an earlier job (a job failed as a whole is sent again over the same rows) */
    let jobs: ReadonlyArray<Ledger.Batch> = []
    const previousOf = (seq: number): Source.Staged => {
      const before = jobs.find((b) => b.seq === seq - 1)
      return decodeStaged(before?.spec ?? "")
    }

    ctx.emit({
      _tag: "RunStarted",
      runId,
      pipeline: ctx.pipeline.name,
      mode: ctx.run.mode,
      resumed: ctx.options.resume !== undefined,
      delivered: 0,
      dead: 0,
      openBatches: 0
    })
    let sized = false
    while (true) {
      jobs = yield* orFail(ledger.batches(runId))
      if (!sized && jobs.length > 0) {
        // the first job holds every row of the run: the size of the source, for a progress bar
        ctx.emit({ _tag: "SourceSized", rows: jobs[0]!.requestCount })
        sized = true
      }
      const open = jobs.filter((b) => b.state !== "collected")
      if (open.length === 0 && jobs.length > 0) break
      if (jobs.length === 0) {
        if (cancelling) break
        yield* seal(1, yield* orFail(pushdown.stage({ runId, batchId: jobId(1) })))
        continue
      }
      yield* drive(open[0]!)
      if (cancelling) break
    }

    jobs = yield* orFail(ledger.batches(runId))
    const rows = jobs[0]?.requestCount ?? 0
    const succeeded = jobs.reduce((sum, b) => sum + (b.state === "collected" ? b.completed : 0), 0)
    const lastJob = jobs.at(-1)
    const dead = lastJob !== undefined && lastJob.state === "collected" ? lastJob.failed : 0
    const pending = rows - succeeded - dead
    const state: Run.State = cancelling ? "cancelled" : pending === 0 ? "completed" : "failed"
    if (state === "completed") yield* Delivery.make(ctx).finish
    yield* orFail(ledger.updateRun(runId, { state, message: pending === 0 ? null : `${pending} rows were not delivered` }))
    return { state, message: pending === 0 ? null : `${pending} rows were not delivered`, rows, succeeded, failed: dead, pending, batches: jobs.length } satisfies Outcome
  })
