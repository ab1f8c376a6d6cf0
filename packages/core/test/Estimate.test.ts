/**
 * Estimate: what a run would send and cost, checked against what the runner then does (requests sent, dedupe, cache
 * hits, invalid rows), against the Batcher's own split, against per-request prices, and against a sample run's
 * answers; the extrapolation of `sampleRows`; and the memory its dedupe takes per distinct request.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted, Result as R, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import * as Batcher from "../src/Batcher.ts"
import * as Estimate from "../src/Estimate.ts"
import * as Fingerprint from "../src/Fingerprint.ts"
import * as FingerprintSet from "../src/internal/estimateSet.ts"
import * as Ledger from "../src/Ledger.ts"
import * as Pipeline from "../src/Pipeline.ts"
import * as Prices from "../src/Prices.ts"
import * as Provider from "../src/Provider.ts"
import * as Request from "../src/Request.ts"
import type * as Result from "../src/Result.ts"
import type * as Sink from "../src/Sink.ts"
import type * as Source from "../src/Source.ts"
import * as SqliteClient from "../src/SqliteClient.ts"
import * as Tokens from "../src/Tokens.ts"
import * as Pg from "./support/postgres.ts"
import * as TestProvider from "./support/TestProvider.ts"

const Ticket = Schema.Struct({ id: Schema.String, body: Schema.String })
type Ticket = typeof Ticket.Type
const Answer = Schema.Struct({ echo: Schema.String })
const OUTPUT: Request.Output = { name: "answer", schema: Answer }

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-estimate-"))

/** a deterministic PRNG (mulberry32) */
const prng = (seed: number) => () => {
  seed |= 0
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const WORDS = "invoice refund charged twice billing card login password account locked email crash export report".split(" ")

/** `n` tickets with bodies of varied length; every `dupEvery`-th repeats an earlier body */
const tickets = (n: number, options: { seed?: number; dupEvery?: number; changed?: (i: number) => boolean } = {}) => {
  const rand = prng(options.seed ?? 7)
  const out: Array<Source.Item<Ticket>> = []
  for (let i = 1; i <= n; i++) {
    const words = 3 + Math.floor(rand() * rand() * 80)
    let body = `${i}: ${Array.from({ length: words }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(" ")}`
    if (options.dupEvery !== undefined && i % options.dupEvery === 0) body = `repeated ${i % 7}`
    if (options.changed?.(i) === true) body = `${body} (edited)`
    out.push({ _tag: "Row", position: i, value: { id: `t${i}`, body } })
  }
  return out
}

const sourceOf = (items: ReadonlyArray<Source.Item<Ticket>>, count?: number): Source.Source<Ticket> => ({
  name: "tickets",
  schema: Ticket,
  read: Stream.fromIterable(items),
  ...(count !== undefined ? { count: Effect.succeed(count) } : {})
})

const memorySink = <A>() => {
  const parts = new Map<string, ReadonlyArray<A>>()
  const sink: Sink.Sink<A> = { name: "memory", write: (part, rows) => Effect.sync(() => void parts.set(`${part.runId}/${part.seq}`, rows)) }
  return { sink, all: () => [...parts.values()].flat() }
}

/** the test provider, named `openai` so requests are counted and priced as OpenAI's (gpt-4o-mini) */
const providerOf = (script: TestProvider.Script) => {
  const p = TestProvider.make(script)
  return { ...p, service: { ...p.service, name: "openai" } satisfies Provider.Service }
}

const echo = (line: TestProvider.Line) => TestProvider.ok(line, JSON.stringify({ echo: TestProvider.promptOf(line) }))

const ledgerLayer = (dir: string) => Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(dir, "state.db") })))

