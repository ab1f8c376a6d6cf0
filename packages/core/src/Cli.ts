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
import { Effect, Logger, Runtime } from "effect"
import { Command } from "effect/cli"
import * as Emulator from "./internal/cli/emulator.ts"
import * as RunCommands from "./internal/cli/run.ts"
import * as Status from "./internal/cli/status.ts"
import * as Ui from "./internal/cli/ui.ts"
import * as Redact from "./Redact.ts"

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
    Status.statusCommand,
    Emulator.emulatorCommand,
    Ui.uiCommand
  ])
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
