/**
 * The pushdown path end to end, with a provider whose jobs run over tables and a source that stages and lands them
 * (test/support/TableProvider.ts): no row through the runner, failed rows retried as a smaller job then
 * dead-lettered, and a SIGKILL between a job's creation and the ledger write that resumes without a second job.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Ledger from "../src/Ledger.ts"
import * as Pipeline from "../src/Pipeline.ts"
import * as Provider from "../src/Provider.ts"
import * as Request from "../src/Request.ts"
import type * as Result from "../src/Result.ts"
import type * as Sink from "../src/Sink.ts"
import * as SqliteClient from "../src/SqliteClient.ts"
import * as TableProvider from "./support/TableProvider.ts"

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-pushdown-"))

const seed = (dir: string, n: number, text: (i: number) => string = (i) => `doc ${i}`) =>
  TableProvider.tables(dir).write(
    "docs",
    Array.from({ length: n }, (_, i) => ({ id: `d${String(i + 1).padStart(5, "0")}`, text: text(i + 1) }))
  )

const memorySink = <A>() => {
  const rows: Array<A> = []
  const sink: Sink.Sink<A> = { name: "memory", write: (_part, r) => Effect.sync(() => void rows.push(...r)) }
  return { sink, rows }
}

const runner = path.join(import.meta.dirname, "support/pushdownRun.ts")

describe("pushdown (a job over a table, no row through offpeak)", () => {
  it.live("lands every answer; failed rows go again as a smaller job, then to the dead letter", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      // 1,000 docs: 20 fail once, 5 always
      seed(dir, 1_000, (i) => i % 50 === 0 ? `doc ${i} fail×1` : i % 200 === 7 ? `doc ${i} always` : `doc ${i}`)
      const dead = memorySink<Result.Failed<TableProvider.Doc>>()
      const events: Array<string> = []
      const pipeline = Pipeline.make({
        name: "pushdown",
        source: TableProvider.source(dir),
        key: (d) => d.id,
        request: (d) => Request.chat({ model: "m", prompt: d.text }),
        sink: memorySink<unknown>().sink,
        deadLetter: dead.sink,
        retry: { maxAttempts: 3 }
      })
      const layer = Layer.mergeAll(
        Layer.succeed(Provider.Provider, TableProvider.provider(dir)),
        Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(dir, "state.db") })))
      )
      const summary = yield* Pipeline.run(pipeline, { stateDir: dir, onEvent: (e) => events.push(e._tag) }).pipe(
        Effect.provide(layer)
      )
      const t = TableProvider.tables(dir)
      const jobs = t.jobs()
      assert.strictEqual(summary.state, "completed")
      assert.deepStrictEqual([summary.rows, summary.succeeded, summary.failed, summary.pending], [1_000, 995, 5, 0])
      // job 1 over every row, job 2 over the 25 that failed, job 3 over the 5 that failed again
      assert.deepStrictEqual(jobs.map((j) => t.read(j.input).length).sort((a, b) => b - a), [1_000, 25, 5])
      const target = t.read<{ id: string; answer: string }>("target")
      assert.strictEqual(target.length, 995)
      assert.strictEqual(new Set(target.map((r) => r.id)).size, 995)
      assert.strictEqual(target.find((r) => r.id === "d00050")!.answer, "DOC 50 FAIL×1")
      assert.deepStrictEqual(dead.rows.map((d) => d.key), ["d00007", "d00207", "d00407", "d00607", "d00807"])
      assert.match(dead.rows[0]!.message, /RESOURCE_EXHAUSTED: attempt 3/)
      assert.includeMembers(events, ["RunStarted", "BatchSealed", "BatchSubmitted", "BatchEnded", "RetryRound", "RunEnded"])
      console.log(
        `pushdown: 1,000 rows in 3 jobs (1,000 / 25 / 5 rows), 995 landed once, 5 dead-lettered after 3 attempts`
      )
    }))

  it("SIGKILL at every step of a job's lifecycle, resumed each time: no job created twice, every key once", () => {
    const dir = tmpDir()
    seed(dir, 300, (i) => i % 30 === 0 ? `doc ${i} fail×1` : `doc ${i}`)
    const points = [
      "batch.sealed:1",
      "batch.created:1",
      "batch.submitted:1",
      "batch.polled:2",
      "part.written:1",
      "batch.sealed:1",
      "batch.created:1",
      "part.written:1",
      "batch.collected:1"
    ]
    const kills: Array<string> = []
    let finished: string | undefined
    for (let attempt = 0; attempt < points.length + 2 && finished === undefined; attempt++) {
      const point = points[attempt]
      const child = spawnSync(process.execPath, [runner, dir, ...(attempt === 0 ? [] : ["pd"])], {
        env: { ...process.env, ...(point !== undefined ? { OFFPEAK_FAILPOINTS: point } : { OFFPEAK_FAILPOINTS: "" }) },
        encoding: "utf8"
      })
      if (child.signal === "SIGKILL") {
        kills.push(point!)
        continue
      }
      assert.strictEqual(child.status, 0, child.stderr)
      finished = child.stdout
    }
    assert.isDefined(finished)
    const summary = JSON.parse(finished!)
    assert.strictEqual(summary.state, "completed")
    const t = TableProvider.tables(dir)
    const jobs = t.jobs()
    // one job per ledger batch, however many kills: 300 rows, then the 10 that failed once
    assert.deepStrictEqual(jobs.map((j) => j.batchId).sort(), ["pd-b00001", "pd-b00002"])
    const target = t.read<{ id: string }>("target")
    assert.strictEqual(target.length, 300)
    assert.strictEqual(new Set(target.map((r) => r.id)).size, 300)
    assert.isAtLeast(kills.length, 6)
    console.log(`pushdown torture: ${kills.length} kills (${kills.join(", ")}), ${jobs.length} jobs created for 2 ledger jobs, 300 keys once`)
  }, 120_000)
})
