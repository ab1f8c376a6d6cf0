/**
 * `status`: the runs of a ledger, or one run with its counts and batches.
 *
 * @internal
 */
import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as path from "node:path"
import * as Ledger from "../../Ledger.ts"
import { CliFailure, failure, ledgerLayer, stateDirFlag, stateFlag } from "./shared.ts"

const pad = (s: string, n: number) => s.length >= n ? s : s + " ".repeat(n - s.length)

/** the `status` command */
export const statusCommand = Command.make(
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
