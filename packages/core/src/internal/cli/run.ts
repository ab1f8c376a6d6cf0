/**
 * `run`, `resume` and `cancel`: a pipeline run with a live display on stderr (a bar and event lines on a terminal,
 * a plain line at an interval elsewhere), Ctrl-C detaching (or cancelling with `--cancel-on-exit`), and the summary
 * at the end on stdout (`--json`: the summary as JSON). Exit codes: 0 done, 1 failed (or past `--max-dead`), 2 a
 * usage error, 130 detached.
 *
 * @internal
 */
import { Duration, Effect, Fiber, Layer, Logger, Option, Schedule } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Ledger from "../../Ledger.ts"
import * as Pipeline from "../../Pipeline.ts"
import * as Progress from "../../Progress.ts"
import * as ProviderPlugin from "../../ProviderPlugin.ts"
import * as Redact from "../../Redact.ts"
import type * as Run from "../../Run.ts"
import { RunError } from "../../Run.ts"
import * as Display from "./display.ts"
import * as Json from "./json.ts"
import * as Preflight from "./preflight.ts"
import {
  CliExit,
  CliFailure,
  EXIT_FAILED,
  failure,
  jsonFlag,
  existingLedgerLayer,
  ledgerLayer,
  loadPipeline,
  prewarmLedger,
  commandHint,
  resumeHint,
  withStateFlags,
  stateDirFlag,
  stateFlag,
  usage
} from "./shared.ts"
import * as SourceSize from "./sourceSize.ts"
import * as Summary from "./summary.ts"

/** how often the plain progress line is printed off a terminal (`OFFPEAK_PROGRESS_INTERVAL`, default 5 seconds) */
const plainInterval = (): number => {
  const raw = process.env.OFFPEAK_PROGRESS_INTERVAL
  if (raw === undefined || raw === "") return 5_000
  const parsed = Duration.fromInput(raw as Duration.Input)
  return Option.isSome(parsed) ? Math.max(100, Duration.toMillis(parsed.value)) : 5_000
}

/** the cursor comes back even when the process ends in the middle of a frame */
let cursorGuard = false
const guardCursor = (terminal: Display.Terminal) => {
  if (cursorGuard || !terminal.isTTY) return
  cursorGuard = true
  process.once("exit", () => terminal.write("\x1b[?25h"))
}

interface Execution {
  readonly pipeline: Pipeline.Pipeline<unknown, unknown>
  readonly modulePath: string
  readonly providerName: string
  /** the folder as given (for the resume command) and resolved */
  readonly stateDirGiven: string
  readonly stateDir: string
  readonly state?: string | undefined
  readonly resume?: string | undefined
  readonly cancel?: boolean | undefined
  readonly cancelOnExit?: boolean | undefined
  readonly mode?: Run.Mode | undefined
  readonly json: boolean
  readonly maxDead?: string | undefined
  /** `--budget`, in USD */
  readonly budget?: string | undefined
  /** `--deadline`, as given (a time, or a duration from now such as `6h`) */
  readonly deadline?: string | undefined
}

/** `--deadline` as a time: an ISO date or time, or a duration from now (`90m`, `6h`, `2d`) */
const deadlineOf = (text: string): number | undefined => {
  const relative = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(text.trim())
  if (relative !== null) {
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2] as "s" | "m" | "h" | "d"]
    return Date.now() + Number(relative[1]) * unit
  }
  const at = Date.parse(text)
  return Number.isNaN(at) ? undefined : at
}

