/**
 * What every command shares: the error a user reads (and the exit code it gives), the `--state-dir`, `--state` and
 * `--json` flags, the ledger they open, loading a pipeline module (a syntax error or a throw on import named by file,
 * line and column), and the command that resumes a run.
 *
 * @internal
 */
import { Cause, Config, Effect, Layer, Redacted, Schema } from "effect"
import { CliError, Flag } from "effect/cli"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import * as Ledger from "../../Ledger.ts"
import * as Pipeline from "../../Pipeline.ts"
import * as Redact from "../../Redact.ts"
import * as SqliteClient from "../../SqliteClient.ts"
import { SqlClient } from "effect/sql"

/**
 * A command failed with a message for the user; `exitCode` 2 for a usage error (a wrong argument, an unknown run),
 * 1 otherwise.
 *
 * @since 0.1.0
 * @category errors
 */
export class CliFailure extends Schema.TaggedError<CliFailure>()("CliFailure", {
  message: Schema.String,
  exitCode: Schema.optional(Schema.Int)
}) {
  override get [CliError.userMessage](): string {
    return this.message
  }
}

/**
 * The command already said what happened (a summary on stdout): the process exits with `code` and prints nothing
 * more.
 *
 * @since 0.1.0
 * @category errors
 */
export class CliExit extends Schema.TaggedError<CliExit>()("CliExit", {
  code: Schema.Int,
  message: Schema.String
}) {}

/** exit codes: the run is done, it failed, the command was wrong */
export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2

const messageOf = (e: unknown): string =>
  e instanceof Error || (typeof e === "object" && e !== null && "message" in e) ? String((e as { message: unknown }).message) : String(e)

/** any error as a `CliFailure` (exit code 1), its message with secrets masked */
export const failure = (e: { readonly message: string } | unknown) =>
  e instanceof CliFailure ? e : new CliFailure({ message: Redact.text(messageOf(e)) })

/** a usage error (exit code 2) */
export const usage = (message: string) => new CliFailure({ message: Redact.text(message), exitCode: EXIT_USAGE })

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

export const jsonFlag = Flag.Boolean("json").pipe(
  Flag.withDescription("print machine-readable JSON on stdout (progress and notices stay on stderr)"),
  Flag.withDefault(false)
)

const isUrl = (state: string) => /^postgres(ql)?:\/\//.test(state)

/**
 * What the ledger is opened on, for messages: the SQLite file's path, or the Postgres URL with its password masked.
 *
 * @since 0.1.0
 * @category layers
 */
export const ledgerWhere = (stateDir: string, state?: string | undefined): string =>
  state !== undefined && isUrl(state) ? Redact.url(state) : path.resolve(state ?? path.join(stateDir, "state.db"))

/**
 * Starts the SQLite ledger's thread while the pipeline's module loads (nothing for a `postgres://` ledger).
 *
 * @since 0.1.0
 * @category layers
 */
export const prewarmLedger = (state: string | undefined): Effect.Effect<void> =>
  Effect.sync(() => {
    if (state === undefined || !isUrl(state)) SqliteClient.prewarm()
  })

/**
 * The ledger: on Postgres when `state` is a `postgres://` URL, else on a
 * SQLite file (`state`, or `<stateDir>/state.db`). A ledger that cannot be
 * opened fails naming where it is.
 *
 * @since 0.1.0
 * @category layers
 */
