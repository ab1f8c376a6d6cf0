/**
 * A run from start to end: the process takes the pipeline's lease (refused while another process works it), creates
 * or reloads the run, builds its context, and wires the four stages — admission (source → requests), batches (→ the
 * provider and back), outcomes (results → recorded answers), delivery (→ the sinks) — then runs retry rounds until no
 * request waits, and ends the run `completed` only when every row is accounted for. A pipeline whose source can stage
 * a table the provider takes runs pushed down instead (`pushdown.ts`).
 *
 * @internal
 */
import { Duration, Effect, Option, Schedule, Stream } from "effect"
import * as path from "node:path"
import * as fs from "node:fs/promises"
import * as Ledger from "../../Ledger.ts"
import type * as Pipeline from "../../Pipeline.ts"
import * as Prices from "../../Prices.ts"
import * as Redact from "../../Redact.ts"
import * as Provider from "../../Provider.ts"
import { RunError } from "../../Run.ts"
import type * as Run from "../../Run.ts"
import * as Telemetry from "../telemetry.ts"
import * as Admission from "./admission.ts"
import * as Batches from "./batches.ts"
import * as Context from "./context.ts"
import * as Delivery from "./delivery.ts"
import * as Files from "./files.ts"
import * as Lifecycle from "./lifecycle.ts"
import * as Outcomes from "./outcomes.ts"
import * as Pushdown from "./pushdown.ts"
import * as Sync from "./sync.ts"

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "run"

/** `<pipeline>-<UTC timestamp>-<random>` */
const newRunId = (name: string) => {
  const d = new Date()
  const pad = (n: number) => String(n).padStart(2, "0")
  const stamp = `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}-${pad(d.getUTCHours())}${
    pad(d.getUTCMinutes())
  }${pad(d.getUTCSeconds())}`
  return `${slug(name)}-${stamp}-${Math.random().toString(36).slice(2, 6)}`
}

