/**
 * The fault matrix: the whole pipeline (runner + OpenAI adapter + official SDK)
 * against the emulator with each of its fault knobs on. Every case checks that
 * every row ends exactly once (sink or dead letter) and what that fault must
 * not cause: a batch created twice, a row delivered twice, a lost row.
 */
import * as Fingerprint from "@offpeak/core/Fingerprint"
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Emulator, OpenAiBatch } from "@offpeak/providers/openai"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as path from "node:path"
import OpenAI from "openai"
import * as Fixture from "./fixtures/tickets.pipeline.ts"
import { openai } from "./support/providers.ts"

const expectedLabel = openai.expected
import { readParts, tmpDir, writeTickets } from "./support/files.ts"

interface Outcome {
  readonly ok: ReadonlyArray<any>
  readonly dead: ReadonlyArray<any>
  /** batches the emulator created */
  readonly created: number
  /** custom ids of every created batch's input file */
  readonly sent: ReadonlyArray<string>
  /** custom ids of every line in the created batches' output files (answers) */
  readonly answered: ReadonlyArray<string>
  /** every line in the created batches' error files: its custom id and its error code or HTTP status */
  readonly errored: ReadonlyArray<{ readonly customId: string; readonly error: string }>
  readonly ledgerBatches: ReadonlyArray<Ledger.Batch>
  readonly summary: Pipeline.Summary
}

const runWith = (knobs: Emulator.Options, options: { rows?: number; maxRequests?: number; maxAttempts?: number } = {}) =>
  Effect.gen(function*() {
    const rows = options.rows ?? 300
    const dir = tmpDir("faults")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, rows, 5)
    const out = path.join(dir, "out")
    const emulator = yield* Emulator.serve({ validationMs: 5, finalizingMs: 5, ...knobs })
    const layer = Layer.mergeAll(
      OpenAiBatch.layer({
        apiKey: Redacted.make("test"),
        baseURL: emulator.url,
        pollInterval: { initial: "20 millis", max: "100 millis" },
        maxRetries: 2
      }),
      Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(dir, "state.db") })))
    )
    const pipeline = Fixture.make({ input, out, maxRequests: options.maxRequests ?? 100 })
    const summary = yield* Pipeline.run(
      options.maxAttempts === undefined
        ? pipeline
        : Pipeline.make({ ...pipeline, retry: { backoff: "20 millis", maxAttempts: options.maxAttempts } }),
      { stateDir: dir }
    ).pipe(Effect.provide(layer))
    const ledgerBatches = yield* Effect.gen(function*() {
      return yield* (yield* Ledger.Ledger).batches(summary.runId)
    }).pipe(Effect.provide(layer))
    const client = new OpenAI({ apiKey: "test", baseURL: emulator.url, maxRetries: 20 })
    const { created, sent, answered, errored } = yield* Effect.promise(async () => {
      let created = 0
      const sent: Array<string> = []
      const answered: Array<string> = []
      const errored: Array<{ customId: string; error: string }> = []
      const lines = async (fileId: string | null | undefined) =>
        fileId === null || fileId === undefined || fileId === ""
          ? []
          : (await (await client.files.content(fileId)).text()).split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l))
      for await (const b of client.batches.list({ limit: 100 })) {
        created++
        for (const line of await lines(b.input_file_id)) sent.push(line.custom_id)
        for (const line of await lines(b.output_file_id)) answered.push(line.custom_id)
        for (const line of await lines(b.error_file_id)) {
          errored.push({ customId: line.custom_id, error: line.error?.code ?? `HTTP ${line.response?.status_code}` })
        }
      }
      return { created, sent, answered, errored }
    })
    const outcome: Outcome = {
      ok: readParts(out),
      dead: readParts(path.join(out, "dead-letter")),
      created,
      sent,
      answered,
      errored,
      ledgerBatches,
      summary
    }
    // the invariants every fault must keep: each row exactly once, with its own answer
    assert.strictEqual(outcome.summary.state, "completed")
    assert.strictEqual(outcome.ok.length + outcome.dead.length, rows)
    assert.strictEqual(new Set([...outcome.ok.map((r) => r.id), ...outcome.dead.map((r) => r.key)]).size, rows)
    for (const r of outcome.ok) assert.deepStrictEqual(r.output, expectedLabel({ id: r.id, text: r.text }))
    // and no batch created twice: every remote batch is one the ledger knows
    assert.strictEqual(
      outcome.created,
      outcome.ledgerBatches.filter((b) => b.remoteId !== null).length,
      "batches created at the provider = batches the ledger submitted"
    )
    return outcome
  })

const allOk = (o: Outcome, rows = 300) => {
  assert.strictEqual(o.ok.length, rows)
  assert.strictEqual(o.dead.length, 0)
}