export const ledgerLayer = (
  stateDir: string,
  state?: string | undefined,
  /** a Postgres database without offpeak's tables is refused, not given them (a command that only reads) */
  mustExist = false
): Layer.Layer<Ledger.Ledger, unknown> =>
  Layer.unwrap(Effect.sync(() => {
    if (state !== undefined && isUrl(state)) {
      Redact.registerUrl(state)
      const exists = Layer.effectDiscard(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        // in the schema the ledger's tables are made in (the first of the search path)
        const found = yield* sql<{ t: string | null }>`SELECT to_regclass(format('%I.offpeak_runs', current_schema()))::text AS t`
        if (found[0]?.t === null || found[0]?.t === undefined) {
          return yield* Effect.fail(usage(
            `no ledger at ${Redact.url(state)} (no offpeak tables in that database): run a pipeline with this --state ` +
              `first, or point --state at the database that holds its ledger`
          ))
        }
      }))
      // the Postgres client (and its driver) is loaded only for a postgres:// ledger
      return Layer.unwrap(
        Effect.promise(() => import("@effect/sql-pg/PgClient")).pipe(
          Effect.map((PgClient) =>
            Ledger.layer.pipe(
              Layer.provide(mustExist ? exists : Layer.empty),
              Layer.provide(PgClient.layer({ url: Redacted.make(state) }))
            )
          )
        )
      )
    }
    const filename = state ?? path.join(stateDir, "state.db")
    return Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename })))
  })).pipe(
    Layer.catchCause((cause) => {
      const squashed = Cause.squash(cause)
      if (squashed instanceof CliFailure) return Layer.effect(Ledger.Ledger, Effect.fail(squashed))
      const message = messageOf(squashed)
      const where = ledgerWhere(stateDir, state)
      return Layer.effect(
        Ledger.Ledger,
        Effect.fail(failure(message.includes(where) ? message : `the ledger at ${where} cannot be opened: ${message}`))
      )
    })
  )

/**
 * Why a command that only reads has no ledger to read: the SQLite file it names (`state`, or `<stateDir>/state.db`)
 * is not there; undefined when it is (or `state` is a Postgres URL).
 *
 * @since 0.1.0
 * @category layers
 */
export const missingLedger = (stateDir: string, state?: string | undefined): string | undefined => {
  if (state !== undefined && isUrl(state)) return undefined
  const filename = path.resolve(state ?? path.join(stateDir, "state.db"))
  return fs.existsSync(filename)
    ? undefined
    : `no ledger at ${filename}: run a pipeline first (offpeak run <module>), or point --state-dir or --state at its ledger`
}

/**
 * The ledger a command only reads (`status`, `failures`, `inspect`): as {@link ledgerLayer}, but a SQLite file that
 * does not exist is refused instead of created (a mistyped `--state-dir` would otherwise show an empty ledger it just
 * made, folders and all).
 *
 * @since 0.1.0
 * @category layers
 */
export const existingLedgerLayer = (stateDir: string, state?: string | undefined): Layer.Layer<Ledger.Ledger, unknown> => {
  const missing = missingLedger(stateDir, state)
  return missing === undefined ? ledgerLayer(stateDir, state, true) : Layer.effect(Ledger.Ledger, Effect.fail(usage(missing)))
}

/**
 * The command that resumes a run, with `--state-dir` when it is not the default and `--state` when it was given on
 * the command line (a value from `OFFPEAK_STATE` is still there for the next command).
 *
 * @since 0.1.0
 * @category formatting
 */
export const resumeHint = (runId: string, stateDir: string, state?: string | undefined): string =>
  commandHint("resume", runId, stateDir, state)

/** `offpeak <command> <run>` with the flags that find the run's ledger again (none for the default folder) */
export const commandHint = (command: "resume" | "cancel", runId: string, stateDir: string, state?: string | undefined): string => {
  const parts = ["offpeak", command, runId]
  if (path.resolve(stateDir) !== path.resolve(".offpeak")) parts.push("--state-dir", quote(stateDir))
  if (state !== undefined && state !== process.env.OFFPEAK_STATE) {
    parts.push("--state", quote(isUrl(state) ? Redact.url(state) : state))
  }
  return parts.join(" ")
}

/**
 * A runner's message names `offpeak resume <run>` or `offpeak cancel <run>` without the flags that found this ledger
 * (it does not know them): the CLI adds them, so the command can be pasted as given.
 */
export const withStateFlags = (message: string, stateDir: string, state?: string | undefined): string =>
  message.replace(/`offpeak (resume|cancel) ([^`\s]+)`/g, (_, command: "resume" | "cancel", runId: string) =>
    `\`${commandHint(command, runId, stateDir, state)}\``)