/** runs a pipeline (see `Pipeline.run`) */
export const run = <Rec, A, Row>(
  pipeline: Pipeline.Pipeline<Rec, A, Row>,
  options: Pipeline.RunOptions = {}
): Effect.Effect<Pipeline.Summary, RunError, Provider.Provider | Ledger.Ledger> =>
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    const provider = yield* Provider.Provider
    const stateDir = path.resolve(options.stateDir ?? ".offpeak")
    const ttlMs = Duration.toMillis(
      Duration.fromInputUnsafe(options.leaseTtl ?? (process.env.OFFPEAK_LEASE_TTL as Duration.Input | undefined) ?? "30 seconds")
    )

    // ----- the run, and its lease: one process works a pipeline's runs at a time -----
    const existing = options.resume === undefined ? undefined : yield* ledger.getRun(options.resume).pipe(
      Effect.flatMap(Option.match({
        onNone: () => Effect.fail(new RunError({ runId: options.resume!, message: `no run "${options.resume}" in the ledger` })),
        onSome: Effect.succeed
      }))
    )
    const runId = existing?.id ?? options.runId ?? newRunId(pipeline.name)
    const fail = (message: string) => new RunError({ runId, message })
    if (existing !== undefined && existing.pipeline !== pipeline.name) {
      return yield* fail(`run ${runId} belongs to pipeline "${existing.pipeline}", not "${pipeline.name}"`)
    }
    if (options.cancel === true && existing?.state === "completed") {
      return yield* fail(`run ${runId} completed at ${existing.updatedAt}: there is nothing left to cancel (its rows are delivered)`)
    }
    /** batches of a run that may be at the provider: created, or being created */
    const sentBatches = (id: string) =>
      Effect.map(ledger.openBatches(id), (open) => open.filter((b) => b.state !== "sealed"))
    const where = (name: string, endpoint: string) =>
      endpoint === "" ? `${name}'s API` : endpoint === "emulator" ? `the local ${name} emulator` : Redact.url(endpoint)
    const disposition = Delivery.dispositionFor(pipeline.sink, pipeline.incremental === true)
    if (disposition.startsWith("!")) return yield* fail(disposition.slice(1))

    const plural = (n: number, one: string, many: string) => `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`
    /** the other runs of this pipeline, newest first */
    const others = Effect.map(ledger.listRuns, (runs) => runs.filter((r) => r.pipeline === pipeline.name && r.id !== runId))

    /**
     * A new run is refused while an earlier run of the pipeline that did not finish has batches at the provider: the
     * new one would send their requests again, and pay for them twice. Checked under the lease, so no run of the
     * pipeline moves on meanwhile.
     */
    const refuseBesideUnfinished = Effect.gen(function*() {
      for (const other of yield* others) {
        if (other.state === "completed" || other.state === "cancelled") continue
        const sent = yield* sentBatches(other.id)
        if (sent.length === 0) continue
        const counts = yield* ledger.counts(other.id)
        return yield* fail(
          `run ${other.id} of this pipeline did not finish (${other.state} since ${other.updatedAt}; ` +
            `${plural(sent.length, "batch", "batches")} at the provider, ${plural(counts.delivered + counts.dead, "row", "rows")} delivered): ` +
            `\`offpeak resume ${other.id}\` finishes it without paying for its batches again, \`offpeak cancel ${other.id}\` ` +
            `stops it. A new run now would send those requests again`
        )
      }
    })

    /**
     * A run is not resumed once a later run of the pipeline completed or delivered rows: the later run's rows stand
     * for the pipeline's now (a sink that replaces already removed this run's), and this one, finishing, would remove
     * or overwrite them with older answers.
     */
    const refuseSuperseded = (run: Ledger.Run) =>
      Effect.gen(function*() {
        for (const other of yield* others) {
          const later = other.createdAt > run.createdAt || (other.createdAt === run.createdAt && other.id > run.id)
          if (!later) continue
          const counts = yield* ledger.counts(other.id)
          if (other.state !== "completed" && counts.delivered + counts.dead === 0) continue
          return yield* fail(
            `run ${run.id} was followed by run ${other.id} (${other.state}, ${plural(counts.delivered + counts.dead, "row", "rows")} ` +
              `delivered), whose rows stand for this pipeline now: resuming the older run would replace them with its own. ` +
              (other.state === "completed" ? "Start a new run instead" : `\`offpeak resume ${other.id}\` finishes the later one`)
          )
        }
      })

    const lease = yield* ledger.acquire({ scope: pipeline.name, runId, ttlMs }).pipe(
      // asked to cancel: once the other process is stopped, the command to give is cancel, not resume
      Effect.mapError((e) =>
        fail(
          options.cancel === true && e._tag === "LeaseHeld"
            ? e.message.replace(`\`offpeak resume ${e.runId}\``, `\`offpeak cancel ${e.runId}\``)
            : e.message
        )
      )
    )
    const leaseRef = { current: lease }
    const renewLease = ledger.renew(leaseRef.current).pipe(
      Effect.tap((renewed) => Effect.sync(() => (leaseRef.current = renewed))),
      Effect.asVoid
    )
    // renewed every third of its ttl; a lease lost (another process took the run over) stops this process's work
    const heartbeat = Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(Duration.millis(Math.max(100, ttlMs / 3)))
        yield* renewLease.pipe(
          Effect.retry({ times: 2, schedule: Schedule.spaced("1 second"), while: (e) => e.operation !== "lease" })
        )
      }
    }).pipe(Effect.mapError((e) => fail(`${e.message}; this process stops (the run goes on where it is owned)`)))

    /**
     * A resume sends where the run was started: its batches are there, and its answers came from there (answers from
     * elsewhere would be mixed in, and an emulator's kept in the result cache as that place's). A run that sent
     * nothing yet (started against a wrong base URL, say) moves to where this process sends.
     */
    const sameEndpoint = (run: Ledger.Run) =>
      Effect.gen(function*() {
        const here = provider.endpoint ?? ""
        if (run.provider === provider.name && run.endpoint === here) return
        const sent = yield* sentBatches(run.id)
        const counts = yield* ledger.counts(run.id)
        if (run.provider === provider.name && sent.length === 0 && counts.succeeded + counts.failed === 0) {
          yield* ledger.updateRun(run.id, { endpoint: here })
          return yield* Effect.logInfo(
            `run ${run.id} sent nothing to ${where(run.provider, run.endpoint)}: it goes to ${where(provider.name, here)} from now on`
          )
        }
        return yield* fail(
          `run ${run.id} was started against ${where(run.provider, run.endpoint)}, and this process would send to ` +
            `${where(provider.name, here)}: resume it with the settings it was started with (the provider, its API key and base URL)`
        )
      })

    const work = Effect.gen(function*() {
      if (existing === undefined) yield* refuseBesideUnfinished
      else if (existing.state !== "completed") {
        yield* refuseSuperseded(existing)
        yield* sameEndpoint(existing)
      }
      const run = existing !== undefined
        // read again under the lease: the process that held it before may have moved the run on
        ? Option.getOrElse(yield* ledger.getRun(runId), () => existing)
        : yield* ledger.createRun({
          id: runId,
          pipeline: pipeline.name,
          module: options.module ?? null,
          provider: options.provider ?? pipeline.provider ?? provider.name,
          endpoint: provider.endpoint,
          mode: options.mode ?? pipeline.mode ?? "batch",
          cwd: process.cwd(),
          source: pipeline.source.name
        })
      yield* Effect.annotateCurrentSpan({ "offpeak.run.id": runId, "offpeak.provider": provider.name, "offpeak.mode": run.mode })
      // the budget: the run's own, unless this start gives one (a new run takes the pipeline's)
      const budgetUsd = options.budget ?? (existing === undefined ? pipeline.budget : undefined)
      const budget = budgetUsd === undefined ? run.budget : yield* Effect.try({
        try: () => Prices.fromUsd(budgetUsd),
        catch: () => fail(`budget ${String(budgetUsd)} is not an amount of USD (e.g. 5 or 0.25)`)
      })
      if (budget !== null && budget < 0n) return yield* fail(`budget ${String(budgetUsd)} is negative`)
      if (budget !== run.budget) yield* ledger.updateRun(runId, { budget })
      // the deadline, and the margin before it: given, else how long this provider's batches have taken here
      const deadlineAt = options.deadline ?? (existing === undefined ? pipeline.deadline : undefined)
      const deadline = deadlineAt === undefined ? run.deadline : new Date(deadlineAt).getTime()
      if (deadline !== null && Number.isNaN(deadline)) return yield* fail(`deadline ${String(deadlineAt)} is not a time`)
      if (deadline !== run.deadline) yield* ledger.updateRun(runId, { deadline })
      const deadlineMarginMs = deadline === null
        ? undefined
        : pipeline.deadlineMargin !== undefined
        ? Duration.toMillis(Duration.fromInputUnsafe(pipeline.deadlineMargin))
        : yield* Effect.map(ledger.batchDurations(provider.name), (ms) => ms.length === 0 ? 15 * 60_000 : Math.max(60_000, ms[0]!))
      const ctx = yield* Context.make({
        run: { ...run, budget, deadline },
        deadlineMarginMs,
        pipeline,
        runOptions: yield* Telemetry.observe(options, { pipeline: pipeline.name, provider: provider.name }),
        provider,
        ledger,
        stateDir,
        renewLease
      })
      if (run.state === "completed") {
        // nothing left to do: its summary as it stands. (Going through the stages would end by finishing the sink
        // again, which under `replace` removes what any later run delivered.)
        yield* Effect.logInfo(`run ${runId} completed at ${run.updatedAt}: there is nothing left to resume`)
        const counts = yield* Context.orFail(ctx)(ledger.counts(runId))
        return yield* summarize(ctx, {
          state: "completed",
          message: null,
          rows: counts.items,
          succeeded: counts.delivered,
          failed: counts.dead,
          pending: counts.pendingItems,
          batches: counts.batches
        }, Date.now())
      }
      const cancelling = ctx.cancelling
      yield* ledger.updateRun(runId, { state: cancelling ? "cancelled" : "running", message: null })
      yield* Effect.tryPromise({
        try: () => fs.mkdir(ctx.batchDir, { recursive: true }),
        catch: (e) => fail(`cannot create ${ctx.batchDir}: ${e instanceof Error ? e.message : String(e)}`)
      })
      const started = Date.now()
      const pushdown = pipeline.source.pushdown !== undefined && (provider.tables ?? []).length > 0
      const work = (pushdown ? Pushdown.run(ctx, pipeline.source.pushdown!) : lines(ctx)).pipe(
        Effect.flatMap((outcome) => summarize(ctx, outcome, started))
      )
      // a table job has no synchronous way: a deadline changes nothing there
      const body = ctx.switchAt === null || cancelling || pushdown ? work : yield* deadlineNoticed(ctx, ctx.switchAt, work)
      return yield* body.pipe(
        Effect.tap((summary) => Effect.sync(() => ctx.emit({ _tag: "RunEnded", state: summary.state }))),
        Effect.tap((summary) => Effect.annotateCurrentSpan(Telemetry.summaryAttributes(summary))),
        Effect.onInterrupt(() =>
          cancelling ? Effect.void : ledger.updateRun(runId, { state: "detached" }).pipe(
            Effect.ignore,
            Effect.andThen(Effect.sync(() => ctx.emit({ _tag: "RunEnded", state: "detached" })))
          )
        ),
        Effect.tapError((e) =>
          ledger.updateRun(runId, { state: "failed", message: e.message }).pipe(
            Effect.ignore,
            Effect.andThen(Effect.sync(() => ctx.emit({ _tag: "RunEnded", state: "failed", message: e.message })))
          )
        ),
        // a bug (a throw no error type foresaw) fails the run too, saying what was thrown: not left `running`
        Effect.tapDefect((defect) => {
          const message = `offpeak failed unexpectedly: ${defect instanceof Error ? defect.message : String(defect)}`
          return ledger.updateRun(runId, { state: "failed", message }).pipe(
            Effect.ignore,
            Effect.andThen(Effect.sync(() => ctx.emit({ _tag: "RunEnded", state: "failed", message })))
          )
        })
      )
    }).pipe(Effect.mapError((e) => e._tag === "RunError" ? e : fail(e.message)))

    return yield* Effect.raceFirst(work, heartbeat).pipe(
      Effect.ensuring(ledger.release(leaseRef.current).pipe(Effect.ignore))
    )
  }).pipe(
    Effect.mapError((e) => e._tag === "RunError" ? e : new RunError({ runId: options.resume ?? "", message: e.message })),
    Effect.withSpan("offpeak.run", { attributes: { "offpeak.pipeline": pipeline.name, "offpeak.run.resumed": options.resume !== undefined } })
  )

