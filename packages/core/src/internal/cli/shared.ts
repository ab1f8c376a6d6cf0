/**
 * What every command shares: the error a user reads, the `--state-dir` and `--state` flags, the ledger they open, and
 * loading a pipeline module.
 *
 * @internal
 */
import { PgClient } from "@effect/sql-pg"
import { Config, Effect, Layer, Redacted, Schema } from "effect"
import { CliError, Flag } from "effect/cli"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import * as Ledger from "../../Ledger.ts"
import * as Pipeline from "../../Pipeline.ts"
import * as Redact from "../../Redact.ts"
import * as SqliteClient from "../../SqliteClient.ts"

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


/** any error as a `CliFailure`, its message with secrets masked */
export const failure = (e: { readonly message: string } | unknown) =>
  new CliFailure({
    message: Redact.text(
      e instanceof Error || (typeof e === "object" && e !== null && "message" in e) ? String((e as { message: unknown }).message) : String(e)
    )
  })

export const stateDirFlag = Flag.String("state-dir").pipe(
  Flag.withDescription("folder of the ledger (state.db), batch files and the local emulators' state"),
  Flag.withDefault(".offpeak")
)

export const stateFlag = Flag.String("state").pipe(
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
