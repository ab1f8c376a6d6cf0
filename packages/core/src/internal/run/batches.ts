/**
 * Batches: requests are grouped by the Batcher and sealed (the file on disk before the ledger knows the batch), then
 * each batch is driven from whatever state the ledger has it in — created once (one create of a run in an unknown
 * state at a time; after a crash the provider's `find` adopts the batch it has), polled while it holds one of the
 * run's slots, its results collected, and split in two when the provider refuses it as too large. A `sync` batch goes
 * to the synchronous API instead. At most `maxInFlight` batches are at the provider, as many again being collected.
 *
 * @internal
 */
import { Effect, Function, Option, Predicate, Semaphore, Stream } from "effect"
import * as Batcher from "../../Batcher.ts"
import * as Failpoint from "../../Failpoint.ts"
import type * as Ledger from "../../Ledger.ts"
import * as Provider from "../../Provider.ts"
import * as ProviderError from "../../ProviderError.ts"
import type { RunError } from "../../Run.ts"
import * as Memory from "../memory.ts"
import * as Telemetry from "../telemetry.ts"
import type { Context } from "./context.ts"
import { orFail as orFailOf, reportingEnd } from "./context.ts"
import * as Files from "./files.ts"
import type * as Lifecycle from "./lifecycle.ts"
import type * as Outcomes from "./outcomes.ts"
import * as Retry from "./retry.ts"
import type * as Sync from "./sync.ts"

/** queued requests cancelled at once */
const QUEUE_PAGE = 2_000

