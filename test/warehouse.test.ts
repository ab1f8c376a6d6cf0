/**
 * The warehouse-embeddings example through the CLI, offline as a new user
 * runs it (no OpenAI key, no Google credentials: the module starts the
 * BigQuery emulator in-process and seeds 2,000 documents, the CLI starts the
 * OpenAI emulator): a first run embeds every document into the target table,
 * a second sends nothing, a run after edits sends exactly the edited (and
 * added) documents; and a run SIGKILLed twice (with batches in flight, then
 * between a part's load and its MERGE) and resumed: every key once, every
 * vector its document's, nothing sent twice.
 *
 * What was sent is read from the OpenAI emulator's own files (each batch's
 * input lines, tagged with the run), not from the ledger.
 */
import { BigQuery as Client } from "@google-cloud/bigquery"
import { Engine } from "@offpeak/providers/local"
import { Emulator } from "@offpeak/io/bigquery"
import { Effect } from "effect"
import { PassThroughClient } from "google-auth-library"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { killAll, repo, runCli, startCli, submittedBatches, tmpDir, waitFor } from "./support/files.ts"

afterAll(killAll)

const MODULE = path.join(repo, "examples/warehouse-embeddings/pipeline.ts")
const EDIT = path.join(repo, "examples/warehouse-embeddings/edit.ts")
/** as the example's pipeline.ts has them (imported from there, the module would start an emulator) */
const MODEL = "text-embedding-3-small"
const DIMENSIONS = 256
const SEEDED = 2_000

/** a fresh machine: no provider key, no Google configuration, no armed failpoint */
const OFFLINE: NodeJS.ProcessEnv = {
  OPENAI_API_KEY: undefined,
  OPENAI_BASE_URL: undefined,
  BIGQUERY_EMULATOR_HOST: undefined,
  GOOGLE_APPLICATION_CREDENTIALS: undefined,
  GOOGLE_CLOUD_PROJECT: undefined,
  WAREHOUSE_DATASET: undefined,
  WAREHOUSE_DOCUMENTS: undefined,
  OFFPEAK_EMULATOR_KNOBS: undefined,
  OFFPEAK_FAILPOINTS: undefined
}

interface Summary {
  readonly runId: string
  readonly state: string
  readonly rows: number
  readonly succeeded: number
  readonly failed: number
  readonly batches: number
}

/** `offpeak <args> --json` in `cwd`, offline; the summary it printed */
const cli = async (cwd: string, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}) => {
  const started = Date.now()
  const exit = await runCli([...args, "--json"], { cwd, env: { ...OFFLINE, ...env } })
  expect(exit.code, exit.stderr).toBe(0)
  return { summary: JSON.parse(exit.stdout) as Summary, ms: Date.now() - started, stderr: exit.stderr }
}

