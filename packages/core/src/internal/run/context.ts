/**
 * A run's context: everything its stages share, as one value built when the run starts and passed to each stage
 * (admission, batches, outcomes, delivery) — the run and its pipeline, the provider and the ledger, limits, codecs,
 * the locks that bound what is in flight, how provider calls are retried, and `emit`, through which every stage reports
 * what it did (`RunEvent`); nothing else is shared between stages.
 *
 * @internal
 */
import { Cause, Duration, Effect, Exit, Option, Result as R, Schema, Semaphore } from "effect"
import * as path from "node:path"
import type * as Ledger from "../../Ledger.ts"
import * as PartFiles from "../../PartFiles.ts"
import type * as Pipeline from "../../Pipeline.ts"
import * as Prices from "../../Prices.ts"
import * as Progress from "../../Progress.ts"
import type * as Provider from "../../Provider.ts"
import * as ProviderError from "../../ProviderError.ts"
import * as Request from "../../Request.ts"
import type * as Result from "../../Result.ts"
import { RunError } from "../../Run.ts"
import type * as RunEvent from "../../RunEvent.ts"
import type * as Sink from "../../Sink.ts"
import * as Tokens from "../../Tokens.ts"
import * as Retry from "./retry.ts"

/** a pipeline's limits, each capped by the provider's own */
export interface Limits {
  readonly maxRequests: number
  readonly maxBytes: number
  readonly maxInFlight: number
  /** one encoded request at most */
  readonly maxLineBytes: number
  readonly flushAfter: Duration.Input
  readonly maxAttempts: number
  readonly retryTruncated: boolean
  readonly decodeAttempts: number
  /** pause before the first retry round, doubling each round */
  readonly backoff: Duration.Duration
  readonly syncBelow: number
}

/** how records and outputs are stored in the ledger and read back */
export interface Codecs<Rec, A> {
  readonly encodeRecord: (record: Rec) => unknown
  readonly decodeRecord: (json: unknown) => Rec
  readonly outputSpec: Request.Output | undefined
  readonly encodeOutput: ((output: A) => unknown) | undefined
  readonly decodeOutput: ((json: unknown) => A) | undefined
  /** the request of a record, with the pipeline's output schema */
  readonly render: (record: Rec) => Request.Request
}

