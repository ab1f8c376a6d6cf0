/**
 * `status`: the runs of a ledger (aligned columns with their times, tokens and cost; who works a running run), or one
 * run with its counts, failures by kind, money and batches. `--json` prints `Json.StatusList` / `Json.StatusRun`.
 *
 * @internal
 */
import { Console, Effect, Option } from "effect"
import { Argument, Command } from "effect/cli"
import * as path from "node:path"
import type * as LedgerModule from "../../Ledger.ts"
import * as Ledger from "../../Ledger.ts"
import * as Prices from "../../Prices.ts"
import { compact, duration } from "./display.ts"
import * as Json from "./json.ts"
import * as Summary from "./summary.ts"
import { failure, jsonFlag, existingLedgerLayer, stateDirFlag, stateFlag, usage } from "./shared.ts"
import * as Table from "./table.ts"

const int = (n: number) => n.toLocaleString("en-US")
const iso = (ms: number) => new Date(ms).toISOString()
const usd = (m: bigint) => Prices.formatUsd(m, m >= 1_000_000_000_000n ? 2 : 4)

/** from a run's creation to its last update, or to now while it runs */
const elapsedOf = (run: LedgerModule.Run, now: number) =>
  Math.max(0, (run.state === "running" ? now : Date.parse(run.updatedAt)) - Date.parse(run.createdAt))

/** a run with its counts, money and holder, as `--json` prints it */
const describeRun = (ledger: LedgerModule.Service, run: LedgerModule.Run, now: number) =>
  Effect.gen(function*() {
    const counts = yield* ledger.counts(run.id)
    const spend = yield* ledger.spend(run.id)
    const lease = run.state === "running" ? yield* ledger.holder(run.pipeline) : Option.none()
    const holder = Option.isSome(lease) && lease.value.runId === run.id ? lease.value : undefined
    const json: typeof Json.Run.Type = {
      id: run.id,
      pipeline: run.pipeline,
      module: run.module,
      provider: run.provider,
      mode: run.mode,
      state: run.state,
      message: run.message,
      sourceDone: run.sourceDone,
      createdAt: run.createdAt,
      updatedAt: run.updatedAt,
      elapsedMs: Math.round(elapsedOf(run, now)),
      cwd: run.cwd,
      checkpoint: run.checkpoint,
      checkpointPosition: run.checkpointPosition,
      counts,
      tokens: Ledger.spendReport(spend).usage,
      cost: {
        ...Ledger.spendReport(spend).cost,
        reservedUsd: Prices.toUsd(spend.reserved),
        unpricedAnswers: spend.unpriced
      },
      holder: holder === undefined ? null : {
        host: holder.host,
        pid: holder.pid,
        acquiredAt: iso(holder.acquiredAt),
        heartbeatAt: iso(holder.heartbeatAt),
        expiresAt: iso(holder.expiresAt),
        alive: holder.alive ?? null
      }
    }
    return { json, spend }
  })

/** who works a running run, and whether that process is still there (figures of a live run hold as of its heartbeat) */
const holderOf = (run: typeof Json.Run.Type, now: number): string | undefined => {
  if (run.state !== "running") return undefined
  const h = run.holder
  if (h === null) return `no process holds it (it stopped without saying so): offpeak resume ${run.id} goes on with it`
  if (h.alive === false) return `its process (pid ${h.pid} on ${h.host}) is gone: offpeak resume ${run.id} goes on with it`
  return `pid ${h.pid} on ${h.host} since ${Table.timeNear(h.acquiredAt, new Date(now).toISOString())}, ` +
    `heartbeat ${duration(Math.max(0, now - Date.parse(h.heartbeatAt)))} ago`
}

const listRuns = (json: boolean) =>
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    const now = Date.now()
    const runs = yield* ledger.listRuns
    const described = []
    for (const run of runs) described.push(yield* describeRun(ledger, run, now))
    if (json) return yield* Console.log(Json.render(Json.StatusList, described.map((d) => d.json)))
    if (described.length === 0) return yield* Console.log("no runs yet")
    const lines = Table.render(
      [
        { header: "RUN" },
        { header: "STATE" },
        { header: "ROWS", align: "right" },
        { header: "OK", align: "right" },
        { header: "FAILED", align: "right" },
        { header: "BATCHES", align: "right" },
        { header: "CREATED" },
        { header: "ELAPSED", align: "right" },
        { header: "TOKENS IN/OUT", align: "right" },
        { header: "COST", align: "right" }
      ],
      described.map(({ json: r, spend }) => [
        r.id,
        r.state,
        int(r.counts.items),
        int(r.counts.delivered),
        int(r.counts.dead),
        `${r.counts.batches}${r.counts.openBatches > 0 ? ` (${r.counts.openBatches} open)` : ""}`,
        Table.dateTime(r.createdAt),
        duration(r.elapsedMs),
        r.tokens.inputTokens + r.tokens.outputTokens > 0 ? `${compact(r.tokens.inputTokens)}/${compact(r.tokens.outputTokens)}` : "-",
        spend.spent > 0n ? usd(spend.spent) : "-"
      ])
    )
    for (const line of lines) yield* Console.log(line)
    for (const { json: r } of described) {
      const said = holderOf(r, now)
      if (said !== undefined) yield* Console.log(`${r.id}: ${said}`)
    }
  })

