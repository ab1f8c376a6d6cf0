import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Ledger from "../src/Ledger.ts"
import * as SqliteClient from "../src/SqliteClient.ts"

const fp = (n: number) => n.toString(16).padStart(64, "0")

const row = (key: string, position: number, fingerprint: string | null = fp(position)): Ledger.AdmitRow => ({
  key,
  position,
  fingerprint,
  record: JSON.stringify({ key })
})

const memory = Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" })))

const withRun = <A, E>(f: (ledger: Ledger.Service, runId: string) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    const run = yield* ledger.createRun({ id: "run-1", pipeline: "p", module: null, provider: "openai" })
    return yield* f(ledger, run.id)
  }).pipe(Effect.provide(memory))

describe("Ledger (SQLite)", () => {
  it.effect("admits rows once: a resumed read skips them, identical requests share one", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        const first = yield* ledger.admit(runId, [row("a", 1, fp(1)), row("b", 2, fp(1)), row("c", 3, fp(3))])
        assert.deepStrictEqual(first.fresh, [0, 2])
        assert.strictEqual(first.admitted, 3)
        const again = yield* ledger.admit(runId, [row("a", 1, fp(1)), row("b", 2, fp(1)), row("d", 4, fp(4))])
        assert.deepStrictEqual(again.fresh, [2])
        assert.strictEqual(again.skipped, 2)
        const counts = yield* ledger.counts(runId)
        assert.strictEqual(counts.items, 4)
        assert.strictEqual(counts.requests, 3)
        assert.strictEqual(counts.queued, 3)
      })))

  it.effect("a key repeated at another position becomes a failed row of its own", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        const a = yield* ledger.admit(runId, [row("a", 1), row("a", 2)])
        assert.strictEqual(a.duplicates, 1)
        assert.deepStrictEqual(a.fresh, [0])
        // reading the same source again changes nothing
        const b = yield* ledger.admit(runId, [row("a", 1), row("a", 2)])
        assert.strictEqual(b.skipped, 2)
        assert.strictEqual(b.admitted, 0)
        const seq = yield* ledger.assignPart(runId, 100)
        assert.isTrue(Option.isSome(seq))
        const rows = yield* ledger.partRows(runId, Option.getOrThrow(seq))
        assert.deepStrictEqual(rows.map((r) => r.key), ["a#2"])
        assert.match(rows[0]!.failure!.message, /duplicate key "a": first seen at row 1/)
      })))

  it.effect("seal, outcomes, retries and parts: every row delivered once", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        yield* ledger.admit(runId, [row("a", 1), row("b", 2), row("c", 3), row("d", 4)])
        const batch = { id: "b1", runId, seq: 1, group: "g", file: "/tmp/x", requestCount: 4, bytes: 10 }
        yield* ledger.sealBatch(batch, [fp(1), fp(2), fp(3), fp(4)])
        // sealing a request twice is refused: its line would be paid twice
        const twice = yield* ledger.sealBatch({ ...batch, id: "b2", seq: 2 }, [fp(1)]).pipe(Effect.flip)
        assert.match(twice.message, /1 lines but 0 queued requests/)
        yield* ledger.recordOutcomes(runId, "b1", [
          { _tag: "Succeeded", fingerprint: fp(1), output: "\"A\"", usage: { inputTokens: 3, outputTokens: 1 } },
          { _tag: "Failed", fingerprint: fp(2), failure: { kind: "provider_error", message: "HTTP 500" }, retryable: true },
          { _tag: "Failed", fingerprint: fp(3), failure: { kind: "provider_error", message: "HTTP 400" }, retryable: false }
        ], 3)
        assert.deepStrictEqual(yield* ledger.unsettled(runId, "b1"), [fp(4)])
        // the same lines seen again (a re-download) change nothing
        yield* ledger.recordOutcomes(runId, "b1", [
          { _tag: "Failed", fingerprint: fp(1), failure: { kind: "provider_error", message: "late" }, retryable: false }
        ], 3)
        const queued = yield* ledger.queued(runId, { after: "", limit: 10 })
        assert.deepStrictEqual(queued.map((q) => q.fingerprint), [fp(2)])
        const seq = Option.getOrThrow(yield* ledger.assignPart(runId, 100))
        const rows = yield* ledger.partRows(runId, seq)
        assert.deepStrictEqual(rows.map((r) => [r.key, r.output, r.failure?.message ?? null]), [
          ["a", "\"A\"", null],
          ["c", null, "HTTP 400"]
        ])
        assert.deepStrictEqual(yield* ledger.writingParts(runId), [seq])
        yield* ledger.commitPart(runId, seq)
        assert.deepStrictEqual(yield* ledger.writingParts(runId), [])
        assert.isTrue(Option.isNone(yield* ledger.assignPart(runId, 100)))
        const counts = yield* ledger.counts(runId)
        assert.strictEqual(counts.delivered, 1)
        assert.strictEqual(counts.dead, 1)
        assert.strictEqual(counts.pendingItems, 2)
      })))

  it.effect("a retryable failure fails for good at the last attempt", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        yield* ledger.admit(runId, [row("a", 1)])
        for (let attempt = 1; attempt <= 2; attempt++) {
          yield* ledger.sealBatch({ id: `b${attempt}`, runId, seq: attempt, group: "g", file: "f", requestCount: 1, bytes: 1 }, [fp(1)])
          yield* ledger.recordOutcomes(runId, `b${attempt}`, [
            { _tag: "Failed", fingerprint: fp(1), failure: { kind: "provider_error", message: `HTTP 500 #${attempt}` }, retryable: true }
          ], 2)
        }
        const counts = yield* ledger.counts(runId)
        assert.strictEqual(counts.queued, 0)
        assert.strictEqual(counts.failed, 1)
        const rows = yield* ledger.partRows(runId, Option.getOrThrow(yield* ledger.assignPart(runId, 10)))
        assert.strictEqual(rows[0]!.failure!.message, "HTTP 500 #2")
      })))

  it.effect("results are cached across runs by fingerprint", () =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.Ledger
      yield* ledger.createRun({ id: "r1", pipeline: "p", module: null, provider: "openai" })
      yield* ledger.admit("r1", [row("a", 1)])
      yield* ledger.sealBatch({ id: "b1", runId: "r1", seq: 1, group: "g", file: "f", requestCount: 1, bytes: 1 }, [fp(1)])
      yield* ledger.recordOutcomes("r1", "b1", [
        { _tag: "Succeeded", fingerprint: fp(1), output: "[1,2]", usage: { inputTokens: 1, outputTokens: 0 } }
      ], 3)
      yield* ledger.createRun({ id: "r2", pipeline: "p", module: null, provider: "openai" })
      const admission = yield* ledger.admit("r2", [row("x", 1, fp(1)), row("y", 2, fp(2))])
      assert.deepStrictEqual(admission.fresh, [1])
      assert.strictEqual(admission.ready, 1)
      const rows = yield* ledger.partRows("r2", Option.getOrThrow(yield* ledger.assignPart("r2", 10)))
      assert.deepStrictEqual(rows.map((r) => [r.key, r.output, r.cached]), [["x", "[1,2]", true]])
    }).pipe(Effect.provide(memory)))

  it.effect("state survives reopening the database file", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-ledger-"))
      const file = path.join(dir, "state.db")
      const layer = () => Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: file })))
      yield* Effect.gen(function*() {
        const ledger = yield* Ledger.Ledger
        yield* ledger.createRun({ id: "r1", pipeline: "p", module: "/x.ts", provider: "openai" })
        yield* ledger.admit("r1", [row("a", 1)])
        yield* ledger.sealBatch({ id: "b1", runId: "r1", seq: 1, group: "g", file: "f", requestCount: 1, bytes: 1 }, [fp(1)])
        yield* ledger.updateBatch("b1", { state: "submitted", remoteId: "batch_1", remoteMeta: { inputFileId: "file-1" } })
      }).pipe(Effect.provide(layer()))
      const open = yield* Effect.gen(function*() {
        const ledger = yield* Ledger.Ledger
        return yield* ledger.openBatches("r1")
      }).pipe(Effect.provide(layer()))
      assert.strictEqual(open.length, 1)
      assert.strictEqual(open[0]!.remoteId, "batch_1")
      assert.deepStrictEqual(open[0]!.remoteMeta, { inputFileId: "file-1" })
      fs.rmSync(dir, { recursive: true, force: true })
    }))
})