const execute = (options: Execution) =>
  Effect.gen(function*() {
    const started = Date.now()
    const stateDir = path.resolve(options.stateDir)
    const overMaxDead = options.maxDead === undefined ? undefined : Summary.parseMaxDead(options.maxDead)
    if (options.maxDead !== undefined && overMaxDead === undefined) {
      return yield* usage(`--max-dead must be a number of rows or a percent of them (e.g. 10 or 2.5%), got "${options.maxDead}"`)
    }
    const deadline = options.deadline === undefined ? undefined : deadlineOf(options.deadline)
    if (options.deadline !== undefined && deadline === undefined) {
      return yield* usage(`--deadline must be a time (2026-12-05T09:00Z) or a duration from now (90m, 6h, 2d), got "${options.deadline}"`)
    }
    if (options.budget !== undefined && !/^\$?\d*\.?\d+$/.test(options.budget.trim())) {
      return yield* usage(`--budget must be an amount of USD (5, 0.25, $12), got "${options.budget}"`)
    }
    const plugin = yield* ProviderPlugin.load(options.providerName).pipe(Effect.mapError((e) => usage(e.message)))
    const counters = Progress.make()
    const terminal = Display.terminalOf(process.stderr)
    guardCursor(terminal)
    const display = Display.make({ terminal, counters, intervalMs: plainInterval(), cancelling: options.cancel })
    const providerLayer = plugin.layer({
      emulatorDir: path.join(stateDir, "emulator", plugin.name),
      onNotice: (line) => display.line(Redact.text(line))
    })
    const resumeWith = (runId: string) => resumeHint(runId, options.stateDirGiven, options.state)
    const results = options.pipeline.sink.name

    // the status is redrawn while the run works; off a terminal a line is printed when due
    const ticking = yield* Effect.sync(display.tick).pipe(
      Effect.repeat(Schedule.spaced(terminal.isTTY ? "200 millis" : "500 millis")),
      Effect.forkChild
    )
    // the size of the source for the bar, unless the runner says it (SourceSized)
    const sizing = yield* (options.cancel === true ? Effect.void : SourceSize.of(options.pipeline, () => counters.sourceSize !== undefined).pipe(
      Effect.tap((size) =>
        Effect.sync(() => {
          if (Option.isSome(size) && counters.sourceSize === undefined) Progress.update(counters, size.value)
        })
      )
    )).pipe(Effect.forkChild)
    const stopDisplay = Effect.sync(display.close).pipe(
      Effect.andThen(Fiber.interrupt(ticking)),
      Effect.andThen(Fiber.interrupt(sizing))
    )

    const onExit = options.cancelOnExit && !options.cancel
      ? Effect.suspend(() => {
        display.line(`cancelling run ${counters.runId} (--cancel-on-exit)…`, "warn")
        return Pipeline.run(options.pipeline, {
          stateDir,
          resume: counters.runId,
          cancel: true,
          progress: counters,
          onEvent: display.event
        }).pipe(
          Effect.timeout("2 minutes"),
          Effect.tap(() => stopDisplay),
          Effect.flatMap((summary) =>
            Effect.sync(() =>
              process.stdout.write(
                Summary.render(Summary.fromSummary(summary, { results, resume: resumeWith(summary.runId), maxDeadExceeded: false }))
              )
            )
          ),
          Effect.catch((e) =>
            Effect.sync(() =>
              process.stderr.write(
                `cancellation not finished (${e.message}): ` +
                  `${commandHint("cancel", counters.runId, options.stateDirGiven, options.state)} completes it\n`
              )
            )
          )
        )
      })
      : Effect.gen(function*() {
        yield* stopDisplay
        process.stderr.write(
          `${Progress.format(counters)}\ndetached from run ${counters.runId}: batches at the provider keep running; ` +
            `${resumeWith(counters.runId)} picks them up\n`
        )
        if (!options.json) return
        // a script reading the summary gets one here too: the run as the ledger has it, and the command that goes on
        const report = yield* Summary.fromLedger(yield* Ledger.Ledger, {
          runId: counters.runId,
          state: "detached",
          message: "detached: batches at the provider keep running",
          durationMs: Date.now() - started,
          results,
          deadLetter: options.pipeline.deadLetter?.name ?? path.join(stateDir, "runs", counters.runId, "dead-letter"),
          resume: resumeWith(counters.runId)
        }).pipe(Effect.option)
        if (Option.isSome(report)) process.stdout.write(`${Json.render(Json.Summary, report.value)}\n`)
      })

    const outcome = yield* Pipeline.run(options.pipeline, {
      stateDir,
      module: options.modulePath,
      provider: plugin.name,
      progress: counters,
      onEvent: display.event,
      ...(options.mode !== undefined ? { mode: options.mode } : {}),
      ...(options.budget !== undefined ? { budget: options.budget } : {}),
      ...(deadline !== undefined ? { deadline } : {}),
      ...(options.resume !== undefined ? { resume: options.resume } : {}),
      ...(options.cancel ? { cancel: true } : {})
    }).pipe(
      Effect.onInterrupt(() => counters.runId === "" ? stopDisplay : onExit),
      Effect.provide(Layer.mergeAll(providerLayer, Logger.layer([Display.logger(display)]))),
      Effect.result
    )
    yield* stopDisplay

    const color = process.stdout.isTTY === true && !process.env.NO_COLOR
    /** when a resumed run started (its summary's figures are this process's) */
    const runs = yield* Ledger.Ledger
    const startedAt = (runId: string) =>
      options.resume === undefined ? Effect.succeed(undefined) : runs.getRun(runId).pipe(
        Effect.map((run) => Option.isSome(run) ? run.value.createdAt : undefined),
        Effect.orElseSucceed(() => undefined)
      )
    if (outcome._tag === "Success") {
      const summary = outcome.success
      const exceeded = overMaxDead !== undefined && overMaxDead(summary.failed, summary.rows)
      const base = Summary.fromSummary(summary, { results, resume: resumeWith(summary.runId), maxDeadExceeded: exceeded })
      // a run that ended without every row says why (the ledger keeps the reason: a budget, rows not delivered)
      const why = summary.state === "failed"
        ? yield* (yield* Ledger.Ledger).getRun(summary.runId).pipe(
          Effect.map((run) => Option.isSome(run) ? run.value.message : null),
          Effect.orElseSucceed(() => null)
        )
        : null
      const report = why === null ? base : { ...base, message: Redact.text(why) }
      process.stdout.write(
        options.json
          ? `${Json.render(Json.Summary, report)}\n`
          : Summary.render(report, { counters, maxDead: options.maxDead, color, startedAt: yield* startedAt(summary.runId) })
      )
      if (summary.state === "failed" || exceeded) {
        return yield* new CliExit({
          code: EXIT_FAILED,
          message: exceeded ? `${summary.failed} rows failed, more than --max-dead ${options.maxDead}` : `run ${summary.runId} failed`
        })
      }
      return
    }
    // the provider could not be set up (bad knobs, a base URL with credentials): no run started
    if (!(outcome.failure instanceof RunError)) return yield* failure(outcome.failure)
    const error = new RunError({
      runId: outcome.failure.runId,
      message: withStateFlags(outcome.failure.message, options.stateDirGiven, options.state)
    })
    const runId = error.runId !== "" ? error.runId : counters.runId
    const ledger = yield* Ledger.Ledger
    const known = runId === "" ? Option.none() : yield* ledger.getRun(runId).pipe(Effect.orElseSucceed(() => Option.none()))
    // refused before it worked (another process works the run, nothing left to cancel): the run itself is as it was
    if (Option.isNone(known) || known.value.state !== "failed") return yield* failure(error)
    // the run stopped with an error: what it did, why it stopped, and the command that goes on with it
    const report = yield* Summary.fromLedger(ledger, {
      runId,
      message: Redact.text(error.message),
      durationMs: Date.now() - started,
      results,
      deadLetter: options.pipeline.deadLetter?.name ?? path.join(stateDir, "runs", runId, "dead-letter"),
      resume: resumeWith(runId)
    }).pipe(Effect.mapError(failure))
    process.stdout.write(
      options.json ? `${Json.render(Json.Summary, report)}\n` : Summary.render(report, { counters, color })
    )
    return yield* new CliExit({ code: EXIT_FAILED, message: error.message })
  }).pipe(
    Effect.provide(ledgerLayer(path.resolve(options.stateDir), options.state)),
    Effect.mapError((e) => e instanceof CliExit || e instanceof CliFailure ? e : failure(e))
  )

