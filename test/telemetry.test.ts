/**
 * OpenTelemetry of a run, as a collector receives it: a local OTLP/HTTP receiver (node:http, JSON bodies on
 * `/v1/traces` and `/v1/metrics`) gets the spans and metrics of a real run against the OpenAI emulator — from code
 * with `Telemetry.layer`, and through the CLI with the standard variables set — and the test checks the spans' names,
 * parents (run ⊃ batch ⊃ submit / poll / collect / deliver ⊃ provider calls), their attributes against the ledger, and
 * the metrics' values against the run's summary. Off (no endpoint), the exporters are not even loaded.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import * as Telemetry from "@offpeak/core/Telemetry"
import { Emulator as OpenAiEmulator, OpenAiBatch } from "@offpeak/providers/openai"
import { ConfigProvider, Effect, Layer, Metric, Redacted } from "effect"
import { execFile as execFileCb } from "node:child_process"
import * as http from "node:http"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { promisify } from "node:util"
import * as zlib from "node:zlib"
import { afterAll, describe, expect, it } from "vitest"
import * as Fixture from "./fixtures/tickets.pipeline.ts"
import { killAll, query, repo, runCli, tmpDir, writeTickets } from "./support/files.ts"

afterAll(killAll)

const execFile = promisify(execFileCb)

// ----- a local OTLP/HTTP receiver -----

interface Value {
  readonly stringValue?: string
  readonly intValue?: number | string
  readonly doubleValue?: number
  readonly boolValue?: boolean
}
interface KeyValue {
  readonly key: string
  readonly value: Value
}
interface Span {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly kind: number
  readonly startTimeUnixNano: string
  readonly endTimeUnixNano: string
  readonly attributes: ReadonlyArray<KeyValue>
  readonly status: { readonly code: number; readonly message?: string }
}
interface Point {
  readonly attributes: ReadonlyArray<KeyValue>
  readonly asInt?: number | string
  readonly asDouble?: number
}
interface MetricData {
  readonly name: string
  readonly sum?: { readonly dataPoints: ReadonlyArray<Point> }
  readonly gauge?: { readonly dataPoints: ReadonlyArray<Point> }
}

const valueOf = (v: Value): unknown =>
  v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : undefined) ?? v.doubleValue ?? v.boolValue
const attrs = (list: ReadonlyArray<KeyValue>): Record<string, unknown> => Object.fromEntries(list.map((kv) => [kv.key, valueOf(kv.value)]))

const receiver = async () => {
  const posts: Array<{ readonly path: string; readonly contentType: string; readonly body: any }> = []
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      let raw = Buffer.concat(chunks)
      if (req.headers["content-encoding"] === "gzip") raw = zlib.gunzipSync(raw)
      posts.push({ path: req.url ?? "", contentType: String(req.headers["content-type"]), body: JSON.parse(raw.toString("utf8")) })
      res.writeHead(200, { "content-type": "application/json" })
      res.end("{}")
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}`,
    posts,
    /** every span received, with its resource's attributes */
    spans: () =>
      posts.filter((p) => p.path === "/v1/traces").flatMap((p) =>
        (p.body.resourceSpans as Array<any>).flatMap((rs) =>
          (rs.scopeSpans as Array<any>).flatMap((ss) =>
            (ss.spans as Array<Span>).map((span) => ({ ...span, attrs: attrs(span.attributes), resource: attrs(rs.resource.attributes) }))
          )
        )
      ),
    /** the last metrics export: each series' value by metric name and attributes */
    metrics: () => {
      const last = posts.filter((p) => p.path === "/v1/metrics").at(-1)
      const out: Array<{ readonly name: string; readonly attrs: Record<string, unknown>; readonly value: number; readonly resource: Record<string, unknown> }> = []
      for (const rm of last?.body.resourceMetrics ?? []) {
        for (const sm of rm.scopeMetrics) {
          for (const m of sm.metrics as Array<MetricData>) {
            for (const p of m.sum?.dataPoints ?? m.gauge?.dataPoints ?? []) {
              out.push({ name: m.name, attrs: attrs(p.attributes), value: Number(p.asInt ?? p.asDouble), resource: attrs(rm.resource.attributes) })
            }
          }
        }
      }
      return out
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
type Received = Awaited<ReturnType<typeof receiver>>
type ReceivedSpan = ReturnType<Received["spans"]>[number]

/** a metric's value where its attributes include `where` (summed over the series that match) */
const metric = (received: Received, name: string, where: Record<string, unknown> = {}) =>
  received.metrics()
    .filter((m) => m.name === name && Object.entries(where).every(([k, v]) => m.attrs[k] === v))
    .reduce((sum, m) => sum + m.value, 0)

const countByName = (spans: ReadonlyArray<Span>) => {
  const counts: Record<string, number> = {}
  for (const s of spans) counts[s.name] = (counts[s.name] ?? 0) + 1
  return counts
}

const ms = (span: Span) => (Number(BigInt(span.endTimeUnixNano) - BigInt(span.startTimeUnixNano)) / 1e6)

/** checks run ⊃ batch ⊃ submit/poll/collect/deliver ⊃ provider calls, and returns the figures it saw */
const checkTrace = (spans: ReadonlyArray<ReceivedSpan>, expected: {
  readonly runId: string
  readonly batches: ReadonlyArray<{ readonly id: string; readonly remoteId: string | null; readonly requests: number }>
  readonly succeeded: number
  readonly failed: number
}) => {
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const parentOf = (s: ReceivedSpan) => s.parentSpanId === undefined || s.parentSpanId === "" ? undefined : byId.get(s.parentSpanId)
  const named = (name: string) => spans.filter((s) => s.name === name)

  const runs = named("offpeak.run")
  expect(runs).toHaveLength(1)
  const run = runs[0]!
  expect(run.attrs["offpeak.run.id"]).toBe(expected.runId)
  expect(run.attrs["offpeak.pipeline"]).toBe("tickets")
  expect(run.attrs["offpeak.provider"]).toBe("openai")
  expect(run.attrs["offpeak.mode"]).toBe("batch")
  expect(run.attrs["offpeak.run.state"]).toBe("completed")
  expect(run.attrs["offpeak.rows.succeeded"]).toBe(expected.succeeded)
  expect(run.attrs["offpeak.rows.failed"]).toBe(expected.failed)
  expect(run.attrs["offpeak.batches"]).toBe(expected.batches.length)
  expect(run.status.code).toBe(1)
  // one trace: everything the run did is in it
  const inRun = spans.filter((s) => s.traceId === run.traceId)

  // a batch span per batch of the ledger, each a child of the run, with its remote id and size
  const batches = named("offpeak.batch")
  expect(batches.map((b) => b.attrs["offpeak.batch.id"]).sort()).toEqual(expected.batches.map((b) => b.id).sort())
  for (const b of batches) {
    const ledger = expected.batches.find((x) => x.id === b.attrs["offpeak.batch.id"])!
    expect(parentOf(b)?.name, b.name).toBe("offpeak.run")
    expect(b.traceId).toBe(run.traceId)
    expect(b.attrs["offpeak.batch.remote_id"]).toBe(ledger.remoteId)
    expect(b.attrs["offpeak.batch.requests"]).toBe(ledger.requests)
    expect(b.attrs["offpeak.batch.bytes"]).toBeGreaterThan(0)
    expect(b.attrs["offpeak.batch.mode"]).toBe("batch")
    expect(b.attrs["offpeak.provider"]).toBe("openai")
    expect(b.attrs["offpeak.run.id"]).toBe(expected.runId)
    expect(b.attrs["offpeak.batch.provider_state"]).toBe("completed")
    const children = spans.filter((s) => parentOf(s) === b).map((s) => s.name)
    for (const stage of ["offpeak.batch.upload", "offpeak.batch.submit", "offpeak.batch.poll", "offpeak.batch.collect"]) {
      expect(children.filter((c) => c === stage), `${stage} of ${b.attrs["offpeak.batch.id"]}`).toHaveLength(1)
    }
  }
  // the stages' provider calls, each a client span under its stage
  const stageOf = (name: string) => spans.filter((s) => s.name === name).map((s) => parentOf(s)?.name)
  // the file uploaded ahead of the create, outside the create lock
  expect(new Set(stageOf("openai files.create"))).toEqual(new Set(["offpeak.batch.upload"]))
  expect(new Set(stageOf("openai batches.create"))).toEqual(new Set(["offpeak.batch.submit"]))
  // (the results are read from the files the poll that saw the batch end named: no retrieve while collecting)
  expect(new Set(stageOf("openai batches.retrieve"))).toEqual(new Set(["offpeak.batch.poll"]))
  expect(new Set(stageOf("openai files.content"))).toEqual(new Set(["offpeak.batch.collect"]))
  for (const call of spans.filter((s) => s.name.startsWith("openai "))) {
    expect(call.kind).toBe(3)
    expect(call.attrs["offpeak.provider"]).toBe("openai")
    expect(`openai ${call.attrs["offpeak.operation"]}`).toBe(call.name)
    expect(call.traceId).toBe(run.traceId)
  }
  // one poll span per batch for the whole wait; the polls counted on it, one provider call each
  for (const poll of named("offpeak.batch.poll")) {
    const calls = spans.filter((s) => parentOf(s) === poll && s.name === "openai batches.retrieve")
    expect(poll.attrs["offpeak.batch.polls"]).toBe(calls.filter((c) => c.status.code !== 2).length)
    expect(poll.attrs["offpeak.batch.provider_state"]).toBe("completed")
  }
  const collects = named("offpeak.batch.collect")
  // parts: every row delivered or dead-lettered once, each part under the batch (or the run) that delivered it
  const parts = named("offpeak.part.deliver")
  for (const p of parts) expect(["offpeak.batch", "offpeak.run"]).toContain(parentOf(p)?.name)
  expect(parts.reduce((n, p) => n + Number(p.attrs["offpeak.part.delivered"]), 0)).toBe(expected.succeeded)
  expect(parts.reduce((n, p) => n + Number(p.attrs["offpeak.part.dead"]), 0)).toBe(expected.failed)
  const admits = named("offpeak.source.admit")
  expect(admits.length).toBeGreaterThan(0)
  for (const a of admits) expect(a.traceId).toBe(run.traceId)
  return {
    spans: spans.length,
    inRun: inRun.length,
    batches: batches.length,
    polls: named("offpeak.batch.poll").reduce((n, p) => n + Number(p.attrs["offpeak.batch.polls"]), 0),
    results: collects.reduce((n, c) => n + Number(c.attrs["offpeak.batch.results"]), 0),
    parts: parts.length,
    providerCalls: spans.filter((s) => s.name.startsWith("openai ")).length,
    runMs: ms(run)
  }
}

const ledgerOf = (dir: string) => Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(dir, "state.db") })))

