/**
 * Outcomes: an ended batch's result lines become recorded answers. Lines are parsed (joined by custom id to the
 * batch's requests still waiting for one; a line seen before a crash changes nothing) while the ledger records the
 * ones before, each record transaction taking every outcome parsed meanwhile; rows go out in whole parts as their
 * requests settle. A request with no line in a terminal batch is failed `lost`/`expired`/`cancelled` (retryable); a
 * retryable failure goes back to the queue until its last attempt.
 *
 * @internal
 */
import { Cause, Effect, Fiber, Option, Pull, Queue, Result as R, Semaphore, Stream } from "effect"
import * as Failpoint from "../../Failpoint.ts"
import type * as Ledger from "../../Ledger.ts"
import type * as Provider from "../../Provider.ts"
import * as Prices from "../../Prices.ts"
import * as ProviderError from "../../ProviderError.ts"
import type * as Result from "../../Result.ts"
import type { RunError } from "../../Run.ts"
import type * as RunEvent from "../../RunEvent.ts"
import type { Context } from "./context.ts"
import * as Files from "./files.ts"
import * as Retry from "./retry.ts"

/** result lines parsed between two yields to the event loop (a few ms of work) */
const PARSE_CHUNK = 256
/** outcomes recorded in one ledger transaction at most */
const RECORD_MAX = 5_000
/** parsed outcomes waiting for the ledger hold about this much at most (their stored text plus the objects around it) */
const RECORD_BYTES = 8 * 1024 * 1024

/** parsed outcomes on their way to the ledger, with the bytes they count for */
interface Parsed {
  readonly outcomes: ReadonlyArray<Ledger.Outcome>
  readonly weight: number
}

/** about what an outcome holds in memory */
const outcomeBytes = (o: Ledger.Outcome): number =>
  256 + (o._tag === "Succeeded" ? o.output.length : o.failure.message.length + (o.failure.raw?.length ?? 0))

const message = (u: unknown) => u instanceof Error ? u.message : String(u)

/** the `Answered` event of outcomes just recorded: how many, their tokens and what they cost */
export const answered = (batchId: string, outcomes: ReadonlyArray<Ledger.Outcome>): RunEvent.Answered => {
  const event = { succeeded: 0, failed: 0, inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, spent: 0n, sync: 0n }
  for (const o of outcomes) {
    if (o._tag === "Succeeded") {
      event.succeeded++
      event.inputTokens += o.usage.inputTokens
      event.outputTokens += o.usage.outputTokens
      event.cachedInputTokens += o.usage.cachedInputTokens ?? 0
    } else {
      event.failed++
    }
    event.spent += o.cost?.spent ?? 0n
    event.sync += o.cost?.sync ?? 0n
  }
  const { spent, sync, ...counts } = event
  return { _tag: "Answered", batchId, ...counts, spentUsd: Prices.toUsd(spent), syncEquivalentUsd: Prices.toUsd(sync) }
}

