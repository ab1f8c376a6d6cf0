/**
 * `ui`: a local web view of the runs in a ledger — runs, each run's batches on a timeline, progress and cost (live:
 * the page reads the ledger again every second while a run is worked), failures by kind with their rows, and one
 * row's record, request and answer. Read-only; on 127.0.0.1 unless `--host` says otherwise. Prints the page's URL.
 *
 * @internal
 */
import { Console, Context, Effect, Layer, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as path from "node:path"
import * as Ledger from "../../Ledger.ts"
import * as Redact from "../../Redact.ts"
import * as SqliteClient from "../../SqliteClient.ts"
import { CliFailure, failure, ledgerLayer, missingLedger, stateDirFlag, stateFlag } from "./shared.ts"

/**
 * The ledger the view reads: a Postgres URL as every command opens it; a SQLite file opened read-only, and refused
 * when it does not exist (a mistyped `--state-dir` would otherwise show an empty ledger it just created).
 */
const viewLedger = (stateDir: string, state: string | undefined) =>
  Effect.gen(function*() {
    if (state !== undefined && /^postgres(ql)?:\/\//.test(state)) return { layer: ledgerLayer(stateDir, state), where: Redact.text(state) }
    const missing = missingLedger(stateDir, state)
    if (missing !== undefined) return yield* new CliFailure({ message: missing })
    const filename = path.resolve(state ?? path.join(stateDir, "state.db"))
    return {
      layer: Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename, readOnly: true }))) as Layer.Layer<Ledger.Ledger, unknown>,
      where: filename
    }
  })

/** `text` as one shell word */
const shellWord = (text: string) => /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`

/** the flags a command needs to reach this ledger from anywhere (none for the default `.offpeak` of the folder) */
const ledgerFlags = (stateDir: string, state: string | undefined) =>
  [
    path.resolve(stateDir) === path.resolve(".offpeak") ? "" : `--state-dir ${shellWord(path.resolve(stateDir))}`,
    state === undefined ? "" : `--state ${shellWord(/^postgres(ql)?:\/\//.test(state) ? Redact.text(state) : path.resolve(state))}`
  ].filter((f) => f !== "").join(" ")

/** the `ui` command */
export const uiCommand = Command.make(
  "ui",
  {
    port: Flag.Int("port").pipe(Flag.withDescription("0 picks a free port"), Flag.withDefault(0)),
    host: Flag.String("host").pipe(
      Flag.withDescription("the address to listen on; anything but loopback lets others on the network read the runs"),
      Flag.withDefault("127.0.0.1")
    ),
    noRender: Flag.Boolean("no-render").pipe(
      Flag.withDescription("do not import the runs' pipeline modules to show a row's rendered request"),
      Flag.withDefault(false)
    ),
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ port, host, noRender, stateDir, state }) =>
    Effect.gen(function*() {
      const { layer, where } = yield* viewLedger(path.resolve(stateDir), Option.getOrUndefined(state))
      // loaded here: the other commands never need the view's server
      const Server = yield* Effect.promise(() => import("../ui/server.ts"))
      // the ledger stays open as long as the server (both in this command's scope)
      const ledger = Context.get(
        yield* Layer.build(layer).pipe(Effect.mapError((e) => {
          const message = (e as { message?: string }).message ?? String(e)
          return failure(`cannot open the ledger ${where}: ${message}${
            /readonly|read-only/i.test(message) ? " (an older offpeak wrote it: `offpeak status` upgrades it)" : ""
          }`)
        })),
        Ledger.Ledger
      )
      const url = yield* Server.serve(ledger, {
        host,
        port,
        label: where,
        ledgerFlags: ledgerFlags(stateDir, Option.getOrUndefined(state)),
        render: !noRender
      }).pipe(Effect.mapError(failure))
      if (!Server.isLoopback(host)) {
        yield* Console.error(`offpeak ui: listening on ${host}: anyone who can reach it can read these runs' records and answers`)
      }
      yield* Console.error(`offpeak ui: the runs of ${where} (Ctrl-C stops)`)
      yield* Console.log(url)
      return yield* Effect.never
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Serve a local web view of the runs: progress, batches, failures, rows (prints its URL)"))