const pipelineOf = (
  items: ReadonlyArray<Source.Item<Ticket>>,
  extra: Partial<Pipeline.Config<Ticket, { readonly echo: string }>> = {},
  count?: number
) =>
  Pipeline.make({
    name: "est",
    source: sourceOf(items, count),
    key: (t) => t.id,
    request: (t) => Request.chat({ model: "gpt-4o-mini", system: "Echo the ticket.", prompt: t.body, maxTokens: 200 }),
    output: Answer,
    outputName: "answer",
    sink: memorySink<Result.Succeeded<Ticket, { readonly echo: string }>>().sink,
    deadLetter: memorySink<Result.Failed<Ticket>>().sink,
    batch: { maxRequests: 100, maxInFlight: 2 },
    retry: { backoff: "1 millis" },
    ...extra
  })

describe("Estimate.make", () => {
  it.effect("splits requests as the Batcher does: the dry run's files hold the same lines, batch by batch", () =>
    Effect.gen(function*() {
      const { service } = providerOf({ answer: echo })
      const items = tickets(3_000, { dupEvery: 11 })
      // two models: two groups that never share a batch
      const request = (t: Ticket) =>
        Request.chat({ model: Number(t.id.slice(1)) % 3 === 0 ? "gpt-4o" : "gpt-4o-mini", prompt: t.body, maxTokens: 100 })
      const pipeline = pipelineOf(items, { request, batch: { maxRequests: 250, maxBytes: 60_000 } })
      const dir = path.join(tmpDir(), "dry")
      fs.mkdirSync(dir)
      fs.writeFileSync(path.join(dir, "stale.jsonl"), "from an earlier dry run\n")
      const estimate = yield* Estimate.make(pipeline, { provider: service, dryRunDir: dir })

      // the Batcher on the same requests, deduplicated in source order as admission does
      const seen = new Set<string>()
      const batcherItems: Array<Batcher.Item> = []
      for (const item of items) {
        if (item._tag !== "Row") continue
        const r = Request.withOutput(request(item.value), OUTPUT)
        const fp = Fingerprint.of(r)
        if (seen.has(fp)) continue
        seen.add(fp)
        const encoded = service.encode(r, fp)
        assert.isTrue(R.isSuccess(encoded))
        if (R.isSuccess(encoded)) batcherItems.push({ id: fp, request: item.position, ...encoded.success })
      }
      const outputs = yield* Stream.fromIterable(batcherItems).pipe(
        Batcher.batches({ maxRequests: 250, maxBytes: 60_000, flushAfter: "1 day" }),
        Stream.runCollect
      )
      // the batches in the order they closed, each with the lines appended to it
      const forming = new Map<string, Array<Batcher.Item>>()
      const expected: Array<{ readonly _tag: string; readonly group: string; readonly items: ReadonlyArray<Batcher.Item>; readonly bytes: number }> = []
      for (const o of outputs) {
        if (o._tag === "Append") forming.set(o.group, [...(forming.get(o.group) ?? []), ...o.items])
        else if (o._tag === "Close") {
          expected.push({ _tag: "Batch", group: o.group, items: forming.get(o.group) ?? [], bytes: o.bytes })
          forming.delete(o.group)
        } else assert.fail(`no request is too large here: ${o.message}`)
      }
      const files = estimate.dryRun!.files
      assert.strictEqual(files.length, expected.length)
      assert.strictEqual(estimate.batches.count, expected.length)
      assert.strictEqual(estimate.batches.groups, 2)
      assert.deepStrictEqual(fs.readdirSync(dir).sort(), [...files.map((f) => f.file), "estimate.json"].sort())
      expected.forEach((batch, i) => {
        assert.strictEqual(batch._tag, "Batch")
        if (batch._tag !== "Batch") return
        const f = files[i]!
        assert.strictEqual(f.group, batch.group)
        assert.strictEqual(f.requests, batch.items.length)
        assert.strictEqual(f.bytes, batch.bytes)
        const text = fs.readFileSync(path.join(dir, f.file), "utf8")
        assert.strictEqual(text, batch.items.map((x) => x.line + "\n").join(""))
        assert.strictEqual(Buffer.byteLength(text), f.bytes)
        assert.isAtMost(f.requests, 250)
        assert.isAtMost(f.bytes, 60_000)
      })
      assert.strictEqual(estimate.requests, batcherItems.length)
      assert.strictEqual(estimate.rows.deduped, 3_000 - batcherItems.length)
      const onDisk = Schema.decodeUnknownSync(Estimate.Estimate)(JSON.parse(fs.readFileSync(path.join(dir, "estimate.json"), "utf8")))
      assert.strictEqual(onDisk.requests, estimate.requests)
      console.log(
        `dry run: ${estimate.requests} requests of 3,000 rows in ${files.length} files (${
          files.filter((f) => f.group.includes("gpt-4o-mini")).length
        } gpt-4o-mini, the rest gpt-4o), byte for byte the Batcher's batches; ${estimate.batches.bytes} bytes`
      )
    }))

  it.live("says what the run then does: requests sent, rows deduplicated, invalid, answered by the result cache", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const provider = providerOf({ answer: echo, limits: { maxRequestBytes: 3_000 } })
      const layer = Layer.mergeAll(Layer.succeed(Provider.Provider, provider.service), ledgerLayer(dir))
      const items: Array<Source.Item<Ticket>> = [
        ...tickets(1_000, { dupEvery: 9 }),
        { _tag: "Malformed", position: 1_001, line: 1_002, reason: "tickets row 1001 (line 1002): field \"body\": missing" },
        { _tag: "Row", position: 1_002, value: { id: "big", body: "x ".repeat(3_000) } }
      ]
      const sent = () => provider.creates.reduce((s, c) => s + c.lines, 0)
      const first = pipelineOf(items)
      const before = yield* Effect.gen(function*() {
        return yield* Estimate.make(first, { provider: provider.service, ledger: yield* Ledger.Ledger })
      }).pipe(Effect.provide(layer))
      const run1 = yield* Pipeline.run(first, { stateDir: dir }).pipe(Effect.provide(layer))
      assert.strictEqual(run1.state, "completed")
      assert.strictEqual(before.requests, sent())
      assert.strictEqual(before.rows.total, 1_002)
      assert.strictEqual(before.rows.invalid, run1.failed)
      assert.strictEqual(before.rows.invalid, 2)
      assert.match(before.invalidExamples[1]!, /^tickets row 1002: the request is [\d.]+ KiB encoded, over the 2\.9 KiB/)
      assert.strictEqual(before.rows.deduped, run1.dedupedRows)
      assert.strictEqual(before.rows.cached, 0)
      assert.strictEqual(before.rows.sent, run1.succeeded)

      // a second run of the same source with 150 rows edited: only those are sent, the rest come from the cache
      const edited = (i: number) => i % 7 === 3 && i <= 1_050
      const second = pipelineOf([...tickets(1_000, { dupEvery: 9, changed: edited }), ...items.slice(1_000)])
      const sentBefore = sent()
      const after = yield* Effect.gen(function*() {
        return yield* Estimate.make(second, { provider: provider.service, ledger: yield* Ledger.Ledger })
      }).pipe(Effect.provide(layer))
      const run2 = yield* Pipeline.run(second, { stateDir: dir }).pipe(Effect.provide(layer))
      assert.strictEqual(run2.state, "completed")
      assert.strictEqual(after.requests, sent() - sentBefore)
      assert.strictEqual(after.rows.cached, run2.cachedRows)
      assert.strictEqual(after.rows.deduped, run2.dedupedRows)
      assert.isAbove(after.requests, 100)
      assert.isBelow(after.requests, 150)
      console.log(
        `run 1: estimated ${before.requests} requests (${before.rows.deduped} rows deduped, ${before.rows.invalid} invalid), ` +
          `sent ${sentBefore}; run 2 (rows edited): estimated ${after.requests} requests and ${after.rows.cached} rows ` +
          `from the result cache, sent ${sent() - sentBefore} with ${run2.cachedRows} cache hits`
      )
    }))

  it.effect("prices each request at the batch and the synchronous price, exactly as Prices does one by one", () =>
    Effect.gen(function*() {
      const { service } = providerOf({ answer: echo })
      const items = tickets(2_000, { seed: 3 })
      const pipeline = pipelineOf(items, { budget: "0.05" })
      const estimate = yield* Estimate.make(pipeline, { provider: service })
      let batch = 0n
      let sync = 0n
      let input = 0
      for (const item of items) {
        if (item._tag !== "Row") continue
        const r = Request.withOutput(pipeline.request(item.value, { provider: "openai" }), OUTPUT)
        const tokens = Tokens.countRequest(r, "openai").tokens
        input += tokens
        const at = (mode: Prices.Mode) => Prices.worstCase({ inputTokens: tokens, maxOutputTokens: 200 }, { provider: "openai", model: "gpt-4o-mini", mode })
        const b = at("batch")
        const s = at("sync")
        if (R.isFailure(b) || R.isFailure(s)) return assert.fail("gpt-4o-mini has a price")
        batch += b.success.total
        sync += s.success.total
      }
      assert.strictEqual(estimate.inputTokens.total, input)
      assert.strictEqual(estimate.outputTokens.bound, 2_000 * 200)
      assert.strictEqual(estimate.outputTokens.withoutMaxTokens, 0)
      // summed in picodollars per group of equal input tokens: within a picodollar a request of the one-by-one sum
      assert.approximately(estimate.cost.batch.boundUsd, Prices.toUsd(batch), 2_000e-12)
      assert.approximately(estimate.cost.sync.boundUsd, Prices.toUsd(sync), 2_000e-12)
      assert.approximately(estimate.cost.sync.boundUsd, 2 * estimate.cost.batch.boundUsd, 4_000e-12)
      assert.approximately(estimate.cost.saving.boundUsd, Prices.toUsd(sync - batch), 4_000e-12)
      assert.isNull(estimate.cost.batch.expectedUsd)
      // over the budget of $0.05 (batch mode reserves at the batch price)
      assert.strictEqual(estimate.cost.reservedUsd, estimate.cost.batch.boundUsd)
      assert.isNotNull(estimate.cost.overBudgetUsd)
      assert.approximately(estimate.cost.overBudgetUsd!, estimate.cost.batch.boundUsd - 0.05, 1e-9)
      assert.isTrue(estimate.advice.some((a) => a.startsWith("over budget: the worst case")))
      assert.isTrue(estimate.advice.some((a) => a.startsWith("no sample run yet")))
      console.log(
        `2,000 requests, ${input} input tokens: at most ${Estimate.formatUsd(estimate.cost.batch.boundUsd)} batch vs ` +
          `${Estimate.formatUsd(estimate.cost.sync.boundUsd)} sync (one by one: ${Prices.formatUsd(batch)} / ${Prices.formatUsd(sync)}); ` +
          `over the $0.05 budget by ${Estimate.formatUsd(estimate.cost.overBudgetUsd!)}`
      )
    }))

  it.live("output: max tokens bound it (4,096 when unset, flagged); a sample run's answers give the expected output", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      // answers of 20 + (i mod 41) output tokens
      const answer = (line: TestProvider.Line) => {
        const i = Number(/^(\d+):/.exec(TestProvider.promptOf(line))?.[1] ?? 0)
        return {
          _tag: "LineSucceeded" as const,
          id: line.custom_id,
          response: {
            _tag: "ChatResponse" as const,
            text: JSON.stringify({ echo: TestProvider.promptOf(line) }),
            finishReason: "stop" as const,
            usage: { inputTokens: 50, outputTokens: 20 + (i % 41) }
          }
        }
      }
      const provider = providerOf({ answer })
      const layer = Layer.mergeAll(Layer.succeed(Provider.Provider, provider.service), ledgerLayer(dir))
      const items = tickets(1_000, { seed: 11 })
      // odd tickets set maxTokens 30, even ones none
      const request = (t: Ticket) =>
        Request.chat({ model: "gpt-4o-mini", prompt: t.body, maxTokens: Number(t.id.slice(1)) % 2 === 1 ? 30 : undefined })
      const pipeline = pipelineOf(items, { request })
      const estimateNow = Effect.gen(function*() {
        return yield* Estimate.make(pipeline, { provider: provider.service, ledger: yield* Ledger.Ledger })
      }).pipe(Effect.provide(layer))
      const before = yield* estimateNow
      assert.strictEqual(before.outputTokens.withoutMaxTokens, 500)
      assert.strictEqual(before.outputTokens.bound, 500 * 30 + 500 * 4_096)
      assert.isNull(before.outputTokens.expected)
      assert.isTrue(before.advice.some((a) => a.startsWith("500 requests set no maxTokens: each is counted at 4,096")))

      // a sample run of the first 60 rows (as `run --sample 60` makes it: a pipeline of its own, sync)
      const sample = Pipeline.make({
        ...pipeline,
        name: Estimate.sampleName(pipeline.name),
        source: { ...pipeline.source, read: pipeline.source.read.pipe(Stream.take(60)) },
        mode: "sync"
      })
      const sampled = yield* Pipeline.run(sample, { stateDir: dir }).pipe(Effect.provide(layer))
      assert.strictEqual(sampled.succeeded, 60)
      const mean = sampled.usage.outputTokens / 60
      const after = yield* estimateNow
      assert.strictEqual(after.outputTokens.sample?.runId, sampled.runId)
      assert.strictEqual(after.outputTokens.sample?.answers, 60)
      assert.strictEqual(after.outputTokens.perAnswer, mean)
      assert.strictEqual(after.rows.cached, 60)
      assert.strictEqual(after.requests, 940)
      // each request expects min(mean, its max tokens)
      const m = Math.round(mean)
      assert.strictEqual(after.outputTokens.expected, 470 * Math.min(m, 30) + 470 * m)
      assert.isBelow(after.cost.batch.expectedUsd!, after.cost.batch.boundUsd)
      assert.isFalse(after.advice.some((a) => a.startsWith("no sample run yet")))
      console.log(
        `output: bound ${before.outputTokens.bound} tokens (500 requests at 4,096); after a 60-row sample ` +
          `(${mean.toFixed(2)} tokens an answer): expected ${after.outputTokens.expected}, ` +
          `${Estimate.formatUsd(after.cost.batch.expectedUsd!)} expected vs ${Estimate.formatUsd(after.cost.batch.boundUsd)} at most (batch)`
      )
    }))

  it.effect("--sample-rows: scaled to the source's count when it can count, else said to be the first rows only", () =>
    Effect.gen(function*() {
      const { service } = providerOf({ answer: echo })
      const items = tickets(10_000, { seed: 5 })
      const whole = yield* Estimate.make(pipelineOf(items), { provider: service })
      const counted = yield* Estimate.make(pipelineOf(items, {}, 10_000), { provider: service, sampleRows: 1_000 })
      assert.isTrue(whole.source.whole)
      assert.isFalse(counted.source.whole)
      assert.strictEqual(counted.source.rowsRead, 1_000)
      assert.strictEqual(counted.source.rows, 10_000)
      assert.strictEqual(counted.source.scale, 10)
      assert.strictEqual(counted.requests, 10_000)
      assert.match(counted.source.note, /^the first 1,000 rows read of 10,000 the source counts: every figure is scaled by 10\.00/)
      const off = (a: number, b: number) => Math.abs(a - b) / b
      assert.isBelow(off(counted.inputTokens.total, whole.inputTokens.total), 0.05)
      assert.isBelow(off(counted.cost.batch.boundUsd, whole.cost.batch.boundUsd), 0.05)
      assert.strictEqual(counted.batches.count, whole.batches.count)

      const uncounted = yield* Estimate.make(pipelineOf(items), { provider: service, sampleRows: 1_000 })
      assert.strictEqual(uncounted.source.scale, 1)
      assert.isNull(uncounted.source.rows)
      assert.strictEqual(uncounted.requests, 1_000)
      assert.isTrue(uncounted.advice.some((a) => a === "the source cannot count its rows: the figures are for the first 1,000 rows only"))
      // more rows asked than the source holds: read whole
      const all = yield* Estimate.make(pipelineOf(items.slice(0, 500)), { provider: service, sampleRows: 1_000 })
      assert.isTrue(all.source.whole)
      assert.strictEqual(all.requests, 500)
      console.log(
        `sample rows: 1,000 of 10,000 scaled ×10 → ${counted.inputTokens.total} input tokens vs ${whole.inputTokens.total} read whole ` +
          `(${(off(counted.inputTokens.total, whole.inputTokens.total) * 100).toFixed(2)} % off), ` +
          `${Estimate.formatUsd(counted.cost.batch.boundUsd)} vs ${Estimate.formatUsd(whole.cost.batch.boundUsd)}`
      )
    }))

  it.effect("advice: a small job is told the sync API is simpler and what the batch saves; a cached job costs nothing", () =>
    Effect.gen(function*() {
      const { service } = providerOf({ answer: echo })
      const small = yield* Estimate.make(pipelineOf(tickets(120)), { provider: service })
      assert.strictEqual(small.requests, 120)
      const advice = small.advice.find((a) => a.startsWith("only 120 requests"))
      assert.isDefined(advice)
      assert.include(advice!, Estimate.formatUsd(small.cost.saving.boundUsd))
      assert.match(Estimate.format(small), /^estimate: est on openai \(mode batch\) · gpt-4o-mini\n/)
      const none = yield* Estimate.make(pipelineOf([]), { provider: service })
      assert.strictEqual(none.requests, 0)
      assert.deepStrictEqual(none.advice, ["the source has no rows: nothing to send"])
      const sync = yield* Estimate.make(pipelineOf(tickets(400)), { provider: service, mode: "sync" })
      assert.isTrue(sync.advice.some((a) => a.startsWith("400 requests in sync mode: the batch API would save")))
      const auto = yield* Estimate.make(pipelineOf(tickets(250), { batch: { maxRequests: 100, syncBelow: 60 } }), {
        provider: service,
        mode: "auto"
      })
      // batches of 100, 100 and 50: the last goes synchronously
      assert.strictEqual(auto.batches.count, 3)
      assert.strictEqual(auto.batches.sync, 1)
      assert.strictEqual(auto.cost.planned.syncRequests, 50)
      assert.isAbove(auto.cost.planned.boundUsd, auto.cost.batch.boundUsd)
      assert.isBelow(auto.cost.planned.boundUsd, auto.cost.sync.boundUsd)
      // a model with no price: its cost is unknown, not $0.00
      const unknown = yield* Estimate.make(
        pipelineOf(tickets(30), { request: (t) => Request.chat({ model: "my-own-model", prompt: t.body, maxTokens: 50 }) }),
        { provider: service }
      )
      assert.deepStrictEqual(unknown.cost.unpriced, ["my-own-model"])
      const text = Estimate.format(unknown)
      assert.match(text, /batch API\s+unknown\s+-\n/)
      assert.match(text, /synchronous API\s+unknown\s+-\n/)
      assert.match(text, /unpriced\s+my-own-model: no price known, not in the sums \(a `prices` override gives one\)/)
      assert.notInclude(text, "$0.00")
      console.log(`small job: ${advice}`)
    }))
})