/** the custom id the runner sends for a ticket: the fingerprint of its request, output schema included */
const customIdOf = (ticket: { readonly id: string; readonly text: string }) =>
  Fingerprint.of(Request.withOutput(Fixture.request(ticket, { provider: "openai" }), { name: "label", schema: Fixture.Label }))

/**
 * Retries under random retryable line failures, checked send by send against what the emulator holds: each
 * request was sent until it was answered, never after, and at most `maxAttempts` times; a row is in the dead letter
 * exactly when all `maxAttempts` sends of its request failed (then with the last failure's kind). With a failure rate
 * `p` some rows do exhaust their attempts (300 rows, p = 0.2, 6 attempts: 1 - (1 - 0.2^6)^300 = 1.9% of runs), so
 * "every row succeeded" is not what the retries promise; this is. `failure` names what each failed send was: an
 * error line's code, or `null` for a line missing from the batch's files.
 */
const retriedUntilAnswered = (
  o: Outcome,
  maxAttempts: number,
  failure: string | null,
  dead: { readonly kind: string; readonly message: RegExp }
) => {
  const sends = new Map<string, { sent: number; answered: number; errors: Array<string> }>()
  const of = (id: string) => {
    let s = sends.get(id)
    if (s === undefined) sends.set(id, s = { sent: 0, answered: 0, errors: [] })
    return s
  }
  for (const id of o.sent) of(id).sent++
  for (const id of o.answered) of(id).answered++
  for (const e of o.errored) of(e.customId).errors.push(e.error)
  const attempts = new Map<number, number>()
  for (const r of o.ok) {
    const s = sends.get(customIdOf({ id: r.id, text: r.text }))
    assert.isDefined(s, `${r.id}: delivered, but its request was never sent`)
    assert.strictEqual(s!.answered, 1, `${r.id}: answered once`)
    assert.isAtMost(s!.sent, maxAttempts, `${r.id}: sent at most maxAttempts times`)
    // every send before the answer failed (an answered request is never sent again)
    assert.deepStrictEqual(
      s!.errors,
      failure === null ? [] : Array.from({ length: s!.sent - 1 }, () => failure),
      `${r.id}: ${s!.sent} sends`
    )
    attempts.set(s!.sent, (attempts.get(s!.sent) ?? 0) + 1)
  }
  for (const d of o.dead) {
    const s = sends.get(customIdOf(d.record))
    assert.isDefined(s, `${d.key}: dead-lettered, but its request was never sent`)
    assert.strictEqual(s!.answered, 0, `${d.key}: dead-lettered although answered`)
    assert.strictEqual(s!.sent, maxAttempts, `${d.key}: dead-lettered after ${s!.sent} of ${maxAttempts} attempts`)
    assert.deepStrictEqual(s!.errors, failure === null ? [] : Array.from({ length: maxAttempts }, () => failure))
    assert.strictEqual(d.kind, dead.kind)
    assert.match(d.message, dead.message)
  }
  // nothing was sent that no row asked for, and every request was sent
  assert.strictEqual(sends.size, o.ok.length + o.dead.length)
  const retried = [...attempts].filter(([n]) => n > 1).reduce((sum, [, count]) => sum + count, 0)
  console.log(
    `${o.sent.length} lines sent in ${o.created} batches, ${o.errored.length} error lines; delivered ${o.ok.length} ` +
      `(${retried} after a retry; rows by sends: ${[...attempts].sort(([a], [b]) => a - b).map(([n, c]) => `${n}×${c}`).join(" ")}), ` +
      `dead-lettered after ${maxAttempts} failed sends: ${o.dead.length}`
  )
  return { retried }
}