/** the context of one run (see the module) */
export interface Context<Rec, A, Row> {
  readonly runId: string
  readonly run: Ledger.Run
  readonly pipeline: Pipeline.Pipeline<Rec, A, Row>
  readonly options: Pipeline.RunOptions
  readonly provider: Provider.Service
  readonly ledger: Ledger.Service
  /** `.offpeak/runs/<run>` and its `batches/` */
  readonly runDir: string
  readonly batchDir: string
  readonly deadLetter: Sink.Sink<Result.Failed<Rec>>
  /** the run is being cancelled: nothing more is sent */
  readonly cancelling: boolean
  readonly limits: Limits
  readonly codecs: Codecs<Rec, A>
  /** the counters the summary reports (the run's events folded) */
  readonly counters: Progress.Counters
  /** reports what a stage did */
  readonly emit: (event: RunEvent.RunEvent) => void
  readonly fail: (message: string) => RunError
  /** a provider call with its transient errors retried (up to `retry.transientFor`) */
  readonly retrying: <X>(effect: Effect.Effect<X, ProviderError.ProviderError>) => Effect.Effect<X, ProviderError.ProviderError>
  /** the same policy as a schedule, and the error it ends with, for calls that retry in their own way */
  readonly transient: ReturnType<typeof Retry.transientSchedule>
  readonly gaveUp: (error: ProviderError.ProviderError) => ProviderError.ProviderError
  /**
   * Creates the remote batch (or job) once: after a transient error the create may have gone through, so every
   * attempt after the first looks for it (`find`) before sending again.
   */
  readonly createOnce: (submission: Provider.Submission) => Effect.Effect<Provider.RemoteBatch, ProviderError.ProviderError>
  /** renews the run's lease now: a create is sent only by a process that has just proved it owns the run */
  readonly renewLease: Effect.Effect<void, Ledger.LedgerError>
  /** `delivery`: one delivery at a time; `slots`: batches at the provider; `collecting`: one results stream at a time; `creating`: one create in an unknown state */
  readonly locks: {
    readonly delivery: Semaphore.Semaphore
    readonly slots: Semaphore.Semaphore
    readonly collecting: Semaphore.Semaphore
    readonly creating: Semaphore.Semaphore
  }
  /** the outputs seen so far (their stored size), which size delivery parts */
  readonly stats: { outputBytes: number; outputs: number; recordBytes: number; records: number }
  /** the next batch number (from this process alone; sealing and splitting run concurrently) */
  readonly nextSeq: () => number
  /** the run's budget (picodollars), null without one */
  readonly budget: bigint | null
  /**
   * What an answer of `model` cost in `mode`, and would have cost synchronously (picodollars); undefined for a model
   * with no price (it is remembered in `unpriced`)
   */
  readonly price: (usage: Result.Usage, model: string | null, mode: Prices.Mode) => { readonly spent: bigint; readonly sync: bigint } | undefined
  /** the worst case of a request (input tokens + its max output) at `mode`'s price; a failure names the model */
  readonly worstCase: (request: Request.Request, mode: Prices.Mode) => R.Result<bigint, string>
  readonly unpriced: Set<string>
  /** batches the budget refused in this process (nothing more is sent once one is refused) */
  readonly refused: { batches: number; requests: number }
  /** when the run switches from the batch API to synchronous calls (epoch ms: its deadline minus the margin), if ever */
  readonly switchAt: number | null
  /** true once the switch time has come: batches at the provider are cancelled, everything left goes synchronously */
  readonly pastSwitch: () => boolean
}

/** output tokens a request without `maxTokens` reserves */
export const DEFAULT_MAX_TOKENS = 4_096

/** any error of a stage as the run's error (a `RunError` stays as it is) */
export const orFail = <Rec, A, Row>(ctx: Context<Rec, A, Row>) =>
<X, E extends { readonly _tag: string; readonly message: string }, R>(
  effect: Effect.Effect<X, E, R>
): Effect.Effect<X, RunError, R> =>
  Effect.mapError(effect, (e) => e._tag === "RunError" ? e as unknown as RunError : ctx.fail(e.message))

/**
 * A batch's polling that reports its end (`BatchEnded`, with the last status seen) once it stops, unless the process
 * stopped watching it (interrupted: Ctrl-C): then the batch goes on at the provider, still in flight.
 */
export const reportingEnd = <Rec, A, Row>(
  ctx: Context<Rec, A, Row>,
  batchId: string,
  mode: "batch" | "table",
  last: () => Provider.Status | undefined
) =>
<X, E, R>(poll: Effect.Effect<X, E, R>): Effect.Effect<X, E, R> =>
  Effect.onExit(poll, (exit) => {
    if (Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)) return Effect.void
    const status = last()
    return Effect.sync(() =>
      ctx.emit({
        _tag: "BatchEnded",
        batchId,
        mode,
        providerState: status?.providerState ?? "unknown",
        completed: status?.counts.completed ?? 0,
        failed: status?.counts.failed ?? 0
      })
    )
  })

