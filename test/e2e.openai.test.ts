/**
 * The whole pipeline on the embedded default: CSV → requests → batches →
 * the OpenAI adapter (official SDK) → the local emulator → results joined by
 * custom id → JSONL sink, with a SQLite ledger.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Progress from "@offpeak/core/Progress"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Emulator, OpenAiBatch } from "@offpeak/providers/openai"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as path from "node:path"
import OpenAI from "openai"
import * as Fixture from "./fixtures/tickets.pipeline.ts"
import { expectedLabel } from "./support/expected.ts"
import { readParts, tmpDir, writeTickets } from "./support/files.ts"

const layers = (url: string, stateDir: string) =>
  Layer.mergeAll(
    OpenAiBatch.layer({ apiKey: Redacted.make("test"), baseURL: url, pollInterval: { initial: "20 millis", max: "200 millis" } }),
    Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))
  )

const overlap = (intervals: ReadonlyArray<readonly [number, number]>) => {
  const events = intervals.flatMap(([a, b]) => [[a, 1], [b, -1]] as const).sort((x, y) => x[0] - y[0] || x[1] - y[1])
  let now = 0
  let max = 0
  for (const [, d] of events) max = Math.max(max, (now += d))
  return max
}

describe("CSV → OpenAI Batch (emulator) → JSONL", () => {
  it.live("10,000 rows, 1,000 requests / 256 KB per batch, 3 in flight: limits kept, every row once, joined right", () =>
    Effect.gen(function*() {
      const dir = tmpDir("e2e")
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 10_000)
      const out = path.join(dir, "out")
      const emulator = yield* Emulator.serve({ linesPerSecond: 200_000, validationMs: 5, finalizingMs: 5 })
      const progress = Progress.make()
      const pipeline = Fixture.make({ input, out, maxRequests: 1_000, maxBytes: 256 * 1024, maxInFlight: 3 })
      const summary = yield* Pipeline.run(pipeline, { stateDir: dir, progress }).pipe(
        Effect.provide(layers(emulator.url, dir))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.succeeded, 10_000)
      assert.strictEqual(summary.failed, 0)

      // every row exactly once, with the answer computed from its own text
      const rows = readParts(out)
      assert.strictEqual(rows.length, 10_000)
      assert.strictEqual(new Set(rows.map((r) => r.id)).size, 10_000)
      for (const row of rows) assert.deepStrictEqual(row.output, expectedLabel({ id: row.id, text: row.text }))

      // the limits, as the emulator saw them, and every line sent once
      const client = new OpenAI({ apiKey: "test", baseURL: emulator.url })
      const batches = yield* Effect.promise(async () => {
        const all = []
        for await (const b of client.batches.list({ limit: 100 })) all.push(b)
        return all
      })
      assert.strictEqual(batches.length, summary.batches)
      const seen = new Set<string>()
      let fullByCount = 0
      let fullByBytes = 0
      for (const b of batches) {
        assert.isAtMost(b.request_counts!.total, 1_000)
        const file = yield* Effect.promise(() => client.files.retrieve(b.input_file_id))
        assert.isAtMost(file.bytes, 256 * 1024)
        if (b.request_counts!.total === 1_000) fullByCount++
        if (file.bytes > 200 * 1024) fullByBytes++
        const text = yield* Effect.promise(() => client.files.content(b.input_file_id).then((r) => r.text()))
        const ids = text.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).custom_id as string)
        for (const id of ids) {
          assert.isFalse(seen.has(id), `custom_id ${id} sent twice`)
          seen.add(id)
        }
        // output order is not input order
        if (b.output_file_id && ids.length > 10) {
          const output = yield* Effect.promise(() => client.files.content(b.output_file_id!).then((r) => r.text()))
          const order = output.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).custom_id as string)
          assert.sameMembers(order, ids)
          assert.notDeepEqual(order, ids)
        }
      }
      // each line carries the system prompt and the output schema (~0.6 KB), so 256 KB closes a batch long before
      // 1,000 requests: the byte limit is the one that binds here (the request limit is exercised in Batcher.test.ts)
      assert.strictEqual(fullByCount, 0)
      assert.isAbove(fullByBytes, batches.length - 2, "batches are filled up to the byte limit")

      // never more than 3 batches in flight
      assert.isAtMost(progress.maxInFlight, 3)
      assert.isAtLeast(progress.maxInFlight, 2)
      const ledgerBatches = yield* Effect.gen(function*() {
        const ledger = yield* Ledger.Ledger
        return yield* ledger.batches(summary.runId)
      }).pipe(Effect.provide(layers(emulator.url, dir)))
      assert.isAtMost(
        overlap(ledgerBatches.map((b) => [Date.parse(b.submittedAt!), Date.parse(b.endedAt!)] as const)),
        3
      )
      for (const b of ledgerBatches) {
        assert.isAtMost(b.requestCount, 1_000)
        assert.isAtMost(b.bytes, 256 * 1024)
      }
    }), { timeout: 180_000 })

  it.live("malformed CSV rows and per-line provider errors end in the dead letter with a reason; the run completes", () =>
    Effect.gen(function*() {
      const dir = tmpDir("e2e-dead")
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 300, 7)
      // two malformed rows: a missing column, and an empty id (fails the schema)
      const lines = (yield* Effect.promise(() => import("node:fs/promises").then((fs) => fs.readFile(input, "utf8")))).split("\n")
      lines.splice(50, 0, "bad-row-without-text")
      lines.splice(120, 0, ",an empty id")
      yield* Effect.promise(() => import("node:fs/promises").then((fs) => fs.writeFile(input, lines.join("\n"))))
      const out = path.join(dir, "out")
      const emulator = yield* Emulator.serve({
        linesPerSecond: 100_000,
        validationMs: 5,
        finalizingMs: 5,
        lineFailures: [{ status: 400, rate: 0.05 }, { status: 500, rate: 0.1 }]
      })
      const summary = yield* Pipeline.run(Fixture.make({ input, out, maxRequests: 100 }), { stateDir: dir }).pipe(
        Effect.provide(layers(emulator.url, dir))
      )
      assert.strictEqual(summary.state, "completed")
      const ok = readParts(out)
      const dead = readParts(path.join(out, "dead-letter"))
      assert.strictEqual(ok.length + dead.length, 302)
      assert.strictEqual(new Set([...ok.map((r) => r.id), ...dead.map((r) => r.key)]).size, 302)
      const malformed = dead.filter((d) => d.kind === "invalid_input")
      assert.strictEqual(malformed.length, 2)
      for (const m of malformed) assert.match(m.message, /tickets\.csv.*row \d+/)
      assert.isTrue(malformed.some((m) => /"id"|id/.test(m.message)))
      // 400s are final at once; 500s were retried, so far fewer of them end dead
      const providerErrors = dead.filter((d) => d.kind === "provider_error")
      assert.isAbove(providerErrors.length, 0)
      for (const e of providerErrors) assert.match(e.message, /HTTP (400|500)/)
      assert.isBelow(providerErrors.filter((e) => /HTTP 500/.test(e.message)).length, 5)
      assert.isAbove(ok.length, 250)
    }), { timeout: 120_000 })
})