/** outcomes for one run */
export const make = <Rec, A, Row>(
  ctx: Context<Rec, A, Row>,
  requestsOf: (batch: Ledger.Batch) => Effect.Effect<Map<string, number>, Ledger.LedgerError>,
  deliverParts: (whole: boolean) => Effect.Effect<void, RunError>
) => {
  const { runId, ledger, provider, cancelling, stats, retrying, fail } = ctx
  const { maxAttempts, retryTruncated, decodeAttempts } = ctx.limits
  const { outputSpec, encodeOutput } = ctx.codecs

  /** an answer of `batch`'s, with what it cost (its model at the batch's price) */
  const toOutcome = (line: Provider.LineResult, request: number, batch: Ledger.Batch): Ledger.Outcome => {
    const costOf = (usage: Result.Usage) => ctx.price(usage, batch.model, batch.mode === "sync" ? "sync" : "batch")
    if (line._tag === "LineFailed") {
      return {
        _tag: "Failed",
        request,
        failure: { kind: line.kind, message: line.message, raw: line.raw },
        retryable: line.retryable && !cancelling
      }
    }
    const response = line.response
    if (response._tag === "EmbeddingResponse") {
      const v = response.vector
      stats.outputBytes += v.byteLength
      stats.outputs++
      return {
        _tag: "Succeeded",
        request,
        output: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64"),
        format: "f32",
        usage: response.usage,
        cost: costOf(response.usage)
      }
    }
    if (response.finishReason === "length" || response.finishReason === "content_filter") {
      return {
        _tag: "Failed",
        request,
        failure: {
          kind: "truncated",
          message: response.finishReason === "length"
            ? "the answer stopped at the token limit (finish reason: length)"
            : "the answer was stopped by a content filter",
          raw: response.text
        },
        retryable: retryTruncated,
        cost: costOf(response.usage)
      }
    }
    if (outputSpec === undefined || encodeOutput === undefined) {
      return {
        _tag: "Succeeded",
        request,
        output: JSON.stringify(response.text),
        usage: response.usage,
        cost: costOf(response.usage)
      }
    }
    const decoded = provider.decodeOutput(outputSpec, response.text)
    if (R.isFailure(decoded)) {
      return {
        _tag: "Failed",
        request,
        failure: { kind: "decode_error", message: decoded.failure, raw: response.text },
        retryable: decodeAttempts > 1,
        maxAttempts: decodeAttempts,
        cost: costOf(response.usage)
      }
    }
    try {
      return {
        _tag: "Succeeded",
        request,
        output: JSON.stringify(encodeOutput(decoded.success as A)),
        usage: response.usage,
        cost: costOf(response.usage)
      }
    } catch (e) {
      return {
        _tag: "Failed",
        request,
        failure: { kind: "decode_error", message: message(e), raw: response.text },
        retryable: false,
        cost: costOf(response.usage)
      }
    }
  }

  /**
   * Records every request of an ended batch. A batch that failed over the provider's enqueued-token limit records
   * nothing: the reason comes back, and the batch is split (smaller batches, a little later).
   */
  const collect = (
    batch: Ledger.Batch,
    remote: Provider.RemoteBatch,
    status: Provider.Status
  ): Effect.Effect<Option.Option<string>, RunError | Ledger.LedgerError | ProviderError.ProviderError> =>
    Effect.gen(function*() {
      if (status.state === "failed") {
        const withLine = status.issues.filter((i) => i.line !== undefined)
        if (withLine.length === 0 && status.issues.some(Retry.isTokenLimit)) {
          return Option.some(Retry.summaryOf(status.issues))
        }
        const items = withLine.length === 0 ? [] : yield* Files.read(fail)(batch.file)
        const bad = new Map<string, Provider.Issue>()
        for (const issue of withLine) {
          const id = items[issue.line! - 1]?.id
          if (id !== undefined && !bad.has(id)) bad.set(id, issue)
        }
        const summary = Retry.summaryOf(status.issues)
        const unsettled = yield* ledger.unsettled(runId, batch.id)
        yield* ledger.recordOutcomes(
          runId,
          batch.id,
          unsettled.map(({ fingerprint, id: request }): Ledger.Outcome => {
            const issue = bad.get(fingerprint)
            return issue !== undefined
              ? {
                _tag: "Failed",
                request,
                failure: { kind: "provider_error", message: `rejected by ${provider.name} batch validation: ${issue.code}: ${issue.message}` },
                retryable: false
              }
              : {
                _tag: "Failed",
                request,
                failure: { kind: "provider_error", message: `batch ${remote.id} failed validation (${summary})` },
                retryable: true
              }
          }),
          maxAttempts
        )
        return Option.none()
      }
      // the batch's requests still waiting for a line, read while the download starts: a line for anything else
      // (seen before a crash) is skipped
      const waiting = yield* Effect.forkChild(requestsOf(batch))
      const asProviderError = (e: Ledger.LedgerError) =>
        new ProviderError.ProviderError({
          provider: provider.name,
          operation: "results",
          reason: new ProviderError.Protocol({ message: `ledger: ${e.message}` })
        })
      // rows go to the sinks in whole parts while later lines are still being recorded (woken after each record)
      const recorded = yield* Queue.sliding<void, Cause.Done>(1)
      // requests whose answer was counted (`Answered`): a download started again after a reset sends lines again
      let results = 0
      const counted = new Set<number>()
      const delivering = Stream.fromQueue(recorded).pipe(Stream.runForEach(() => deliverParts(true)))
      // lines are parsed while the ledger records; each transaction takes every outcome parsed meanwhile (up to
      // RECORD_MAX), so transactions stay small while the ledger keeps up and grow when it is the slower side
      const parseAndRecord = Effect.gen(function*() {
        const parsed = yield* Queue.unbounded<Parsed, ProviderError.ProviderError | Cause.Done>()
        // parsed outcomes not yet recorded hold at most RECORD_BYTES (a chunk bigger than that alone waits for none)
        const room = yield* Semaphore.make(RECORD_BYTES)
        const parsing = provider.results(remote, status).pipe(
          // lines in groups (a provider's stream may hand them over one at a time)
          Stream.rechunk(PARSE_CHUNK),
          Stream.chunks,
          Stream.runForEach((lines) =>
            Effect.gen(function*() {
              const requests = yield* Fiber.join(waiting).pipe(Effect.mapError(asProviderError))
              const outcomes: Array<Ledger.Outcome> = []
              let bytes = 0
              for (const line of lines) {
                const request = requests.get(line.id)
                if (request === undefined) continue
                const outcome = toOutcome(line, request, batch)
                outcomes.push(outcome)
                bytes += outcomeBytes(outcome)
              }
              if (outcomes.length > 0) {
                const weight = Math.min(bytes, RECORD_BYTES)
                yield* Semaphore.take(room, weight)
                yield* Queue.offer(parsed, { outcomes, weight })
              }
              // between two groups the ledger thread's answers get in, so it never waits on a long parse
              yield* Effect.yieldNow
            })
          ),
          Effect.andThen(Queue.end(parsed)),
          Effect.catch((e) => Queue.fail(parsed, e))
        )
        const recording = Effect.gen(function*() {
          while (true) {
            const taken = yield* Queue.takeAll(parsed)
            const outcomes = taken.flatMap((p) => p.outcomes)
            for (let i = 0; i < outcomes.length; i += RECORD_MAX) {
              const slice = outcomes.slice(i, i + RECORD_MAX)
              yield* ledger.recordOutcomes(runId, batch.id, slice, maxAttempts).pipe(
                Effect.mapError(asProviderError)
              )
              yield* Failpoint.hit("results.recorded")
              const fresh = slice.filter((o) => !counted.has(o.request) && counted.add(o.request) !== undefined)
              results += fresh.length
              ctx.emit(answered(batch.id, fresh))
              yield* Queue.offer(recorded, undefined)
            }
            yield* Semaphore.release(room, taken.reduce((sum, p) => sum + p.weight, 0))
          }
        }).pipe(Pull.catchDone(() => Effect.void))
        yield* Effect.all([parsing, recording], { concurrency: 2, discard: true })
      })
      const recording = ProviderError.retryNotFound(retrying(parseAndRecord), { since: Date.now(), grace: Retry.NOT_FOUND_GRACE }).pipe(Effect.ensuring(Queue.end(recorded)))
      yield* Effect.all([recording, delivering], { concurrency: 2, discard: true })
      // "completed" is never trusted on its own: every request must have had a line
      const missing = yield* ledger.unsettled(runId, batch.id)
      yield* Effect.annotateCurrentSpan({ "offpeak.batch.results": results, "offpeak.batch.missing": missing.length })
      if (missing.length > 0) {
        const kind: Result.FailureKind = status.state === "expired"
          ? "expired"
          : status.state === "cancelled"
          ? "cancelled"
          : "lost"
        yield* ledger.recordOutcomes(
          runId,
          batch.id,
          missing.map(({ id: request }): Ledger.Outcome => ({
            _tag: "Failed",
            request,
            failure: {
              kind,
              message: `batch ${remote.id} ended ${status.providerState} without a result line for this request`
            },
            retryable: !cancelling
          })),
          maxAttempts
        )
      }
      return Option.none()
    }).pipe(
      Effect.withSpan("offpeak.batch.collect", {
        attributes: { "offpeak.batch.id": batch.id, "offpeak.batch.remote_id": remote.id, "offpeak.batch.provider_state": status.providerState }
      })
    )

  return { toOutcome, collect }
}