describe("the estimate's dedupe set", () => {
  it("holds what a Set holds, in 16–32 bytes per distinct request", () => {
    const rand = prng(99)
    const hex = () => Array.from({ length: 8 }, () => Math.floor(rand() * 2 ** 32).toString(16).padStart(8, "0")).join("")
    const n = 200_000
    // what a Set of the 64-hex texts takes, measured on the heap (fresh strings, as the runner renders them)
    v8.setFlagsFromString("--expose-gc")
    const gc = vm.runInNewContext("gc") as () => void
    const used = () => {
      gc()
      gc()
      return v8.getHeapStatistics().used_heap_size
    }
    const base = used()
    const texts = new Set<string>()
    for (let i = 0; i < n; i++) texts.add(hex())
    const setBytes = (used() - base) / texts.size
    assert.strictEqual(texts.size, n)
    texts.clear()
    const fingerprints = Array.from({ length: n }, hex)
    const set = FingerprintSet.make()
    const plain = new Set<string>()
    for (let i = 0; i < n * 1.5; i++) {
      // a third of the adds repeat an earlier fingerprint
      const fp = i < n ? fingerprints[i]! : fingerprints[Math.floor(rand() * n)]!
      assert.strictEqual(set.add(fp), !plain.has(fp))
      plain.add(fp)
    }
    assert.strictEqual(set.size(), plain.size)
    assert.isTrue(set.has(fingerprints[123]!))
    assert.isFalse(set.has(hex()))
    const zero = "0".repeat(64)
    assert.isTrue(set.add(zero))
    assert.isFalse(set.add(zero))
    assert.isTrue(set.has(zero))
    const perEntry = set.bytes() / set.size()
    assert.isAtMost(perEntry, 32)

    assert.isAbove(setBytes, perEntry * 2)
    console.log(
      `dedupe: ${perEntry.toFixed(1)} bytes per distinct request in the typed-array set vs ${setBytes.toFixed(0)} in a Set<string> ` +
        `(${n.toLocaleString("en-US")} fingerprints)`
    )
  })
})

