import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Ledger from "../src/Ledger.ts"
import * as Pipeline from "../src/Pipeline.ts"
import * as Progress from "../src/Progress.ts"
import * as Provider from "../src/Provider.ts"
import * as Request from "../src/Request.ts"
import type * as Result from "../src/Result.ts"
import type * as Sink from "../src/Sink.ts"
import type * as Source from "../src/Source.ts"
import * as SqliteClient from "../src/SqliteClient.ts"
import * as TestProvider from "./support/TestProvider.ts"

const Ticket = Schema.Struct({ id: Schema.String, body: Schema.String })
type Ticket = typeof Ticket.Type
const Answer = Schema.Struct({ echo: Schema.String })

const source = (items: ReadonlyArray<Source.Item<Ticket>>): Source.Source<Ticket> => ({
  name: "tickets",
  schema: Ticket,
  read: Stream.fromIterable(items)
})

const rows = (n: number, body = (i: number) => `ticket ${i}`): Array<Source.Item<Ticket>> =>
  Array.from({ length: n }, (_, i) => ({ _tag: "Row", position: i + 1, value: { id: `t${i + 1}`, body: body(i + 1) } }))

const memorySink = <A>() => {
  const parts = new Map<string, ReadonlyArray<A>>()
  const sink: Sink.Sink<A> = {
    name: "memory",
    write: (part, rows) => Effect.sync(() => void parts.set(`${part.runId}/${part.seq}`, rows))
  }
  return { sink, all: () => [...parts.values()].flat() }
}

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-pipeline-"))

const setup = (script: TestProvider.Script, stateDir = tmpDir()) => {
  const provider = TestProvider.make(script)
  const ledger = Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))
  const layer = Layer.mergeAll(Layer.succeed(Provider.Provider, provider.service), ledger)
  return { provider, layer, stateDir }
}

const echo = (line: TestProvider.Line) => TestProvider.ok(line, JSON.stringify({ echo: TestProvider.promptOf(line) }))

const pipelineOf = (items: ReadonlyArray<Source.Item<Ticket>>, extra: Partial<Pipeline.Config<Ticket, { readonly echo: string }>> = {}) => {
  const out = memorySink<Result.Succeeded<Ticket, { readonly echo: string }>>()
  const dead = memorySink<Result.Failed<Ticket>>()
  const pipeline = Pipeline.make({
    name: "test",
    source: source(items),
    key: (t) => t.id,
    request: (t) => Request.chat({ model: "m", prompt: t.body }),
    output: Answer,
    sink: out.sink,
    deadLetter: dead.sink,
    batch: { maxRequests: 10, maxInFlight: 2 },
    retry: { backoff: "1 millis" },
    ...extra
  })
  return { pipeline, out, dead }
}