const cancelOnExitFlag = Flag.Boolean("cancel-on-exit").pipe(
  Flag.withDescription("on Ctrl-C, cancel the run's batches at the provider instead of detaching"),
  Flag.withDefault(false)
)

const maxDeadFlag = Flag.String("max-dead").pipe(
  Flag.withDescription("exit 1 when more rows than this end in the dead letter: a count (10) or a percent of the rows (2.5%), for CI"),
  Flag.optional
)

const budgetFlag = Flag.String("budget").pipe(
  Flag.withDescription("the most the run may spend, in USD (5, 0.25); a resume with a higher budget sends what it held back"),
  Flag.optional
)

const deadlineFlag = Flag.String("deadline").pipe(
  Flag.withDescription("when every row must be answered: a time (2026-12-05T09:00Z) or from now (90m, 6h); late batches are cancelled and their rows sent synchronously"),
  Flag.optional
)

/** the `run` command */
export const runCommand = Command.make(
  "run",
  {
    module: Argument.String("module").pipe(Argument.withDescription("a .ts module whose default export is a Pipeline")),
    provider: Flag.String("provider").pipe(
      Flag.withDescription(`provider to use (default: the pipeline's, else openai; known: ${ProviderPlugin.known.join(", ")})`),
      Flag.optional
    ),
    mode: Flag.Literals("mode", ["batch", "sync", "auto"]).pipe(
      Flag.withDescription(
        "batch: the batch API (default: the pipeline's mode, else batch); sync: one synchronous call per request; " +
          "auto: batches under the pipeline's batch.syncBelow requests (default 100) go synchronously"
      ),
      Flag.optional
    ),
    cancelOnExit: cancelOnExitFlag,
    maxDead: maxDeadFlag,
    budget: budgetFlag,
    deadline: deadlineFlag,
    json: jsonFlag,
    ...Preflight.flags,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ module, provider, mode, cancelOnExit, maxDead, budget, deadline, json, dryRun, sample, yes, stateDir, state }) =>
    Effect.gen(function*() {
      yield* prewarmLedger(Option.getOrUndefined(state))
      const pipeline = yield* loadPipeline(module)
      const go = yield* Preflight.before({
        pipeline,
        providerName: Option.getOrUndefined(provider) ?? pipeline.provider ?? "openai",
        stateDir,
        state: Option.getOrUndefined(state),
        mode: Option.getOrUndefined(mode),
        json,
        dryRun,
        sample,
        yes
      })
      if (!go) return
      yield* execute({
        pipeline,
        modulePath: path.resolve(module),
        providerName: Option.getOrUndefined(provider) ?? pipeline.provider ?? "openai",
        stateDirGiven: stateDir,
        stateDir,
        state: Option.getOrUndefined(state),
        mode: Option.getOrUndefined(mode),
        cancelOnExit,
        json,
        maxDead: Option.getOrUndefined(maxDead),
        budget: Option.getOrUndefined(budget),
        deadline: Option.getOrUndefined(deadline)
      })
    })
).pipe(Command.withDescription("Run the pipeline a module exports"))