/** builds the context of a run the process owns */
export const make = <Rec, A, Row>(options: {
  readonly run: Ledger.Run
  /** the margin before the run's deadline (see `Pipeline.Config.deadlineMargin`), when it has one */
  readonly deadlineMarginMs?: number | undefined
  readonly pipeline: Pipeline.Pipeline<Rec, A, Row>
  readonly runOptions: Pipeline.RunOptions
  readonly provider: Provider.Service
  readonly ledger: Ledger.Service
  readonly stateDir: string
  readonly renewLease: Effect.Effect<void, Ledger.LedgerError>
}) =>
  Effect.gen(function*() {
    const { run, pipeline, provider, ledger } = options
    const runId = run.id
    const fail = (message: string) => new RunError({ runId, message })
    const runDir = path.join(options.stateDir, "runs", runId)
    const counters = options.runOptions.progress ?? Progress.make(runId)
    counters.runId = runId
    const onEvent = options.runOptions.onEvent
    const emit = (event: RunEvent.RunEvent) => {
      Progress.update(counters, event)
      onEvent?.(event)
    }

    const maxBytes = Math.min(pipeline.batch?.maxBytes ?? provider.limits.maxBytes, provider.limits.maxBytes)
    const maxInFlight = Math.max(1, pipeline.batch?.maxInFlight ?? provider.limits.maxInFlight)
    const limits: Limits = {
      maxRequests: Math.min(pipeline.batch?.maxRequests ?? provider.limits.maxRequests, provider.limits.maxRequests),
      maxBytes,
      maxInFlight,
      maxLineBytes: Math.min(maxBytes, provider.limits.maxRequestBytes),
      flushAfter: pipeline.batch?.flushAfter ?? "30 seconds",
      maxAttempts: Math.max(1, pipeline.retry?.maxAttempts ?? 3),
      retryTruncated: pipeline.retry?.truncated ?? false,
      decodeAttempts: 1 + Math.max(0, pipeline.retry?.decodeErrors ?? 0),
      backoff: Duration.fromInputUnsafe(pipeline.retry?.backoff ?? "1 second"),
      syncBelow: pipeline.batch?.syncBelow ?? 100
    }

    const recordCodec = Schema.toCodecJson(pipeline.source.schema as Schema.Codec<Rec, unknown>)
    const outputSpec: Request.Output | undefined = pipeline.output === undefined
      ? undefined
      : { name: pipeline.outputName ?? "output", schema: pipeline.output as Schema.Codec<unknown, any> }
    const outputCodec = pipeline.output === undefined
      ? undefined
      : Schema.toCodecJson(pipeline.output as Schema.Codec<A, unknown>) as Schema.Codec<A, unknown>
    const requestContext: Pipeline.RequestContext = { provider: provider.name }
    const codecs: Codecs<Rec, A> = {
      encodeRecord: Schema.encodeSync(recordCodec as Schema.Codec<Rec, unknown>),
      decodeRecord: Schema.decodeUnknownSync(recordCodec as Schema.Codec<Rec, unknown>),
      outputSpec,
      encodeOutput: outputCodec === undefined ? undefined : Schema.encodeSync(outputCodec),
      decodeOutput: outputCodec === undefined ? undefined : Schema.decodeUnknownSync(outputCodec),
      render: (record) => Request.withOutput(pipeline.request(record, requestContext), outputSpec)
    }

    const horizon = Duration.fromInputUnsafe(pipeline.retry?.transientFor ?? "6 hours")
    /**
     * Until the provider has answered this process once, a connection that cannot be made is tried for
     * {@link Retry.FIRST_CONTACT} rather than `transientFor`: a wrong base URL or host stops the run in half a minute,
     * saying so, instead of retrying for hours; once it answered, an outage is waited out.
     */
    let answered = false
    const firstCall = Date.now()
    const noted = <X>(effect: Effect.Effect<X, ProviderError.ProviderError>) =>
      effect.pipe(
        Effect.tap(() => Effect.sync(() => (answered = true))),
        Effect.tapError((e) => Effect.sync(() => (answered ||= e.reason._tag !== "Transport")))
      )
    const firstContactBy = firstCall + Duration.toMillis(Retry.FIRST_CONTACT)
    const beforeFirstContact = (e: ProviderError.ProviderError) => !answered && e.reason._tag === "Transport"
    const keepTrying = (e: ProviderError.ProviderError) =>
      ProviderError.isTransient(e) && (!beforeFirstContact(e) || Date.now() < firstContactBy)
    const gaveUp = (e: ProviderError.ProviderError) =>
      beforeFirstContact(e) ? Retry.neverAnswered(e, Date.now() - firstCall) : Retry.gaveUp(horizon)(e)
    const transient = Retry.transientSchedule(horizon, emit, keepTrying, (e) =>
      beforeFirstContact(e) ? firstContactBy : undefined)

    let seq = yield* ledger.nextBatchSeq(runId).pipe(Effect.mapError((e) => fail(e.message)))
    const switchAt = run.deadline === null ? null : run.deadline - (options.deadlineMarginMs ?? 0)

    const unpriced = new Set<string>()
    const overrides = pipeline.prices
    const priceOf = (usage: Result.Usage, model: string, mode: Prices.Mode) =>
      Prices.price(usage, { provider: provider.name, model, mode, overrides })
    const price = (usage: Result.Usage, model: string | null, mode: Prices.Mode) => {
      if (model === null) return undefined
      const spent = priceOf(usage, model, mode)
      const sync = mode === "sync" ? spent : priceOf(usage, model, "sync")
      if (R.isFailure(spent) || R.isFailure(sync)) {
        unpriced.add(model)
        return undefined
      }
      return { spent: spent.success.total, sync: sync.success.total }
    }
    const worstCase = (request: Request.Request, mode: Prices.Mode): R.Result<bigint, string> => {
      const input = Tokens.countRequest(request, provider.name).tokens
      const output = request._tag === "Chat" ? request.params.maxTokens ?? DEFAULT_MAX_TOKENS : 0
      const cost = Prices.worstCase({ inputTokens: input, maxOutputTokens: output }, {
        provider: provider.name,
        model: request.model,
        mode,
        overrides
      })
      return R.isSuccess(cost) ? R.succeed(cost.success.total) : R.fail(`a budget is set, but ${cost.failure.message}`)
    }

    return {
      runId,
      run,
      pipeline,
      options: options.runOptions,
      provider,
      ledger,
      runDir,
      batchDir: path.join(runDir, "batches"),
      deadLetter: pipeline.deadLetter ??
        PartFiles.make<Result.Failed<Rec>>({
          dir: path.join(runDir, "dead-letter"),
          format: { extension: "jsonl", encodeRow: (row) => JSON.stringify(row) + "\n" }
        }),
      // a cancelled run stays cancelled: resuming it finishes the cancellation
      cancelling: options.runOptions.cancel === true || run.state === "cancelled",
      limits,
      codecs,
      counters,
      emit,
      fail,
      retrying: (effect) => Effect.retry(noted(effect), { while: keepTrying, schedule: transient }).pipe(Effect.mapError(gaveUp)),
      transient,
      gaveUp,
      createOnce: (submission) =>
        Effect.suspend(() => {
          let looked = false
          return Effect.suspend(() =>
            looked
              ? Effect.retry(noted(provider.find(submission)), { while: keepTrying, schedule: transient }).pipe(
                Effect.flatMap(Option.match({ onSome: Effect.succeed, onNone: () => noted(provider.submit(submission)) }))
              )
              : noted(provider.submit(submission))
          ).pipe(
            Effect.tapError((error) => Effect.sync(() => (looked = ProviderError.isTransient(error)))),
            Effect.retry({ while: keepTrying, schedule: transient }),
            Effect.mapError(gaveUp)
          )
        }),
      renewLease: options.renewLease,
      locks: {
        delivery: yield* Semaphore.make(1),
        slots: yield* Semaphore.make(maxInFlight),
        collecting: yield* Semaphore.make(1),
        creating: yield* Semaphore.make(1)
      },
      stats: { outputBytes: 0, outputs: 0, recordBytes: 0, records: 0 },
      nextSeq: () => seq++,
      budget: run.budget,
      price,
      worstCase,
      unpriced,
      refused: { batches: 0, requests: 0 },
      switchAt,
      pastSwitch: () => switchAt !== null && Date.now() >= switchAt
    } satisfies Context<Rec, A, Row>
  })