/** batches for one run */
export const make = <Rec, A, Row>(
  ctx: Context<Rec, A, Row>,
  lifecycle: ReturnType<typeof Lifecycle.make>,
  outcomes: ReturnType<typeof Outcomes.make>,
  sync: ReturnType<typeof Sync.make>,
  delivery: { readonly deliverParts: (whole: boolean) => Effect.Effect<void, RunError>; readonly deliver: Effect.Effect<void, RunError> }
) => {
  const { runId, run, ledger, provider, cancelling, retrying, fail, renewLease } = ctx
  const { maxRequests, maxBytes, maxInFlight, flushAfter, maxAttempts, backoff, syncBelow } = ctx.limits
  const { newBatch, requestsOf, cancelUnsent, markCollected } = lifecycle
  const { deliverParts, deliver } = delivery
  const nextSeq = ctx.nextSeq
  const orFail = orFailOf(ctx)

  /** how a batch of `count` requests goes out, by the run's mode (fixed when it is sealed, so a resume keeps it) */
  const batchMode = (count: number): Ledger.Batch["mode"] =>
    run.mode === "sync" || (run.mode === "auto" && count < syncBelow) || ctx.pastSwitch() ? "sync" : "batch"

  /** the batch each group is forming: its number, its requests and its worst case so far, its files being written */
  interface Forming {
    readonly seq: number
    readonly files: Files.Forming
    readonly requests: Array<number>
    readonly model: string | null
    worst: bigint | null
  }
  const forming = new Map<string, Forming>()

  /**
   * Forms and seals batches from the Batcher's outputs: an `Append`'s lines go to the group's batch file at once (no
   * batch is held in memory), a `Close` seals it — its files whole on disk, then the ledger's record of it.
   */
  const seal = (out: Batcher.Output) =>
    Effect.gen(function*() {
      if (out._tag === "TooLarge") {
        yield* ledger.failQueued(runId, [out.item.request], { kind: "invalid_input", message: out.message })
        yield* deliverParts(true)
        return Option.none<Ledger.Batch>()
      }
      if (out._tag === "Append") {
        let f = forming.get(out.group)
        if (f === undefined) {
          const seq = nextSeq()
          const model = out.items[0]?.model ?? null
          // opened and registered in one step: an interruption in between would leave open files no one discards
          f = yield* Effect.uninterruptible(Effect.map(Files.open(fail)(lifecycle.batchFile(seq).file), (files) => {
            const opened: Forming = { seq, files, requests: [], model, worst: 0n }
            forming.set(out.group, opened)
            return opened
          }))
        }
        for (const item of out.items) {
          f.requests.push(item.request)
          if (f.worst !== null) f.worst = item.worst === undefined ? null : f.worst + item.worst
        }
        yield* f.files.append(out.items)
        return Option.none<Ledger.Batch>()
      }
      const f = forming.get(out.group)
      if (f === undefined) return yield* Effect.die(new Error(`Batcher closed a batch of ${out.group} it never opened`))
      const batch = newBatch(f.seq, out.group, out, batchMode(out.requests), { model: f.model, worst: f.worst })
      // sealed, then forgotten: until its files are whole, an interruption discards them
      yield* f.files.seal
      forming.delete(out.group)
      yield* ledger.sealBatch(batch, f.requests)
      yield* Failpoint.hit("batch.sealed")
      ctx.emit({ _tag: "BatchSealed", batchId: batch.id, requests: batch.requestCount, bytes: batch.bytes, mode: batch.mode })
      return Option.some(batch)
    }).pipe(orFail)

  /**
   * Splits a batch the provider refused as too large (or over its enqueued-token limit) into two halves,
   * sealed in one ledger transaction; a batch of one request fails that request instead.
   */
  const split = (batch: Ledger.Batch, why: string) =>
    Effect.gen(function*() {
      const items = yield* Files.read(fail)(batch.file)
      const requests = yield* requestsOf(batch)
      if (items.length <= 1) {
        yield* ledger.recordOutcomes(runId, batch.id, items.map((item): Ledger.Outcome => ({
          _tag: "Failed",
          request: requests.get(item.id) ?? -1,
          failure: { kind: "provider_error", message: `${provider.name} refused this request on its own: ${why}` },
          retryable: false
        })), maxAttempts)
        yield* ledger.updateBatch(batch.id, { state: "collected", remoteState: batch.remoteState ?? "refused" })
        yield* Files.remove(batch.file)
        return []
      }
      const half = Math.ceil(items.length / 2)
      const halves = [items.slice(0, half), items.slice(half)].map((part) => ({
        // each half reserves its parent's worst case (they go out one after the other)
        batch: newBatch(
          nextSeq(),
          batch.group,
          { requests: part.length, bytes: part.reduce((sum, item) => sum + Provider.lineBytes(item.line), 0) },
          batch.mode,
          { model: batch.model, worst: batch.worst }
        ),
        items: part
      }))
      for (const h of halves) yield* Files.write(fail)(h.batch.file, h.items)
      yield* ledger.splitBatch(
        batch.id,
        halves.map((h) => ({ batch: h.batch, requests: h.items.map((i) => requests.get(i.id) ?? -1) }))
      )
      yield* Files.remove(batch.file)
      ctx.emit({ _tag: "BatchSplit", batchId: batch.id, into: [half, items.length - half], reason: why })
      return halves.map((h) => h.batch)
    }).pipe(orFail)

  const drive = (batch: Ledger.Batch): Effect.Effect<void, RunError> =>
    Effect.gen(function*() {
      if (batch.mode === "sync") return yield* sync.send(batch)
      if (batch.state === "sealed" && ctx.pastSwitch()) {
        // past the deadline's switch: a batch not sent yet goes through the synchronous API
        yield* ledger.updateBatch(batch.id, { mode: "sync" })
        return yield* sync.send({ ...batch, mode: "sync" })
      }
      const submission: Provider.Lines = {
        _tag: "Lines",
        batchId: batch.id,
        runId,
        sealedAt: Date.parse(batch.createdAt),
        group: batch.group,
        path: batch.file,
        count: batch.requestCount,
        bytes: batch.bytes
      }
      /** `switched`: the deadline's switch came while the batch waited to be sent; it goes through the synchronous API */
      let state = batch.state as Ledger.Batch["state"] | "switched"
      let remote: Provider.RemoteBatch | undefined = batch.remoteId === null
        ? undefined
        : { id: batch.remoteId, meta: batch.remoteMeta ?? undefined }

      let submittedAt = batch.submittedAt === null ? Date.now() : Date.parse(batch.submittedAt)
      const markSubmitted = (found: Provider.RemoteBatch) =>
        Effect.gen(function*() {
          remote = found
          submittedAt = Date.now()
          yield* ledger.updateBatch(batch.id, { state: "submitted", remoteId: found.id, remoteMeta: found.meta, submitted: true })
          yield* Failpoint.hit("batch.submitted")
          state = "submitted"
          yield* Effect.annotateCurrentSpan("offpeak.batch.remote_id", found.id)
          ctx.emit({ _tag: "BatchSubmitted", batchId: batch.id, remoteId: found.id, requests: batch.requestCount, mode: "batch" })
        })

      let halves: ReadonlyArray<Ledger.Batch> = []
      let status: Provider.Status | undefined
      /** a step that may meet the provider's "too large": the batch is split in two instead, and is done */
      const orSplit = <X>(effect: Effect.Effect<X, ProviderError.ProviderError>) =>
        effect.pipe(
          Effect.map(Option.some),
          Effect.catchIf(Retry.isTooLarge, (error) => split(batch, error.reason.message).pipe(
            Effect.tap((parts) => Effect.sync(() => {
              halves = parts
              state = "collected"
            })),
            Effect.as(Option.none<X>())
          ))
        )
      let reserved = false
      /** a sealed batch is not sent once the run is cancelled, nor over the budget */
      const mayCreate = Effect.gen(function*() {
        if (state === "sealed" && cancelling) {
          yield* cancelUnsent(batch)
          state = "ended"
        }
        // checked here, in its slot and under the create lock, not only when the batch was sealed: it may have waited
        // for a slot past the switch, and a batch created then is cancelled at once while its rows go synchronously
        if (state === "sealed" && ctx.pastSwitch()) state = "switched"
        if (state === "sealed" && !reserved) {
          if (yield* lifecycle.reserve(batch)) reserved = true
          else state = "collected"
        }
      })
      let uploaded: string | undefined
      // a slot is held from create to the provider's last word; collecting and delivering happen outside it
      yield* Effect.gen(function*() {
        if (state === "sealed" && provider.upload !== undefined) {
          // its file uploaded before the create lock: files upload side by side, creates go one at a time
          yield* mayCreate
          if (state === "sealed") {
            const upload = provider.upload
            uploaded = Option.getOrUndefined(
              yield* orSplit(retrying(upload(submission))).pipe(Effect.withSpan("offpeak.batch.upload", Telemetry.batchSpan(batch)))
            )
          }
        }
        yield* Effect.gen(function*() {
        if (state === "submitting") {
          // a crash between create and the ledger write: adopt the batch the provider already has
          const found = yield* retrying(provider.find(submission))
          if (Option.isSome(found)) yield* markSubmitted(found.value)
          else state = "sealed"
        }
        yield* mayCreate
        if (state === "sealed") {
          yield* renewLease
          yield* ledger.updateBatch(batch.id, { state: "submitting" })
          const created = yield* orSplit(ctx.createOnce(uploaded === undefined ? submission : { ...submission, uploaded }))
          if (Option.isSome(created)) {
            yield* Failpoint.hit("batch.created")
            yield* markSubmitted(created.value)
          }
        }
        }).pipe(
          state === "sealed" || state === "submitting" ? Effect.withSpan("offpeak.batch.submit", Telemetry.batchSpan(batch)) : Function.identity,
          Semaphore.withPermits(ctx.locks.creating, 1)
        )
        if (remote !== undefined) yield* Effect.annotateCurrentSpan("offpeak.batch.remote_id", remote.id)
        if (state === "submitted" && cancelling) {
          // ask the provider to stop; a batch that already ended refuses (a 4xx), which is fine and not worth a warning
          yield* retrying(provider.cancel(remote!)).pipe(
            Effect.catch((error) =>
              error.reason._tag === "Rejected"
                ? Effect.logDebug(`cancel ${remote!.id}: ${error.message}`)
                : Effect.logWarning(`cancel ${remote!.id}: ${error.message}`)
            )
          )
        }
        if (state === "submitted") {
          ctx.emit({ _tag: "BatchWatched", batchId: batch.id, mode: "batch" })
          let last: Provider.Status | undefined
          let polls = 0
          let cancelAsked = false
          const pollOnce = Effect.gen(function*() {
            const status = yield* ProviderError.retryNotFound(retrying(provider.status(remote!)), { since: submittedAt, grace: Retry.NOT_FOUND_GRACE })
            yield* Failpoint.hit("batch.polled")
            ctx.emit({
              _tag: "BatchProgress",
              batchId: batch.id,
              done: status.counts.completed + status.counts.failed,
              total: status.counts.total,
              providerState: status.providerState
            })
            const previous = last
            last = status
            yield* Effect.annotateCurrentSpan({ "offpeak.batch.polls": ++polls, ...Telemetry.statusAttributes(status) })
            // written when it changed (a batch often reads the same while it validates or finalizes)
            if (
              previous?.providerState !== status.providerState || previous.counts.completed !== status.counts.completed ||
              previous.counts.failed !== status.counts.failed
            ) {
              yield* ledger.updateBatch(batch.id, {
                remoteState: status.providerState,
                completed: status.counts.completed,
                failed: status.counts.failed
              })
            }
            if (!Provider.isTerminal(status.state) && ctx.pastSwitch() && !cancelAsked) {
              // the deadline nears: the provider stops the batch; the answers it has are collected, the rest go
              // synchronously (a cancelled line is not paid)
              cancelAsked = true
              yield* Effect.logWarning(`batch ${batch.id}: the deadline nears, cancelling it at ${provider.name}`)
              yield* retrying(provider.cancel(remote!)).pipe(
                Effect.catch((error) => Effect.logWarning(`cancel ${remote!.id}: ${error.message}`))
              )
            }
            return status
          })
          yield* pollOnce.pipe(
            Effect.repeat({ schedule: provider.pollSchedule, until: (s) => Provider.isTerminal(s.state) }),
            reportingEnd(ctx, batch.id, "batch", () => last),
            Effect.withSpan("offpeak.batch.poll", Telemetry.batchSpan(batch))
          )
          status = last!
          yield* Effect.annotateCurrentSpan(Telemetry.statusAttributes(status))
          yield* ledger.updateBatch(batch.id, { state: "ended", ended: true })
          state = "ended"
        }
      }).pipe(Semaphore.withPermits(ctx.locks.slots, 1))
      if (state === "switched") {
        yield* ledger.updateBatch(batch.id, { mode: "sync" })
        return yield* sync.send({ ...batch, mode: "sync" })
      }
      if (state === "ended" && remote !== undefined) {
        const final = status ??
          (yield* ProviderError.retryNotFound(retrying(provider.status(remote)), { since: submittedAt, grace: Retry.NOT_FOUND_GRACE }))
        // one batch's results at a time: recording them is the ledger's work anyway, and memory holds one stream
        const tooMuch = yield* Semaphore.withPermits(ctx.locks.collecting, 1)(outcomes.collect(batch, remote, final))
        if (Option.isSome(tooMuch)) {
          // over the provider's enqueued-token limit: smaller batches, a little later
          yield* Effect.sleep(backoff)
          halves = yield* split(batch, tooMuch.value)
        }
      }
      if (cancelling && halves.length > 0) {
        // halves of a split batch are not sent once the run is cancelled
        for (const half of halves) yield* drive(half)
        halves = []
      }
      if (halves.length === 0 && state !== "collected") yield* markCollected(batch)
      yield* deliver
      Memory.compact()
      // the halves of a split batch go out one after the other, each in a slot of its own
      for (const half of halves) yield* drive(half)
    }).pipe(
      Effect.mapError((e) => e._tag === "RunError" ? e : fail(`batch ${batch.id}: ${e.message}`)),
      Effect.withSpan("offpeak.batch", Telemetry.batchSpan(batch, { provider: provider.name, full: true }))
    )

  // at most maxInFlight batches at the provider (the slots), and as many again being collected and delivered, so
  // the source is read on while finished batches are collected, and no further ahead than that
  const inFlight = (batches: Stream.Stream<Ledger.Batch, RunError>) =>
    batches.pipe(Stream.mapEffect(drive, { concurrency: 2 * maxInFlight, unordered: true }), Stream.runDrain)

  const sealed = (items: Stream.Stream<Batcher.Item, RunError>): Stream.Stream<Ledger.Batch, RunError> =>
    items.pipe(
      Batcher.batches({ maxRequests, maxBytes, maxRequestBytes: provider.limits.maxRequestBytes, flushAfter }),
      Stream.mapEffect(seal),
      Stream.map(Option.getOrUndefined),
      Stream.filter(Predicate.isNotUndefined),
      // a batch still forming when the run stops (interrupted, failed) leaves no file behind
      Stream.ensuring(Effect.suspend(() => {
        const open = [...forming.values()]
        forming.clear()
        return Effect.forEach(open, (f) => f.files.discard, { discard: true })
      })),
      // the next batch is sealed (on disk, not sent) while the slots are busy, so a freed slot is refilled at once
      Stream.buffer({ capacity: 1 })
    )

  const cancelQueued = Effect.gen(function*() {
    while (true) {
      const page = yield* ledger.queued(runId, { after: 0, limit: QUEUE_PAGE })
      if (page.length === 0) return
      yield* ledger.failQueued(runId, page.map((q) => q.id), {
        kind: "cancelled",
        message: "the run was cancelled before this request was sent"
      })
    }
  }).pipe(Effect.mapError((e) => fail(e.message)))

  return { inFlight, sealed, cancelQueued }
}
