/**
 * One suite for every sink: what a sink promises the runner (see `Sink.ts`),
 * checked against its real storage — part files on disk, a real Postgres, the
 * BigQuery emulator through the official client.
 *
 * A {@link SinkCase} says how to make the sink on a fresh target, how to read
 * back what the storage holds (every row, repeats included), a value it
 * refuses, and a sink whose storage cannot be reached; {@link sinkSuite}
 * declares the tests:
 *
 * - it declares its dispositions, the default first;
 * - writing a part twice leaves it once (and rewriting an earlier part after a
 *   later one changes nothing);
 * - a part holding a value it refuses fails with `Refused` naming the row (and
 *   the column, when the sink can tell) and leaves nothing of that part;
 * - each disposition it declares does what `Sink.Disposition` says: `merge`
 *   upserts on the key, `append` keeps earlier runs' rows, `replace` keeps
 *   earlier output until `finish`, then only this run's rows;
 * - under `Pipeline.run` (OpenAI emulator in-process), a row whose value it
 *   refuses is isolated, for each disposition: the other rows delivered once,
 *   that row in the dead letter as `sink_refused`;
 * - with its storage down, a write fails `Unavailable`, not `Refused`.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Provider from "@offpeak/core/Provider"
import * as Request from "@offpeak/core/Request"
import * as Sink from "@offpeak/core/Sink"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Emulator as OpenAiEmulator } from "@offpeak/providers/openai"
import * as OpenAiBatch from "@offpeak/providers/openai/OpenAiBatch"
import { Jsonl } from "@offpeak/io/jsonl"
import { Effect, Exit, Layer, Redacted, Schema, Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { readParts, tmpDir } from "./files.ts"

// ===== the rows =====

/** the row every sink under test takes */
export interface Row {
  readonly id: string
  readonly label: string
  readonly score: number
}

/** rows `k0001 … ` from `from` to `to` (inclusive), labelled `label` */
export const rows = (from: number, to: number, label: string): Array<Row> =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ id: key(from + i), label: `${label} ${from + i}`, score: (from + i) / 8 }))

export const key = (n: number) => `k${String(n).padStart(4, "0")}`

/** rows sorted by id, then label (what a storage holds, in a comparable order) */
export const sorted = (list: ReadonlyArray<Row>): Array<Row> =>
  [...list].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : a.label < b.label ? -1 : a.label > b.label ? 1 : 0)

// ===== a sink under test =====

/** a sink on its storage, as the suite drives it */
export interface SinkCase {
  readonly name: string
  /** the dispositions the sink declares, its default first */
  readonly dispositions: ReadonlyArray<Sink.Disposition>
  /** the sink writing to `target` (a folder, a table: fresh for each test), with a disposition or its default */
  readonly make: (target: string, disposition?: Sink.Disposition) => Sink.Sink<Row>
  /** every row `target` holds now, repeats included (none when nothing was written there) */
  readonly read: (target: string) => Promise<Array<Row>>
  /** `row` changed to hold a value this sink refuses */
  readonly poison: (row: Row) => Row
  /** the column the refusal names (absent: the sink does not name one for this value) */
  readonly poisonColumn?: string | undefined
  /** a sink whose storage is down (a server that does not answer, a folder that cannot be made) */
  readonly down: () => Sink.Sink<Row>
}

/** a case with what it opened (a server, a schema), closed after its suite */
export interface Opened {
  readonly sinkCase: SinkCase
  readonly close: () => Promise<void>
}

/** a TCP port nothing listens on (bound, then released) */
export const closedPort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** runs an Effect program in a scope that stays open until the returned `close` */
export const openScoped = async <A, E>(effect: Effect.Effect<A, E, Scope.Scope>): Promise<{ value: A; close: () => Promise<void> }> => {
  const scope = Scope.makeUnsafe()
  const value = await Effect.runPromise(effect.pipe(Scope.provide(scope)))
  return { value, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

// ===== the runner =====

const Doc = Schema.Struct({ id: Schema.String, text: Schema.String })

/**
 * Runs a pipeline of `n` documents through the sink: embeddings from the OpenAI emulator at `openai`, each row
 * `{ id, label: text, score: first dimension }`, the row of `poisoned` given a value the sink refuses. The summary
 * and the dead letter's rows.
 */
export const runPipeline = (
  openai: string,
  sinkCase: SinkCase,
  target: string,
  disposition: Sink.Disposition,
  n: number,
  poisoned: number
) =>
  Effect.gen(function*() {
    const dir = tmpDir("sinks-run")
    const input = path.join(dir, "docs.jsonl")
    fs.writeFileSync(input, Array.from({ length: n }, (_, i) => JSON.stringify({ id: key(i + 1), text: `document ${i + 1}` })).join("\n") + "\n")
    const provider = yield* OpenAiBatch.make({
      apiKey: Redacted.make("test"),
      baseURL: openai,
      pollInterval: { initial: "10 millis", max: "50 millis" }
    })
    const deadDir = path.join(dir, "dead")
    const pipeline = Pipeline.make<typeof Doc.Type, unknown, Row>({
      name: `sinks-${target}`,
      source: Jsonl.source({ path: input, schema: Doc, key: "id" }),
      key: (doc) => doc.id,
      request: (doc) => Request.embedding({ model: "text-embedding-3-small", input: doc.text, dimensions: 4 }),
      row: (r) => {
        const row = { id: r.key, label: r.record.text, score: (r.output as ReadonlyArray<number>)[0]! }
        return r.key === key(poisoned) ? sinkCase.poison(row) : row
      },
      sink: sinkCase.make(target, disposition),
      deadLetter: Jsonl.sink({ dir: deadDir }),
      batch: { maxRequests: 1_000, flushAfter: "20 millis" }
    })
    const summary = yield* Pipeline.run(pipeline, { stateDir: path.join(dir, "state") }).pipe(
      Effect.provide(Layer.mergeAll(
        Layer.succeed(Provider.Provider, provider),
        Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(dir, "state", "state.db") })))
      ))
    )
    return { summary, dead: readParts(deadDir) }
  })

