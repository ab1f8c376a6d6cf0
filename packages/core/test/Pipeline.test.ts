import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Ledger from "../src/Ledger.ts"
import * as Pipeline from "../src/Pipeline.ts"
import * as Progress from "../src/Progress.ts"
import * as Provider from "../src/Provider.ts"
import * as ProviderError from "../src/ProviderError.ts"
import * as Request from "../src/Request.ts"
import type { RunError } from "../src/Run.ts"
import type * as Result from "../src/Result.ts"
import type * as Sink from "../src/Sink.ts"
import * as SinkModule from "../src/Sink.ts"
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

  it.live("files upload side by side while creates go one at a time, each create over its own batch's file", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo, uploadDelay: "80 millis", createDelay: "20 millis" })
      const { pipeline, out } = pipelineOf(rows(60), { batch: { maxRequests: 10, maxInFlight: 3 } })
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(new Set(out.all().map((s) => s.key)).size, 60)
      assert.strictEqual(provider.creates.length, 6)
      // every create went over a file uploaded ahead for its own batch (TestProvider refuses another batch's file)
      assert.strictEqual(provider.createdOver.filter((f) => f !== undefined).length, 6)
      assert.isAbove(provider.busy.maxUploads, 1)
      assert.isAtMost(provider.busy.maxUploads, 3)
      assert.strictEqual(provider.busy.maxCreates, 1)
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

  it.live("a batch refused as too large (413) is split in half until the halves are accepted", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({
        answer: echo,
        rejectSubmit: (lines) =>
          lines.length > 3 ? new ProviderError.Rejected({ message: "request_too_large: batch over 3 requests", status: 413 }) : undefined
      })
      const { pipeline, out, dead } = pipelineOf(rows(20))
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(out.all().length, 20)
      assert.strictEqual(dead.all().length, 0)
      // 10 → 5 + 5 → 3 + 2 …: every created batch is within the limit and every request went out once
      assert.isTrue(provider.creates.every((c) => c.lines <= 3))
      assert.strictEqual(provider.creates.reduce((s, c) => s + c.lines, 0), 20)
    }))

  it.live("a single request refused as too large fails alone with the provider's reason", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({
        answer: echo,
        rejectSubmit: (lines) =>
          lines.some((l) => TestProvider.promptOf(l) === "ticket 2")
            ? new ProviderError.Rejected({ message: "File is too large.", status: 400 })
            : undefined
      })
      const { pipeline, out, dead } = pipelineOf(rows(4))
      yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(out.all().length, 3)
      assert.deepStrictEqual(dead.all().map((d) => [d.key, d.kind]), [["t2", "provider_error"]])
      assert.match(dead.all()[0]!.message, /refused this request on its own: File is too large/)
    }))

  it.live("a batch over the enqueued-token limit is split and sent again", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({
        answer: echo,
        validate: (lines) =>
          lines.length > 4 ? [{ code: "token_limit_exceeded", message: "Enqueued token limit reached for m" }] : []
      })
      const { pipeline, out } = pipelineOf(rows(10))
      yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(out.all().length, 10)
      const accepted = provider.creates.filter((c) => c.lines <= 4)
      assert.strictEqual(accepted.reduce((s, c) => s + c.lines, 0), 10)
    }))

  it.live("a create that went through before the connection broke is found, not sent again", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo, failAfterCreate: (n) => n === 1 || n === 3 })
      const { pipeline, out } = pipelineOf(rows(40))
      yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(out.all().length, 40)
      assert.strictEqual(provider.creates.length, 4)
      assert.strictEqual(new Set(provider.creates.map((c) => c.batchId)).size, 4)
    }))

  it.live("404 right after create is propagation delay: polling goes on", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({ answer: echo, notFoundPolls: 2 })
      const { pipeline, out } = pipelineOf(rows(12))
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(out.all().length, 12)
    }), { timeout: 30_000 })

  it.live("decode errors and truncated answers are retried only when the pipeline asks for it", () =>
    Effect.gen(function*() {
      const flaky = (line: TestProvider.Line, attempt: number) => {
        const prompt = TestProvider.promptOf(line)
        if (prompt === "ticket 1" && attempt === 1) return TestProvider.ok(line, "not json")
        if (prompt === "ticket 2" && attempt === 1) {
          return {
            _tag: "LineSucceeded" as const,
            id: line.custom_id,
            response: { _tag: "ChatResponse" as const, text: "{\"ec", finishReason: "length" as const, usage: { inputTokens: 1, outputTokens: 1 } }
          }
        }
        return echo(line)
      }
      const strict = setup({ answer: flaky })
      const a = pipelineOf(rows(3))
      yield* Pipeline.run(a.pipeline, { stateDir: strict.stateDir }).pipe(Effect.provide(strict.layer))
      assert.deepStrictEqual(a.dead.all().map((d) => [d.key, d.kind]).sort(), [["t1", "decode_error"], ["t2", "truncated"]])
      assert.strictEqual(a.dead.all().find((d) => d.key === "t1")!.raw, "not json")

      const lenient = setup({ answer: flaky })
      const b = pipelineOf(rows(3), { retry: { backoff: "1 millis", decodeErrors: 1, truncated: true } })
      yield* Pipeline.run(b.pipeline, { stateDir: lenient.stateDir }).pipe(Effect.provide(lenient.layer))
      assert.strictEqual(b.out.all().length, 3)
      assert.strictEqual(b.dead.all().length, 0)
    }))

  it.live("cancel: batches are cancelled at the provider, answers in are delivered, every other row is recorded as cancelled", () =>
    Effect.gen(function*() {
      const stateDir = tmpDir()
      const { layer, provider } = setup({ answer: echo, pollsToComplete: 1_000_000 }, stateDir)
      const first = pipelineOf(rows(50))
      const progress = Progress.make()
      const fiber = yield* Pipeline.run(first.pipeline, { stateDir, progress, runId: "cancel-me" }).pipe(
        Effect.provide(layer),
        Effect.forkChild
      )
      while (progress.inFlight < 2) yield* Effect.sleep("5 millis")
      yield* Fiber.interrupt(fiber)
      const second = pipelineOf(rows(50))
      const summary = yield* Pipeline.run(second.pipeline, { stateDir, resume: "cancel-me", cancel: true }).pipe(
        Effect.provide(layer)
      )
      assert.strictEqual(summary.state, "cancelled")
      // both batches in flight were cancelled at the provider, nothing more was created
      assert.strictEqual(provider.creates.length, 2)
      assert.isTrue([...provider.batches.values()].every((b) => b.cancelled))
      // the first half of each cancelled batch answered: delivered; every other admitted row: cancelled
      const ok = [...first.out.all(), ...second.out.all()]
      const dead = [...first.dead.all(), ...second.dead.all()]
      assert.strictEqual(ok.length, 10)
      assert.strictEqual(ok.length + dead.length, summary.rows)
      assert.isTrue(dead.every((d) => d.kind === "cancelled"))
      // resuming a cancelled run does not send anything
      const again = yield* Pipeline.run(pipelineOf(rows(50)).pipeline, { stateDir, resume: "cancel-me" }).pipe(Effect.provide(layer))
      assert.strictEqual(again.state, "cancelled")
      assert.strictEqual(provider.creates.length, 2)
    }))
})

