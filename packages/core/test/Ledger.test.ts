/**
 * The ledger's behaviour, one suite run against every backend: SQLite in
 * memory, SQLite in a file, and Postgres (each test in a schema of its own).
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Cause, Context, Effect, Exit, Layer, Option, Redacted } from "effect"
import type { Scope } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Migrator, SqlClient } from "effect/sql"
import { migrations } from "../src/internal/ledger/migrations.ts"
import * as Ledger from "../src/Ledger.ts"
import * as SqliteClient from "../src/SqliteClient.ts"
import * as Pg from "./support/postgres.ts"

/** a fingerprint; small numbers all share their first 48 bits (the ledger's fingerprint index key), so every test
 * here also checks that requests are told apart by their full fingerprint */
const fp = (n: number) => n.toString(16).padStart(64, "0")

const row = (key: string, position: number, fingerprint: string | null = fp(position)): Ledger.AdmitRow => ({
  key,
  position,
  fingerprint,
  record: JSON.stringify({ key })
})

/** one database, empty at first */
interface Store {
  /** a ledger on the store; every call opens new connections to it */
  readonly open: () => Layer.Layer<Ledger.Ledger, unknown>
  /** a plain client on the store, where it can be reopened */
  readonly client?: () => Layer.Layer<SqlClient.SqlClient, unknown>
}

/** where a ledger can live */
interface Backend {
  readonly name: string
  /** false when `open` hands out the same connection (in-memory SQLite): nothing is reopened */
  readonly reopens: boolean
  /** a fresh, empty store for one test, removed when the test's scope closes */
  readonly fresh: Effect.Effect<Store, unknown, Scope.Scope>
}

const sqliteMemory: Backend = {
  name: "SQLite in memory",
  reopens: false,
  fresh: Effect.map(
    Layer.build(Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" })))),
    (context) => ({ open: () => Layer.succeedContext(context) })
  )
}

const sqliteFile: Backend = {
  name: "SQLite file",
  reopens: true,
  fresh: Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-ledger-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    ),
    (dir) => {
      const client = () => SqliteClient.layer({ filename: path.join(dir, "state.db") })
      return { open: () => Ledger.layer.pipe(Layer.provide(client())), client }
    }
  )
}

const postgres = (url: string): Backend => ({
  name: "Postgres",
  reopens: true,
  fresh: Effect.map(Pg.freshSchema(url, "ledger"), (fresh) => {
    const client = () => PgClient.layer({ url: Redacted.make(fresh.url) })
    return { open: () => Ledger.layer.pipe(Layer.provide(client())), client }
  })
})

/** a ledger (its own connections) on the store, for the rest of the test */
const openLedger = (store: Store) => Effect.map(Layer.build(store.open()), (context) => Context.get(context, Ledger.Ledger))

