/**
 * The adapter under the real pipeline runner, against the emulator: every row
 * delivered once, retryable line failures retried, and a crash between
 * creating a batch and recording it resolved by `find` on resume, without
 * creating the batch twice.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Provider from "@offpeak/core/Provider"
import * as Request from "@offpeak/core/Request"
import type * as Result from "@offpeak/core/Result"
import type * as Sink from "@offpeak/core/Sink"
import type * as Source from "@offpeak/core/Source"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Effect, Exit, Layer, Redacted, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as AnthropicBatch from "../AnthropicBatch.ts"
import * as Emulator from "../emulator/Emulator.ts"

const Ticket = Schema.Struct({ id: Schema.String, body: Schema.String })
type Ticket = typeof Ticket.Type
const Label = Schema.Struct({ category: Schema.Literals(["billing", "bug", "other"]) }).annotate({ title: "Label" })
type Label = typeof Label.Type

const BODIES = ["I was charged twice, refund the billing error", "The app crashes: a bug", "Just saying hello"]

const source = (n: number): Source.Source<Ticket> => ({
  name: "tickets",
  schema: Ticket,
  read: Stream.fromIterable(
    Array.from({ length: n }, (_, i): Source.Item<Ticket> => ({
      _tag: "Row",
      position: i + 1,
      value: { id: `t${i + 1}`, body: `${BODIES[i % 3]} (#${i + 1})` }
    }))
  )
})

const memorySink = <A>() => {
  const parts = new Map<string, ReadonlyArray<A>>()
  const sink: Sink.Sink<A> = { name: "memory", write: (part, rows) => Effect.sync(() => void parts.set(`${part.runId}/${part.seq}`, rows)) }
  return { sink, all: () => [...parts.values()].flat() }
}

const pipelineOf = (n: number) => {
  const out = memorySink<Result.Succeeded<Ticket, Label>>()
  const dead = memorySink<Result.Failed<Ticket>>()
  const pipeline = Pipeline.make({
    name: "anthropic-triage",
    source: source(n),
    key: (t) => t.id,
    request: (t) => Request.chat({ model: "claude-haiku-4-5", system: "Label the ticket.", prompt: t.body, maxTokens: 200, cachePrefix: 1 }),
    output: Label,
    outputName: "label",
    sink: out.sink,
    deadLetter: dead.sink,
    batch: { maxRequests: 20, maxInFlight: 3, flushAfter: "50 millis" },
    retry: { backoff: "10 millis", maxAttempts: 5 }
  })
  return { pipeline, out, dead }
}

const ledgerLayer = (stateDir: string) =>
  Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))

const expectedCategory = (body: string) => body.startsWith("I was charged") ? "billing" : body.startsWith("The app") ? "bug" : undefined

describe("AnthropicBatch under Pipeline.run", () => {
  it.live("delivers every row once with its own label; overloaded lines are retried in later batches", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ linesPerSecond: 2_000, lineFailures: [{ type: "overloaded_error", rate: 0.15 }] })
      const provider = yield* AnthropicBatch.make({
        apiKey: Redacted.make("test"),
        baseURL: emulator.url,
        pollInterval: { initial: "10 millis", max: "50 millis" }
      })
      const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-anthropic-pipeline-"))
      const { dead, out, pipeline } = pipelineOf(90)
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Provider.Provider, provider), ledgerLayer(stateDir)))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.succeeded, 90)
      assert.strictEqual(dead.all().length, 0)
      const rows = out.all()
      assert.strictEqual(new Set(rows.map((r) => r.key)).size, 90)
      for (const row of rows) {
        const want = expectedCategory(row.record.body)
        if (want !== undefined) assert.strictEqual(row.output.category, want, row.record.body)
      }
      assert.isAbove((yield* emulator.stats).linesProcessed, 90, "some lines failed and were sent again")
    }).pipe(Effect.scoped))

  it.live("a crash after create, before the ledger write: resume finds the batch and creates it only once", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ linesPerSecond: 2_000 })
      const provider = yield* AnthropicBatch.make({
        apiKey: Redacted.make("test"),
        baseURL: emulator.url,
        pollInterval: { initial: "10 millis", max: "50 millis" }
      })
      const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-anthropic-pipeline-"))
      // the first batch is created at the provider, then the process "dies" before the ledger hears of it
      let crashed = false
      const crashing: Provider.Service = {
        ...provider,
        submit: (s) =>
          provider.submit(s).pipe(Effect.tap(() => crashed ? Effect.void : Effect.sync(() => (crashed = true)).pipe(Effect.andThen(Effect.die("crash")))))
      }
      const first = pipelineOf(50)
      const exit = yield* Pipeline.run(first.pipeline, { stateDir, runId: "crashy" }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Provider.Provider, crashing), ledgerLayer(stateDir))),
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.isTrue(crashed)
      const second = pipelineOf(50)
      const summary = yield* Pipeline.run(second.pipeline, { stateDir, resume: "crashy" }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Provider.Provider, provider), ledgerLayer(stateDir)))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.succeeded, 50)
      // no request was answered twice: every batch the emulator ran was a distinct one
      assert.strictEqual((yield* emulator.stats).linesProcessed, 50)
      assert.strictEqual((yield* emulator.stats).batchesCreated, summary.batches)
    }).pipe(Effect.scoped))
})
