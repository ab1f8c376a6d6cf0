/**
 * `run`, `resume` and `cancel`: a pipeline run with a live progress line, Ctrl-C detaching (or cancelling with
 * `--cancel-on-exit`), and the summary at the end.
 *
 * @internal
 */
import { Effect, Fiber, Layer, Option, Schedule } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as path from "node:path"
import * as Ledger from "../../Ledger.ts"
import * as Pipeline from "../../Pipeline.ts"
import * as Progress from "../../Progress.ts"
import * as ProviderPlugin from "../../ProviderPlugin.ts"
import * as Redact from "../../Redact.ts"
import type * as Run from "../../Run.ts"
import * as fs from "node:fs"
import { CliFailure, failure, ledgerLayer, loadPipeline, stateDirFlag, stateFlag } from "./shared.ts"

const reporter = (progress: Progress.Counters) => {
  const tty = process.stderr.isTTY === true
  const draw = Effect.sync(() => {
    const line = Progress.format(progress)
    if (tty) process.stderr.write(`\r\x1b[2K${line}`)
    else process.stderr.write(`${line}\n`)
  })
  return draw.pipe(Effect.repeat(Schedule.spaced(tty ? "250 millis" : "5 seconds")), Effect.asVoid)
}

const printSummary = (summary: Pipeline.Summary) =>
  Effect.sync(() => {
    if (process.stderr.isTTY) process.stderr.write("\r\x1b[2K")
    process.stderr.write(`${Progress.format(summary.progress)}\n`)
    const lines = [
      `run ${summary.runId}: ${summary.state}`,
      `  rows ${summary.rows.toLocaleString("en-US")} · succeeded ${summary.succeeded.toLocaleString("en-US")} · failed ${
        summary.failed.toLocaleString("en-US")
      } · batches ${summary.batches}`
    ]
    if (summary.progress.sourceRows !== undefined) {
      lines.push(`  source: ${summary.progress.sourceRows.toLocaleString("en-US")} rows in this run's range, every one read`)
    }
    if (summary.failed > 0) lines.push(`  failed rows, with their reasons: ${summary.deadLetter}`)
    if (summary.pending > 0) lines.push(`  ${summary.pending} rows pending: offpeak resume ${summary.runId}`)
    process.stdout.write(lines.join("\n") + "\n")
  })

const execute = (options: {
  readonly pipeline: Pipeline.Pipeline<unknown, unknown>
  readonly modulePath: string
  readonly providerName: string
  readonly stateDir: string
  readonly state?: string | undefined
  readonly resume?: string | undefined
  readonly cancel?: boolean | undefined
  readonly cancelOnExit?: boolean | undefined
  readonly mode?: Run.Mode | undefined
}) =>
  Effect.gen(function*() {
    const stateDir = path.resolve(options.stateDir)
    const plugin = yield* ProviderPlugin.load(options.providerName).pipe(Effect.mapError(failure))
    const progress = Progress.make()
    const providerLayer = plugin.layer({
      emulatorDir: path.join(stateDir, "emulator", plugin.name),
      onNotice: (line) => process.stderr.write(`${Redact.text(line)}\n`)
    })
    const reporting = yield* reporter(progress).pipe(Effect.forkChild)
    const clearLine = () => {
      if (process.stderr.isTTY) process.stderr.write("\r\x1b[2K")
    }
    const onExit = options.cancelOnExit && !options.cancel
      ? Effect.suspend(() => {
        clearLine()
        process.stderr.write(`${Progress.format(progress)}\ncancelling run ${progress.runId} (--cancel-on-exit)…\n`)
        return Pipeline.run(options.pipeline, { stateDir, resume: progress.runId, cancel: true, progress }).pipe(
          Effect.timeout("2 minutes"),
          Effect.flatMap(printSummary),
          Effect.catch((e) =>
            Effect.sync(() =>
              process.stderr.write(`cancellation not finished (${e.message}): offpeak cancel ${progress.runId} completes it\n`)
            )
          )
        )
      })
      : Effect.sync(() => {
        clearLine()
        process.stderr.write(
          `${Progress.format(progress)}\ndetached from run ${progress.runId}: batches at the provider keep running; ` +
            `offpeak resume ${progress.runId} picks them up\n`
        )
      })
    const summary = yield* Pipeline.run(options.pipeline, {
      stateDir,
      module: options.modulePath,
      provider: plugin.name,
      progress,
      ...(options.mode !== undefined ? { mode: options.mode } : {}),
      ...(options.resume !== undefined ? { resume: options.resume } : {}),
      ...(options.cancel ? { cancel: true } : {})
    }).pipe(
      Effect.onInterrupt(() => progress.runId === "" ? Effect.void : onExit),
      Effect.ensuring(Fiber.interrupt(reporting)),
      Effect.provide(Layer.mergeAll(providerLayer, ledgerLayer(stateDir, options.state))),
      Effect.mapError(failure)
    )
    yield* printSummary(summary)
  })