describe("Pipeline.run", () => {
  it.live("delivers every row exactly once, joined by custom id although results come back in any order", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo })
      const { pipeline, out, dead } = pipelineOf(rows(95))
      const progress = Progress.make()
      const summary = yield* Pipeline.run(pipeline, { stateDir, progress }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.succeeded, 95)
      const got = out.all()
      assert.strictEqual(got.length, 95)
      assert.strictEqual(new Set(got.map((s) => s.key)).size, 95)
      for (const s of got) assert.strictEqual(s.output.echo, s.record.body)
      assert.strictEqual(dead.all().length, 0)
      assert.strictEqual(provider.creates.length, 10)
      assert.isAtMost(provider.maxConcurrent, 2)
      assert.isAtMost(progress.maxInFlight, 2)
    }))

  it.live("identical requests from different rows are sent once and delivered to each row", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo })
      const { pipeline, out } = pipelineOf(rows(30, (i) => `same ${i % 3}`))
      yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(provider.creates.reduce((s, c) => s + c.lines, 0), 3)
      assert.strictEqual(out.all().length, 30)
      assert.strictEqual(out.all().filter((s) => s.output.echo === "same 1").length, 10)
    }))

  it.live("retryable failures and lost lines are resubmitted; final failures go to the dead letter with the reason", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({
        answer: (line, attempt) => {
          const prompt = TestProvider.promptOf(line)
          if (prompt.endsWith(" 3")) return attempt === 1 ? TestProvider.failed(line, true) : echo(line)
          if (prompt.endsWith(" 5")) return attempt === 1 ? undefined : echo(line)
          if (prompt.endsWith(" 7")) return TestProvider.failed(line, false, "HTTP 400: bad request")
          if (prompt.endsWith(" 9")) return TestProvider.failed(line, true, "HTTP 503: try later")
          return echo(line)
        }
      })
      const { pipeline, out, dead } = pipelineOf(rows(20))
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.succeeded + summary.failed, 20)
      const failed = dead.all()
      assert.deepStrictEqual(failed.map((f) => f.key).sort(), ["t7", "t9"])
      assert.isTrue(failed.every((f) => f.kind === "provider_error"))
      assert.strictEqual(failed.find((f) => f.key === "t7")!.message, "HTTP 400: bad request")
      assert.strictEqual(failed.find((f) => f.key === "t9")!.message, "HTTP 503: try later")
      assert.strictEqual(out.all().length, 18)
      // t9 was tried three times (maxAttempts), t7 once
      const sent = (key: string) =>
        [...provider.batches.values()].flatMap((b) => b.lines).filter((l) => TestProvider.promptOf(l) === `ticket ${key.slice(1)}`).length
      assert.strictEqual(sent("t9"), 3)
      assert.strictEqual(sent("t7"), 1)
      assert.strictEqual(sent("t3"), 2)
      assert.strictEqual(sent("t5"), 2)
    }))

  it.live("malformed rows and answers that do not decode end in the dead letter; the run completes", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({
        answer: (line) => TestProvider.promptOf(line) === "ticket 2" ? TestProvider.ok(line, "{\"nope\":1}") : echo(line)
      })
      const items: Array<Source.Item<Ticket>> = [
        ...rows(3),
        { _tag: "Malformed", position: 4, line: 5, reason: "tickets row 4 (line 5): field \"body\": missing", raw: "t4," }
      ]
      const { pipeline, out, dead } = pipelineOf(items)
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(out.all().length, 2)
      const failed = dead.all().sort((a, b) => a.position - b.position)
      assert.deepStrictEqual(failed.map((f) => [f.key, f.kind]), [["t2", "decode_error"], ["#4", "invalid_input"]])
      assert.strictEqual(failed[0]!.raw, "{\"nope\":1}")
      assert.match(failed[1]!.message, /row 4 \(line 5\): field "body"/)
    }))

  it.live("a batch failing validation: the named line fails alone, the others are resubmitted", () =>
    Effect.gen(function*() {
      let validations = 0
      const { layer, stateDir } = setup({
        answer: echo,
        validate: (lines) => {
          const bad = lines.findIndex((l) => TestProvider.promptOf(l) === "ticket 4")
          if (bad < 0) return []
          validations++
          return [{ code: "invalid_request", message: "this line is wrong", line: bad + 1 }]
        }
      })
      const { pipeline, out, dead } = pipelineOf(rows(8))
      yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(validations, 1)
      assert.strictEqual(out.all().length, 7)
      assert.deepStrictEqual(dead.all().map((f) => f.key), ["t4"])
      assert.match(dead.all()[0]!.message, /invalid_request: this line is wrong/)
    }))

  it.live("a second run over the same rows is served from the result cache and submits nothing", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo })
      yield* Pipeline.run(pipelineOf(rows(25)).pipeline, { stateDir }).pipe(Effect.provide(layer))
      const creates = provider.creates.length
      const second = pipelineOf(rows(25))
      const summary = yield* Pipeline.run(second.pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(provider.creates.length, creates)
      assert.strictEqual(summary.succeeded, 25)
      assert.isTrue(second.out.all().every((s) => s.cached))
    }))

  it.live("interrupted while batches run, resumed: no batch is created twice, every row once", () =>
    Effect.gen(function*() {
      const stateDir = tmpDir()
      const { layer, provider } = setup({ answer: echo, pollsToComplete: 1_000_000 }, stateDir)
      const first = pipelineOf(rows(40))
      const progress = Progress.make()
      const fiber = yield* Pipeline.run(first.pipeline, { stateDir, progress, runId: "resume-me" }).pipe(
        Effect.provide(layer),
        Effect.forkChild
      )
      while (progress.inFlight < 2) yield* Effect.sleep("5 millis")
      yield* Fiber.interrupt(fiber)
      const createsBefore = provider.creates.length
      assert.strictEqual(createsBefore, 2)
      // same remote state, batches now complete
      const resumed = TestProvider.make({ answer: echo })
      for (const [id, b] of provider.batches) resumed.batches.set(id, { ...b, polls: 0 })
      const second = pipelineOf(rows(40))
      const summary = yield* Pipeline.run(second.pipeline, { stateDir, resume: "resume-me" }).pipe(
        Effect.provide(Layer.mergeAll(
          Layer.succeed(Provider.Provider, resumed.service),
          Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))
        ))
      )
      assert.strictEqual(summary.state, "completed")
      // the two batches in flight were polled again, not created again
      assert.strictEqual(resumed.creates.length, 2)
      assert.strictEqual(first.out.all().length + second.out.all().length, 40)
      assert.strictEqual(new Set([...first.out.all(), ...second.out.all()].map((s) => s.key)).size, 40)
    }))
})
