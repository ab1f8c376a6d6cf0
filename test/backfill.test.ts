/**
 * The embedding backfill on a real Postgres: a documents table → embeddings
 * through the OpenAI adapter and an emulator in another process → the table's
 * embedding column (real[] here: the system Postgres has no pgvector; the
 * vector(n) path is covered on PGlite in packages/io/postgres).
 */
import { Engine } from "@offpeak/providers/local"
import { Effect } from "effect"
import { afterAll, expect, it } from "vitest"
import { spawn } from "node:child_process"
import * as path from "node:path"
import { connect, describePostgres, freshSchema } from "../packages/core/test/support/postgres.ts"
import { binaryNode, killAll, repo, runCli, startEmulator, tmpDir } from "./support/files.ts"

afterAll(killAll)

/** runs test/fixtures/backfill.run.ts in a child process */
const backfill = (env: Record<string, string>, cwd: string) =>
  new Promise<{ state: string; rows: number; submitted: number; succeeded: number; failed: number; maxRssMb: number }>(
    (resolve, reject) => {
      // as the offpeak binary starts Node, however vitest was started
      const child = spawn(process.execPath, [...binaryNode.args, path.join(repo, "test/fixtures/backfill.run.ts")], {
        cwd,
        env: { ...process.env, ...binaryNode.env, ...env },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let out = ""
      let err = ""
      child.stdout.on("data", (d) => (out += d))
      child.stderr.on("data", (d) => (err += d))
      child.on("exit", (code) => code === 0 ? resolve(JSON.parse(out.trim().split("\n").at(-1)!)) : reject(new Error(`exit ${code}: ${err}`)))
    }
  )

const expectedVector = (title: string, body: string) =>
  Array.from(Engine.embed({ model: "text-embedding-3-small", input: `${title}\n\n${body}`, dimensions: 256 }).vector)

const createDocuments = (url: string, rows: number) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const sql = yield* connect(url)
    yield* sql.unsafe(`CREATE TABLE documents (
      id integer PRIMARY KEY, title text NOT NULL, body text NOT NULL, embedding real[])`)
    yield* sql.unsafe(`INSERT INTO documents (id, title, body)
      SELECT g, 'Document ' || g, 'About topic ' || (g % 97) || ' and item ' || g || ', with some words to embed.'
      FROM generate_series(1, ${rows}) AS g`)
  })))

const check = (url: string, sample: number) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const sql = yield* connect(url)
    const [counts] = yield* sql.unsafe<{ n: number; e: number }>(
      "SELECT count(*)::int AS n, count(embedding)::int AS e FROM documents"
    )
    const rows = yield* sql.unsafe<{ id: number; title: string; body: string; embedding: Array<number> }>(
      `SELECT id, title, body, embedding FROM documents ORDER BY random() LIMIT ${sample}`
    )
    return { counts: counts!, rows }
  })))

