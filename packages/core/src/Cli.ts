/**
 * The `offpeak` command line.
 *
 * - `offpeak run <module>`: runs the pipeline a module exports, with a live
 *   progress line. Ctrl-C detaches: remote batches keep running.
 * - `offpeak resume <run>`: re-attaches to a run's batches and sends what is missing.
 * - `offpeak status [run]`: runs, or one run's batches, from the ledger.
 * - `offpeak emulator <provider>`: serves a provider's local emulator.
 *
 * With no API key for the chosen provider, `run` and `resume` start that
 * provider's emulator in-process (its state under `<state-dir>/emulator`) and
 * say so.
 *
 * @since 0.1.0
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Fiber, Layer, Logger, Option, Redacted, Runtime, Schedule, Schema } from "effect"
import { Argument, CliError, Command, Flag } from "effect/cli"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import * as Ledger from "./Ledger.ts"
import type * as Run from "./Run.ts"
import * as Pipeline from "./Pipeline.ts"
import * as Progress from "./Progress.ts"
import * as ProviderPlugin from "./ProviderPlugin.ts"
import * as Redact from "./Redact.ts"
import * as SqliteClient from "./SqliteClient.ts"

/**
 * A command failed with a message for the user.
 *
 * @since 0.1.0
 * @category errors
 */
export class CliFailure extends Schema.TaggedError<CliFailure>()("CliFailure", {
  message: Schema.String
}) {
  override get [CliError.userMessage](): string {
    return this.message
  }
}

const failure = (e: { readonly message: string } | unknown) =>
  new CliFailure({
    message: Redact.text(
      e instanceof Error || (typeof e === "object" && e !== null && "message" in e) ? String((e as { message: unknown }).message) : String(e)
    )
  })

// ===== shared flags =====

const stateDirFlag = Flag.String("state-dir").pipe(
  Flag.withDescription("folder of the ledger (state.db), batch files and the local emulators' state"),
  Flag.withDefault(".offpeak")
)

const stateFlag = Flag.String("state").pipe(
  Flag.withDescription(
    "the ledger: a SQLite file, or a postgres:// URL to share runs between machines (default <state-dir>/state.db; env OFFPEAK_STATE)"
  ),
  Flag.withFallbackConfig(Config.String("OFFPEAK_STATE")),
  Flag.optional
)

/**
 * The ledger: on Postgres when `state` is a `postgres://` URL, else on a
 * SQLite file (`state`, or `<stateDir>/state.db`).
 *
 * @since 0.1.0
 * @category layers
 */
export const ledgerLayer = (stateDir: string, state?: string | undefined): Layer.Layer<Ledger.Ledger, unknown> =>
  Layer.unwrap(Effect.sync(() => {
    if (state !== undefined && /^postgres(ql)?:\/\//.test(state)) {
      Redact.registerUrl(state)
      return Ledger.layer.pipe(Layer.provide(PgClient.layer({ url: Redacted.make(state) })))
    }
    const filename = state ?? path.join(stateDir, "state.db")
    fs.mkdirSync(path.dirname(path.resolve(filename)), { recursive: true })
    return Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename })))
  }))

/**
 * Imports a module and returns the pipeline it exports (`default` or `pipeline`).
 *
 * @since 0.1.0
 * @category loading
 */
export const loadPipeline = (modulePath: string) =>
  Effect.tryPromise({
    try: async () => {
      const absolute = path.resolve(modulePath)
      if (!fs.existsSync(absolute)) throw new Error(`${modulePath}: no such file`)
      const mod = await import(pathToFileURL(absolute).href)
      const candidate = mod.default ?? mod.pipeline
      if (!Pipeline.isPipeline(candidate)) {
        throw new Error(`${modulePath} must export a pipeline (export default Pipeline.make({...}))`)
      }
      return candidate as Pipeline.Pipeline<unknown, unknown>
    },
    catch: failure
  })

// ===== progress =====

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

// ===== commands =====

const cancelOnExitFlag = Flag.Boolean("cancel-on-exit").pipe(
  Flag.withDescription("on Ctrl-C, cancel the run's batches at the provider instead of detaching"),
  Flag.withDefault(false)
)


const root = Command.make("offpeak").pipe(
  Command.withDescription("Batch LLM inference pipelines: run, resume and inspect them")
)

const runCommand = Command.make(
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

const resumeCommand = Command.make(
  "resume",
  {
    runId: Argument.String("run").pipe(Argument.withDescription("the run id (see offpeak status)")),
    cancelOnExit: cancelOnExitFlag,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, cancelOnExit, stateDir, state }) => continueRun(runId, stateDir, state, { cancel: false, cancelOnExit })
).pipe(Command.withDescription("Re-attach to a run: poll its batches, send what is missing, deliver everything"))