/** a shell word, quoted when it needs to be */
export const quote = (word: string): string => /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`

// ===== Loading a pipeline module =====

/** `file:line:col` of a failure while loading a module, with the line's text */
interface Location {
  readonly file: string
  readonly line: number
  readonly column: number
  readonly text: string | undefined
}

const readLine = (file: string, line: number): string | undefined => {
  try {
    return fs.readFileSync(file, "utf8").split(/\r?\n/)[line - 1]
  } catch {
    return undefined
  }
}

const toPath = (fileOrUrl: string) => fileOrUrl.startsWith("file://") ? fileURLToPath(fileOrUrl) : fileOrUrl

/**
 * Where a syntax error is: Node puts `<file>:<line>`, the line and a caret under the column at the top of its stack.
 */
export const syntaxLocation = (stack: string): Location | undefined => {
  const lines = stack.split("\n")
  const head = /^(.+):(\d+)$/.exec(lines[0] ?? "")
  if (head === null) return undefined
  const file = toPath(head[1]!)
  const line = Number(head[2])
  const caret = lines.findIndex((l, i) => i > 0 && /^\s*\^+\s*$/.test(l))
  const column = caret > 0 ? lines[caret]!.indexOf("^") + 1 : 1
  return { file, line, column, text: readLine(file, line) }
}

/** where an error thrown while a module loaded was thrown: the first stack frame in a file of the user's (not a package's, not Node's) */
export const throwLocation = (stack: string): Location | undefined => {
  for (const l of stack.split("\n").slice(1)) {
    const frame = /\(?((?:file:\/\/)?\/[^():]+):(\d+):(\d+)\)?\s*$/.exec(l.trim())
    if (frame === null) continue
    const file = toPath(frame[1]!)
    if (file.includes(`${path.sep}node_modules${path.sep}`)) continue
    const line = Number(frame[2])
    return { file, line, column: Number(frame[3]), text: readLine(file, line) }
  }
  return undefined
}

const shown = (file: string) => {
  const relative = path.relative(process.cwd(), file)
  return relative.startsWith("..") || path.isAbsolute(relative) ? file : relative
}

/** the line at fault with a caret under its column */
const excerpt = (where: Location) => {
  if (where.text === undefined) return ""
  const number = String(where.line)
  const pad = " ".repeat(number.length)
  const caretAt = Math.max(0, Math.min(where.column - 1, where.text.length))
  const leading = where.text.slice(0, caretAt).replace(/[^\t]/g, " ")
  return `\n  ${number} | ${where.text}\n  ${pad} | ${leading}^`
}

/** what went wrong loading `modulePath`, said with where */
export const loadError = (modulePath: string, error: unknown): string => {
  const name = shown(path.resolve(modulePath))
  const message = messageOf(error)
  const stack = error instanceof Error ? error.stack ?? "" : ""
  const code = typeof error === "object" && error !== null && "code" in error ? String((error as { code: unknown }).code) : ""
  if (error instanceof SyntaxError || code.includes("TYPESCRIPT_SYNTAX")) {
    const where = syntaxLocation(stack)
    if (where !== undefined) {
      return `${shown(where.file)}:${where.line}:${where.column}: syntax error: ${message} ` +
        `(loading the pipeline module ${name})${excerpt(where)}`
    }
    return `${name}: syntax error: ${message}`
  }
  if (code === "ERR_MODULE_NOT_FOUND" || code === "ERR_UNSUPPORTED_DIR_IMPORT") {
    return `the pipeline module ${name} cannot be loaded: ${message}`
  }
  const where = throwLocation(stack)
  const what = error instanceof Error ? `${error.name}: ${message}` : message
  return where !== undefined
    ? `${shown(where.file)}:${where.line}:${where.column}: ${what} (thrown while loading the pipeline module ${name})${excerpt(where)}`
    : `the pipeline module ${name} threw while loading: ${what}`
}

/**
 * Imports a module and returns the pipeline it exports (`default` or `pipeline`). A missing file is a usage error;
 * a syntax error or an exception while the module loads says where (file, line, column, the line itself).
 *
 * @since 0.1.0
 * @category loading
 */
export const loadPipeline = (modulePath: string) =>
  Effect.gen(function*() {
    const absolute = path.resolve(modulePath)
    if (!fs.existsSync(absolute)) return yield* usage(`${modulePath}: no such file`)
    const mod = yield* Effect.tryPromise({
      try: () => import(pathToFileURL(absolute).href),
      catch: (e) => failure(Redact.text(loadError(modulePath, e)))
    })
    const candidate = mod.default ?? mod.pipeline
    if (!Pipeline.isPipeline(candidate)) {
      return yield* usage(`${modulePath} must export a pipeline (export default Pipeline.make({...}))`)
    }
    return candidate as Pipeline.Pipeline<unknown, unknown>
  })