describe("OpenTelemetry through effect's OTLP exporters", () => {
  it("a run from code with Telemetry.layer: spans nest run ⊃ batch ⊃ stage ⊃ provider call, metrics match the summary", async () => {
    const received = await receiver()
    const dir = tmpDir("otel-code")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 150, 7)
    const pipeline = Fixture.make({ input, out: path.join(dir, "out"), maxRequests: 50 })
    const started = Date.now()
    const { summary, batches } = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const emulator = yield* OpenAiEmulator.serve({
        validationMs: 5,
        finalizingMs: 5,
        seed: 3,
        // a retryable line failure now and then (a retry round), and the first create refused with a 429
        lineFailures: [{ status: 500, rate: 0.08 }],
        endpointFaults: [{ endpoint: "batches.create", status: 429, times: 1, retryAfter: 0 }]
      })
      const provider = OpenAiBatch.layer({
        apiKey: Redacted.make("test"),
        baseURL: emulator.url,
        pollInterval: { initial: "20 millis", max: "200 millis" }
      })
      const summary = yield* Pipeline.run(pipeline, { stateDir: dir }).pipe(
        Effect.provide(Layer.mergeAll(provider, ledgerOf(dir), Telemetry.layer({ endpoint: received.url }))),
        // metrics are per process: a registry of this test's own keeps the other tests' runs out of its figures
        Effect.provideService(Metric.MetricRegistry, new Map())
      )
      const batches = yield* Effect.gen(function*() {
        return yield* (yield* Ledger.Ledger).batches(summary.runId)
      }).pipe(Effect.provide(ledgerOf(dir)))
      return { summary, batches }
    })))
    const elapsed = Date.now() - started
    await received.close()

    expect(summary.state).toBe("completed")
    expect(summary.succeeded + summary.failed).toBe(150)
    // everything came by OTLP/JSON, to the two standard paths
    expect(new Set(received.posts.map((p) => p.path))).toEqual(new Set(["/v1/traces", "/v1/metrics"]))
    for (const p of received.posts) expect(p.contentType).toMatch(/^application\/json/)

    const spans = received.spans()
    const seen = checkTrace(spans, {
      runId: summary.runId,
      batches: batches.map((b) => ({ id: b.id, remoteId: b.remoteId, requests: b.requestCount })),
      succeeded: summary.succeeded,
      failed: summary.failed
    })
    expect(spans[0]!.resource["service.name"]).toBe("offpeak")
    // SQL statements (the ledger's) are not exported unless asked for
    expect(spans.filter((s) => s.name === "sqlite" || s.name === "sql.transaction")).toEqual([])
    // the 429 on the first create: an errored client span with the HTTP status, then the batch found or created
    const creates = spans.filter((s) => s.name === "openai batches.create")
    const refused = creates.filter((s) => s.status.code === 2)
    expect(refused).toHaveLength(1)
    expect(refused[0]!.attrs["http.response.status_code"]).toBe(429)
    expect(refused[0]!.attrs["error.type"]).toBe("RateLimited")
    expect(refused[0]!.status.message).toMatch(/openai batches\.create: RateLimited/)
    expect(creates.filter((s) => s.status.code === 1)).toHaveLength(batches.length)
    // the retry round's batch is a batch like the others; the results recorded are every answer and failed line
    expect(seen.results).toBeGreaterThanOrEqual(150)

    // metrics, against the summary and the ledger
    const labels = { "offpeak.pipeline": "tickets", "offpeak.provider": "openai" }
    const figures = {
      rowsRead: metric(received, "offpeak.rows.read", labels),
      delivered: metric(received, "offpeak.rows.delivered", labels),
      dead: metric(received, "offpeak.rows.failed", labels),
      inputTokens: metric(received, "offpeak.tokens", { ...labels, "offpeak.token.type": "input" }),
      outputTokens: metric(received, "offpeak.tokens", { ...labels, "offpeak.token.type": "output" }),
      costUsd: metric(received, "offpeak.cost.usd", labels),
      syncUsd: metric(received, "offpeak.cost.sync_equivalent.usd", labels),
      sealed: metric(received, "offpeak.batches", { ...labels, "offpeak.batch.state": "sealed" }),
      submitted: metric(received, "offpeak.batches", { ...labels, "offpeak.batch.state": "submitted" }),
      completed: metric(received, "offpeak.batches", { ...labels, "offpeak.batch.state": "completed" }),
      inFlight: metric(received, "offpeak.batches.in_flight", labels),
      retryRounds: metric(received, "offpeak.retry.rounds", labels),
      retried: metric(received, "offpeak.retry.requests", labels),
      backoffs: metric(received, "offpeak.provider.backoffs", { ...labels, "offpeak.operation": "openai batches.create" }),
      answersFailed: metric(received, "offpeak.answers", { ...labels, "offpeak.outcome": "failed" }),
      runsCompleted: metric(received, "offpeak.runs", { ...labels, "offpeak.run.state": "completed" })
    }
    expect(figures.rowsRead).toBe(150)
    expect(figures.delivered).toBe(summary.succeeded)
    expect(figures.dead).toBe(summary.failed)
    expect(figures.inputTokens).toBe(summary.usage.inputTokens)
    expect(figures.outputTokens).toBe(summary.usage.outputTokens)
    expect(figures.inputTokens).toBeGreaterThan(0)
    expect(figures.costUsd).toBeCloseTo(summary.cost.spentUsd, 9)
    expect(figures.costUsd).toBeGreaterThan(0)
    expect(figures.syncUsd).toBeCloseTo(summary.cost.syncEquivalentUsd, 9)
    expect(figures.sealed).toBe(batches.length)
    expect(figures.submitted).toBe(batches.length)
    expect(figures.completed).toBe(batches.length)
    expect(figures.inFlight).toBe(0)
    expect(figures.retryRounds).toBeGreaterThanOrEqual(1)
    // every failed answer is sent again, but for the one that used the last of its 3 attempts (dead-lettered as
    // provider_error: at a line failure rate of 8 %, about one run in twelve has one)
    const exhausted = summary.failedByKind.find((f) => f.kind === "provider_error")?.rows ?? 0
    expect(figures.retried).toBe(figures.answersFailed - exhausted)
    expect(figures.backoffs).toBe(1)
    expect(figures.runsCompleted).toBe(1)
    console.log(
      `telemetry from code: ${summary.succeeded} rows in ${batches.length} batches (${figures.retryRounds} retry round(s), ` +
        `${figures.retried} requests resent), run ${elapsed} ms; ${received.posts.length} OTLP posts, ${seen.spans} spans ` +
        `(${seen.inRun} in the run's trace, ${seen.providerCalls} provider calls, ${seen.polls} polls in ${seen.batches} ` +
        `poll spans, ${seen.parts} parts): ${JSON.stringify(countByName(spans))}; metrics: ${JSON.stringify(figures)}`
    )
  }, 60_000)

  it("the CLI with OTEL_EXPORTER_OTLP_ENDPOINT set: the run's trace and metrics, named by OTEL_SERVICE_NAME", async () => {
    const received = await receiver()
    const dir = tmpDir("otel-cli")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 120, 11)
    const state = path.join(dir, "state")
    const started = Date.now()
    const run = await runCli(["run", path.join(repo, "test/fixtures/tickets.pipeline.ts"), "--state-dir", state], {
      cwd: dir,
      env: {
        // the in-process emulator (no key), small batches, quick polls
        OPENAI_API_KEY: undefined,
        OPENAI_BASE_URL: undefined,
        OFFPEAK_EMULATOR_KNOBS: JSON.stringify({ validationMs: 5, finalizingMs: 5 }),
        OFFPEAK_POLL_INITIAL: "50 millis",
        OFFPEAK_POLL_MAX: "200 millis",
        OFFPEAK_TEST_INPUT: input,
        OFFPEAK_TEST_OUT: path.join(dir, "out"),
        OFFPEAK_TEST_MAX_REQUESTS: "40",
        OTEL_EXPORTER_OTLP_ENDPOINT: received.url,
        OTEL_SERVICE_NAME: "offpeak-otel-test",
        OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=ci,team=data%20eng",
        OFFPEAK_OTEL_SQL_SPANS: "true"
      }
    })
    const elapsed = Date.now() - started
    await received.close()
    expect(run.code, run.stderr).toBe(0)
    const [r] = query<{ id: string }>(path.join(state, "state.db"), "SELECT id FROM offpeak_runs")
    const batches = query<{ id: string; remote_id: string | null; request_count: number }>(
      path.join(state, "state.db"),
      "SELECT id, remote_id, request_count FROM offpeak_batches"
    )
    expect(batches.length).toBe(3)
    const spans = received.spans()
    const seen = checkTrace(spans, {
      runId: r!.id,
      batches: batches.map((b) => ({ id: b.id, remoteId: b.remote_id, requests: b.request_count })),
      succeeded: 120,
      failed: 0
    })
    // asked for, the ledger's statements are spans of the run's trace too
    const sql = spans.filter((s) => s.name === "sqlite")
    expect(sql.length).toBeGreaterThan(0)
    for (const s of sql) expect(s.attrs["db.system.name"]).toBe("sqlite")
    const runSpan = spans.find((s) => s.name === "offpeak.run")!
    expect(sql.filter((s) => s.traceId === runSpan.traceId).length).toBeGreaterThan(sql.length / 2)
    const resource = runSpan.resource
    expect(resource["service.name"]).toBe("offpeak-otel-test")
    expect(resource["deployment.environment"]).toBe("ci")
    expect(resource["team"]).toBe("data eng")
    const labels = { "offpeak.pipeline": "tickets", "offpeak.provider": "openai" }
    expect(metric(received, "offpeak.rows.read", labels)).toBe(120)
    expect(metric(received, "offpeak.rows.delivered", labels)).toBe(120)
    expect(metric(received, "offpeak.batches", { ...labels, "offpeak.batch.state": "completed" })).toBe(3)
    expect(metric(received, "offpeak.runs", { ...labels, "offpeak.run.state": "completed" })).toBe(1)
    expect(received.metrics()[0]!.resource["service.name"]).toBe("offpeak-otel-test")
    console.log(
      `telemetry through the CLI: exit ${run.code} in ${elapsed} ms; ${received.posts.length} OTLP posts, ${seen.spans} spans ` +
        `(${seen.providerCalls} provider calls, ${seen.polls} polls, ${sql.length} SQL statements), run span ` +
        `${seen.runMs.toFixed(0)} ms: ${JSON.stringify(countByName(spans))}; ` +
        `tokens in ${metric(received, "offpeak.tokens", { ...labels, "offpeak.token.type": "input" })}, ` +
        `cost $${metric(received, "offpeak.cost.usd", labels).toFixed(6)}`
    )
  }, 90_000)

  it("a sync run: each batch's synchronous calls in one offpeak.batch.sync span, the answers' tokens and cost counted", async () => {
    const received = await receiver()
    const dir = tmpDir("otel-sync")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 60, 9)
    const summary = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const emulator = yield* OpenAiEmulator.serve({})
      const provider = OpenAiBatch.layer({ apiKey: Redacted.make("test"), baseURL: emulator.url })
      return yield* Pipeline.run(Fixture.make({ input, out: path.join(dir, "out"), maxRequests: 25 }), { stateDir: dir, mode: "sync" }).pipe(
        Effect.provide(Layer.mergeAll(provider, ledgerOf(dir), Telemetry.layer({ endpoint: received.url }))),
        Effect.provideService(Metric.MetricRegistry, new Map())
      )
    })))
    await received.close()
    expect(summary.state).toBe("completed")
    const spans = received.spans()
    const byId = new Map(spans.map((s) => [s.spanId, s]))
    const run = spans.find((s) => s.name === "offpeak.run")!
    expect(run.attrs["offpeak.mode"]).toBe("sync")
    const batches = spans.filter((s) => s.name === "offpeak.batch")
    expect(batches).toHaveLength(3)
    for (const b of batches) {
      expect(byId.get(b.parentSpanId!)).toBe(run)
      expect(b.attrs["offpeak.batch.mode"]).toBe("sync")
      const syncs = spans.filter((s) => s.parentSpanId === b.spanId && s.name === "offpeak.batch.sync")
      expect(syncs).toHaveLength(1)
      expect(syncs[0]!.attrs["offpeak.batch.completed"]).toBe(b.attrs["offpeak.batch.requests"])
      expect(spans.filter((s) => s.parentSpanId === b.spanId).map((s) => s.name)).not.toContain("offpeak.batch.poll")
    }
    const labels = { "offpeak.pipeline": "tickets", "offpeak.provider": "openai" }
    expect(metric(received, "offpeak.batches", { ...labels, "offpeak.batch.state": "sync", "offpeak.batch.mode": "sync" })).toBe(3)
    expect(metric(received, "offpeak.tokens", { ...labels, "offpeak.token.type": "output" })).toBe(summary.usage.outputTokens)
    expect(metric(received, "offpeak.cost.usd", labels)).toBeCloseTo(summary.cost.spentUsd, 9)
    // synchronous prices are the sync equivalent
    expect(metric(received, "offpeak.cost.usd", labels)).toBeCloseTo(metric(received, "offpeak.cost.sync_equivalent.usd", labels), 9)
    console.log(
      `telemetry, sync mode: ${summary.succeeded} rows in ${batches.length} sync batches, ${spans.length} spans ` +
        `${JSON.stringify(countByName(spans))}; cost $${metric(received, "offpeak.cost.usd", labels).toFixed(6)}`
    )
  }, 60_000)

  it("a download cut short and started again: its answers' tokens and cost are counted once", async () => {
    const received = await receiver()
    const dir = tmpDir("otel-reset")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 800, 3)
    const summary = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      // one batch of 800 lines whose output download breaks after ~250 KB (several hundred lines recorded already)
      const emulator = yield* OpenAiEmulator.serve({ validationMs: 5, finalizingMs: 5, linesPerSecond: 100_000, resetDownloads: { times: 1, afterBytes: 250_000 } })
      const provider = OpenAiBatch.layer({ apiKey: Redacted.make("test"), baseURL: emulator.url, pollInterval: { initial: "20 millis", max: "100 millis" } })
      return yield* Pipeline.run(Fixture.make({ input, out: path.join(dir, "out"), maxRequests: 800 }), { stateDir: dir }).pipe(
        Effect.provide(Layer.mergeAll(provider, ledgerOf(dir), Telemetry.layer({ endpoint: received.url }))),
        Effect.provideService(Metric.MetricRegistry, new Map())
      )
    })))
    await received.close()
    expect(summary.state).toBe("completed")
    const spans = received.spans()
    const downloads = spans.filter((s) => s.name === "openai files.content")
    expect(downloads.length).toBeGreaterThanOrEqual(2)
    const collect = spans.filter((s) => s.name === "offpeak.batch.collect")
    expect(collect).toHaveLength(1)
    expect(collect[0]!.attrs["offpeak.batch.results"]).toBe(800)
    const labels = { "offpeak.pipeline": "tickets", "offpeak.provider": "openai" }
    const inputTokens = metric(received, "offpeak.tokens", { ...labels, "offpeak.token.type": "input" })
    expect(inputTokens).toBe(summary.usage.inputTokens)
    expect(summary.progress.inputTokens).toBe(summary.usage.inputTokens)
    expect(metric(received, "offpeak.cost.usd", labels)).toBeCloseTo(summary.cost.spentUsd, 9)
    expect(metric(received, "offpeak.answers", { ...labels, "offpeak.outcome": "succeeded" })).toBe(800)
    console.log(
      `telemetry, download reset: ${downloads.length} downloads of the results, 800 answers counted once: ` +
        `${inputTokens} input tokens (ledger ${summary.usage.inputTokens}), $${metric(received, "offpeak.cost.usd", labels).toFixed(6)}`
    )
  }, 60_000)

  it("off without an endpoint: the exporters are not loaded and no metric is recorded; a bad setting is named", async () => {
    // a fresh process: which modules load when the layer is built (and closed) with and without an endpoint
    // (evaluated with the repository as the working folder, so "effect" resolves from it)
    const script = `
      import { registerHooks } from "node:module"
      const seen = []
      registerHooks({ resolve: (specifier, context, next) => { const r = next(specifier, context); seen.push(r.url); return r } })
      const { Effect, Layer } = await import("effect")
      const Telemetry = await import(${JSON.stringify(pathToFileURL(path.join(repo, "packages/core/src/Telemetry.ts")).href)})
      const t = performance.now()
      await Effect.runPromise(Effect.scoped(Layer.build(Telemetry.layerConfig)))
      console.log(JSON.stringify({ observability: seen.filter((u) => u.includes("/observability/")).length, ms: performance.now() - t }))
    `
    const load = async (env: Record<string, string>) => {
      const out = await execFile(process.execPath, ["--input-type=module", "-e", script], { cwd: repo, env: { PATH: process.env.PATH ?? "", ...env } })
      return JSON.parse(out.stdout.trim().split("\n").at(-1)!) as { observability: number; ms: number }
    }
    const off = await load({})
    const collector = await receiver()
    const on = await load({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.url })
    await collector.close()
    expect(off.observability).toBe(0)
    expect(on.observability).toBeGreaterThan(0)
    // on, closing the layer exported the (empty) metrics once
    expect(collector.posts.map((p) => p.path)).toEqual(["/v1/metrics"])

    // a small run, its metrics in a registry of its own: off, none is recorded; with RecordMetrics (another
    // exporter, e.g. Prometheus), they are
    const runWith = async (telemetry: Layer.Layer<never, Telemetry.TelemetryError>, tag: string) => {
      const registry: Metric.MetricRegistry = new Map()
      const dir = tmpDir(`otel-${tag}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 30, 5)
      const summary = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const emulator = yield* OpenAiEmulator.serve({ validationMs: 5, finalizingMs: 5 })
        const provider = OpenAiBatch.layer({ apiKey: Redacted.make("test"), baseURL: emulator.url, pollInterval: { initial: "20 millis", max: "100 millis" } })
        return yield* Pipeline.run(Fixture.make({ input, out: path.join(dir, "out") }), { stateDir: dir }).pipe(
          Effect.provide(Layer.mergeAll(provider, ledgerOf(dir), telemetry)),
          Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env: {} })),
          Effect.provideService(Metric.MetricRegistry, registry)
        )
      })))
      expect(summary.state).toBe("completed")
      return [...registry.values()].map((m) => m.id).filter((id) => id.startsWith("offpeak."))
    }
    const offSeries = await runWith(Telemetry.layerConfig, "off-run")
    expect(offSeries).toEqual([])
    const onSeries = await runWith(Layer.succeed(Telemetry.RecordMetrics, true), "record-run")
    expect(onSeries).toContain("offpeak.rows.read")
    expect(onSeries).toContain("offpeak.cost.usd")

    // settings that cannot work are refused by name
    const refused = (env: Record<string, string>) =>
      Effect.runPromise(Effect.scoped(Layer.build(Telemetry.layerConfig)).pipe(
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env })),
        Effect.flip
      ))
    const grpc = await refused({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4317", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })
    expect(grpc.variable).toBe("OTEL_EXPORTER_OTLP_PROTOCOL")
    expect(grpc.message).toMatch(/OTLP over HTTP only/)
    const url = await refused({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "collector:4318" })
    expect(url.variable).toBe("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    expect(url.message).toMatch(/not an http\(s\) URL: "collector:4318"/)
    // the SDK disabled: nothing; a signal's exporter `none`: that signal off
    const options = (env: Record<string, string>) =>
      Effect.runPromise(Telemetry.optionsFromEnv.pipe(Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env }))))
    expect((await options({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318", OTEL_SDK_DISABLED: "true" }))._tag).toBe("None")
    const metricsOnly = await options({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318/otlp/", OTEL_TRACES_EXPORTER: "none" })
    expect(metricsOnly._tag === "Some" && metricsOnly.value.tracesEndpoint).toBe(false)
    expect(metricsOnly._tag === "Some" && metricsOnly.value.metricsEndpoint).toBe("http://x:4318/otlp/v1/metrics")
    console.log(
      `telemetry off: effect/observability modules loaded off ${off.observability} / on ${on.observability}; layer built ` +
        `and closed in ${off.ms.toFixed(1)} ms off, ${on.ms.toFixed(1)} ms on; offpeak metric series of a run: off ` +
        `${offSeries.length}, with RecordMetrics ${onSeries.length}; refused: "${grpc.message}" / "${url.message}"`
    )
  }, 60_000)
})
