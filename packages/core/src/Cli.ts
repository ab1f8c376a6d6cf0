/**
 * The `offpeak` command line.
 *
 * - `offpeak run <module>`: runs the pipeline a module exports, with a live
 *   display (a progress bar and event lines on a terminal) and a summary at
 *   the end. Ctrl-C detaches: remote batches keep running.
 * - `offpeak resume <run>`: re-attaches to a run's batches and sends what is missing.
 * - `offpeak cancel <run>`: cancels a run's batches at the provider.
 * - `offpeak status [run]`: runs, or one run's batches, from the ledger.
 * - `offpeak failures <run> [--kind k]`: the rows that failed, by kind.
 * - `offpeak inspect <run> <key>`: one row's record, request, attempts and answer.
 * - `offpeak emulator <provider>`: serves a provider's local emulator.
 * - `offpeak ui`: a local web view of the runs (batches on a timeline, failures, rows); prints its URL.
 *
 * With no API key for the chosen provider, `run` and `resume` start that
 * provider's emulator in-process (its state under `<state-dir>/emulator`) and
 * say so. Every command takes `--json`; exit codes: 0 done, 1 failed, 2 a
 * usage error, 130 detached (Ctrl-C). Progress, notices and logs go to
 * stderr, the summary and JSON to stdout; no stack trace is printed unless
 * `OFFPEAK_DEBUG` is set.
 *
 * @since 0.1.0
 */
// the modules themselves, not the package index: it loads every Node integration (Redis, WebSocket, cluster, …)
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Console, Effect, Exit, Logger } from "effect"
import { CliError, CliOutput, Command } from "effect/cli"
import * as Display from "./internal/cli/display.ts"
import * as Emulator from "./internal/cli/emulator.ts"
import * as EstimateCommand from "./internal/cli/estimate.ts"
import * as Failures from "./internal/cli/failures.ts"
import * as Inspect from "./internal/cli/inspect.ts"
import * as RunCommands from "./internal/cli/run.ts"
import { CliExit, CliFailure, EXIT_FAILED, EXIT_USAGE } from "./internal/cli/shared.ts"
import * as Status from "./internal/cli/status.ts"
import * as Ui from "./internal/cli/ui.ts"
import * as Redact from "./Redact.ts"
import * as Telemetry from "./Telemetry.ts"

export {
  /**
   * A command failed with a message for the user.
   *
   * @since 0.1.0
   * @category errors
   */
  CliFailure,
  /**
   * The ledger: on Postgres when `state` is a `postgres://` URL, else on a SQLite file (`state`, or
   * `<stateDir>/state.db`).
   *
   * @since 0.1.0
   * @category layers
   */
  ledgerLayer,
  /**
   * Imports a module and returns the pipeline it exports (`default` or `pipeline`).
   *
   * @since 0.1.0
   * @category loading
   */
  loadPipeline
} from "./internal/cli/shared.ts"

const root = Command.make("offpeak").pipe(
  Command.withDescription("Batch LLM inference pipelines: run, resume and inspect them")
)

/**
 * The command tree.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = root.pipe(
  Command.withSubcommands([
    RunCommands.runCommand,
    RunCommands.resumeCommand,
    RunCommands.cancelCommand,
    EstimateCommand.estimateCommand,
    Status.statusCommand,
    Failures.failuresCommand,
    Inspect.inspectCommand,
    Emulator.emulatorCommand,
    Ui.uiCommand
  ])
)

/** colour in help and errors only when both streams are terminals and `NO_COLOR` is not set */
const colors = () => process.stdout.isTTY === true && process.stderr.isTTY === true && !process.env.NO_COLOR && process.env.TERM !== "dumb"

/** a wrong invocation: the error and where to read the usage, on stderr (stdout stays for output) */
const presenter: CliOutput.Presenter = {
  present: (event) =>
    event._tag === "InvalidInvocation"
      ? Effect.gen(function*() {
        const formatter = yield* CliOutput.Formatter
        yield* Console.error(formatter.formatErrors(event.errors))
        yield* Console.error(`\n  usage: ${event.commandPath.join(" ")} --help`)
      })
      : CliOutput.defaultPresenter.present(event)
}

const messageOf = (u: unknown) => u instanceof Error ? u.message : typeof u === "object" && u !== null && "message" in u ? String(u.message) : String(u)

/**
 * What a command's failure means for the process: its exit code, having said what it has to say on stderr (a
 * `CliFailure` is printed by the command runner, a wrong invocation by the presenter; anything else is said here,
 * with its stack trace only under `OFFPEAK_DEBUG`).
 */
const exitCodeOf = (cause: Cause.Cause<unknown>): Effect.Effect<number> =>
  Effect.sync(() => {
    const error = Cause.squash(cause)
    if (error instanceof CliExit) return error.code
    if (error instanceof CliFailure) return error.exitCode ?? EXIT_FAILED
    if (CliError.isCliError(error)) return EXIT_USAGE
    const defect = cause.reasons.some((r) => r._tag === "Die")
    const debug = process.env.OFFPEAK_DEBUG !== undefined && process.env.OFFPEAK_DEBUG !== ""
    process.stderr.write(
      Redact.text(
        `\nERROR\n  ${defect ? "offpeak failed unexpectedly: " : ""}${messageOf(error)}\n` +
          (debug ? `${error instanceof Error ? error.stack ?? "" : Cause.pretty(cause)}\n` : defect ? "  (OFFPEAK_DEBUG=1 shows the stack trace)\n" : "")
      )
    )
    return EXIT_FAILED
  })

/**
 * Runs the CLI on `process.argv` (the `offpeak` binary).
 *
 * @since 0.1.0
 * @category running
 */
export const main = (): void =>
  command.pipe(
    Command.run({ version: "0.1.0" }),
    // OpenTelemetry when OTEL_EXPORTER_OTLP_ENDPOINT (or a signal's endpoint) is set; spans and metrics flushed at the end
    Effect.provide(Telemetry.layerConfig),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : Effect.flatMap(exitCodeOf(cause), (code) => Effect.sync(() => void (process.exitCode = code)))
    ),
    // logs go to stderr, never into stdout's summary, with secrets masked
    Effect.provide(Logger.layer([Display.logger({ line: (text) => process.stderr.write(`${Redact.text(text)}\n`) })])),
    Effect.provide(CliOutput.layer(CliOutput.defaultFormatter({ colors: colors() }))),
    Effect.provide(CliOutput.layerPresenter(presenter)),
    Effect.provide(NodeServices.layer),
    NodeRuntime.runMain({
      disableErrorReporting: true,
      // exit when the command is done, even if a pipeline module left a server or timer running
      teardown: (exit, onExit) => {
        const code = Exit.isSuccess(exit)
          ? typeof process.exitCode === "number" ? process.exitCode : Number(process.exitCode ?? 0) || 0
          : Cause.hasInterruptsOnly(exit.cause)
          ? 130
          : EXIT_FAILED
        onExit(code)
        process.exitCode = code
        process.stdout.write("", () => process.stderr.write("", () => process.exit(code)))
      }
    })
  )