Pg.describePostgres("Estimate on a Postgres ledger", (url) => {
  it.live("cache hits and the sample's mean are read from Postgres as from SQLite", () =>
    Effect.gen(function*() {
      const fresh = yield* Pg.freshSchema(url, "estimate")
      const ledger = Ledger.layer.pipe(Layer.provide(PgClient.layer({ url: Redacted.make(fresh.url) })))
      const answer = (line: TestProvider.Line) => ({
        _tag: "LineSucceeded" as const,
        id: line.custom_id,
        response: {
          _tag: "ChatResponse" as const,
          text: JSON.stringify({ echo: TestProvider.promptOf(line) }),
          finishReason: "stop" as const,
          usage: { inputTokens: 40, outputTokens: 10 + (TestProvider.promptOf(line).length % 30) }
        }
      })
      const provider = providerOf({ answer })
      const layer = Layer.mergeAll(Layer.succeed(Provider.Provider, provider.service), ledger)
      const dir = tmpDir()
      const sent = () => provider.creates.reduce((n, c) => n + c.lines, 0) + provider.syncCalls.length
      const first = pipelineOf(tickets(300, { seed: 21 }))
      const sample = Pipeline.make({
        ...first,
        name: Estimate.sampleName(first.name),
        source: { ...first.source, read: first.source.read.pipe(Stream.take(40)) },
        mode: "sync"
      })
      const sampled = yield* Pipeline.run(sample, { stateDir: dir }).pipe(Effect.provide(layer))
      const run1 = yield* Pipeline.run(first, { stateDir: dir }).pipe(Effect.provide(layer))
      assert.strictEqual(run1.cachedRows, 40)
      const edited = pipelineOf(tickets(300, { seed: 21, changed: (i) => i % 6 === 0 }))
      const estimate = yield* Effect.gen(function*() {
        return yield* Estimate.make(edited, { provider: provider.service, ledger: yield* Ledger.Ledger })
      }).pipe(Effect.provide(layer))
      const before = sent()
      const run2 = yield* Pipeline.run(edited, { stateDir: dir }).pipe(Effect.provide(layer))
      assert.strictEqual(estimate.requests, 50)
      assert.strictEqual(estimate.requests, sent() - before)
      assert.strictEqual(estimate.rows.cached, run2.cachedRows)
      assert.strictEqual(estimate.outputTokens.sample?.runId, sampled.runId)
      assert.strictEqual(estimate.outputTokens.perAnswer, sampled.usage.outputTokens / 40)
      console.log(
        `Postgres ledger: ${estimate.rows.cached} rows from the cache, ${estimate.requests} requests estimated and sent; ` +
          `sample mean ${estimate.outputTokens.perAnswer} output tokens an answer`
      )
    }))
})
