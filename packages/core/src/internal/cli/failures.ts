/**
 * `failures <run>`: the rows that ended in the dead letter, grouped by kind with counts and a few examples each; with
 * `--kind`, that kind's rows in source order, a page at a time (`--limit`, `--after`). `--json` prints
 * `Json.Failures`.
 *
 * @internal
 */
import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as path from "node:path"
import * as Ledger from "../../Ledger.ts"
import type * as Result from "../../Result.ts"
import * as Json from "./json.ts"
import { failure, jsonFlag, existingLedgerLayer, stateDirFlag, stateFlag, usage } from "./shared.ts"
import * as Table from "./table.ts"

const KINDS: ReadonlyArray<Result.FailureKind> = Json.FailureKind.literals

/** examples shown per kind without `--kind` */
const EXAMPLES = 3

const int = (n: number) => n.toLocaleString("en-US")

/** one line of a message (the first), cut to `width` when there is one */
const oneLine = (message: string, width: number | undefined) => {
  const first = message.split("\n")[0] ?? ""
  const flat = message.includes("\n") ? `${first} …` : first
  return width === undefined || flat.length <= width ? flat : `${flat.slice(0, Math.max(10, width - 1))}…`
}

/** the `failures` command */
export const failuresCommand = Command.make(
  "failures",
  {
    runId: Argument.String("run").pipe(Argument.withDescription("the run id (see offpeak status)")),
    kind: Flag.String("kind").pipe(
      Flag.withDescription(`only rows that failed this way: ${KINDS.join(", ")}`),
      Flag.optional
    ),
    limit: Flag.Int("limit").pipe(Flag.withDescription("rows to show (default 50; examples per kind without --kind: 3)"), Flag.optional),
    after: Flag.Int("after").pipe(Flag.withDescription("only rows after this source position (the next page)"), Flag.optional),
    json: jsonFlag,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, kind, limit, after, json, stateDir, state }) =>
    Effect.gen(function*() {
      const wanted = Option.getOrUndefined(kind)
      if (wanted !== undefined && !KINDS.includes(wanted as Result.FailureKind)) {
        return yield* usage(`--kind must be one of ${KINDS.join(", ")}, got "${wanted}"`)
      }
      const n = Option.getOrUndefined(limit)
      if (n !== undefined && n < 1) return yield* usage(`--limit must be at least 1, got ${n}`)
      const ledger = yield* Ledger.Ledger
      const run = yield* ledger.getRun(runId)
      if (Option.isNone(run)) return yield* usage(`no run "${runId}" in the ledger (offpeak status lists the runs)`)
      const counts = yield* ledger.failureCounts(runId)
      const width = process.stdout.isTTY === true ? (process.stdout.columns ?? 100) : undefined
      if (wanted === undefined) {
        const rows: Array<Ledger.FailedRow> = []
        for (const { kind: k } of counts) {
          rows.push(...(yield* ledger.failures(runId, { kind: k, limit: n ?? EXAMPLES })))
        }
        if (json) {
          return yield* Console.log(Json.render(Json.Failures, { runId, kind: null, counts, rows: rows.map(toJson), next: null }))
        }
        const total = counts.reduce((sum, c) => sum + c.rows, 0)
        if (total === 0) {
          // a run of table jobs (pushdown) keeps no row of its own: its failed rows are only in its dead-letter sink
          const dead = (yield* ledger.counts(runId)).dead
          return yield* Console.log(
            dead === 0
              ? `run ${runId}: no row failed`
              : `run ${runId}: ${int(dead)} rows failed in its table jobs; they are in the run's dead-letter sink ` +
                `(named in its summary), not in the ledger`
          )
        }
        yield* Console.log(`run ${runId}: ${int(total)} rows failed`)
        const kindWidth = Math.max(...counts.map((c) => c.kind.length))
        for (const c of counts) {
          yield* Console.log(`  ${c.kind.padEnd(kindWidth)}  ${int(c.rows).padStart(8)}   offpeak failures ${runId} --kind ${c.kind}`)
          const examples = rows.filter((r) => r.kind === c.kind)
          const keyWidth = Math.max(...examples.map((e) => e.key.length))
          for (const e of examples) {
            const head = `    ${e.key.padEnd(keyWidth)}  row ${e.position}  `
            yield* Console.log(`${head}${oneLine(e.message, width === undefined ? undefined : width - head.length - 1)}`)
          }
        }
        return
      }
      const page = n ?? 50
      const rows = yield* ledger.failures(runId, {
        kind: wanted as Result.FailureKind,
        after: Option.getOrUndefined(after),
        limit: page + 1
      })
      const shown = rows.slice(0, page)
      const next = rows.length > page ? shown[shown.length - 1]!.position : null
      if (json) {
        return yield* Console.log(
          Json.render(Json.Failures, { runId, kind: wanted as Result.FailureKind, counts, rows: shown.map(toJson), next })
        )
      }
      const total = counts.find((c) => c.kind === wanted)?.rows ?? 0
      if (shown.length === 0) return yield* Console.log(`run ${runId}: no row failed with ${wanted}${Option.isSome(after) ? ` after row ${after.value}` : ""}`)
      yield* Console.log(`run ${runId}: ${int(total)} rows failed with ${wanted}; rows ${shown[0]!.position}–${shown[shown.length - 1]!.position}:`)
      const table = Table.render(
        [{ header: "KEY" }, { header: "ROW", align: "right" }, { header: "ATTEMPTS", align: "right" }, { header: "MESSAGE" }],
        shown.map((r) => [r.key, String(r.position), String(r.attempts), r.message]),
        "  "
      )
      for (const line of table) {
        yield* Console.log(width === undefined || line.length <= width ? line : `${line.slice(0, width - 1)}…`)
      }
      if (next !== null) yield* Console.log(`next page: offpeak failures ${runId} --kind ${wanted} --after ${next}`)
      yield* Console.log(`one row in full: offpeak inspect ${runId} <key>`)
    }).pipe(
      Effect.provide(existingLedgerLayer(path.resolve(stateDir), Option.getOrUndefined(state))),
      Effect.mapError(failure)
    )
).pipe(Command.withDescription("The rows of a run that failed: by kind with examples, or the rows of one kind"))

const toJson = (r: Ledger.FailedRow): typeof Json.FailedRow.Type => ({
  key: r.key,
  position: r.position,
  kind: r.kind,
  message: r.message,
  raw: r.raw,
  attempts: r.attempts
})