// ===== the suite =====

const part = (runId: string, seq: number): Sink.Part => ({ runId, seq })

const write = (sink: Sink.Sink<Row>, p: Sink.Part, list: ReadonlyArray<Row>) => Effect.runPromise(sink.write(p, list))

const finish = (sink: Sink.Sink<Row>, runId: string) =>
  sink.finish === undefined ? Promise.resolve() : Effect.runPromise(sink.finish({ runId, disposition: Sink.dispositionOf(sink) }))

/** the error of a write that must fail */
const writeError = (sink: Sink.Sink<Row>, p: Sink.Part, list: ReadonlyArray<Row>) => Effect.runPromise(Effect.flip(sink.write(p, list)))

let targets = 0
/** a target name no other test of the process uses */
const fresh = (what: string) => `${what}_${process.pid}_${++targets}`

/** what each disposition must do, checked on a fresh target: the rows held after two runs A then B */
const dispositionChecks: Record<Sink.Disposition, (c: SinkCase) => Promise<string>> = {
  merge: async (c) => {
    const target = fresh("merge")
    const sink = c.make(target, "merge")
    expect(Sink.dispositionOf(sink)).toBe("merge")
    await write(sink, part("run-a", 1), rows(1, 30, "a"))
    await finish(sink, "run-a")
    await write(sink, part("run-b", 1), rows(21, 40, "b"))
    await finish(sink, "run-b")
    const held = sorted(await c.read(target))
    expect(held).toEqual(sorted([...rows(1, 20, "a"), ...rows(21, 40, "b")]))
    return `merge: run A 1–30, run B 21–40 → ${held.length} rows, 21–30 updated to B's`
  },
  append: async (c) => {
    const target = fresh("append")
    const sink = c.make(target, "append")
    expect(Sink.dispositionOf(sink)).toBe("append")
    await write(sink, part("run-a", 1), rows(1, 30, "a"))
    await finish(sink, "run-a")
    await write(sink, part("run-b", 1), rows(21, 40, "b"))
    await write(sink, part("run-b", 1), rows(21, 40, "b")) // a part written again after a crash
    await finish(sink, "run-b")
    const held = sorted(await c.read(target))
    expect(held).toEqual(sorted([...rows(1, 30, "a"), ...rows(21, 40, "b")]))
    return `append: run A 1–30, run B 21–40 (its part written twice) → ${held.length} rows, A's all kept`
  },
  replace: async (c) => {
    const target = fresh("replace")
    const sink = c.make(target, "replace")
    expect(Sink.dispositionOf(sink)).toBe("replace")
    await write(sink, part("run-a", 1), rows(1, 15, "a"))
    await write(sink, part("run-a", 2), rows(16, 30, "a"))
    await finish(sink, "run-a")
    expect(sorted(await c.read(target))).toEqual(rows(1, 30, "a"))
    await write(sink, part("run-b", 1), rows(21, 40, "b"))
    // run B has not finished (it could still fail): every row of run A is still there
    const during = await c.read(target)
    const aIds = new Set(during.filter((r) => r.label.startsWith("a ")).map((r) => r.id))
    expect(aIds.size).toBe(30)
    await finish(sink, "run-b")
    await finish(sink, "run-b") // finish is idempotent (a crash in it calls it again on resume)
    const held = sorted(await c.read(target))
    expect(held).toEqual(rows(21, 40, "b"))
    return `replace: run A 1–30 finished, run B 21–40 written (${during.length} rows held before B's finish) → ${held.length} rows after it, B's only`
  }
}