/** runs edit.ts in `cwd`; the ids it edited and added */
const edit = (cwd: string, args: ReadonlyArray<string>) =>
  new Promise<{ edited: Array<number>; added: Array<number> }>((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env }
    for (const k of Object.keys(OFFLINE)) delete env[k]
    const child = spawn(process.execPath, [EDIT, ...args], { cwd, env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout.on("data", (d) => (out += d))
    child.stderr.on("data", (d) => (err += d))
    child.on("exit", (code) => code === 0 ? resolve(JSON.parse(out.trim())) : reject(new Error(`edit.ts exit ${code}: ${err}`)))
  })

/**
 * What the OpenAI emulator received, per run: the document id of every request line of every batch tagged with the
 * run (the id is in the embedded title, `… (<category> #<id>)`).
 */
const sent = (cwd: string): Map<string, Array<number>> => {
  const dir = path.join(cwd, ".offpeak/emulator/openai")
  const byRun = new Map<string, Array<number>>()
  if (!fs.existsSync(path.join(dir, "batches"))) return byRun
  for (const name of fs.readdirSync(path.join(dir, "batches")).filter((n) => n.endsWith(".json"))) {
    const batch = JSON.parse(fs.readFileSync(path.join(dir, "batches", name), "utf8"))
    const run: string = batch.metadata.offpeak_run
    const lines = fs.readFileSync(path.join(dir, "files", `${batch.input_file_id}.data`), "utf8").split("\n").filter((l) => l.length > 0)
    const ids = lines.map((l) => Number(/#(\d+)\)\n/.exec(JSON.parse(l).body.input)![1]))
    byRun.set(run, [...(byRun.get(run) ?? []), ...ids])
  }
  return byRun
}

interface TargetCheck {
  readonly documents: number
  readonly rows: number
  readonly keys: number
  /** rows whose embedding has the right dimensions and equals the engine's vector of the document's current text */
  readonly right: number
  /** rows whose `source_updated_at` is the document's `updated_at` (the version embedded is the current one) */
  readonly fresh: number
  readonly maxDiff: number
  readonly mergeJobs: number
  readonly mergePartsRunTwice: number
}

/** opens the example's BigQuery state (the emulator in this process, the CLI being done) and checks the target table */
const checkTarget = (cwd: string): Promise<TargetCheck> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const emulator = yield* Emulator.serve({ dir: path.join(cwd, ".offpeak/examples/warehouse-embeddings/bigquery") })
    const bq = new Client({ projectId: "offpeak-local", apiEndpoint: emulator.url, authClient: new PassThroughClient() as never })
    return yield* Effect.promise(async () => {
      const q = async (sql: string) => (await bq.query({ query: sql }))[0] as Array<any>
      const [counts] = await q(`SELECT COUNT(*) AS rows, COUNT(DISTINCT id) AS keys FROM warehouse.document_embeddings`)
      const [docs] = await q(`SELECT COUNT(*) AS n FROM warehouse.documents`)
      const [fresh] = await q(`SELECT COUNTIF(e.source_updated_at = d.updated_at) AS n
        FROM warehouse.documents AS d JOIN warehouse.document_embeddings AS e ON d.id = e.id`)
      const joined = await q(`SELECT d.id, d.title, d.body, e.embedding FROM warehouse.documents AS d
        JOIN warehouse.document_embeddings AS e ON d.id = e.id`)
      let right = 0
      let maxDiff = 0
      for (const row of joined) {
        const want = Engine.embed({ model: MODEL, input: `${row.title}\n\n${row.body}`, dimensions: DIMENSIONS }).vector
        let diff = row.embedding.length === DIMENSIONS ? 0 : Infinity
        for (let i = 0; i < DIMENSIONS && diff !== Infinity; i++) diff = Math.max(diff, Math.abs(row.embedding[i] - want[i]!))
        maxDiff = Math.max(maxDiff, diff)
        if (diff < 1e-6) right++
      }
      const [jobs] = await bq.getJobs()
      const merges = jobs.map((j) => j.id!).filter((id) => /_merge_\d+$/.test(id))
      const parts = new Set(merges.map((id) => id.replace(/_merge_\d+$/, "")))
      return {
        documents: docs.n,
        rows: counts.rows,
        keys: counts.keys,
        right,
        fresh: fresh.n,
        maxDiff,
        mergeJobs: merges.length,
        mergePartsRunTwice: merges.length - parts.size
      }
    })
  })))