describe("Pipeline.run modes", () => {
  it.live("sync: every request through the synchronous API, no batch created; retries and dead letter as in batch mode", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({
        // t7 is refused for good; every 10th row fails once with a 500 and is sent again in a later round
        answer: (line, attempt) =>
          TestProvider.promptOf(line) === "ticket 7"
            ? TestProvider.failed(line, false)
            : TestProvider.promptOf(line).endsWith("0") && attempt === 1
            ? TestProvider.failed(line, true)
            : echo(line)
      })
      const { pipeline, out, dead } = pipelineOf(rows(250), { mode: "sync", batch: { maxRequests: 100, maxInFlight: 2 } })
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(provider.creates.length, 0)
      // 250 first calls and the 25 rows ending in 0 once more
      assert.strictEqual(provider.syncCalls.length, 275)
      assert.strictEqual(out.all().length, 249)
      assert.strictEqual(new Set(out.all().map((r) => r.key)).size, 249)
      for (const r of out.all()) assert.strictEqual(r.output.echo, r.record.body)
      assert.deepStrictEqual(dead.all().map((d) => [d.key, d.message]), [["t7", "HTTP 400"]])
      const batches = yield* Effect.flatMap(Ledger.Ledger, (l) => l.batches(summary.runId)).pipe(Effect.provide(layer))
      assert.isTrue(batches.every((b) => b.mode === "sync" && b.remoteId === null && b.state === "collected"))
      assert.strictEqual(batches.filter((b) => b.requestCount === 100).length, 2)
    }))

  it.live("auto: batches under syncBelow requests go synchronously, the others as batches", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo })
      const { pipeline, out } = pipelineOf(rows(230), { mode: "auto", batch: { maxRequests: 100, maxInFlight: 2, syncBelow: 50 } })
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(out.all().length, 230)
      // 100 + 100 as batches, the last 30 as synchronous calls
      assert.deepStrictEqual(provider.creates.map((c) => c.lines), [100, 100])
      assert.strictEqual(provider.syncCalls.length, 30)
      // the run's options win over the pipeline's: the same pipeline run in batch mode creates three batches
      const again = setup({ answer: echo })
      const batchRun = yield* Pipeline.run(pipelineOf(rows(230), { mode: "auto", batch: { maxRequests: 100, syncBelow: 50 } }).pipeline, {
        stateDir: again.stateDir,
        mode: "batch"
      }).pipe(Effect.provide(again.layer))
      assert.strictEqual(batchRun.state, "completed")
      assert.strictEqual(again.provider.creates.length, 3)
      assert.strictEqual(again.provider.syncCalls.length, 0)
    }))

  it.live("sync, interrupted mid-way and resumed: answers recorded are not asked again, every row once", () =>
    Effect.gen(function*() {
      const stateDir = tmpDir()
      const { layer, provider } = setup({ answer: echo, syncDelay: "20 millis" }, stateDir)
      const first = pipelineOf(rows(400), { mode: "sync", batch: { maxRequests: 100, maxInFlight: 2 } })
      const progress = Progress.make()
      const fiber = yield* Pipeline.run(first.pipeline, { stateDir, progress, runId: "sync-resume" }).pipe(
        Effect.provide(layer),
        Effect.forkChild
      )
      while (progress.remoteCompleted < 100) yield* Effect.sleep("5 millis")
      yield* Fiber.interrupt(fiber)
      const recorded = progress.remoteCompleted
      // (usually calls were in flight when it stopped, and more were started than recorded; on a loaded machine every
      // call started may have been recorded first)
      assert.isAtLeast(provider.syncCalls.length, recorded)
      // the resumed run keeps the run's mode (the pipeline given now says nothing of it)
      const resumed = TestProvider.make({ answer: echo })
      const second = pipelineOf(rows(400), { batch: { maxRequests: 100, maxInFlight: 2 } })
      const summary = yield* Pipeline.run(second.pipeline, { stateDir, resume: "sync-resume" }).pipe(
        Effect.provide(Layer.mergeAll(
          Layer.succeed(Provider.Provider, resumed.service),
          Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))
        ))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(resumed.creates.length, 0)
      const all = [...first.out.all(), ...second.out.all()]
      assert.strictEqual(all.length, 400)
      assert.strictEqual(new Set(all.map((r) => r.key)).size, 400)
      for (const r of all) assert.strictEqual(r.output.echo, r.record.body)
      // what was recorded is not asked again: only the unanswered rest, each once, and together every request
      assert.isAtMost(resumed.syncCalls.length, 400 - recorded)
      assert.strictEqual(new Set(resumed.syncCalls).size, resumed.syncCalls.length)
      assert.strictEqual(new Set([...provider.syncCalls, ...resumed.syncCalls]).size, 400)
    }))

  it.live("a sink that takes 3 parts at once gets 3 at once, never more, and every row once", () =>
    Effect.gen(function*() {
      // one batch of 5,000: its answers are recorded long before its parts are written
      const { layer, stateDir } = setup({ answer: echo, limits: { maxRequests: 5_000 } })
      const kept = new Map<string, ReadonlyArray<Result.Succeeded<Ticket, { readonly echo: string }>>>()
      let now = 0
      let most = 0
      let writes = 0
      const sink: Sink.Sink<Result.Succeeded<Ticket, { readonly echo: string }>> = {
        name: "parallel",
        concurrency: 3,
        write: (part, rows) =>
          Effect.gen(function*() {
            writes++
            now++
            most = Math.max(most, now)
            yield* Effect.sleep("1 second")
            now--
            kept.set(`${part.runId}/${part.seq}`, rows)
          })
      }
      // 5,000 rows of ~1 KB: parts of under a thousand rows, several of them ready at once
      const { pipeline } = pipelineOf(rows(5_000, (i) => `ticket ${i} ${"x".repeat(1_000)}`), {
        sink,
        batch: { maxRequests: 5_000, maxInFlight: 2 }
      })
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      const delivered = [...kept.values()].flat()
      assert.strictEqual(delivered.length, 5_000)
      assert.strictEqual(new Set(delivered.map((r) => r.key)).size, 5_000)
      assert.strictEqual(most, 3, `at most ${most} parts were written at once`)
      const parts = yield* Effect.gen(function*() {
        const ledger = yield* Ledger.Ledger
        return yield* ledger.writingParts(summary.runId)
      }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(parts, [], "every part written was committed")
      console.log(`concurrent parts: ${writes} parts written, at most ${most} at once; 5000 rows delivered once`)
    }))

  it.live("a table that refuses every row of a part for one reason stops the run, resumable once fixed; nothing paid twice", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo })
      // a column of the wrong type: every row is refused alike, and the sink cannot name one
      let broken = true
      const kept: Array<Result.Succeeded<Ticket, { readonly echo: string }>> = []
      const why = "Array specified for non-repeated field: embedding"
      const sink: Sink.Sink<Result.Succeeded<Ticket, { readonly echo: string }>> = {
        name: "docs",
        write: (_part, rows) =>
          broken
            ? Effect.fail(new SinkModule.SinkError({ sink: "docs", message: why, reason: new SinkModule.Refused({ message: why }) }))
            : Effect.sync(() => void kept.push(...rows))
      }
      const dead = memorySink<Result.Failed<Ticket>>()
      const { pipeline } = pipelineOf(rows(200), { sink, deadLetter: dead.sink, batch: { maxRequests: 100, maxInFlight: 2 } })
      const failed = yield* Effect.flip(Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer)))
      assert.match(failed.message, /docs refused every one of part \d+'s \d+ rows for the same reason, so the table is at fault, not the rows: Array specified for non-repeated field: embedding\. Fix the table, then resume the run/)
      assert.lengthOf(dead.all(), 0)
      const created = provider.creates.length
      broken = false
      assert.strictEqual(failed._tag, "RunError")
      const resumed = yield* Pipeline.run(pipeline, { stateDir, resume: (failed as RunError).runId }).pipe(Effect.provide(layer))
      assert.strictEqual(resumed.state, "completed")
      assert.strictEqual(kept.length, 200)
      assert.strictEqual(new Set(kept.map((r) => r.key)).size, 200)
      assert.strictEqual(provider.creates.length, created)
      console.log(`whole part refused: the run stopped (${failed.message.slice(0, 80)}…); resumed once fixed: 200 rows, ${created} batches created once`)
    }))

  it.live("a sink naming one refused row at a time: ten alike and the part's last row alike alone stop the run after 11 writes; bad rows alone do not", () =>
    Effect.gen(function*() {
      // BigQuery names the row at fault: a table at fault would cost one write per row of the part
      const naming = (refuses: (r: Result.Succeeded<Ticket, { readonly echo: string }>) => boolean) => {
        const kept: Array<Result.Succeeded<Ticket, { readonly echo: string }>> = []
        let writes = 0
        const sink: Sink.Sink<Result.Succeeded<Ticket, { readonly echo: string }>> = {
          name: "bq",
          write: (_part, rows) =>
            Effect.suspend(() => {
              writes++
              const at = rows.findIndex(refuses)
              return at >= 0
                ? Effect.fail(new SinkModule.SinkError({ sink: "bq", message: "no", reason: new SinkModule.Refused({ message: "Array specified for non-repeated field: embedding", row: at }) }))
                : Effect.sync(() => void kept.push(...rows))
            })
        }
        return { sink, kept, writes: () => writes }
      }
      const table = naming(() => true)
      const first = setup({ answer: echo })
      const broken = yield* Effect.flip(
        Pipeline.run(pipelineOf(rows(100), { sink: table.sink, batch: { maxRequests: 100 } }).pipeline, { stateDir: first.stateDir }).pipe(
          Effect.provide(first.layer)
        )
      )
      assert.match(broken.message, /bq refused the first 10 rows of part 1 it was given, and its last row alone, for the same reason, so the table is at fault/)
      assert.strictEqual(table.writes(), 11)
      // twelve bad rows first, then good ones: the last row alone goes through, so the rows are isolated as before
      const data = naming((r) => r.record.body.startsWith("bad"))
      const dead = memorySink<Result.Failed<Ticket>>()
      const second = setup({ answer: echo })
      const ok = yield* Pipeline.run(
        pipelineOf(rows(100, (i) => i <= 12 ? `bad ${i}` : `ticket ${i}`), { sink: data.sink, deadLetter: dead.sink, batch: { maxRequests: 100 } }).pipeline,
        { stateDir: second.stateDir }
      ).pipe(Effect.provide(second.layer))
      assert.strictEqual(ok.state, "completed")
      assert.strictEqual(ok.failed, 12)
      assert.strictEqual(new Set(data.kept.map((r) => r.key)).size, 88)
      assert.lengthOf(dead.all(), 12)
      console.log(`naming sink: a table at fault stopped after ${table.writes()} writes; 12 bad rows isolated in ${data.writes()} writes, 88 delivered`)
    }))

  it.live("a value the sink refuses costs its own row: the part is split until it is isolated, the rest delivered once", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({ answer: echo })
      // a table that refuses NUL bytes, and names no row (as a server that fails the whole statement)
      const kept = new Map<string, ReadonlyArray<Result.Succeeded<Ticket, { readonly echo: string }>>>()
      let writes = 0
      const sink: Sink.Sink<Result.Succeeded<Ticket, { readonly echo: string }>> = {
        name: "strict",
        write: (part, rows) =>
          Effect.suspend(() => {
            writes++
            return rows.some((r) => r.output.echo.includes("\u0000"))
              ? Effect.fail(new SinkModule.SinkError({
                sink: "strict",
                message: "invalid byte sequence for encoding UTF8: 0x00",
                reason: new SinkModule.Refused({ message: "invalid byte sequence for encoding UTF8: 0x00", column: "echo" })
              }))
              : Effect.sync(() => void kept.set(`${part.runId}/${part.seq}`, rows))
          })
      }
      const poisoned = new Set([17, 230, 231, 999])
      const dead = memorySink<Result.Failed<Ticket>>()
      const { pipeline } = pipelineOf(rows(1_000, (i) => poisoned.has(i) ? `bad \u0000 ${i}` : `ticket ${i}`), {
        sink,
        deadLetter: dead.sink,
        batch: { maxRequests: 500, maxInFlight: 2 }
      })
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      const delivered = [...kept.values()].flat()
      assert.strictEqual(delivered.length, 996)
      assert.strictEqual(new Set(delivered.map((r) => r.key)).size, 996)
      const refused = dead.all()
      assert.deepStrictEqual(refused.map((d) => d.key).sort(), ["t17", "t230", "t231", "t999"])
      for (const d of refused) {
        assert.strictEqual(d.kind, "sink_refused")
        assert.match(d.message, /^strict refused this row \(column echo\): invalid byte sequence/)
        assert.include(d.raw!, "\\u0000")
      }
      assert.strictEqual(summary.succeeded, 996)
      assert.strictEqual(summary.failed, 4)
      // the ledger knows them: by kind, listed, and one row inspected
      yield* Effect.gen(function*() {
        const ledger = yield* Ledger.Ledger
        assert.deepStrictEqual(yield* ledger.failureCounts(summary.runId), [{ kind: "sink_refused", rows: 4 }])
        const listed = yield* ledger.failures(summary.runId, { kind: "sink_refused", limit: 10 })
        assert.deepStrictEqual(listed.map((f) => [f.key, f.position, f.attempts]), [
          ["t17", 17, 1],
          ["t230", 230, 1],
          ["t231", 231, 1],
          ["t999", 999, 1]
        ])
        const row = Option.getOrThrow(yield* ledger.inspect(summary.runId, "t230"))
        assert.strictEqual(row.failure?.kind, "sink_refused")
        assert.strictEqual(row.request?.state, "succeeded")
        assert.match(row.request?.output ?? "", /bad/)
      }).pipe(Effect.provide(layer))
      console.log(`poison values: 4 of 1,000 rows refused by the sink, isolated in ${writes} writes; 996 delivered once`)
    }))

  it.live("a sink that names the refused row isolates it at once", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({ answer: echo })
      let writes = 0
      const kept: Array<unknown> = []
      const sink: Sink.Sink<Result.Succeeded<Ticket, { readonly echo: string }>> = {
        name: "named",
        write: (_part, rows) =>
          Effect.suspend(() => {
            writes++
            const at = rows.findIndex((r) => r.record.id === "t42")
            return at >= 0
              ? Effect.fail(new SinkModule.SinkError({
                sink: "named",
                message: "too long",
                reason: new SinkModule.Refused({ message: "value too long for type character varying(5)", row: at, column: "body" })
              }))
              : Effect.sync(() => void kept.push(...rows))
          })
      }
      const dead = memorySink<Result.Failed<Ticket>>()
      const { pipeline } = pipelineOf(rows(100), { sink, deadLetter: dead.sink, batch: { maxRequests: 100, maxInFlight: 1 } })
      yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(kept.length, 99)
      assert.deepStrictEqual(dead.all().map((d) => [d.key, d.kind, d.position]), [["t42", "sink_refused", 42]])
      assert.strictEqual(writes, 2)
    }))

  it.live("a sink that is unavailable stops the run, resumable: nothing goes to the dead letter", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({ answer: echo })
      const sink: Sink.Sink<unknown> = {
        name: "down",
        write: () => Effect.fail(new SinkModule.SinkError({ sink: "down", message: "connect ECONNREFUSED 127.0.0.1:1" }))
      }
      const dead = memorySink<Result.Failed<Ticket>>()
      const { pipeline } = pipelineOf(rows(20), { sink, deadLetter: dead.sink })
      const error = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer), Effect.flip)
      assert.match(error.message, /ECONNREFUSED/)
      assert.strictEqual(dead.all().length, 0)
    }))

  it.live("a source that loses a row never ends completed: the run fails with the figures", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({ answer: echo })
      // it says it holds 50 rows, and yields 49 (numbered 1…49: the loss is invisible in the positions)
      const lossy: Source.Source<Ticket> = { ...source(rows(49)), count: Effect.succeed(50) }
      const { pipeline } = pipelineOf([], { source: lossy })
      const error = yield* Pipeline.run(pipeline, { stateDir, runId: "lossy" }).pipe(Effect.provide(layer), Effect.flip)
      assert.match(error.message, /tickets: the source holds 50 rows in this run's range but 49 were read: 1 row was never read/)
      const run = Option.getOrThrow(yield* Effect.flatMap(Ledger.Ledger, (l) => l.getRun("lossy")).pipe(Effect.provide(layer)))
      assert.strictEqual(run.state, "failed")
      assert.isFalse(run.sourceDone)
      // a source whose positions skip a row is caught the same way, countable or not
      const gap: Source.Source<Ticket> = source(rows(30).filter((r) => r.position !== 12))
      const second = pipelineOf([], { source: gap, name: "gap" })
      const missing = yield* Pipeline.run(second.pipeline, { stateDir }).pipe(Effect.provide(layer), Effect.flip)
      assert.match(missing.message, /29 rows were admitted but positions reach 30: 1 row is missing/)
      // a source that counts what it yields completes, and says so
      const whole = pipelineOf([], { source: { ...source(rows(30)), count: Effect.succeed(30) }, name: "whole" })
      const summary = yield* Pipeline.run(whole.pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.progress.sourceRows, 30)
    }))

  it.live("a rate-limit storm is waited out within retry.transientFor, honouring retry-after; past it the run stops", () =>
    Effect.gen(function*() {
      const storm = setup({ answer: echo, rateLimitedPolls: { times: 4, retryAfterMs: 300 } })
      const started = Date.now()
      const { pipeline, out } = pipelineOf(rows(10), { retry: { backoff: "1 millis", transientFor: "1 minute" } })
      const summary = yield* Pipeline.run(pipeline, { stateDir: storm.stateDir }).pipe(Effect.provide(storm.layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(out.all().length, 10)
      // four 429s, each waited at least its retry-after
      assert.isAtLeast(Date.now() - started, 4 * 300)
      const endless = setup({ answer: echo, rateLimitedPolls: { times: 1_000_000, retryAfterMs: 200 } })
      const second = pipelineOf(rows(10), { retry: { backoff: "1 millis", transientFor: "2 seconds" } })
      const error = yield* Pipeline.run(second.pipeline, { stateDir: endless.stateDir }).pipe(
        Effect.provide(endless.layer),
        Effect.flip
      )
      assert.match(error.message, /RateLimited: slow down \(still failing after 2s of retries, retry\.transientFor: resume/)
    }))

  it.live("a malformed row whose key could be read is filed under its key and position, with its raw text", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({ answer: echo })
      const items: Array<Source.Item<Ticket>> = [
        ...rows(3),
        { _tag: "Malformed", position: 4, line: 5, key: "t4", reason: "tickets row 4 (line 5): field \"body\" is missing", raw: "t4," },
        { _tag: "Malformed", position: 5, line: 6, reason: "tickets row 5 (line 6): expected 2 fields, got 1", raw: "garbage" }
      ]
      const { pipeline, dead } = pipelineOf(items)
      yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(dead.all().map((d) => [d.key, d.raw, d.position]), [["t4#4", "t4,", 4], ["#5", "garbage", 5]])
    }))

  it.live("dispositions: an incremental pipeline never replaces; a disposition the sink cannot do is refused", () =>
    Effect.gen(function*() {
      const { layer, stateDir } = setup({ answer: echo })
      const out = memorySink<unknown>()
      const replaceOnly: Sink.Sink<any> = { ...out.sink, dispositions: ["replace"] }
      const { pipeline } = pipelineOf(rows(3), { sink: replaceOnly, incremental: true })
      const error = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer), Effect.flip)
      assert.match(error.message, /memory: an incremental pipeline delivers only the rows that changed; "replace" would keep only those/)
      const merging: Sink.Sink<any> = { ...out.sink, dispositions: ["merge"], disposition: "append" }
      const wrong = yield* Pipeline.run(pipelineOf(rows(3), { sink: merging }).pipeline, { stateDir }).pipe(
        Effect.provide(layer),
        Effect.flip
      )
      assert.match(wrong.message, /memory: disposition "append" is not one this sink can do \(merge\)/)
    }))

  it.live("a budget is a reservation: batches over it are not sent, their rows reported; a higher budget sends them, once", () =>
    Effect.gen(function*() {
      const stateDir = tmpDir()
      // each answer costs about what its request may cost at worst: 120 input-ish and 100 output tokens
      const costly = (line: TestProvider.Line) => {
        const ok = echo(line)
        return ok._tag === "LineSucceeded" && ok.response._tag === "ChatResponse"
          ? { ...ok, response: { ...ok.response, usage: { inputTokens: 20, outputTokens: 100 } } }
          : ok
      }
      const prices = { m: { inputPerMTok: 1, outputPerMTok: 1, batch: { inputPerMTok: 1, outputPerMTok: 1 } } }
      const first = setup({ answer: costly }, stateDir)
      const { pipeline, out, dead } = pipelineOf(rows(100), {
        request: (t) => Request.chat({ model: "m", prompt: t.body, maxTokens: 100 }),
        prices,
        budget: "0.004",
        batch: { maxRequests: 10, maxInFlight: 2 }
      })
      const summary = yield* Pipeline.run(pipeline, { stateDir, runId: "budget" }).pipe(Effect.provide(first.layer))
      // a batch of 10 may cost about $0.0012 at worst: about 3 fit $0.004, with what they really cost
      assert.strictEqual(summary.state, "failed")
      assert.isAtMost(summary.cost.spentUsd, 0.004)
      assert.isAbove(summary.cost.spentUsd, 0)
      const sent = first.provider.creates.reduce((n, c) => n + c.lines, 0)
      assert.isAbove(sent, 0)
      assert.isBelow(sent, 100)
      assert.strictEqual(summary.succeeded, sent)
      assert.strictEqual(summary.pending, 100 - sent)
      assert.strictEqual(dead.all().length, 0)
      const ledgerRun = Option.getOrThrow(
        yield* Effect.flatMap(Ledger.Ledger, (l) => l.getRun("budget")).pipe(Effect.provide(first.layer))
      )
      assert.match(ledgerRun.message ?? "", new RegExp(`^budget_refused: ${100 - sent} rows not sent .* resume with a higher budget`))
      // resumed with four times the budget: the rest goes, each request once over both processes
      const second = setup({ answer: costly }, stateDir)
      const resumed = yield* Pipeline.run(pipeline, { stateDir, resume: "budget", budget: "0.016" }).pipe(
        Effect.provide(second.layer)
      )
      assert.strictEqual(resumed.state, "completed")
      assert.isAtMost(resumed.cost.spentUsd, 0.016)
      assert.strictEqual(resumed.cost.budgetUsd, 0.016)
      assert.strictEqual(sent + second.provider.creates.reduce((n, c) => n + c.lines, 0), 100)
      const all = out.all()
      assert.strictEqual(all.length, 100)
      assert.strictEqual(new Set(all.map((r) => r.key)).size, 100)
      console.log(
        `budget: $0.004 let ${sent} of 100 requests go (spent $${summary.cost.spentUsd.toFixed(6)}), ` +
          `${100 - sent} rows reported pending; resumed with $0.016: the other ${100 - sent} sent once, ` +
          `$${resumed.cost.spentUsd.toFixed(6)} in all`
      )
    }))

  it.live("answers cost what the provider's usage says at the mode's price; cache hits cost nothing", () =>
    Effect.gen(function*() {
      const stateDir = tmpDir()
      const prices = { m: { inputPerMTok: 2, outputPerMTok: 8, batch: { inputPerMTok: 1, outputPerMTok: 4 } } }
      const { layer } = setup({ answer: echo }, stateDir)
      const { pipeline } = pipelineOf(rows(30, (i) => `t ${i % 10}`), {
        request: (t) => Request.chat({ model: "m", prompt: t.body }),
        prices
      })
      const first = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      // 10 distinct requests (20 rows share them), each 10 input and 2 output tokens
      assert.deepStrictEqual(first.usage, { inputTokens: 100, outputTokens: 20, cachedInputTokens: 0 })
      assert.strictEqual(first.dedupedRows, 20)
      assert.closeTo(first.cost.spentUsd, (100 * 1 + 20 * 4) / 1e6, 1e-12)
      assert.closeTo(first.cost.syncEquivalentUsd, (100 * 2 + 20 * 8) / 1e6, 1e-12)
      const again = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(again.cachedRows, 30)
      assert.strictEqual(again.cost.spentUsd, 0)
    }))

  it.live("a deadline: stalled batches are cancelled at the switch, their answers kept, the rest sent synchronously, once", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo, pollsToComplete: 1_000_000_000 })
      const started = Date.now()
      const { pipeline, out } = pipelineOf(rows(40), {
        batch: { maxRequests: 10, maxInFlight: 4 },
        deadline: started + 6_000,
        deadlineMargin: "4500 millis"
      })
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      const all = out.all()
      assert.strictEqual(all.length, 40)
      assert.strictEqual(new Set(all.map((r) => r.key)).size, 40)
      for (const r of all) assert.strictEqual(r.output.echo, r.record.body)
      // the batches created before the switch were cancelled with their first half answered; every other request
      // went through the synchronous API, and none was answered both ways
      assert.isAtLeast(provider.creates.length, 1)
      const inBatches = [...provider.batches.values()].flatMap((b) => b.lines.slice(0, Math.ceil(b.lines.length / 2)))
      const answeredByBatch = new Set(inBatches.map((l) => l.custom_id))
      assert.isAbove(answeredByBatch.size, 0)
      assert.strictEqual(provider.syncCalls.length, 40 - answeredByBatch.size)
      for (const id of provider.syncCalls) assert.isFalse(answeredByBatch.has(id))
      assert.isBelow(Date.now() - started, 6_000)
      console.log(
        `deadline: ${provider.creates.length} batches stalled, cancelled at the switch; ${answeredByBatch.size} answers ` +
          `kept from them, ${provider.syncCalls.length} rows sent synchronously, done ${Date.now() - started} ms after the start`
      )
    }))

  it.live("a deadline: a batch that waited for a slot past the switch is not created; its rows go synchronously", () =>
    Effect.gen(function*() {
      const { layer, provider, stateDir } = setup({ answer: echo, pollsToComplete: 1_000_000_000 })
      const started = Date.now()
      // one slot: the first batch stalls in it until the switch cancels it; the next ones wait for the slot meanwhile
      const { pipeline, out } = pipelineOf(rows(40), {
        batch: { maxRequests: 10, maxInFlight: 1 },
        deadline: started + 5_500,
        deadlineMargin: "4 seconds"
      })
      const summary = yield* Pipeline.run(pipeline, { stateDir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      const all = out.all()
      assert.strictEqual(all.length, 40)
      assert.strictEqual(new Set(all.map((r) => r.key)).size, 40)
      // only the batch in the slot before the switch reached the batch API
      assert.strictEqual(provider.creates.length, 1)
      const answeredByBatch = new Set([...provider.batches.values()].flatMap((b) => b.lines.slice(0, Math.ceil(b.lines.length / 2))).map((l) => l.custom_id))
      assert.strictEqual(provider.syncCalls.length, 40 - answeredByBatch.size)
      for (const id of provider.syncCalls) assert.isFalse(answeredByBatch.has(id))
      console.log(
        `deadline, one slot: ${provider.creates.length} batch created, ${answeredByBatch.size} answers kept from it, ` +
          `${provider.syncCalls.length} rows sent synchronously`
      )
    }))
})