const showRun = (runId: string, json: boolean) =>
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    const now = Date.now()
    const found = yield* ledger.getRun(runId)
    if (Option.isNone(found)) return yield* usage(`no run "${runId}" in the ledger (offpeak status lists the runs)`)
    const { json: r, spend } = yield* describeRun(ledger, found.value, now)
    const failures = yield* ledger.failureCounts(runId)
    const batches = yield* ledger.batches(runId)
    if (json) {
      return yield* Console.log(Json.render(Json.StatusRun, {
        run: r,
        counts: r.counts,
        failures,
        batches: batches.map((b) => ({
          id: b.id,
          seq: b.seq,
          state: b.state,
          mode: b.mode,
          model: b.model,
          requestCount: b.requestCount,
          bytes: b.bytes,
          remoteId: b.remoteId,
          remoteState: b.remoteState,
          completed: b.completed,
          failed: b.failed,
          createdAt: b.createdAt,
          submittedAt: b.submittedAt,
          endedAt: b.endedAt
        }))
      }))
    }
    const c = r.counts
    const lines: Array<[string, string]> = [
      [
        "created",
        `${Table.dateTime(r.createdAt)} · last update ${Table.timeNear(r.updatedAt, r.createdAt)} · ` +
          `${r.state === "running" ? "running for" : "took"} ${duration(r.elapsedMs)}`
      ],
      ["rows", Summary.rowsLine({ rows: c.items, succeeded: c.delivered, dead: c.dead, pending: c.pendingItems, failedByKind: failures }, "delivered")],
      [
        "requests",
        `${int(c.requests)} · queued ${int(c.queued)} · in batches ${int(c.batched)} · succeeded ${int(c.succeeded)} · failed ${int(c.failed)}`
      ]
    ]
    if (failures.length > 0) {
      lines.push(["failures", `${failures.map((f) => `${f.kind} ${int(f.rows)}`).join(" · ")} · offpeak failures ${r.id}`])
    }
    if (r.tokens.inputTokens + r.tokens.outputTokens > 0) {
      lines.push([
        "tokens",
        `${int(r.tokens.inputTokens)} in${r.tokens.cachedInputTokens > 0 ? ` (${int(r.tokens.cachedInputTokens)} cached)` : ""} · ` +
          `${int(r.tokens.outputTokens)} out`
      ])
    }
    if (spend.spent > 0n || spend.reserved > 0n || spend.budget !== null) {
      lines.push([
        "cost",
        `${usd(spend.spent)} spent · ${usd(spend.syncEquivalent)} through the synchronous API` +
          (spend.reserved > 0n ? ` · ${usd(spend.reserved)} reserved` : "") +
          (spend.budget !== null ? ` · budget ${usd(spend.budget)}` : "")
      ])
    }
    if (r.cwd !== null) lines.push(["started in", r.cwd])
    const said = holderOf(r, now)
    if (said !== undefined) lines.push(["worked by", said])
    const width = Math.max(...lines.map(([label]) => label.length))
    yield* Console.log(`run ${r.id} (${r.pipeline}, ${r.provider}, ${r.mode}): ${r.state}${r.message ? ` — ${r.message}` : ""}`)
    for (const [label, value] of lines) yield* Console.log(`  ${label.padEnd(width)}  ${value}`)
    if (batches.length === 0) return
    yield* Console.log("")
    const table = Table.render(
      [
        { header: "BATCH" },
        { header: "STATE" },
        { header: "MODE" },
        { header: "REMOTE" },
        { header: "PROVIDER" },
        { header: "REQUESTS", align: "right" },
        { header: "DONE", align: "right" },
        { header: "FAILED", align: "right" },
        { header: "CREATED" },
        { header: "SUBMITTED" },
        { header: "ENDED" },
        { header: "TOOK", align: "right" }
      ],
      batches.map((b) => [
        b.id.startsWith(`${r.id}-`) ? b.id.slice(r.id.length + 1) : b.id,
        b.state,
        b.mode,
        b.remoteId ?? (b.mode === "sync" ? "(sync calls)" : "-"),
        b.remoteState ?? "-",
        int(b.requestCount),
        int(b.completed),
        int(b.failed),
        Table.timeNear(b.createdAt, r.createdAt),
        b.submittedAt === null ? "-" : Table.timeNear(b.submittedAt, r.createdAt),
        b.endedAt === null ? "-" : Table.timeNear(b.endedAt, r.createdAt),
        b.submittedAt === null
          ? "-"
          : duration(Math.max(0, (b.endedAt === null ? now : Date.parse(b.endedAt)) - Date.parse(b.submittedAt)))
      ]),
      "  "
    )
    for (const line of table) yield* Console.log(line)
  })

/** the `status` command */
export const statusCommand = Command.make(
  "status",
  {
    runId: Argument.String("run").pipe(Argument.withDescription("one run to show with its batches"), Argument.optional),
    json: jsonFlag,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, json, stateDir, state }) =>
    (Option.isNone(runId) ? listRuns(json) : showRun(runId.value, json)).pipe(
      Effect.provide(existingLedgerLayer(path.resolve(stateDir), Option.getOrUndefined(state))),
      Effect.mapError(failure)
    )
).pipe(Command.withDescription("List runs (times, rows, tokens, cost, who works them), or show one run and its batches"))