/**
 * The suite for one sink. `open` makes the case (servers, schemas), once for the suite; `openai` is an OpenAI
 * emulator's base URL for the runner tests.
 */
export const sinkSuite = (name: string, open: () => Promise<Opened>) => {
  describe(`sink suite: ${name}`, () => {
    let opened: Opened
    let openai: { value: { url: string }; close: () => Promise<void> }
    beforeAll(async () => {
      opened = await open()
      openai = await openScoped(OpenAiEmulator.serve({ validationMs: 5, finalizingMs: 5 }))
    })
    afterAll(async () => {
      await openai?.close()
      await opened?.close()
    })

    it("declares its dispositions, the default first", () => {
      const c = opened.sinkCase
      const sink = c.make(fresh("declared"))
      expect(sink.dispositions).toEqual(c.dispositions)
      expect(Sink.dispositionOf(sink)).toBe(c.dispositions[0])
      console.log(`${name}: dispositions ${c.dispositions.join(", ")} (default ${c.dispositions[0]})`)
    })

    it("a part written twice is there once; rewriting an earlier part after a later one changes nothing", async () => {
      const c = opened.sinkCase
      const target = fresh("twice")
      const sink = c.make(target)
      const started = Date.now()
      await write(sink, part("run-1", 1), rows(1, 40, "v"))
      await write(sink, part("run-1", 1), rows(1, 40, "v"))
      expect(sorted(await c.read(target))).toEqual(rows(1, 40, "v"))
      await write(sink, part("run-1", 2), rows(41, 60, "v"))
      await write(sink, part("run-1", 1), rows(1, 40, "v"))
      const held = sorted(await c.read(target))
      expect(held).toEqual(rows(1, 60, "v"))
      console.log(`${name}: part 1 (40 rows) written twice, part 2 (20), part 1 again → ${held.length} rows, each once (${Date.now() - started} ms)`)
    })

    it("a part with a value the sink refuses fails with Refused naming the row, and leaves nothing of that part", async () => {
      const c = opened.sinkCase
      const target = fresh("refused")
      const sink = c.make(target)
      await write(sink, part("run-1", 1), rows(1, 10, "ok"))
      const bad = rows(11, 30, "bad")
      bad[13] = c.poison(bad[13]!)
      const error = await writeError(sink, part("run-1", 2), bad)
      expect(error._tag).toBe("SinkError")
      expect(Sink.isRefused(error)).toBe(true)
      const reason = error.reason as Sink.Refused
      expect(reason.row).toBe(13)
      if (c.poisonColumn !== undefined) expect(reason.column).toBe(c.poisonColumn)
      expect(sorted(await c.read(target))).toEqual(rows(1, 10, "ok"))
      console.log(`${name}: refused row ${reason.row}${reason.column === undefined ? "" : ` column ${reason.column}`}: ${error.message}`)
    })

    it("each disposition it declares does what it says", async () => {
      const c = opened.sinkCase
      for (const d of c.dispositions) console.log(`${name}: ${await dispositionChecks[d](c)}`)
    })

    it("under Pipeline.run, a refused row is isolated for each disposition: the rest delivered once, that row dead-lettered as sink_refused", async () => {
      const c = opened.sinkCase
      for (const d of c.dispositions) {
        const target = fresh(`run_${d}`)
        const started = Date.now()
        const { summary, dead } = await Effect.runPromise(runPipeline(openai.value.url, c, target, d, 60, 23))
        expect(summary).toMatchObject({ state: "completed", rows: 60, succeeded: 59, failed: 1 })
        const held = await c.read(target)
        expect(held).toHaveLength(59)
        expect(new Set(held.map((r) => r.id)).size).toBe(59)
        expect(held.some((r) => r.id === key(23))).toBe(false)
        expect(dead).toHaveLength(1)
        expect(dead[0]).toMatchObject({ _tag: "Failed", key: key(23), kind: "sink_refused" })
        expect(dead[0].message).toMatch(/refused this row/)
        console.log(`${name} (${d}) under Pipeline.run: 60 rows, ${held.length} delivered once, ${dead[0].key} dead-lettered as ${dead[0].kind}: ${dead[0].message} (${Date.now() - started} ms)`)
      }
    })

    it("with its storage down a write fails Unavailable, not Refused", async () => {
      const c = opened.sinkCase
      const started = Date.now()
      const error = await writeError(c.down(), part("run-1", 1), rows(1, 5, "x"))
      expect(error._tag).toBe("SinkError")
      expect(Sink.isRefused(error)).toBe(false)
      // a SinkError without a reason counts as Unavailable (Sink.ts)
      expect(error.reason?._tag ?? "Unavailable").toBe("Unavailable")
      console.log(`${name}: storage down → ${error.reason?._tag ?? "no reason (Unavailable)"} after ${Date.now() - started} ms: ${error.message}`)
    }, 120_000)
  })
}