/**
 * A run with a deadline says when it leaves the batch API for the synchronous one (at the full price): at its start,
 * and again when that time comes while it works. A deadline already within its margin is a warning at once.
 */
const deadlineNoticed = <Rec, A, Row, X, E, R>(
  ctx: Context.Context<Rec, A, Row>,
  switchAt: number,
  work: Effect.Effect<X, E, R>
) =>
  Effect.gen(function*() {
    const deadline = ctx.run.deadline!
    const seconds = (ms: number) => Duration.format(Duration.seconds(Math.max(1, Math.round(ms / 1000))))
    const at = (ms: number) => new Date(ms).toISOString()
    const margin = `the margin before it: ${seconds(deadline - switchAt)}`
    const left = switchAt - Date.now()
    if (left <= 0) {
      yield* Effect.logWarning(
        `run ${ctx.runId}: its deadline ${at(deadline)} is too near for the batch API (${margin}): every request goes ` +
          `through the synchronous API, at the full price`
      )
      return work
    }
    yield* Effect.logInfo(
      `run ${ctx.runId}: deadline ${at(deadline)}: batches until ${at(switchAt)} (${margin}), then the synchronous API, ` +
        `at the full price`
    )
    const notice = Effect.sleep(Duration.millis(left)).pipe(
      Effect.andThen(() =>
        Effect.logWarning(
          `run ${ctx.runId}: the deadline ${at(deadline)} is ${seconds(deadline - Date.now())} away: batches at the ` +
            `provider are cancelled (their answers kept), every request left goes through the synchronous API`
        )
      ),
      Effect.andThen(Effect.never)
    )
    // the notice never ends: the work's end ends the race, and the notice with it
    return Effect.raceFirst(work, notice)
  })