describe("examples/warehouse-embeddings through the CLI, offline", () => {
  it("first run embeds 2,000 documents into BigQuery; a second run sends nothing; after edits and inserts a run sends exactly those", async () => {
    const cwd = tmpDir("warehouse")
    const first = await cli(cwd, ["run", MODULE])
    expect(first.stderr).toMatch(/local BigQuery emulator .*seeded warehouse\.documents with 2000 documents/)
    expect(first.summary).toMatchObject({ state: "completed", rows: SEEDED, succeeded: SEEDED, failed: 0 })
    const sent1 = sent(cwd).get(first.summary.runId) ?? []
    expect(sent1).toHaveLength(SEEDED)
    expect(new Set(sent1).size).toBe(SEEDED)
    const after1 = await checkTarget(cwd)
    expect(after1).toMatchObject({ documents: SEEDED, rows: SEEDED, keys: SEEDED, right: SEEDED, fresh: SEEDED })

    const second = await cli(cwd, ["run", MODULE])
    expect(second.stderr).not.toMatch(/seeded/)
    expect(second.summary).toMatchObject({ state: "completed", rows: 0, batches: 0 })
    expect(sent(cwd).get(second.summary.runId) ?? []).toHaveLength(0)

    const changed = await edit(cwd, ["40", "--add", "10"])
    expect(changed.edited).toHaveLength(40)
    expect(changed.added).toEqual(Array.from({ length: 10 }, (_, i) => SEEDED + 1 + i))
    const third = await cli(cwd, ["run", MODULE])
    expect(third.summary).toMatchObject({ state: "completed", rows: 50, succeeded: 50, failed: 0 })
    const sent3 = sent(cwd).get(third.summary.runId) ?? []
    expect([...sent3].sort((a, b) => a - b)).toEqual([...changed.edited, ...changed.added].sort((a, b) => a - b))
    const after3 = await checkTarget(cwd)
    expect(after3).toMatchObject({ documents: SEEDED + 10, rows: SEEDED + 10, keys: SEEDED + 10, right: SEEDED + 10, fresh: SEEDED + 10 })
    expect(after3.mergePartsRunTwice).toBe(0)

    const total = [...sent(cwd).values()].reduce((n, ids) => n + ids.length, 0)
    console.log(
      `warehouse example (CLI, offline): run 1 embedded ${first.summary.rows} documents in ${(first.ms / 1000).toFixed(1)} s ` +
        `(${first.summary.batches} batches, ${sent1.length} requests at the provider); run 2 read ${second.summary.rows}, sent 0 ` +
        `in ${(second.ms / 1000).toFixed(1)} s; after ${changed.edited.length} edits + ${changed.added.length} inserts run 3 read ` +
        `${third.summary.rows}, sent ${sent3.length} (exactly those ids) in ${(third.ms / 1000).toFixed(1)} s; target: ${after3.rows} rows, ` +
        `${after3.keys} keys, ${after3.right} vectors of ${DIMENSIONS} dimensions equal to their document's (max diff ${after3.maxDiff}), ` +
        `${after3.mergeJobs} MERGE jobs; the provider received ${total} requests in all`
    )
  }, 240_000)

  it("SIGKILL with batches in flight, resume SIGKILLed between a part's load and its MERGE, resume again: every key once, nothing sent twice", async () => {
    const cwd = tmpDir("warehouse-kill")
    const ledger = path.join(cwd, ".offpeak/state.db")
    // 1. killed from outside as soon as a batch is at the provider
    const running = startCli(["run", MODULE], { cwd, env: OFFLINE })
    await waitFor("a batch at the provider", () => submittedBatches(ledger) >= 1, 90_000)
    running.child.kill("SIGKILL")
    const killed = await running.exit
    expect(killed.signal).toBe("SIGKILL")
    const status = await runCli(["status", "--json"], { cwd, env: OFFLINE })
    const [run] = JSON.parse(status.stdout)
    expect(run.state).not.toBe("completed")
    const atKill = { submitted: submittedBatches(ledger), delivered: run.counts.delivered as number }

    // 2. resumed, and killed by the failpoint between part 2's load job and its MERGE
    const second = await runCli(["resume", run.id], { cwd, env: { ...OFFLINE, OFFPEAK_FAILPOINTS: "part.writing:2" } })
    expect(second.signal, second.stderr).toBe("SIGKILL")
    expect(second.stderr).toMatch(/failpoint part\.writing:2/)
    const mid = await checkTarget(cwd)
    expect(mid.rows).toBeLessThan(SEEDED)
    expect(mid.rows).toBe(mid.keys)

    // 3. resumed to the end
    const third = await cli(cwd, ["resume", run.id])
    expect(third.summary).toMatchObject({ runId: run.id, state: "completed", rows: SEEDED, succeeded: SEEDED, failed: 0 })
    const done = await checkTarget(cwd)
    expect(done).toMatchObject({ documents: SEEDED, rows: SEEDED, keys: SEEDED, right: SEEDED, fresh: SEEDED, mergePartsRunTwice: 0 })
    const after = await runCli(["status", run.id, "--json"], { cwd, env: OFFLINE })
    expect(JSON.parse(after.stdout).counts).toMatchObject({ items: SEEDED, delivered: SEEDED, dead: 0 })
    // the provider got every document once over the three processes
    const ids = sent(cwd).get(run.id) ?? []
    expect(ids).toHaveLength(SEEDED)
    expect(new Set(ids).size).toBe(SEEDED)
    console.log(
      `warehouse example killed: SIGKILL with ${atKill.submitted} batch(es) at the provider and ${atKill.delivered} rows delivered; ` +
        `resume killed between a load and its MERGE with ${mid.rows} rows in the target; second resume: ${done.rows} rows, ` +
        `${done.keys} keys, ${done.right} right vectors, ${done.mergeJobs} MERGE jobs (none run twice); requests at the provider ${ids.length}, ` +
        `distinct ${new Set(ids).size}`
    )
  }, 240_000)
})
