/**
 * The whole pipeline on the embedded default, for every provider: CSV →
 * requests → batches → the provider's adapter (official SDK) → its local
 * emulator → results joined by custom id → JSONL sink, with a SQLite ledger.
 * One suite, the same assertions for each provider.
 */
import * as AdaptiveLimit from "@offpeak/core/AdaptiveLimit"
import * as Fingerprint from "@offpeak/core/Fingerprint"
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Progress from "@offpeak/core/Progress"
import * as Request from "@offpeak/core/Request"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Fixture from "./fixtures/tickets.pipeline.ts"
import { readParts, tmpDir, writeTickets } from "./support/files.ts"
import * as Providers from "./support/providers.ts"

const overlap = (intervals: ReadonlyArray<readonly [number, number]>) => {
  const events = intervals.flatMap(([a, b]) => [[a, 1], [b, -1]] as const).sort((x, y) => x[0] - y[0] || x[1] - y[1])
  let now = 0
  let max = 0
  for (const [, d] of events) max = Math.max(max, (now += d))
  return max
}

/** the tickets of a CSV written by `writeTickets`, in file order */
const tickets = (file: string): Array<Fixture.Ticket> =>
  fs.readFileSync(file, "utf8").split(/\n(?=r\d{6},)/).slice(1).map((line) => {
    const comma = line.indexOf(",")
    let text = line.slice(comma + 1).replace(/\n$/, "")
    if (text.startsWith("\"")) text = text.slice(1, -1).replace(/""/g, "\"")
    return { id: line.slice(0, comma), text }
  })