describePostgres("embedding backfill (Postgres)", (pgUrl) => {
  it("50,000 rows backfilled under 300 MB; a rerun submits nothing; after 500 updates, exactly those 500", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const { url } = yield* freshSchema(pgUrl, "backfill")
      const dir = tmpDir("backfill")
      yield* Effect.promise(() => createDocuments(url, 50_000))
      const openai = yield* Effect.promise(() => startEmulator("openai", dir, { validationMs: 5, finalizingMs: 5 }))
      const env = {
        DATABASE_URL: url,
        OPENAI_API_KEY: "test",
        OPENAI_BASE_URL: openai,
        OFFPEAK_POLL_INITIAL: "100 millis",
        OFFPEAK_POLL_MAX: "500 millis",
        OFFPEAK_TEST_STATE: path.join(dir, "state")
      }
      const first = yield* Effect.promise(() => backfill(env, dir))
      expect(first).toMatchObject({ state: "completed", rows: 50_000, succeeded: 50_000, failed: 0, submitted: 50_000 })
      expect(first.maxRssMb).toBeLessThan(300)
      const after = yield* Effect.promise(() => check(url, 200))
      expect(after.counts).toEqual({ n: 50_000, e: 50_000 })
      for (const r of after.rows) {
        const want = expectedVector(r.title, r.body)
        expect(r.embedding).toHaveLength(256)
        r.embedding.forEach((x, i) => expect(x).toBeCloseTo(want[i]!, 6))
      }

      const second = yield* Effect.promise(() => backfill(env, dir))
      expect(second).toMatchObject({ state: "completed", rows: 50_000, succeeded: 50_000, submitted: 0 })

      yield* Effect.promise(() =>
        Effect.runPromise(Effect.scoped(Effect.flatMap(connect(url), (sql) =>
          sql.unsafe("UPDATE documents SET body = body || ' (revised)' WHERE id % 100 = 0")
        )))
      )
      const third = yield* Effect.promise(() => backfill(env, dir))
      expect(third).toMatchObject({ state: "completed", rows: 50_000, submitted: 500 })
      const revised = yield* Effect.promise(() => check(url, 50_000))
      for (const r of revised.rows.filter((r) => r.id % 100 === 0).slice(0, 50)) {
        const want = expectedVector(r.title, r.body)
        r.embedding.forEach((x, i) => expect(x).toBeCloseTo(want[i]!, 6))
      }
      console.log(`embedding backfill: 50,000 rows, peak RSS ${first.maxRssMb.toFixed(0)} MB; rerun submitted ${second.submitted}; after 500 updates submitted ${third.submitted}`)
    })))
  }, 600_000)

  it("SIGKILL during the sink write, then resume: every row has its vector, none lost", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const { url } = yield* freshSchema(pgUrl, "backfill_kill")
      const dir = tmpDir("backfill-kill")
      yield* Effect.promise(() => createDocuments(url, 6_000))
      const openai = yield* Effect.promise(() => startEmulator("openai", dir, { validationMs: 5, finalizingMs: 5 }))
      const env = {
        DATABASE_URL: url,
        OPENAI_API_KEY: "test",
        OPENAI_BASE_URL: openai,
        OFFPEAK_POLL_INITIAL: "100 millis",
        OFFPEAK_POLL_MAX: "500 millis"
      }
      const state = path.join(dir, "state")
      const module = path.join(repo, "examples/embedding-backfill/pipeline.ts")
      const killed = yield* Effect.promise(() =>
        runCli(["run", module, "--state-dir", state], { cwd: dir, env: { ...env, OFFPEAK_FAILPOINTS: "part.writing:2" } })
      )
      expect(killed.signal).toBe("SIGKILL")
      expect(killed.stderr).toMatch(/failpoint part\.writing:2/)
      const partial = yield* Effect.promise(() => check(url, 1))
      expect(partial.counts.e).toBeLessThan(6_000)
      const status = yield* Effect.promise(() => runCli(["status", "--json", "--state-dir", state], { cwd: dir, env }))
      const [run] = JSON.parse(status.stdout)
      const resumed = yield* Effect.promise(() => runCli(["resume", run.id, "--state-dir", state], { cwd: dir, env }))
      expect(resumed.code, resumed.stderr).toBe(0)
      const done = yield* Effect.promise(() => check(url, 300))
      expect(done.counts).toEqual({ n: 6_000, e: 6_000 })
      for (const r of done.rows) {
        const want = expectedVector(r.title, r.body)
        r.embedding.forEach((x, i) => expect(x).toBeCloseTo(want[i]!, 6))
      }
      const after = yield* Effect.promise(() => runCli(["status", run.id, "--json", "--state-dir", state], { cwd: dir, env }))
      expect(JSON.parse(after.stdout).counts).toMatchObject({ items: 6_000, delivered: 6_000, dead: 0 })
    })))
  }, 300_000)
})