describe("fault matrix (pipeline + OpenAI adapter + emulator)", () => {
  it.live("429 with retry-after on every endpoint, a third of the time", () =>
    Effect.gen(function*() {
      allOk(yield* runWith({ endpointFaults: [{ endpoint: "*", status: 429, rate: 0.3, retryAfter: 0 }] }))
    }), { timeout: 60_000 })

  // creates are sent one at a time, so one batch may meet every upload and create fault in a row: its back-off
  // doubles from half a second (0.5 + 1 + 2 + 4 + 8 + 16 s for six in a row)
  it.live("500/502/503 on upload, create, retrieve and download", () =>
    Effect.gen(function*() {
      const o = yield* runWith({
        endpointFaults: [
          { endpoint: "files.create", status: 500, times: 3 },
          { endpoint: "batches.create", status: 502, times: 3 },
          { endpoint: "batches.retrieve", status: 503, times: 6 },
          { endpoint: "files.content", status: 500, times: 4 }
        ]
      })
      allOk(o)
      assert.strictEqual(new Set(o.sent).size, o.sent.length, "no request sent twice")
    }), { timeout: 120_000 })

  it.live("a create that succeeded but answered 500 is found by its tag, not created again", () =>
    Effect.gen(function*() {
      const o = yield* runWith({ createSucceedsThenFails: 2 })
      allOk(o)
      assert.strictEqual(o.created, 3)
      assert.strictEqual(o.sent.length, 300)
      assert.strictEqual(new Set(o.sent).size, 300)
    }), { timeout: 60_000 })

  it.live("connection reset mid-download: the download restarts and no row is delivered twice", () =>
    Effect.gen(function*() {
      const o = yield* runWith({ resetDownloads: { times: 3, afterBytes: 3_000 } })
      allOk(o)
    }), { timeout: 60_000 })

  it.live("404 right after create is waited out", () =>
    Effect.gen(function*() {
      allOk(yield* runWith({ notFoundAfterCreateMs: 1_500 }))
    }), { timeout: 60_000 })

  it.live("a whole batch failed (no line named) is sent again", () =>
    Effect.gen(function*() {
      const o = yield* runWith({ failBatches: { times: 1, code: "internal_error", message: "batch failed" } })
      allOk(o)
      assert.strictEqual(o.created, 4)
    }), { timeout: 60_000 })

  it.live("token_limit_exceeded: the batch is split in half and the halves get through", () =>
    Effect.gen(function*() {
      // the engine counts tokens as the tokenizer does: a batch of 150 tickets is over this limit, half of one is not
      const o = yield* runWith({ enqueuedTokenLimit: 4_000 }, { maxRequests: 150 })
      allOk(o)
      assert.isAbove(o.ledgerBatches.filter((b) => b.remoteState === "failed").length, 0)
      assert.isTrue(o.ledgerBatches.some((b) => b.requestCount < 150 && b.remoteState === "completed"))
    }), { timeout: 60_000 })

  // a fifth of the lines time out, in every batch: a row is dead-lettered only once its request timed out in all 6
  // sends (about 2% of runs have one: 300 × 0.2^6), and then after exactly 6; 4 or more in one run would take
  // odds of about 1 in 10^8, so more than 3 means the retries are broken
  it.live("non-HTTP line errors (request_timeout) are retried", () =>
    Effect.gen(function*() {
      const o = yield* runWith({ lineErrors: [{ code: "request_timeout", rate: 0.2 }] }, { maxAttempts: 6 })
      const { retried } = retriedUntilAnswered(o, 6, "request_timeout", { kind: "provider_error", message: /^request_timeout: / })
      assert.isAbove(retried, 0)
      assert.isAtMost(o.dead.length, 3)
    }), { timeout: 60_000 })

  // the case above at rate 1, where every row runs out of attempts: each request sent exactly maxAttempts times
  it.live("a line that times out in every attempt is dead-lettered after maxAttempts sends, with the provider's error", () =>
    Effect.gen(function*() {
      const o = yield* runWith({ lineErrors: [{ code: "request_timeout", rate: 1 }] }, { rows: 40, maxRequests: 15, maxAttempts: 3 })
      assert.strictEqual(o.ok.length, 0)
      assert.strictEqual(o.dead.length, 40)
      assert.strictEqual(o.sent.length, 120)
      retriedUntilAnswered(o, 3, "request_timeout", { kind: "provider_error", message: /^request_timeout: / })
    }), { timeout: 60_000 })

  it.live("lines missing from a completed batch are lost, then resubmitted", () =>
    Effect.gen(function*() {
      const o = yield* runWith({ dropLines: 0.15 }, { maxAttempts: 6 })
      const { retried } = retriedUntilAnswered(o, 6, null, { kind: "lost", message: /without a result line/ })
      assert.isAbove(retried, 0)
      assert.isAtMost(o.dead.length, 3)
    }), { timeout: 60_000 })

  it.live("error_file_id \"\" on clean batches is no file", () =>
    Effect.gen(function*() {
      allOk(yield* runWith({ emptyErrorFileId: true }))
    }), { timeout: 60_000 })

  it.live("every line failing: output_file_id null, every row in the dead letter with the provider's message", () =>
    Effect.gen(function*() {
      const o = yield* runWith({ lineFailures: [{ status: 400, rate: 1 }] })
      assert.strictEqual(o.ok.length, 0)
      assert.strictEqual(o.dead.length, 300)
      for (const d of o.dead) assert.match(d.message, /^HTTP 400/)
      // 400 is final: each request was sent once
      assert.strictEqual(o.sent.length, 300)
    }), { timeout: 60_000 })

  it.live("expired batches: finished lines delivered, expired lines resubmitted", () =>
    Effect.gen(function*() {
      const o = yield* runWith({ linesPerSecond: 250, completionWindowMs: 250 }, { rows: 120, maxRequests: 120, maxAttempts: 8 })
      allOk(o, 120)
      assert.isAbove(o.ledgerBatches.filter((b) => b.remoteState === "expired").length, 0)
    }), { timeout: 60_000 })
})