/** a run whose requests go out as lines (batch files, or synchronous calls) */
const lines = <Rec, A, Row>(ctx: Context.Context<Rec, A, Row>) =>
  Effect.gen(function*() {
    const { runId, run, ledger, cancelling, fail } = ctx
    const { maxAttempts, backoff } = ctx.limits
    const orFail = Context.orFail(ctx)
    const delivery = Delivery.make(ctx)
    const lifecycle = Lifecycle.make(ctx)
    const outcomes = Outcomes.make(ctx, lifecycle.requestsOf, delivery.deliverParts)
    const sync = Sync.make(ctx, lifecycle, outcomes.toOutcome, delivery)
    const batches = Batches.make(ctx, lifecycle, outcomes, sync, delivery)
    const admission = Admission.make(ctx, yield* Admission.range(ctx), delivery.deliverParts)

    yield* delivery.deliver
    const open = yield* orFail(ledger.openBatches(runId))
    yield* Files.sweep(ctx.batchDir, open)
    const before = yield* orFail(ledger.counts(runId))
    ctx.emit({
      _tag: "RunStarted",
      runId,
      pipeline: ctx.pipeline.name,
      mode: run.mode,
      resumed: ctx.options.resume !== undefined,
      delivered: before.delivered,
      dead: before.dead,
      openBatches: open.length,
      admitted: before.items
    })
    const { maxRequests, syncBelow } = ctx.limits
    if (run.mode === "auto" && maxRequests < syncBelow) {
      yield* Effect.logWarning(
        `mode auto: a batch holds at most ${maxRequests} requests (batch.maxRequests), fewer than batch.syncBelow ` +
          `(${syncBelow}): every batch goes through the synchronous API, at the full price`
      )
    }
    if (cancelling) {
      // nothing more is sent: requests never batched end cancelled, batches at the provider are cancelled there
      yield* batches.cancelQueued
      yield* batches.inFlight(Stream.fromIterable(open))
    } else {
      const fresh = run.sourceDone ? admission.fromQueue : Stream.concat(admission.fromQueue, admission.fromSource)
      yield* batches.inFlight(Stream.concat(Stream.fromIterable(open), batches.sealed(fresh)))
    }
    // requests the budget refused stay queued for a resume with a higher budget: no retry round sends them
    for (let round = 1; !cancelling && ctx.refused.batches === 0; round++) {
      const counts = yield* orFail(ledger.counts(runId))
      if (counts.queued === 0) break
      if (round > maxAttempts + 2) return yield* fail(`${counts.queued} requests still queued after ${round - 1} retry rounds`)
      // past the deadline's switch time is short: the retry round goes out at once, synchronously
      const wait = ctx.pastSwitch() ? Duration.zero : Duration.min(Duration.times(backoff, 2 ** (round - 1)), Duration.minutes(1))
      ctx.emit({ _tag: "RetryRound", round, requests: counts.queued, waitMs: Duration.toMillis(wait) })
      yield* Effect.sleep(wait)
      yield* batches.inFlight(batches.sealed(admission.fromQueue))
    }
    yield* delivery.deliver
    const counts = yield* orFail(ledger.counts(runId))
    const state: Run.State = cancelling ? "cancelled" : counts.pendingItems === 0 ? "completed" : "failed"
    if (state === "completed") yield* delivery.finish
    const message = counts.pendingItems === 0
      ? null
      : ctx.refused.batches > 0
      ? yield* budgetMessage(ctx, counts.pendingItems)
      : `${counts.pendingItems} rows were not delivered`
    yield* orFail(ledger.updateRun(runId, { state, message }))
    return {
      state,
      message,
      rows: counts.items,
      succeeded: counts.delivered,
      failed: counts.dead,
      pending: counts.pendingItems,
      batches: counts.batches
    } satisfies Outcome
  })