const cancelCommand = Command.make(
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

const pad = (s: string, n: number) => s.length >= n ? s : s + " ".repeat(n - s.length)

const statusCommand = Command.make(
  "status",
  {
    runId: Argument.String("run").pipe(Argument.optional),
    json: Flag.Boolean("json").pipe(Flag.withDescription("machine-readable output"), Flag.withDefault(false)),
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, json, stateDir, state }) =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.Ledger
      if (Option.isNone(runId)) {
        const runs = yield* ledger.listRuns
        const rows = []
        for (const run of runs) rows.push({ ...run, counts: yield* ledger.counts(run.id) })
        if (json) return yield* Console.log(JSON.stringify(rows, null, 2))
        if (rows.length === 0) return yield* Console.log("no runs yet")
        yield* Console.log(`${pad("RUN", 44)} ${pad("STATE", 10)} ${pad("ROWS", 9)} ${pad("OK", 9)} ${pad("FAILED", 8)} BATCHES`)
        for (const r of rows) {
          yield* Console.log(
            `${pad(r.id, 44)} ${pad(r.state, 10)} ${pad(String(r.counts.items), 9)} ${pad(String(r.counts.delivered), 9)} ${
              pad(String(r.counts.dead), 8)
            } ${r.counts.batches}${r.counts.openBatches > 0 ? ` (${r.counts.openBatches} open)` : ""}`
          )
        }
        return
      }
      const run = yield* ledger.getRun(runId.value)
      if (Option.isNone(run)) return yield* new CliFailure({ message: `no run "${runId.value}" in the ledger` })
      const counts = yield* ledger.counts(runId.value)
      const batches = yield* ledger.batches(runId.value)
      if (json) return yield* Console.log(JSON.stringify({ run: run.value, counts, batches }, null, 2))
      const r = run.value
      yield* Console.log(`run ${r.id} (${r.pipeline}, ${r.provider}, ${r.mode}): ${r.state}${r.message ? ` — ${r.message}` : ""}`)
      yield* Console.log(
        `  rows ${counts.items} · delivered ${counts.delivered} · failed ${counts.dead} · pending ${counts.pendingItems}`
      )
      yield* Console.log(
        `  requests ${counts.requests} · queued ${counts.queued} · in batches ${counts.batched} · succeeded ${counts.succeeded} · failed ${counts.failed}`
      )
      if (batches.length > 0) {
        yield* Console.log(`${pad("  BATCH", 34)} ${pad("STATE", 10)} ${pad("REMOTE", 36)} ${pad("PROVIDER", 11)} REQUESTS`)
        for (const b of batches) {
          yield* Console.log(
            `  ${pad(b.id, 32)} ${pad(b.state, 10)} ${pad(b.remoteId ?? (b.mode === "sync" ? "(sync calls)" : "-"), 36)} ${
              pad(b.remoteState ?? "-", 11)
            } ${b.requestCount} (${b.completed} done, ${b.failed} failed)`
          )
        }
      }
    }).pipe(Effect.provide(ledgerLayer(path.resolve(stateDir), Option.getOrUndefined(state))), Effect.mapError(failure))
).pipe(Command.withDescription("List runs, or show one run and its batches"))

const emulatorCommand = Command.make(
  "emulator",
  {
    provider: Argument.String("provider").pipe(Argument.withDescription(`one of ${ProviderPlugin.known.join(", ")}`)),
    port: Flag.Int("port").pipe(Flag.withDescription("0 picks a free port"), Flag.withDefault(0)),
    dir: Flag.String("dir").pipe(Flag.withDescription("where the emulator keeps its state"), Flag.optional),
    knobs: Flag.String("knobs").pipe(
      Flag.withDescription("provider-specific options as JSON, e.g. '{\"lineFailures\":[{\"status\":500,\"rate\":0.05}]}'"),
      Flag.optional
    ),
    stateDir: stateDirFlag
  },
  ({ provider, port, dir, knobs, stateDir }) =>
    Effect.gen(function*() {
      const plugin = yield* ProviderPlugin.load(provider).pipe(Effect.mapError(failure))
      const parsed = Option.isSome(knobs)
        ? yield* Effect.try({ try: () => JSON.parse(knobs.value) as Record<string, unknown>, catch: () => failure("--knobs is not JSON") })
        : undefined
      const handle = yield* plugin.serveEmulator({
        dir: Option.getOrUndefined(dir) ?? path.join(path.resolve(stateDir), "emulator", plugin.name),
        port,
        knobs: parsed
      }).pipe(Effect.mapError(failure))
      yield* Console.log(handle.url)
      return yield* Effect.never
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Serve a provider's local emulator (prints its base URL)"))

/**
 * The command tree.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = root.pipe(
  Command.withSubcommands([runCommand, resumeCommand, cancelCommand, statusCommand, emulatorCommand])
)

/**
 * Runs the CLI on `process.argv` (the `offpeak` binary).
 *
 * @since 0.1.0
 * @category running
 */
export const main = (): void =>
  command.pipe(
    Command.run({ version: "0.1.0" }),
    // logs go to stderr, never into stdout's summary, with secrets masked
    Effect.provide(Logger.layer([Logger.formatSimple.pipe(Logger.map(Redact.text), Logger.withConsoleError)])),
    Effect.provide(NodeServices.layer),
    NodeRuntime.runMain({
      // exit when the command is done, even if a pipeline module left a server or timer running
      teardown: (exit, onExit) =>
        Runtime.defaultTeardown(exit, (code) => {
          onExit(code)
          process.exitCode = code
          process.stdout.write("", () => process.stderr.write("", () => process.exit(code)))
        })
    })
  )