describe.each(Providers.all)("$name: CSV → batch API (emulator) → JSONL", (p) => {
  const ledgerOf = (stateDir: string) =>
    Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))
  const batchesOf = (stateDir: string, runId: string) =>
    Effect.gen(function*() {
      return yield* (yield* Ledger.Ledger).batches(runId)
    }).pipe(Effect.provide(ledgerOf(stateDir)))

  it.live("10,000 rows, 1,000 requests / 256 KB per batch, 3 in flight: limits kept, every row once, joined right, any order", () =>
    Effect.gen(function*() {
      const dir = tmpDir(`e2e-${p.name}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 10_000)
      const out = path.join(dir, "out")
      // the emulator itself refuses anything over the limit: a batch over it would show up as a split
      const emulator = yield* p.serve({ linesPerSecond: 200_000, ...p.refuseOver(256 * 1024 + 1024) })
      const progress = Progress.make()
      const pipeline = Fixture.make({ input, out, maxRequests: 1_000, maxBytes: 256 * 1024, maxInFlight: 3 })
      const summary = yield* Pipeline.run(pipeline, { stateDir: dir, progress }).pipe(
        Effect.provide(Layer.mergeAll(p.layer(emulator.url), ledgerOf(dir)))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.succeeded, 10_000)
      assert.strictEqual(summary.failed, 0)

      // every row exactly once, with the answer computed from its own text
      const rows = readParts(out)
      assert.strictEqual(rows.length, 10_000)
      assert.strictEqual(new Set(rows.map((r) => r.id)).size, 10_000)
      for (const row of rows) assert.deepStrictEqual(row.output, p.expected({ id: row.id, text: row.text }))

      // limits: as the ledger sealed them, and none refused by the emulator
      const batches = yield* batchesOf(dir, summary.runId)
      for (const b of batches) {
        assert.isAtMost(b.requestCount, 1_000)
        assert.isAtMost(b.bytes, 256 * 1024)
        assert.notStrictEqual(b.remoteState, "split")
      }
      assert.isAbove(batches.filter((b) => b.bytes > 200 * 1024).length, batches.length - 3, "batches fill up to the byte limit")

      // every request sent once, and results came back in another order than they were sent
      const created = yield* Effect.promise(() => p.created(emulator.url))
      assert.strictEqual(created.length, batches.length)
      const sent = created.flat()
      assert.strictEqual(sent.length, 10_000)
      assert.strictEqual(new Set(sent).size, 10_000)
      const order = new Map(tickets(input).map((t, i) => [
        Fingerprint.of(Request.withOutput(Fixture.request(t, { provider: p.name }), { name: "label", schema: Fixture.Label })),
        i
      ]))
      assert.strictEqual(order.size, 10_000)
      const shuffled = created.filter((ids) => ids.some((id, i) => i > 0 && order.get(id)! < order.get(ids[i - 1]!)!))
      assert.strictEqual(shuffled.length, created.length, "every batch's results come back out of order")

      // never more than 3 batches in flight
      assert.isAtMost(progress.maxInFlight, 3)
      assert.isAtLeast(progress.maxInFlight, 2)
      const inFlight = overlap(batches.map((b) => [Date.parse(b.submittedAt!), Date.parse(b.endedAt!)] as const))
      assert.isAtMost(inFlight, 3)
      console.log(
        `${p.name} e2e: ${rows.length} rows in the sink (${new Set(rows.map((r) => r.id)).size} distinct, each checked against its own text), ` +
          `${batches.length} batches (largest ${Math.max(...batches.map((b) => b.requestCount))} requests, ` +
          `${(Math.max(...batches.map((b) => b.bytes)) / 1024).toFixed(1)} KiB), ${created.length} created, ${sent.length} requests sent, ` +
          `${shuffled.length}/${created.length} answered out of order, at most ${Math.max(progress.maxInFlight, inFlight)} in flight`
      )
    }), { timeout: 180_000 })

  it.live("sync mode: every request through the synchronous API (official SDK), every row once and joined right, no batch", () =>
    Effect.gen(function*() {
      const dir = tmpDir(`e2e-sync-${p.name}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 600, 5)
      const out = path.join(dir, "out")
      const emulator = yield* p.serve({ linesPerSecond: 100_000 })
      const pipeline = Pipeline.make({ ...Fixture.make({ input, out, maxRequests: 250 }), mode: "sync" })
      const summary = yield* Pipeline.run(pipeline, { stateDir: dir }).pipe(
        Effect.provide(Layer.mergeAll(p.layer(emulator.url), ledgerOf(dir)))
      )
      assert.strictEqual(summary.state, "completed")
      const rows = readParts(out)
      assert.strictEqual(rows.length, 600)
      assert.strictEqual(new Set(rows.map((r) => r.id)).size, 600)
      for (const row of rows) assert.deepStrictEqual(row.output, p.expected({ id: row.id, text: row.text }))
      assert.strictEqual((yield* Effect.promise(() => p.created(emulator.url))).length, 0)
      const batches = yield* batchesOf(dir, summary.runId)
      assert.deepStrictEqual(batches.map((b) => [b.mode, b.requestCount, b.completed]), [["sync", 250, 250], ["sync", 250, 250], ["sync", 100, 100]])
    }), { timeout: 120_000 })

  it.live("sync mode under 429s: the adaptive limit halves and waits out retry-after; every row arrives", () =>
    Effect.gen(function*() {
      const dir = tmpDir(`e2e-sync-429-${p.name}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 16, 9)
      const out = path.join(dir, "out")
      const emulator = yield* p.serve({ linesPerSecond: 100_000, ...p.syncRateLimited(3, 50) })
      const limit = AdaptiveLimit.make({ max: 8 })
      const pipeline = Pipeline.make({ ...Fixture.make({ input, out, maxRequests: 16 }), mode: "sync" })
      const summary = yield* Pipeline.run(pipeline, { stateDir: dir }).pipe(
        Effect.provide(Layer.mergeAll(p.layer(emulator.url, { syncLimit: limit }), ledgerOf(dir)))
      )
      assert.strictEqual(summary.state, "completed")
      // the SDK's retries got every call through: no row failed
      assert.strictEqual(summary.succeeded, 16)
      assert.strictEqual(readParts(out).length, 16)
      // 8 → 4 on the 429s, then one more per run of answers as long as the limit: 16 answers cannot bring it back to 8
      assert.isBelow(limit.current(), 8)
      assert.isAtLeast(limit.current(), 4)
    }), { timeout: 60_000 })

  it.live("malformed CSV rows and per-line provider errors end in the dead letter with a reason; the run completes", () =>
    Effect.gen(function*() {
      const dir = tmpDir(`e2e-dead-${p.name}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 300, 7)
      const lines = fs.readFileSync(input, "utf8").split("\n")
      lines.splice(50, 0, "bad-row-without-text")
      lines.splice(120, 0, ",an empty id")
      fs.writeFileSync(input, lines.join("\n"))
      const out = path.join(dir, "out")
      const emulator = yield* p.serve({ linesPerSecond: 100_000, ...p.lineFailures(0.05, 0.1) })
      const summary = yield* Pipeline.run(Fixture.make({ input, out, maxRequests: 100 }), { stateDir: dir }).pipe(
        Effect.provide(Layer.mergeAll(p.layer(emulator.url), ledgerOf(dir)))
      )
      assert.strictEqual(summary.state, "completed")
      const ok = readParts(out)
      const dead = readParts(path.join(out, "dead-letter"))
      assert.strictEqual(ok.length + dead.length, 302)
      assert.strictEqual(new Set([...ok.map((r) => r.id), ...dead.map((r) => r.key)]).size, 302)
      const malformed = dead.filter((d) => d.kind === "invalid_input")
      assert.strictEqual(malformed.length, 2)
      for (const m of malformed) assert.match(m.message, /tickets\.csv row \d+ \(line \d+\)/)
      assert.isTrue(malformed.some((m) => /field "id"/.test(m.message)))
      // final failures at once; retryable ones were retried, so far fewer of them end dead
      const providerErrors = dead.filter((d) => d.kind === "provider_error")
      assert.isAbove(providerErrors.length, 0)
      for (const e of providerErrors) {
        assert.isTrue(p.finalFailure.test(e.message) || p.retryableFailure.test(e.message), e.message)
      }
      assert.isBelow(providerErrors.filter((e) => p.retryableFailure.test(e.message)).length, 5)
      assert.isAbove(ok.length, 250)
      console.log(
        `${p.name} dead letter: ${ok.length} in the sink, ${dead.length} dead (${malformed.length} malformed, ` +
          `${providerErrors.length} provider errors), e.g. ${JSON.stringify(malformed[0]!.message)}`
      )
    }), { timeout: 120_000 })

  it.live("a batch refused as too large is split in half and the halves are resubmitted", () =>
    Effect.gen(function*() {
      const dir = tmpDir(`e2e-split-${p.name}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 400, 3)
      const out = path.join(dir, "out")
      const emulator = yield* p.serve({ linesPerSecond: 100_000, ...p.refuseOver(90_000) })
      const summary = yield* Pipeline.run(Fixture.make({ input, out, maxRequests: 400 }), { stateDir: dir }).pipe(
        Effect.provide(Layer.mergeAll(p.layer(emulator.url), ledgerOf(dir)))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(readParts(out).length, 400)
      const batches = yield* batchesOf(dir, summary.runId)
      assert.isAbove(batches.filter((b) => b.remoteId === null && b.state === "collected").length, 0, "some batch was split")
      const created = yield* Effect.promise(() => p.created(emulator.url))
      assert.strictEqual(created.flat().length, 400)
      assert.strictEqual(new Set(created.flat()).size, 400)
      const split = batches.filter((b) => b.remoteId === null && b.state === "collected").length
      console.log(`${p.name} split: ${split} batches refused as too large and split, ${created.length} created, 400 rows delivered once`)
    }), { timeout: 120_000 })
})