/** loads a run's pipeline and provider from the ledger and goes on with it */
const continueRun = (
  runId: string,
  stateDir: string,
  state: Option.Option<string>,
  mode: {
    readonly cancel: boolean
    readonly cancelOnExit: boolean
    readonly json: boolean
    readonly maxDead?: string | undefined
    readonly budget?: string | undefined
    readonly deadline?: string | undefined
  }
) =>
  Effect.gen(function*() {
    const run = yield* Effect.gen(function*() {
      const ledger = yield* Ledger.Ledger
      return yield* ledger.getRun(runId)
    }).pipe(
      // a resume or cancel has a run to find: a mistyped folder or database is refused, not given an empty ledger
      Effect.provide(existingLedgerLayer(path.resolve(stateDir), Option.getOrUndefined(state))),
      Effect.mapError(failure)
    )
    if (Option.isNone(run)) return yield* usage(`no run "${runId}" in the ledger (offpeak status lists the runs)`)
    if (run.value.module === null) {
      return yield* usage(`run ${runId} was started from code; resume it with Pipeline.run(pipeline, { resume })`)
    }
    // relative paths (the sink's folder, the source's file) resolve as they did when the run started: from the
    // folder it was started in, whatever folder the resume is started from (the state is found from here first)
    const stateAt = Option.map(state, (s) => /^postgres(ql)?:\/\//.test(s) ? s : path.resolve(s))
    const stateDirAt = path.resolve(stateDir)
    if (run.value.cwd !== null && run.value.cwd !== process.cwd()) {
      if (!fs.existsSync(run.value.cwd)) {
        return yield* failure(`run ${runId} was started in ${run.value.cwd}, which is gone: its relative paths cannot be resolved`)
      }
      process.chdir(run.value.cwd)
      process.stderr.write(`resuming from ${run.value.cwd}, where run ${runId} was started\n`)
    }
    yield* prewarmLedger(Option.getOrUndefined(stateAt))
    const pipeline = yield* loadPipeline(run.value.module)
    yield* execute({
      pipeline,
      modulePath: run.value.module,
      providerName: run.value.provider,
      stateDirGiven: stateDir,
      stateDir: stateDirAt,
      state: Option.getOrUndefined(stateAt),
      resume: runId,
      cancel: mode.cancel,
      cancelOnExit: mode.cancelOnExit,
      json: mode.json,
      maxDead: mode.maxDead,
      budget: mode.budget,
      deadline: mode.deadline
    })
  })

/** the `resume` command */
export const resumeCommand = Command.make(
  "resume",
  {
    runId: Argument.String("run").pipe(Argument.withDescription("the run id (see offpeak status)")),
    cancelOnExit: cancelOnExitFlag,
    maxDead: maxDeadFlag,
    budget: budgetFlag,
    deadline: deadlineFlag,
    json: jsonFlag,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, cancelOnExit, maxDead, budget, deadline, json, stateDir, state }) =>
    continueRun(runId, stateDir, state, {
      cancel: false,
      cancelOnExit,
      json,
      maxDead: Option.getOrUndefined(maxDead),
      budget: Option.getOrUndefined(budget),
      deadline: Option.getOrUndefined(deadline)
    })
).pipe(Command.withDescription("Re-attach to a run: poll its batches, send what is missing, deliver everything"))

/** the `cancel` command */
export const cancelCommand = Command.make(
  "cancel",
  {
    runId: Argument.String("run").pipe(Argument.withDescription("the run id (see offpeak status)")),
    json: jsonFlag,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, json, stateDir, state }) => continueRun(runId, stateDir, state, { cancel: true, cancelOnExit: false, json })
).pipe(Command.withDescription(
  "Cancel a run: cancel its batches at the provider, deliver the answers already in, record every other row as cancelled"
))