const ledgerSuite = (backend: Backend) => {
  /** runs `f` on a ledger on a fresh store */
  const withLedger = <A, E>(f: (ledger: Ledger.Service, store: Store) => Effect.Effect<A, E, Scope.Scope>) =>
    Effect.gen(function*() {
      const store = yield* backend.fresh
      const ledger = yield* openLedger(store)
      return yield* f(ledger, store)
    })

  const withRun = <A, E>(f: (ledger: Ledger.Service, runId: string) => Effect.Effect<A, E, Scope.Scope>) =>
    withLedger((ledger) =>
      Effect.gen(function*() {
        const run = yield* ledger.createRun({ id: "run-1", pipeline: "p", module: null, provider: "openai" })
        return yield* f(ledger, run.id)
      })
    )

  // ----- leases -----

  /** rewrites the lease row of `scope` as if another process held it */
  const forge = (store: Store, scope: string, values: { host?: string; pid?: number; expiresAt?: number; pidStart?: string | null }) =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      if (values.host !== undefined) yield* sql`UPDATE offpeak_leases SET host = ${values.host} WHERE scope = ${scope}`
      if (values.pid !== undefined) yield* sql`UPDATE offpeak_leases SET pid = ${values.pid} WHERE scope = ${scope}`
      if (values.pidStart !== undefined) yield* sql`UPDATE offpeak_leases SET pid_start = ${values.pidStart} WHERE scope = ${scope}`
      if (values.expiresAt !== undefined) yield* sql`UPDATE offpeak_leases SET expires_at = ${values.expiresAt} WHERE scope = ${scope}`
    }).pipe(Effect.provide(store.client!()))

  /** the pid of a process that has ended */
  const deadPid = () => spawnSync(process.execPath, ["-e", ""]).pid!

  it.live("a lease is held by one owner at a time: a second acquire is refused naming the holder; release frees it", () =>
    withLedger((ledger) =>
      Effect.gen(function*() {
        const lease = yield* ledger.acquire({ scope: "p", runId: "run-1", ttlMs: 30_000 })
        assert.strictEqual(lease.pid, process.pid)
        const refused = yield* ledger.acquire({ scope: "p", runId: "run-2", ttlMs: 30_000 }).pipe(Effect.flip)
        assert.strictEqual(refused._tag, "LeaseHeld")
        assert.match(refused.message, new RegExp(`pipeline "p" is being worked by run run-1: process ${process.pid} on `))
        const holder = Option.getOrThrow(yield* ledger.holder("p"))
        assert.deepStrictEqual([holder.runId, holder.pid, holder.alive], ["run-1", process.pid, true])
        // another pipeline is another lease
        yield* ledger.acquire({ scope: "q", runId: "run-3", ttlMs: 30_000 })
        yield* ledger.release(lease)
        assert.isTrue(Option.isNone(yield* ledger.holder("p")))
        const again = yield* ledger.acquire({ scope: "p", runId: "run-2", ttlMs: 30_000 })
        assert.strictEqual(again.generation, lease.generation + 1)
      })
    ))

  if (backend.reopens) {
    it.live("a holder whose process is gone (same host) is taken over at once; on another host only once expired", () =>
      withLedger((ledger, store) =>
        Effect.gen(function*() {
          yield* ledger.acquire({ scope: "p", runId: "run-1", ttlMs: 60_000 })
          yield* forge(store, "p", { pid: deadPid(), pidStart: null })
          const other = yield* openLedger(store)
          const taken = yield* other.acquire({ scope: "p", runId: "run-1", ttlMs: 60_000 })
          assert.strictEqual(taken.generation, 2)
          // on another machine: refused while its heartbeat is fresh, whatever its pid
          yield* forge(store, "p", { host: "elsewhere", pid: deadPid(), expiresAt: Date.now() + 60_000 })
          const refused = yield* ledger.acquire({ scope: "p", runId: "run-1", ttlMs: 60_000 }).pipe(Effect.flip)
          assert.strictEqual(refused._tag, "LeaseHeld")
          assert.match(refused.message, /on elsewhere.*if that machine is gone, its lease expires at/)
          yield* forge(store, "p", { expiresAt: Date.now() - 1 })
          assert.strictEqual((yield* ledger.acquire({ scope: "p", runId: "run-1", ttlMs: 60_000 })).generation, 3)
        })
      ))

    it.live("fenced: once another process took the lease over, the old holder's writes and renewals fail", () =>
      withLedger((ledger, store) =>
        Effect.gen(function*() {
          const lease = yield* ledger.acquire({ scope: "p", runId: "run-1", ttlMs: 60_000 })
          yield* ledger.createRun({ id: "run-1", pipeline: "p", module: null, provider: "openai" })
          yield* ledger.admit("run-1", [row("a", 1)])
          yield* ledger.sealBatch({ id: "b1", runId: "run-1", seq: 1, group: "g", file: "/tmp/x", requestCount: 1, bytes: 1 }, [1])
          yield* ledger.renew(lease)
          // the holder is paused past its expiry; a process on another machine takes the run over
          yield* forge(store, "p", { host: "elsewhere", expiresAt: Date.now() - 1 })
          const other = yield* openLedger(store)
          yield* other.acquire({ scope: "p", runId: "run-1", ttlMs: 60_000 })
          const writes = [
            ledger.admit("run-1", [row("b", 2)]),
            ledger.updateBatch("b1", { state: "submitting" }),
            ledger.updateRun("run-1", { state: "completed" }),
            ledger.recordOutcomes("run-1", "b1", [
              { _tag: "Succeeded", request: 1, output: "1", usage: { inputTokens: 1, outputTokens: 1 } }
            ], 3),
            ledger.assignPart("run-1", 10),
            ledger.nextPart("run-1", { limit: 10 })
          ]
          for (const write of writes) {
            const error = yield* Effect.flip(write as Effect.Effect<unknown, Ledger.LedgerError>)
            assert.strictEqual(error.operation, "fence")
            assert.match(error.message, /no longer owns pipeline "p" \(run run-1\): process \d+ on \S+ took it over/)
          }
          const lost = yield* ledger.renew(lease).pipe(Effect.flip)
          assert.match(lost.message, /lost the lease of pipeline "p"/)
          // nothing the old holder tried is in the ledger; the new holder goes on
          const counts = yield* other.counts("run-1")
          assert.deepStrictEqual([counts.items, counts.batched, counts.succeeded], [1, 1, 0])
          assert.strictEqual(Option.getOrThrow(yield* other.getRun("run-1")).state, "running")
          yield* other.updateBatch("b1", { state: "submitting" })
        })
      ))
  }

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
      })
    ))

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
      })
    ))

  it.effect("seal, outcomes, retries and parts: every row delivered once", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        yield* ledger.admit(runId, [row("a", 1), row("b", 2), row("c", 3), row("d", 4)])
        const batch = { id: "b1", runId, seq: 1, group: "g", file: "/tmp/x", requestCount: 4, bytes: 10 }
        yield* ledger.sealBatch(batch, [1, 2, 3, 4])
        // sealing a request twice is refused: its line would be paid twice
        const twice = yield* ledger.sealBatch({ ...batch, id: "b2", seq: 2 }, [1]).pipe(Effect.flip)
        assert.match(twice.message, /1 lines but 0 queued requests/)
        yield* ledger.recordOutcomes(runId, "b1", [
          { _tag: "Succeeded", request: 1, output: "\"A\"", usage: { inputTokens: 3, outputTokens: 1 } },
          { _tag: "Failed", request: 2, failure: { kind: "provider_error", message: "HTTP 500" }, retryable: true },
          { _tag: "Failed", request: 3, failure: { kind: "provider_error", message: "HTTP 400" }, retryable: false }
        ], 3)
        assert.deepStrictEqual(yield* ledger.unsettled(runId, "b1"), [{ id: 4, fingerprint: fp(4) }])
        // the same lines seen again (a re-download) change nothing
        yield* ledger.recordOutcomes(runId, "b1", [
          { _tag: "Failed", request: 1, failure: { kind: "provider_error", message: "late" }, retryable: false }
        ], 3)
        const queued = yield* ledger.queued(runId, { after: 0, limit: 10 })
        assert.deepStrictEqual(queued.map((q) => q.fingerprint), [fp(2)])
        // rows go out as soon as their requests settle for good, before the rest of the batch is recorded
        const seq = Option.getOrThrow(yield* ledger.assignPart(runId, 100))
        assert.deepStrictEqual((yield* ledger.partRows(runId, seq)).map((r) => [r.key, r.output, r.failure?.message ?? null]), [
          ["a", "\"A\"", null],
          ["c", null, "HTTP 400"]
        ])
        assert.deepStrictEqual(yield* ledger.writingParts(runId), [seq])
        yield* ledger.commitPart(runId, { seq, delivered: 1, dead: 1 })
        assert.deepStrictEqual(yield* ledger.writingParts(runId), [])
        assert.isTrue(Option.isNone(yield* ledger.assignPart(runId, 100)))
        yield* ledger.recordOutcomes(runId, "b1", [
          { _tag: "Failed", request: 4, failure: { kind: "lost", message: "no line" }, retryable: false }
        ], 3)
        // asked for whole parts only, one row is not enough for a part of 100; asked for any, it is
        assert.isTrue(Option.isNone(yield* ledger.assignPart(runId, 100, { whole: true })))
        const next = Option.getOrThrow(yield* ledger.assignPart(runId, 100))
        assert.deepStrictEqual((yield* ledger.partRows(runId, next)).map((r) => [r.key, r.failure?.message ?? null]), [
          ["d", "no line"]
        ])
        yield* ledger.commitPart(runId, { seq: next, delivered: 0, dead: 1 })
        assert.isTrue(Option.isNone(yield* ledger.assignPart(runId, 100)))
        const counts = yield* ledger.counts(runId)
        assert.strictEqual(counts.delivered, 1)
        assert.strictEqual(counts.dead, 2)
        assert.strictEqual(counts.pendingItems, 1)
      })
    ))

  it.effect("a retryable failure fails for good at the last attempt", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        yield* ledger.admit(runId, [row("a", 1)])
        for (let attempt = 1; attempt <= 2; attempt++) {
          yield* ledger.sealBatch(
            { id: `b${attempt}`, runId, seq: attempt, group: "g", file: "f", requestCount: 1, bytes: 1 },
            [1]
          )
          yield* ledger.recordOutcomes(runId, `b${attempt}`, [
            {
              _tag: "Failed",
              request: 1,
              failure: { kind: "provider_error", message: `HTTP 500 #${attempt}` },
              retryable: true
            }
          ], 2)
          yield* ledger.updateBatch(`b${attempt}`, { state: "collected" })
        }
        const counts = yield* ledger.counts(runId)
        assert.strictEqual(counts.queued, 0)
        assert.strictEqual(counts.failed, 1)
        const rows = yield* ledger.partRows(runId, Option.getOrThrow(yield* ledger.assignPart(runId, 10)))
        assert.strictEqual(rows[0]!.failure!.message, "HTTP 500 #2")
      })
    ))

  it.effect("a row admitted after its request settled goes out on its own; parts hold about the rows asked for", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        yield* ledger.admit(runId, [row("a", 1, fp(1)), row("b", 2, fp(1)), row("c", 3, fp(3)), row("d", 4, fp(4))])
        yield* ledger.sealBatch({ id: "b1", runId, seq: 1, group: "g", file: "f", requestCount: 3, bytes: 3 }, [1, 3, 4])
        // results arrive in any order, in two transactions: parts follow the order requests settled in
        for (const requests of [[4, 1], [3]]) {
          yield* ledger.recordOutcomes(runId, "b1", requests.map((request): Ledger.Outcome => ({
            _tag: "Succeeded",
            request,
            output: `${request}`,
            usage: { inputTokens: 1, outputTokens: 1 }
          })), 3)
        }
        // the same request again, after it settled: ready at once, on its own (its request may have gone out already)
        const late = yield* ledger.admit(runId, [row("e", 5, fp(1))])
        assert.strictEqual(late.ready, 1)
        const parts: Array<Array<string>> = []
        while (true) {
          const seq = yield* ledger.assignPart(runId, 1)
          if (Option.isNone(seq)) break
          const rows = yield* ledger.partRows(runId, seq.value)
          parts.push(rows.map((r) => `${r.key}=${r.output}`))
          yield* ledger.commitPart(runId, { seq: seq.value, delivered: rows.length, dead: 0 })
        }
        // request 1 has two rows (a, b): they stay together; then request 4 (settled first), then 3
        assert.deepStrictEqual(parts, [["e=1"], ["a=1", "b=1"], ["d=4"], ["c=3"]])
        const counts = yield* ledger.counts(runId)
        assert.deepStrictEqual([counts.items, counts.delivered, counts.pendingItems], [5, 5, 0])
      })
    ))

  it.effect("nextPart commits the part written and hands out the next with its rows, in one step", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        yield* ledger.admit(runId, [row("a", 1), row("b", 2), row("c", 3)])
        yield* ledger.sealBatch({ id: "b1", runId, seq: 1, group: "g", file: "f", requestCount: 3, bytes: 3 }, [1, 2, 3])
        yield* ledger.recordOutcomes(runId, "b1", [3, 1, 2].map((request): Ledger.Outcome => ({
          _tag: "Succeeded",
          request,
          output: `${request}`,
          usage: { inputTokens: 1, outputTokens: 1 }
        })), 3)
        const first = Option.getOrThrow(yield* ledger.nextPart(runId, { limit: 2 }))
        assert.deepStrictEqual(first.rows.map((r) => r.key), ["a", "b"])
        const second = Option.getOrThrow(
          yield* ledger.nextPart(runId, { limit: 2, written: { seq: first.seq, delivered: 2, dead: 0 } })
        )
        assert.deepStrictEqual(second.rows.map((r) => r.key), ["c"])
        assert.deepStrictEqual(yield* ledger.writingParts(runId), [second.seq])
        // the last part is committed by the call that finds nothing more
        const none = yield* ledger.nextPart(runId, { limit: 2, written: { seq: second.seq, delivered: 1, dead: 0 } })
        assert.isTrue(Option.isNone(none))
        assert.deepStrictEqual(yield* ledger.writingParts(runId), [])
        assert.strictEqual((yield* ledger.counts(runId)).delivered, 3)
      })
    ))

  it.effect("a whole part comes the moment enough rows wait: shared requests, final failures, rows on their own all count", () =>
    withRun((ledger, runId) =>
      Effect.gen(function*() {
        const bad = (key: string, position: number): Ledger.AdmitRow => ({
          key,
          position,
          fingerprint: null,
          record: "{}",
          failure: { kind: "invalid_input", message: "bad row" }
        })
        const ok = (request: number): Ledger.Outcome => ({
          _tag: "Succeeded",
          request,
          output: `${request}`,
          usage: { inputTokens: 1, outputTokens: 1 }
        })
        const failed = (request: number, retryable: boolean): Ledger.Outcome => ({
          _tag: "Failed",
          request,
          failure: { kind: "provider_error", message: retryable ? "HTTP 500" : "HTTP 400" },
          retryable
        })
        const whole = (limit: number) => ledger.nextPart(runId, { limit, whole: true })
        const keys = (part: Option.Option<{ readonly rows: ReadonlyArray<Ledger.PartRow> }>) =>
          Option.match(part, { onNone: () => null, onSome: (p) => p.rows.map((r) => r.key) })
        // a and b ask the same: request 1, two rows
        yield* ledger.admit(runId, [row("a", 1, fp(1)), row("b", 2, fp(1)), row("c", 3), row("d", 4), row("e", 5)])
        yield* ledger.sealBatch({ id: "b1", runId, seq: 1, group: "g", file: "f", requestCount: 4, bytes: 4 }, [1, 3, 4, 5])
        assert.isNull(keys(yield* whole(3)))
        // request 1 settles with its two rows; request 3 fails for now (back to the queue): two rows wait
        yield* ledger.recordOutcomes(runId, "b1", [ok(1), failed(3, true)], 3)
        assert.isNull(keys(yield* whole(3)))
        // request 4 fails for good: its row makes three
        yield* ledger.recordOutcomes(runId, "b1", [failed(4, false)], 3)
        const first = yield* whole(3)
        assert.deepStrictEqual(keys(first), ["a", "b", "d"])
        yield* ledger.commitPart(runId, { seq: Option.getOrThrow(first).seq, delivered: 2, dead: 1 })
        assert.isNull(keys(yield* whole(2)))
        // rows on their own: a late one asking what request 1 asked (settled already), and two bad ones
        const late = yield* ledger.admit(runId, [row("f", 6, fp(1)), bad("x", 7), bad("y", 8)])
        assert.strictEqual(late.ready, 3)
        assert.deepStrictEqual(keys(yield* whole(3)), ["f", "x", "y"])
        // request 5 settles: e alone is not a whole part of 2; asked for any part, it goes
        yield* ledger.recordOutcomes(runId, "b1", [ok(5)], 3)
        assert.isNull(keys(yield* whole(2)))
        assert.deepStrictEqual(keys(yield* ledger.nextPart(runId, { limit: 2 })), ["e"])
      })
    ))

  it.effect("results are cached across runs by fingerprint", () =>
    withLedger((ledger) =>
      Effect.gen(function*() {
        yield* ledger.createRun({ id: "r1", pipeline: "p", module: null, provider: "openai" })
        yield* ledger.admit("r1", [row("a", 1)])
        yield* ledger.sealBatch({ id: "b1", runId: "r1", seq: 1, group: "g", file: "f", requestCount: 1, bytes: 1 }, [
          1
        ])
        yield* ledger.recordOutcomes("r1", "b1", [
          { _tag: "Succeeded", request: 1, output: "[1,2]", usage: { inputTokens: 1, outputTokens: 0 } }
        ], 3)
        // answers join the cache when their run stops
        yield* ledger.updateRun("r1", { state: "completed" })
        yield* ledger.createRun({ id: "r2", pipeline: "p", module: null, provider: "openai" })
        const admission = yield* ledger.admit("r2", [row("x", 1, fp(1)), row("y", 2, fp(2))])
        assert.deepStrictEqual(admission.fresh, [1])
        assert.strictEqual(admission.ready, 1)
        const rows = yield* ledger.partRows("r2", Option.getOrThrow(yield* ledger.assignPart("r2", 10)))
        assert.deepStrictEqual(rows.map((r) => [r.key, r.output, r.cached]), [["x", "[1,2]", true]])
      })
    ))

  /** a run with every kind of total: paid, unpriced and failed-but-paid answers, a retry, a shared and a bad row */
  const totalsScenario = (ledger: Ledger.Service) =>
    Effect.gen(function*() {
      yield* ledger.createRun({ id: "r1", pipeline: "p", module: null, provider: "openai" })
      const bad: Ledger.AdmitRow = {
        key: "f",
        position: 6,
        fingerprint: null,
        record: "{}",
        failure: { kind: "invalid_input", message: "bad row" }
      }
      // e asks what a asks: one request, two rows
      yield* ledger.admit("r1", [row("a", 1), row("b", 2), row("c", 3), row("d", 4), row("e", 5, fp(1)), bad])
      yield* ledger.sealBatch({ id: "b1", runId: "r1", seq: 1, group: "g", file: "f", requestCount: 4, bytes: 4 }, [1, 2, 3, 4])
      yield* ledger.recordOutcomes("r1", "b1", [
        {
          _tag: "Succeeded",
          request: 1,
          output: "1",
          usage: { inputTokens: 3, outputTokens: 1, cachedInputTokens: 2 },
          cost: { spent: 10n, sync: 20n }
        },
        { _tag: "Succeeded", request: 2, output: "2", usage: { inputTokens: 5, outputTokens: 2 } },
        {
          _tag: "Failed",
          request: 3,
          failure: { kind: "decode_error", message: "not JSON" },
          retryable: false,
          cost: { spent: 7n, sync: 14n }
        },
        {
          _tag: "Failed",
          request: 4,
          failure: { kind: "truncated", message: "max tokens" },
          retryable: true,
          cost: { spent: 1n, sync: 2n }
        }
      ], 3)
      yield* ledger.updateBatch("b1", { state: "collected" })
      yield* ledger.sealBatch({ id: "b2", runId: "r1", seq: 2, group: "g", file: "f", requestCount: 1, bytes: 1 }, [4])
      yield* ledger.recordOutcomes("r1", "b2", [
        { _tag: "Succeeded", request: 4, output: "4", usage: { inputTokens: 4, outputTokens: 4 }, cost: { spent: 4n, sync: 8n } }
      ], 3)
      yield* ledger.updateBatch("b2", { state: "collected" })
      yield* ledger.updateRun("r1", { state: "completed" })
      // a second run: x and y answered by r1's cache (y through x's request), z new
      yield* ledger.createRun({ id: "r2", pipeline: "p", module: null, provider: "openai" })
      yield* ledger.admit("r2", [row("x", 1, fp(1)), row("y", 2, fp(1)), row("z", 3, fp(9))])
    })

  /** what the scenario's runs must report */
  const checkTotals = (ledger: Ledger.Service) =>
    Effect.gen(function*() {
      const spend = yield* ledger.spend("r1")
      assert.deepStrictEqual(
        [spend.spent, spend.syncEquivalent, spend.reserved, spend.inputTokens, spend.outputTokens, spend.cachedInputTokens],
        [22n, 44n, 0n, 12, 7, 2]
      )
      assert.deepStrictEqual([spend.unpriced, spend.cachedRows, spend.dedupedRows], [1, 0, 1])
      assert.deepStrictEqual(yield* ledger.paidAnswers("r1"), { answers: 3, inputTokens: 12, outputTokens: 7 })
      const byKind = yield* ledger.failureCounts("r1")
      assert.deepStrictEqual(
        [...byKind].sort((a, b) => a.kind.localeCompare(b.kind)),
        [{ kind: "decode_error", rows: 1 }, { kind: "invalid_input", rows: 1 }]
      )
      const other = yield* ledger.spend("r2")
      assert.deepStrictEqual([other.spent, other.inputTokens, other.cachedRows, other.dedupedRows], [0n, 0, 2, 0])
      assert.deepStrictEqual(yield* ledger.failureCounts("r2"), [])
    })

  it.effect("a run's totals (money, tokens, cached and shared rows, failures by kind) are what its rows say", () =>
    withLedger((ledger) =>
      Effect.gen(function*() {
        yield* totalsScenario(ledger)
        yield* checkTotals(ledger)
      })
    ))

  if (backend.reopens) {
    it.effect("a ledger from before running totals (0007) is brought up to them from its rows", () =>
      withLedger((ledger, store) =>
        Effect.gen(function*() {
          yield* totalsScenario(ledger)
          // back to the schema 0007 left: no totals, no partial indexes, 0008 not applied
          yield* Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            yield* sql`DROP INDEX offpeak_items_failed`
            yield* sql`DROP INDEX offpeak_requests_batched`
            for (
              const column of ["paid", "paid_sync", "answers", "input_tokens", "output_tokens", "cached_input_tokens", "unpriced", "cached_rows", "shared_rows"]
            ) yield* sql`ALTER TABLE offpeak_runs DROP COLUMN ${sql.literal(column)}`
            // and what came after 0008
            yield* sql`ALTER TABLE offpeak_runs DROP COLUMN source`
            yield* sql`DELETE FROM offpeak_migrations WHERE migration_id >= 8`
          }).pipe(Effect.provide(store.client!()))
          yield* checkTotals(yield* openLedger(store))
        })
      ))
  }

  it.effect("an incremental run's checkpoint is its source's and endpoint's: another table or endpoint starts afresh", () =>
    withLedger((ledger) =>
      Effect.gen(function*() {
        yield* ledger.createRun({ id: "a1", pipeline: "p", module: null, provider: "openai", endpoint: "", source: "ds1.docs" })
        yield* ledger.updateRun("a1", { state: "completed", checkpoint: { value: "c-ds1", position: 10 } })
        yield* ledger.createRun({ id: "a2", pipeline: "p", module: null, provider: "openai", endpoint: "emulator", source: "ds1.docs" })
        yield* ledger.updateRun("a2", { state: "completed", checkpoint: { value: "c-emu", position: 5 } })
        assert.strictEqual(Option.getOrThrow(yield* ledger.getRun("a1")).source, "ds1.docs")
        const at = (of: { source?: string; endpoint?: string }) => ledger.lastCheckpoint("p", of).pipe(Effect.map(Option.getOrNull))
        assert.strictEqual(yield* at({ source: "ds1.docs", endpoint: "" }), "c-ds1")
        assert.strictEqual(yield* at({ source: "ds1.docs", endpoint: "emulator" }), "c-emu")
        // the pipeline pointed at another table, or at an endpoint it never ran against: from the start
        assert.isNull(yield* at({ source: "ds2.docs", endpoint: "" }))
        assert.isNull(yield* at({ source: "ds1.docs", endpoint: "https://example.test/v1" }))
      })
    ))

  it.effect("runs, batches and their remote ids read back as written", () =>
    withLedger((ledger) =>
      Effect.gen(function*() {
        yield* ledger.createRun({ id: "r1", pipeline: "p", module: "/x.ts", provider: "openai", mode: "auto" })
        yield* ledger.createRun({ id: "r2", pipeline: "p", module: null, provider: "openai" })
        yield* ledger.updateRun("r1", { state: "detached", sourceDone: true, message: "it's \"quoted\"" })
        const run = Option.getOrThrow(yield* ledger.getRun("r1"))
        assert.deepStrictEqual([run.state, run.sourceDone, run.message, run.module, run.mode], [
          "detached",
          true,
          "it's \"quoted\"",
          "/x.ts",
          "auto"
        ])
        assert.strictEqual(Option.getOrThrow(yield* ledger.getRun("r2")).mode, "batch")
        assert.isTrue(Option.isNone(yield* ledger.getRun("nope")))
        yield* ledger.admit("r1", [row("a", 1), row("b", 2)])
        assert.strictEqual(yield* ledger.nextBatchSeq("r1"), 1)
        yield* ledger.sealBatch({ id: "b1", runId: "r1", seq: 1, group: "g", file: "f", requestCount: 1, bytes: 99 }, [1])
        yield* ledger.sealBatch({ id: "b2", runId: "r1", seq: 2, group: "g", file: "f2", requestCount: 1, bytes: 9, mode: "sync" }, [2])
        assert.strictEqual(yield* ledger.nextBatchSeq("r1"), 3)
        yield* ledger.updateBatch("b1", {
          state: "submitted",
          remoteId: "batch_1",
          remoteMeta: { inputFileId: "file-1" },
          submitted: true
        })
        const [batch, sync] = yield* ledger.batches("r1")
        assert.deepStrictEqual(
          [batch!.state, batch!.remoteId, batch!.remoteMeta, batch!.requestCount, batch!.bytes, batch!.seq, batch!.mode],
          ["submitted", "batch_1", { inputFileId: "file-1" }, 1, 99, 1, "batch"]
        )
        assert.deepStrictEqual([sync!.mode, sync!.remoteId, sync!.seq], ["sync", null, 2])
        assert.isNotNull(batch!.submittedAt)
        yield* ledger.updateBatch("b1", { state: "collected", completed: 1, ended: true })
        yield* ledger.updateBatch("b2", { state: "collected", completed: 1, ended: true })
        assert.deepStrictEqual(yield* ledger.openBatches("r1"), [])
        const counts = yield* ledger.counts("r1")
        assert.deepStrictEqual([counts.batches, counts.openBatches, counts.batched], [2, 0, 2])
      })
    ))

  it.effect(
    "a refused statement's LedgerError says what the database refused",
    () =>
      withLedger((ledger) =>
        Effect.gen(function*() {
          yield* ledger.createRun({ id: "r", pipeline: "p", module: null, provider: "openai" })
          const error = yield* ledger.createRun({ id: "r", pipeline: "p", module: null, provider: "openai" }).pipe(
            Effect.flip
          )
          assert.strictEqual(error.operation, "createRun")
          assert.match(error.message, /UNIQUE constraint failed: offpeak_runs\.id|duplicate key value violates unique constraint "offpeak_runs_pkey"/)
        })
      )
  )

  if (backend.reopens) {
    it.effect("state survives reopening the database", () =>
      Effect.gen(function*() {
        const store = yield* backend.fresh
        yield* Effect.gen(function*() {
          const ledger = yield* Ledger.Ledger
          yield* ledger.createRun({ id: "r1", pipeline: "p", module: "/x.ts", provider: "openai" })
          yield* ledger.admit("r1", [row("a", 1)])
          yield* ledger.sealBatch({ id: "b1", runId: "r1", seq: 1, group: "g", file: "f", requestCount: 1, bytes: 1 }, [
            1
          ])
          yield* ledger.updateBatch("b1", { state: "submitted", remoteId: "batch_1", remoteMeta: { inputFileId: "file-1" } })
        }).pipe(Effect.provide(store.open()))
        const open = yield* Effect.gen(function*() {
          const ledger = yield* Ledger.Ledger
          return yield* ledger.openBatches("r1")
        }).pipe(Effect.provide(store.open()))
        assert.strictEqual(open.length, 1)
        assert.strictEqual(open[0]!.remoteId, "batch_1")
        assert.deepStrictEqual(open[0]!.remoteMeta, { inputFileId: "file-1" })
      }))

    it.effect("two ledgers opening a fresh database at once both come up (migrations run once)", () =>
      Effect.gen(function*() {
        const store = yield* backend.fresh
        const [a, b] = yield* Effect.all([openLedger(store), openLedger(store)], { concurrency: 2 })
        yield* a.createRun({ id: "r1", pipeline: "p", module: null, provider: "openai" })
        assert.isTrue(Option.isSome(yield* b.getRun("r1")))
      }))
  }

  it.effect("two ledgers on the same database see each other's runs, rows and results", () =>
    withLedger((a, store) =>
      Effect.gen(function*() {
        const b = yield* openLedger(store)
        yield* a.createRun({ id: "ra", pipeline: "p", module: null, provider: "openai" })
        yield* b.createRun({ id: "rb", pipeline: "p", module: null, provider: "openai" })
        // another provider, and the same provider on another endpoint (an emulator): the cache is not theirs
        yield* b.createRun({ id: "rc", pipeline: "p", module: null, provider: "anthropic" })
        yield* b.createRun({ id: "rd", pipeline: "p", module: null, provider: "openai", endpoint: "emulator" })
        assert.deepStrictEqual((yield* a.listRuns).map((r) => r.id).sort(), ["ra", "rb", "rc", "rd"])
        assert.deepStrictEqual((yield* b.listRuns).map((r) => r.id).sort(), ["ra", "rb", "rc", "rd"])
        // rows admitted by one are skipped by the other (a resume on another machine)
        yield* a.admit("ra", [row("x", 1), row("y", 2)])
        const again = yield* b.admit("ra", [row("x", 1), row("y", 2), row("z", 3)])
        assert.deepStrictEqual([again.skipped, again.admitted, again.fresh], [2, 1, [2]])
        // a result recorded by one is a cache hit for the other
        yield* b.sealBatch({ id: "b1", runId: "ra", seq: 1, group: "g", file: "f", requestCount: 3, bytes: 1 }, [
          1,
          2,
          3
        ])
        yield* a.updateBatch("b1", { state: "submitted", remoteId: "batch_1" })
        assert.strictEqual((yield* b.openBatches("ra"))[0]!.remoteId, "batch_1")
        yield* a.recordOutcomes("ra", "b1", [
          { _tag: "Succeeded", request: 1, output: "1", usage: { inputTokens: 1, outputTokens: 1 } }
        ], 3)
        yield* a.updateRun("ra", { state: "detached" })
        const cached = yield* b.admit("rb", [row("k", 1, fp(1))])
        assert.deepStrictEqual([cached.ready, cached.fresh], [1, []])
        for (const other of ["rc", "rd"]) {
          const notCached = yield* b.admit(other, [row("k", 1, fp(1))])
          assert.deepStrictEqual([other, notCached.ready, notCached.fresh], [other, 0, [0]])
        }
        assert.strictEqual((yield* b.counts("ra")).succeeded, 1)
      })
    ))

  it.effect("concurrent admits on different runs do not interfere", () =>
    withLedger((ledger, store) =>
      Effect.gen(function*() {
        const other = yield* openLedger(store)
        const runs = Array.from({ length: 6 }, (_, i) => `run-${i}`)
        yield* Effect.forEach(runs, (id) => ledger.createRun({ id, pipeline: "p", module: null, provider: "openai" }))
        // every run admits the same keys and fingerprints (they are per run), in chunks, all runs at once,
        // half of them through a second ledger (its own connections)
        const admissions = yield* Effect.forEach(runs, (id, r) =>
          Effect.forEach(
            Array.from({ length: 6 }, (_, c) => c),
            (c) => (r % 2 === 0 ? ledger : other).admit(id, Array.from({ length: 50 }, (_, i) => {
              const position = c * 50 + i + 1
              return row(`k${position}`, position, fp(position % 120 + 1))
            }))
          ), { concurrency: "unbounded" })
        for (const perRun of admissions) {
          assert.strictEqual(perRun.reduce((n, a) => n + a.admitted, 0), 300)
          assert.strictEqual(perRun.reduce((n, a) => n + a.fresh.length, 0), 120)
          assert.strictEqual(perRun.reduce((n, a) => n + a.skipped + a.duplicates, 0), 0)
        }
        for (const id of runs) {
          const counts = yield* ledger.counts(id)
          assert.deepStrictEqual([counts.items, counts.requests, counts.queued], [300, 120, 120])
        }
        // the same request answered in two runs at once: one cached result, both runs succeeded
        yield* Effect.forEach(["run-0", "run-1"], (id) =>
          // fp(1) is first asked for by row 120 (120 % 120 + 1): its request is number 120
          ledger.sealBatch({ id: `${id}-b1`, runId: id, seq: 1, group: "g", file: "f", requestCount: 1, bytes: 1 }, [
            120
          ]))
        yield* Effect.forEach([[ledger, "run-0"], [other, "run-1"]] as const, ([l, id]) =>
          l.recordOutcomes(id, `${id}-b1`, [
            { _tag: "Succeeded", request: 120, output: `"${id}"`, usage: { inputTokens: 1, outputTokens: 1 } }
          ], 3), { concurrency: 2 })
        assert.strictEqual((yield* ledger.counts("run-0")).succeeded, 1)
        assert.strictEqual((yield* other.counts("run-1")).succeeded, 1)
        yield* ledger.updateRun("run-0", { state: "completed" })
        yield* other.updateRun("run-1", { state: "completed" })
        yield* ledger.createRun({ id: "run-late", pipeline: "p", module: null, provider: "openai" })
        assert.strictEqual((yield* other.admit("run-late", [row("k", 1, fp(1))])).ready, 1)
      })
    ))

  it.effect("two ledgers admitting the same rows of one run at once never admit a row twice", () =>
    withLedger((a, store) =>
      Effect.gen(function*() {
        const b = yield* openLedger(store)
        yield* a.createRun({ id: "r", pipeline: "p", module: null, provider: "openai" })
        const chunk = Array.from({ length: 200 }, (_, i) => row(`k${i}`, i + 1))
        // the second waits for the first's transaction, then fails on the primary key or (SQLite) on the lock;
        // it never admits a row the first admitted
        const exits = yield* Effect.all([Effect.exit(a.admit("r", chunk)), Effect.exit(b.admit("r", chunk))], {
          concurrency: 2
        })
        const admitted = exits.flatMap((e) => Exit.isSuccess(e) ? [e.value.admitted] : [])
        assert.strictEqual(admitted.reduce((n, x) => n + x, 0), 200)
        for (const e of exits) if (Exit.isFailure(e)) assert.match(String(Cause.squash(e.cause)), /LedgerError/)
        const again = yield* b.admit("r", chunk)
        assert.deepStrictEqual([again.skipped, again.admitted], [200, 0])
        const counts = yield* a.counts("r")
        assert.deepStrictEqual([counts.items, counts.requests], [200, 200])
      })
    ))

  if (backend.reopens) {
    it.effect("a ledger left mid-run under batch-range parts (0003) migrates: no row lost, none delivered twice", () =>
      Effect.gen(function*() {
        const store = yield* backend.fresh
        // the schema as 0003 left it: batch 1 collected, its request 1 delivered by a committed range, request 3 in a
        // range being written, request 4 settled in no range; request 5 still at the provider; row f failed alone
        yield* Effect.gen(function*() {
          const upTo3 = Object.fromEntries(Object.entries(migrations).filter(([name]) => name < "0004"))
          yield* Migrator.make({})({ loader: Migrator.fromRecord(upTo3), table: "offpeak_migrations" })
          const sql = yield* SqlClient.SqlClient
          const at = "2026-11-01T00:00:00.000Z"
          yield* sql`INSERT INTO offpeak_runs ${
            sql.insert({ id: "old", pipeline: "p", module: null, provider: "openai", state: "running", source_done: 1,
              created_at: at, updated_at: at, num: 1, item_count: 6, request_count: 4 })
          }`
          for (const [id, seq, state] of [["old-b1", 1, "collected"], ["old-b2", 2, "submitted"]] as const) {
            yield* sql`INSERT INTO offpeak_batches ${
              sql.insert({ id, run_id: "old", seq, state, grp: "g", file: "f", request_count: 1, bytes: 1, completed: 0,
                failed: 0, created_at: at, delivered: 0 })
            }`
          }
          const requests = [[1, "succeeded", 1, null], [3, "succeeded", 1, null], [4, "failed", 1, "HTTP 400"], [
            5,
            "batched",
            2,
            null
          ]] as const
          for (const [id, state, batch, error] of requests) {
            yield* sql`INSERT INTO offpeak_requests ${
              sql.insert({ run: 1, id, fingerprint: fp(id), fp48: 0, state, batch, attempts: 1, cached: 0,
                error_kind: error === null ? null : "provider_error", error_message: error })
            }`
          }
          const items = [[1, "a", 1], [2, "b", 1], [3, "c", 3], [4, "d", 4], [5, "e", 5]] as const
          for (const [position, key, request] of items) {
            yield* sql`INSERT INTO offpeak_items ${
              sql.insert({ run: 1, position, key, request, own: 0, record: JSON.stringify({ key }) })
            }`
          }
          yield* sql`INSERT INTO offpeak_items ${
            sql.insert({ run: 1, position: 6, key: "f", request: null, own: 1, record: null, error_kind: "invalid_input",
              error_message: "bad row" })
          }`
          for (const id of [1, 3]) {
            yield* sql`INSERT INTO offpeak_outputs ${
              sql.insert({ run: 1, id, output: `"o${id}"`, output_format: "json", input_tokens: 1, output_tokens: 1 })
            }`
          }
          yield* sql`INSERT INTO offpeak_parts ${
            sql.insert([
              { run_id: "old", seq: 1, state: "committed", delivered: 2, dead: 0, batch: 1, lo: 1, hi: 1 },
              { run_id: "old", seq: 2, state: "writing", delivered: 0, dead: 0, batch: 1, lo: 3, hi: 3 }
            ])
          }`
        }).pipe(Effect.provide(store.client!()))

        const ledger = yield* openLedger(store)
        const deliver = (seq: number) =>
          Effect.gen(function*() {
            const rows = yield* ledger.partRows("old", seq)
            const delivered = rows.filter((r) => r.failure === null).length
            yield* ledger.commitPart("old", { seq, delivered, dead: rows.length - delivered })
            return rows.map((r) => `${r.key}=${r.output ?? r.failure?.message}`)
          })
        // the part being written is written again, whole
        assert.deepStrictEqual(yield* ledger.writingParts("old"), [2])
        assert.deepStrictEqual(yield* deliver(2), ["c=\"o3\""])
        // the settled rows no range delivered, and the row that failed alone
        assert.deepStrictEqual(yield* deliver(Option.getOrThrow(yield* ledger.assignPart("old", 10))), [
          "d=HTTP 400",
          "f=bad row"
        ])
        assert.isTrue(Option.isNone(yield* ledger.assignPart("old", 10)))
        // the request still at the provider settles and goes out under the new numbering
        yield* ledger.recordOutcomes("old", "old-b2", [
          { _tag: "Succeeded", request: 5, output: "\"o5\"", usage: { inputTokens: 1, outputTokens: 1 } }
        ], 3)
        assert.deepStrictEqual(yield* deliver(Option.getOrThrow(yield* ledger.assignPart("old", 10))), ["e=\"o5\""])
        const counts = yield* ledger.counts("old")
        assert.deepStrictEqual([counts.items, counts.delivered, counts.dead, counts.pendingItems], [6, 4, 2, 0])
        // outputs written before the migration still answer from the cache
        yield* ledger.createRun({ id: "new", pipeline: "p", module: null, provider: "openai" })
        assert.strictEqual((yield* ledger.admit("new", [row("x", 1, fp(1))])).ready, 1)
        const cached = yield* ledger.partRows("new", Option.getOrThrow(yield* ledger.assignPart("new", 10)))
        assert.deepStrictEqual(cached.map((r) => [r.key, r.output, r.cached]), [["x", "\"o1\"", true]])
      }).pipe(Effect.scoped))
  }
}

describe("Ledger (SQLite in memory)", () => ledgerSuite(sqliteMemory))

describe("Ledger (SQLite file)", () => ledgerSuite(sqliteFile))

Pg.describePostgres("Ledger (Postgres)", (url) => ledgerSuite(postgres(url)))