/** how a run ended, before its money and failures are added */
export interface Outcome {
  readonly state: Run.State
  readonly message: string | null
  readonly rows: number
  readonly succeeded: number
  readonly failed: number
  readonly pending: number
  readonly batches: number
}

/** why rows are pending when the budget refused batches, and what to do */
const budgetMessage = <Rec, A, Row>(ctx: Context.Context<Rec, A, Row>, pending: number) =>
  Effect.map(Context.orFail(ctx)(ctx.ledger.spend(ctx.runId)), (spend) =>
    `budget_refused: ${pending.toLocaleString("en-US")} rows not sent (${ctx.refused.requests.toLocaleString("en-US")} ` +
    `requests over the budget): ${Prices.formatUsd(spend.spent)} spent and ${Prices.formatUsd(spend.reserved)} reserved of ` +
    `${Prices.formatUsd(spend.budget ?? 0n)}; resume with a higher budget (--budget) to send them`)

/** the summary of a run: its outcome, its money, and its failures by kind */
const summarize = <Rec, A, Row>(ctx: Context.Context<Rec, A, Row>, outcome: Outcome, started: number) =>
  Effect.gen(function*() {
    const orFail = Context.orFail(ctx)
    const spend = yield* orFail(ctx.ledger.spend(ctx.runId))
    const failedByKind = yield* orFail(ctx.ledger.failureCounts(ctx.runId))
    return {
      runId: ctx.runId,
      state: outcome.state,
      rows: outcome.rows,
      succeeded: outcome.succeeded,
      failed: outcome.failed,
      pending: outcome.pending,
      batches: outcome.batches,
      deadLetter: ctx.deadLetter.name,
      progress: ctx.counters,
      durationMs: Date.now() - started,
      failedByKind,
      cachedRows: spend.cachedRows,
      dedupedRows: spend.dedupedRows,
      usage: Ledger.spendReport(spend).usage,
      cost: { ...Ledger.spendReport(spend).cost, unpriced: [...ctx.unpriced] }
    } satisfies Pipeline.Summary
  })
