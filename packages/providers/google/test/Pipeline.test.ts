/**
 * The Gemini adapter under the real pipeline runner, against the emulator:
 * every row delivered once with its own answer (inline batches, file
 * batches, embeddings), retryable line failures retried in later batches,
 * and a crash between creating a batch and recording it resolved by `find`
 * on resume, without creating the batch twice.
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
import { Engine } from "../../local/index.ts"
import * as GeminiBatch from "../GeminiBatch.ts"
import * as GeminiEmulator from "../GeminiEmulator.ts"

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
    name: "gemini-triage",
    source: source(n),
    key: (t) => t.id,
    request: (t) => Request.chat({ model: "gemini-2.5-flash", system: "Label the ticket.", prompt: t.body, maxTokens: 200 }),
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

const stateDirOf = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-gemini-pipeline-"))

const expectedCategory = (body: string) => body.startsWith("I was charged") ? "billing" : body.startsWith("The app") ? "bug" : undefined

const adapter = (url: string, options: Partial<GeminiBatch.Options> = {}) =>
  GeminiBatch.make({ apiKey: Redacted.make("test"), baseURL: url, pollInterval: { initial: "10 millis", max: "50 millis" }, ...options })

describe("GeminiBatch under Pipeline.run", () => {
  it.live("inline batches: every row once with its own label; RESOURCE_EXHAUSTED lines are retried in later batches", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 2_000, lineFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.15 }] })
      const provider = yield* adapter(emulator.url)
      const stateDir = stateDirOf()
      const { dead, out, pipeline } = pipelineOf(90)
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Provider.Provider, provider), ledgerLayer(stateDir)))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.succeeded, 90)
      assert.strictEqual(dead.all().length, 0)
      const rows = out.all()
      assert.strictEqual(rows.length, 90)
      assert.strictEqual(new Set(rows.map((r) => r.key)).size, 90)
      for (const row of rows) {
        const want = expectedCategory(row.record.body)
        if (want !== undefined) assert.strictEqual(row.output.category, want, row.record.body)
      }
      const stats = yield* emulator.stats
      assert.isAbove(stats.linesProcessed, 90, "some lines failed and were sent again")
      assert.strictEqual(stats.inlineBatches, stats.batchesCreated)
      assert.strictEqual(stats.filesUploaded, 0)
      console.log(`gemini pipeline (inline): 90 rows delivered once, ${stats.batchesCreated} batches, ${stats.linesProcessed} lines processed (retries included)`)
    }).pipe(Effect.scoped))

  it.live("file batches (over the inline limit): every row once; the 400 lines final in the dead letter with Google's status", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 5_000, lineFailures: [{ code: "INVALID_ARGUMENT", rate: 0.1 }] })
      const provider = yield* adapter(emulator.url, { inlineMaxBytes: 1_000 })
      const stateDir = stateDirOf()
      const { dead, out, pipeline } = pipelineOf(60)
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Provider.Provider, provider), ledgerLayer(stateDir)))
      )
      assert.strictEqual(summary.state, "completed")
      const rows = out.all()
      const failed = dead.all()
      assert.strictEqual(rows.length + failed.length, 60)
      assert.strictEqual(new Set([...rows.map((r) => r.key), ...failed.map((f) => f.key)]).size, 60)
      assert.isAbove(failed.length, 0)
      for (const f of failed) {
        assert.strictEqual(f.kind, "provider_error")
        assert.match(f.message, /^INVALID_ARGUMENT \(3\): /)
      }
      const stats = yield* emulator.stats
      assert.strictEqual(stats.inlineBatches, 0)
      assert.strictEqual(stats.filesUploaded, stats.batchesCreated)
      // each line was sent once: final failures are not retried
      assert.strictEqual(stats.linesProcessed, 60)
    }).pipe(Effect.scoped))

  it.live("embeddings: the batch embedding endpoint; each row gets the engine's vector", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({})
      const provider = yield* adapter(emulator.url)
      const stateDir = stateDirOf()
      const out = memorySink<Result.Succeeded<Ticket, ReadonlyArray<number>>>()
      const pipeline = Pipeline.make<Ticket, ReadonlyArray<number>>({
        name: "gemini-embed",
        source: source(30),
        key: (t) => t.id,
        request: (t) => Request.embedding({ model: "gemini-embedding-001", input: t.body, dimensions: 32 }),
        sink: out.sink,
        batch: { maxRequests: 10, flushAfter: "50 millis" }
      })
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Provider.Provider, provider), ledgerLayer(stateDir)))
      )
      assert.strictEqual(summary.succeeded, 30)
      const rows = out.all()
      assert.strictEqual(rows.length, 30)
      for (const row of rows) {
        assert.deepStrictEqual(Array.from(row.output), Engine.embed({ model: "gemini-embedding-001", input: row.record.body, dimensions: 32 }).vector)
      }
      assert.strictEqual((yield* emulator.stats).filesUploaded, 3)
    }).pipe(Effect.scoped))

  it.live("a crash after create, before the ledger write: resume finds the batch by its display name and creates it only once", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 2_000 })
      const provider = yield* adapter(emulator.url)
      const stateDir = stateDirOf()
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
      const createdBefore = (yield* emulator.stats).batchesCreated
      assert.isAtLeast(createdBefore, 1)
      const second = pipelineOf(50)
      const summary = yield* Pipeline.run(second.pipeline, { stateDir, resume: "crashy" }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Provider.Provider, provider), ledgerLayer(stateDir)))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.succeeded, 50)
      assert.strictEqual(new Set(second.out.all().map((r) => r.key)).size, second.out.all().length)
      // no request was answered twice: every batch the emulator ran was a distinct one
      const stats = yield* emulator.stats
      assert.strictEqual(stats.linesProcessed, 50)
      assert.strictEqual(stats.batchesCreated, summary.batches)
      console.log(`gemini crash after create: ${createdBefore} batch(es) at the provider before the resume, ${stats.batchesCreated} in all for ${summary.batches} ledger batches, 50 lines processed`)
    }).pipe(Effect.scoped))
})