const cancelOnExitFlag = Flag.Boolean("cancel-on-exit").pipe(
  Flag.withDescription("on Ctrl-C, cancel the run's batches at the provider instead of detaching"),
  Flag.withDefault(false)
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
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ module, provider, mode, cancelOnExit, stateDir, state }) =>
    Effect.gen(function*() {
      const pipeline = yield* loadPipeline(module)
      yield* execute({
        pipeline,
        modulePath: path.resolve(module),
        providerName: Option.getOrUndefined(provider) ?? pipeline.provider ?? "openai",
        stateDir,
        state: Option.getOrUndefined(state),
        mode: Option.getOrUndefined(mode),
        cancelOnExit
      })
    })
).pipe(Command.withDescription("Run the pipeline a module exports"))

/** loads a run's pipeline and provider from the ledger and goes on with it */
const continueRun = (
  runId: string,
  stateDir: string,
  state: Option.Option<string>,
  mode: { readonly cancel: boolean; readonly cancelOnExit: boolean }
) =>
    Effect.gen(function*() {
      const run = yield* Effect.gen(function*() {
        const ledger = yield* Ledger.Ledger
        return yield* ledger.getRun(runId)
      }).pipe(Effect.provide(ledgerLayer(path.resolve(stateDir), Option.getOrUndefined(state))), Effect.mapError(failure))
      if (Option.isNone(run)) return yield* new CliFailure({ message: `no run "${runId}" in the ledger` })
      if (run.value.module === null) {
        return yield* new CliFailure({ message: `run ${runId} was started from code; resume it with Pipeline.run(pipeline, { resume })` })
      }
      // relative paths (the sink's folder, the source's file) resolve as they did when the run started: from the
      // folder it was started in, whatever folder the resume is started from (the state is found from here first)
      const stateAt = Option.map(state, (s) => /^postgres(ql)?:\/\//.test(s) ? s : path.resolve(s))
      const stateDirAt = path.resolve(stateDir)
      if (run.value.cwd !== null && run.value.cwd !== process.cwd()) {
        if (!fs.existsSync(run.value.cwd)) {
          return yield* new CliFailure({
            message: `run ${runId} was started in ${run.value.cwd}, which is gone: its relative paths cannot be resolved`
          })
        }
        process.chdir(run.value.cwd)
        process.stderr.write(`resuming from ${run.value.cwd}, where run ${runId} was started\n`)
      }
      const pipeline = yield* loadPipeline(run.value.module)
      yield* execute({
        pipeline,
        modulePath: run.value.module,
        providerName: run.value.provider,
        stateDir: stateDirAt,
        state: Option.getOrUndefined(stateAt),
        resume: runId,
        cancel: mode.cancel,
        cancelOnExit: mode.cancelOnExit
      })
    })

/** the `resume` command */
export const resumeCommand = Command.make(
  "resume",
  {
    runId: Argument.String("run").pipe(Argument.withDescription("the run id (see offpeak status)")),
    cancelOnExit: cancelOnExitFlag,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, cancelOnExit, stateDir, state }) => continueRun(runId, stateDir, state, { cancel: false, cancelOnExit })
).pipe(Command.withDescription("Re-attach to a run: poll its batches, send what is missing, deliver everything"))

/** the `cancel` command */
export const cancelCommand = Command.make(
  "cancel",
  {
    runId: Argument.String("run").pipe(Argument.withDescription("the run id (see offpeak status)")),
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, stateDir, state }) => continueRun(runId, stateDir, state, { cancel: true, cancelOnExit: false })
).pipe(Command.withDescription(
  "Cancel a run: cancel its batches at the provider, deliver the answers already in, record every other row as cancelled"
))
