/**
 * Vertex AI batch prediction from BigQuery, pushed down, as users run it: the
 * `examples/vertex-bigquery` pipeline through the `offpeak` CLI on the local
 * Vertex, BigQuery and Cloud Storage emulators (started in-process by the
 * `vertex` plugin), driven by the core's pushdown runner.
 *
 * - the example's one command: 10,000 products → jobs of 10,000 → the failed
 *   keys → the keys that failed again, every key once in
 *   `shop.product_categories`, the rows that kept failing in the dead letter;
 * - SIGKILL at every step of a job's lifecycle (sealed, created, submitted,
 *   polled, landed) at the first and the second job, and at the last job's
 *   landing and collection (only the last job is collected on its own: the
 *   ones before are collected in their follow-up's seal), each followed by
 *   `offpeak resume`: no job created twice (counted at the Vertex
 *   emulator, per display name), every key once in the target, the same
 *   target and dead letter as a run never killed;
 * - no row through the process: a pushed-down job of 10,000 rows (and, with
 *   `OFFPEAK_VERTEX_SCALE_1M=1`, of 1,000,000 rows — several minutes) run by
 *   `Pipeline.run` in a process of its own, its peak RSS and the bytes it sends
 *   and receives (counted by proxies in front of the emulators) flat in the
 *   rows.
 */
import { BigQuery } from "@google-cloud/bigquery"
import { GoogleGenAI } from "@google/genai"
import { Emulator as BigQueryEmulator } from "@offpeak/io/bigquery"
import { Effect } from "effect"
import { PassThroughClient } from "google-auth-library"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
import { afterAll, describe, expect, it } from "vitest"
import * as VertexEmulator from "../packages/providers/google/VertexEmulator.ts"
import { killAll, query, readParts, repo, runCli, tmpDir } from "./support/files.ts"

const example = path.join(repo, "examples/vertex-bigquery/pipeline.ts")
const show = path.join(repo, "examples/vertex-bigquery/show.ts")
const FIXTURES = path.join(repo, "packages/providers/google/test/fixtures")

afterAll(killAll)

/** the CLI's environment: no Google project or emulator of the caller's, no failpoint, the example's own knobs */
const cliEnv = (extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv => ({
  GOOGLE_CLOUD_PROJECT: undefined,
  GOOGLE_CLOUD_LOCATION: undefined,
  BIGQUERY_EMULATOR_HOST: undefined,
  STORAGE_EMULATOR_HOST: undefined,
  GOOGLE_APPLICATION_CREDENTIALS: undefined,
  OFFPEAK_EMULATOR_KNOBS: undefined,
  OFFPEAK_FAILPOINTS: undefined,
  VERTEX_EXAMPLE_PRODUCTS: undefined,
  ...extra
})

interface LedgerBatch {
  readonly id: string
  readonly seq: number
  readonly state: string
  readonly request_count: number
  readonly remote_id: string | null
  readonly remote_state: string | null
  readonly completed: number
  readonly failed: number
}

const batchesOf = (db: string): ReadonlyArray<LedgerBatch> =>
  fs.existsSync(db)
    ? query<LedgerBatch>(db, "SELECT id, seq, state, request_count, remote_id, remote_state, completed, failed FROM offpeak_batches ORDER BY seq")
    : []

/** the job records the Vertex emulator keeps on disk (it runs in the CLI's process: read between runs) */
const jobRecords = (vertexDir: string): ReadonlyArray<{ readonly id: string; readonly displayName: string }> => {
  const dir = path.join(vertexDir, "jobs")
  if (!fs.existsSync(dir)) return []
  return fs.readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")))
}

interface ListedJob {
  readonly name: string
  readonly displayName: string
  readonly state: string
  readonly successful: number
  readonly failed: number
}

/** the Vertex emulator served again on the run's folder, its jobs listed with the official SDK in Vertex mode */
const listJobs = (vertexDir: string) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const vertex = yield* VertexEmulator.serve({ dir: vertexDir })
    const ai = new GoogleGenAI({
      vertexai: true,
      project: "offpeak-local",
      location: "us-central1",
      httpOptions: { baseUrl: vertex.url },
      googleAuthOptions: { authClient: new PassThroughClient() as never }
    })
    return yield* Effect.promise(async () => {
      const jobs: Array<ListedJob> = []
      for await (const job of await ai.batches.list({ config: { pageSize: 2 } })) {
        const stats = (job as { completionStats?: { successfulCount?: string; failedCount?: string } }).completionStats
        jobs.push({
          name: job.name!,
          displayName: job.displayName!,
          state: String(job.state),
          successful: Number(stats?.successfulCount ?? 0),
          failed: Number(stats?.failedCount ?? 0)
        })
      }
      return jobs
    })
  })))

/** runs `f` with the official BigQuery client on the BigQuery emulator served again on the run's folder */
const withBigQuery = <A>(bigqueryDir: string, f: (bq: BigQuery) => Promise<A>) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const emulator = yield* BigQueryEmulator.serve({ dir: bigqueryDir })
    const bq = new BigQuery({ projectId: "offpeak-local", apiEndpoint: emulator.url, authClient: new PassThroughClient() })
    return yield* Effect.promise(() => f(bq))
  })))

const rowsOf = async <A>(bq: BigQuery, sql: string) => (await bq.query({ query: sql }))[0] as Array<A>

interface Landed {
  readonly sku: number
  readonly category: string
  readonly audience: string
  readonly confidence: number
  readonly summary: string
}

/** the target's rows by sku, and the source's sku count */
const targetOf = (bigqueryDir: string) =>
  withBigQuery(bigqueryDir, async (bq) => ({
    target: await rowsOf<Landed>(bq, "SELECT sku, category, audience, confidence, summary FROM shop.product_categories ORDER BY sku"),
    products: (await rowsOf<{ n: number }>(bq, "SELECT COUNT(*) AS n FROM shop.products"))[0]!.n
  }))

/** every check a finished run of the example must pass: jobs chained on failed keys, the target, the dead letter */
const checkRun = async (stateDir: string, runId: string, products: number) => {
  const emulatorDir = path.join(stateDir, "emulator", "vertex")
  const batches = batchesOf(path.join(stateDir, "state.db"))
  const { target, products: seeded } = await targetOf(path.join(emulatorDir, "bigquery"))
  const dead = readParts(path.join(stateDir, "runs", runId, "dead-letter"))
  const listed = await listJobs(path.join(emulatorDir, "vertex"))
  expect(seeded).toBe(products)
  // the jobs: 3, each over the keys the one before failed, all collected
  expect(batches.map((b) => b.state)).toEqual(["collected", "collected", "collected"])
  expect(batches[0]!.request_count).toBe(products)
  expect(batches[1]!.request_count).toBe(batches[0]!.failed)
  expect(batches[2]!.request_count).toBe(batches[1]!.failed)
  expect(batches[2]!.request_count).toBeLessThan(batches[1]!.request_count)
  // at the emulator: one job per ledger batch, none created twice (display name `offpeak <batch id>`)
  const perName = new Map<string, number>()
  for (const j of listed) perName.set(j.displayName, (perName.get(j.displayName) ?? 0) + 1)
  expect(listed).toHaveLength(batches.length)
  expect([...perName.values()].every((n) => n === 1)).toBe(true)
  expect(new Set(perName.keys())).toEqual(new Set(batches.map((b) => `offpeak ${b.id}`)))
  expect(new Set(listed.map((j) => j.name))).toEqual(new Set(batches.map((b) => b.remote_id)))
  for (const j of listed) expect(j.state).toBe("JOB_STATE_SUCCEEDED")
  // the target: every answered key once; the dead letter: the rows the last job failed, none of them in the target
  const landed = batches.reduce((n, b) => n + b.completed, 0)
  expect(target).toHaveLength(landed)
  expect(new Set(target.map((r) => r.sku)).size).toBe(landed)
  const deadKeys = dead.map((d) => String(d.key))
  expect(deadKeys).toHaveLength(batches[2]!.failed)
  expect(new Set(deadKeys).size).toBe(deadKeys.length)
  const inTarget = new Set(target.map((r) => String(r.sku)))
  expect(deadKeys.filter((k) => inTarget.has(k))).toEqual([])
  expect(landed + deadKeys.length).toBe(products)
  for (const d of dead) {
    expect(d._tag).toBe("Failed")
    expect(d.kind).toBe("provider_error")
    expect(d.message.length).toBeGreaterThan(0)
  }
  for (const r of target) expect(["electronics", "kitchen", "toys", "garden", "clothing", "sports", "office", "beauty"]).toContain(r.category)
  return { batches, target, dead, deadKeys, listed, landed }
}

/** runs a script with this Node, to its end */
const runNode = (script: string, args: ReadonlyArray<string>, options: { readonly cwd: string; readonly env: NodeJS.ProcessEnv }) =>
  new Promise<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, ...options.env }
    for (const [k, v] of Object.entries(options.env)) if (v === undefined) delete env[k]
    const child = spawn(process.execPath, [script, ...args], { cwd: options.cwd, env, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

const runIdOf = (db: string) => query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id

describe("Vertex from BigQuery through the CLI (examples/vertex-bigquery)", () => {
  it("the example's one command, offline: 10,000 products classified, failed keys retried as smaller jobs, the rest dead-lettered", async () => {
    const cwd = tmpDir("vertex-example")
    const started = Date.now()
    const run = await runCli(["run", example], { cwd, env: cliEnv() })
    const seconds = (Date.now() - started) / 1000
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toMatch(/no GOOGLE_CLOUD_PROJECT: running against the local Vertex, BigQuery and Cloud Storage emulators/)
    expect(run.stderr).toMatch(/created shop\.products with 10,000 product descriptions/)
    expect(run.stderr).not.toMatch(/MetadataLookupWarning|metadata\.google\.internal/)
    const summary = /run (vertex-bigquery-\S+): completed[^\n]*\n\s*rows\s+10,000 · succeeded ([\d,]+) · failed ([\d,]+)/.exec(run.stdout)
    expect(summary, run.stdout).not.toBeNull()
    const runId = summary![1]!
    const stateDir = path.join(cwd, ".offpeak")
    const { batches, dead, landed, listed } = await checkRun(stateDir, runId, 10_000)
    expect(Number(summary![2]!.replace(/,/g, ""))).toBe(landed)
    expect(Number(summary![3]!.replace(/,/g, ""))).toBe(dead.length)
    // the example's default faults (5 % RESOURCE_EXHAUSTED, 3 % answers that do not decode) leave some rows failing 3 times
    expect(dead.length).toBeGreaterThan(0)
    expect(dead.some((d) => /RESOURCE_EXHAUSTED/.test(d.message))).toBe(true)
    // what the example's query script shows
    const shown = await runNode(show, [], { cwd, env: cliEnv() })
    expect(shown.code, shown.stderr).toBe(0)
    const figures = JSON.parse(shown.stdout.trim().split("\n").at(-1)!)
    expect([figures.rows, figures.keys]).toEqual([landed, landed])
    const status = await runCli(["status", runId], { cwd, env: cliEnv() })
    expect(status.code, status.stderr).toBe(0)
    for (const b of batches) expect(status.stdout).toContain(b.remote_id!)
    // the run's own counts (its jobs' tallies), in the list and for the failures
    const list = await runCli(["status", "--json"], { cwd, env: cliEnv() })
    const listed1 = (JSON.parse(list.stdout) as ReadonlyArray<{ id: string; counts: { items: number; delivered: number; dead: number } }>)
      .find((r) => r.id === runId)
    expect(listed1?.counts).toMatchObject({ items: 10_000, delivered: landed, dead: dead.length })
    const failures = await runCli(["failures", runId], { cwd, env: cliEnv() })
    expect(failures.stdout).toContain(`${dead.length} rows failed in its table jobs`)
    console.log(
      `vertex example via the CLI: ${seconds.toFixed(1)} s; jobs of ${batches.map((b) => b.request_count.toLocaleString("en-US")).join(" → ")} rows ` +
        `(answered ${batches.map((b) => b.completed).join(" + ")} = ${landed}), ${listed.length} jobs at the emulator for ${batches.length} ledger batches; ` +
        `${landed} keys once in shop.product_categories, ${dead.length} in the dead letter; by category ${JSON.stringify(figures.byCategory)}`
    )
    fs.rmSync(cwd, { recursive: true, force: true })
  }, 180_000)

  it("a misspelt emulator knob is refused naming the closest, before anything starts", async () => {
    const cwd = tmpDir("vertex-knobs")
    const run = await runCli(["run", example], { cwd, env: cliEnv({ OFFPEAK_EMULATOR_KNOBS: JSON.stringify({ rowFailure: [] }) }) })
    expect(run.code).not.toBe(0)
    expect(run.stderr + run.stdout).toMatch(/unknown knob "rowFailure" \(did you mean "rowFailures"\?\)/)
    expect(fs.existsSync(path.join(cwd, ".offpeak", "emulator", "vertex", "bigquery"))).toBe(false)
    console.log(`vertex plugin: OFFPEAK_EMULATOR_KNOBS {"rowFailure":[]} refused (exit ${run.code}): ${/unknown knob[^\n]*/.exec(run.stderr + run.stdout)![0].slice(0, 80)}…`)
    fs.rmSync(cwd, { recursive: true, force: true })
  }, 60_000)

  it("SIGKILL at every step of the first and second job (and the last one's landing and collection), each followed by `offpeak resume`: no job created twice, every key once", async () => {
    const PRODUCTS = 1_000
    // enough failures for three jobs and a dead letter; slow enough that crashes land while jobs run
    const knobs = JSON.stringify({
      rowFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.15 }],
      malformedAnswers: 0.05,
      chunkRows: 200,
      rowsPerSecond: 500
    })
    const env = (failpoints?: string) => cliEnv({ OFFPEAK_EMULATOR_KNOBS: knobs, VERTEX_EXAMPLE_PRODUCTS: String(PRODUCTS), OFFPEAK_FAILPOINTS: failpoints })

    // the same run, never killed: what the killed one must end with
    const clean = tmpDir("vertex-clean")
    const reference = await runCli(["run", example], { cwd: clean, env: env() })
    expect(reference.code, reference.stderr).toBe(0)
    const cleanDir = path.join(clean, ".offpeak")
    const expected = await checkRun(cleanDir, runIdOf(path.join(cleanDir, "state.db")), PRODUCTS)

    const cwd = tmpDir("vertex-torture")
    const stateDir = path.join(cwd, ".offpeak")
    const db = path.join(stateDir, "state.db")
    const vertexDir = path.join(stateDir, "emulator", "vertex", "vertex")
    // each step: the crash point armed in one process, and where the run must stand once it died there
    const steps: ReadonlyArray<{ readonly point: string; readonly job: number; readonly states: ReadonlyArray<string>; readonly jobsAtEmulator: number }> = [
      { point: "batch.sealed:1", job: 1, states: ["sealed"], jobsAtEmulator: 0 },
      { point: "batch.created:1", job: 1, states: ["submitting"], jobsAtEmulator: 1 },
      { point: "batch.submitted:1", job: 1, states: ["submitted"], jobsAtEmulator: 1 },
      { point: "batch.polled:1", job: 1, states: ["submitted"], jobsAtEmulator: 1 },
      { point: "part.written:1", job: 1, states: ["ended"], jobsAtEmulator: 1 },
      { point: "batch.sealed:1", job: 2, states: ["collected", "sealed"], jobsAtEmulator: 1 },
      { point: "batch.created:1", job: 2, states: ["collected", "submitting"], jobsAtEmulator: 2 },
      { point: "batch.submitted:1", job: 2, states: ["collected", "submitted"], jobsAtEmulator: 2 },
      { point: "batch.polled:1", job: 2, states: ["collected", "submitted"], jobsAtEmulator: 2 },
      { point: "part.written:1", job: 2, states: ["collected", "ended"], jobsAtEmulator: 2 },
      // the last job: landed (the second landing of this process: job 2's, landed again on resume, is the first),
      // then its failed rows dead-lettered and the job collected
      { point: "part.written:2", job: 3, states: ["collected", "collected", "ended"], jobsAtEmulator: 3 },
      // only the last job is collected on its own (the ones before are collected with their follow-up's seal)
      { point: "batch.collected:1", job: 3, states: ["collected", "collected", "collected"], jobsAtEmulator: 3 }
    ]
    let runId: string | undefined
    const kills: Array<string> = []
    const started = Date.now()
    for (const step of steps) {
      const args = runId === undefined ? ["run", example] : ["resume", runId]
      const child = await runCli(args, { cwd, env: env(step.point) })
      expect(child.signal, `${step.point} at job ${step.job}: ${child.stderr}`).toBe("SIGKILL")
      expect(child.stderr).toContain(`failpoint ${step.point}: SIGKILL`)
      runId ??= runIdOf(db)
      const batches = batchesOf(db)
      expect(batches.map((b) => b.state), `after ${step.point} at job ${step.job}`).toEqual(step.states)
      const records = jobRecords(vertexDir)
      expect(records, `jobs at the emulator after ${step.point} at job ${step.job}`).toHaveLength(step.jobsAtEmulator)
      expect(new Set(records.map((r) => r.displayName)).size).toBe(records.length)
      kills.push(`${step.point.split(":")[0]}@job${step.job}`)
    }
    const last = await runCli(["resume", runId!], { cwd, env: env() })
    expect(last.code, last.stderr).toBe(0)
    expect(last.stdout).toMatch(new RegExp(`run ${runId}: completed`))
    const seconds = (Date.now() - started) / 1000
    const got = await checkRun(stateDir, runId!, PRODUCTS)
    // the same jobs, answers, landed rows and dead letter as the run never killed
    expect(got.batches.map((b) => [b.request_count, b.completed, b.failed])).toEqual(
      expected.batches.map((b) => [b.request_count, b.completed, b.failed])
    )
    expect(got.target).toEqual(expected.target)
    expect([...got.deadKeys].sort()).toEqual([...expected.deadKeys].sort())
    expect(got.dead.length).toBeGreaterThan(0)
    console.log(
      `vertex torture via the CLI: ${kills.length} SIGKILLs (${kills.join(", ")}) + ${kills.length} resumes in ${seconds.toFixed(1)} s; ` +
        `${got.listed.length} jobs at the emulator for ${got.batches.length} ledger batches (0 created twice); jobs of ` +
        `${got.batches.map((b) => b.request_count).join(" → ")} rows; ${got.landed} keys once in the target, ${got.dead.length} dead-lettered; ` +
        `target and dead letter identical to the run never killed`
    )
    for (const dir of [clean, cwd]) fs.rmSync(dir, { recursive: true, force: true })
  }, 300_000)
})

// ===== no row through the process =====

const BIG = process.env.OFFPEAK_VERTEX_SCALE_1M === "1"
const SIZES = BIG ? [10_000, 1_000_000] : [10_000]

interface Part {
  readonly sent: number
  readonly received: number
  readonly requests: number
}

interface Counter extends Part {
  readonly poll: Part
  readonly work: Part
}

interface Counters {
  readonly bigquery: Counter
  readonly vertex: Counter
}

/** the first JSON line a child prints (its log lines are skipped), parsed */
const firstLine = (child: ChildProcess) =>
  new Promise<any>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! })
    let done = false
    lines.on("line", (line) => {
      if (!done && line.startsWith("{")) {
        done = true
        resolve(JSON.parse(line))
      }
    })
    child.once("close", (code) => !done && reject(new Error(`${path.basename(String(child.spawnargs[1]))} exited with ${code} before its result`)))
  })

const countersOf = async (control: string): Promise<Counters> => (await (await fetch(`${control}/counters`)).json()) as Counters

let stack: ChildProcess | undefined
/** the emulators' folder of the scale test (a million rows of DuckDB tables): removed once their process is gone */
const stackDir = tmpDir("vertex-scale-stack")
afterAll(async () => {
  if (stack !== undefined && stack.exitCode === null && stack.signalCode === null) {
    const gone = new Promise((resolve) => stack!.once("exit", resolve))
    stack.kill("SIGKILL")
    await gone
  }
  fs.rmSync(stackDir, { recursive: true, force: true })
})

describe("Vertex from BigQuery at scale, through Pipeline.run", () => {
  it(`a ${SIZES.map((n) => n.toLocaleString("en-US")).join(" and a ")}-row job: offpeak's peak RSS and its bytes do not grow with the rows`, async () => {
    stack = spawn(process.execPath, [path.join(FIXTURES, "vertexStack.ts"), JSON.stringify({ rows: SIZES, dir: stackDir })], { stdio: ["ignore", "pipe", "inherit"] })
    const urls = await firstLine(stack)
    const results: Array<{
      rows: number
      rssMb: number
      sampledMb: number
      bytes: number
      workBytes: number
      pollBytes: number
      workRequests: number
      polls: number
      seconds: number
    }> = []
    for (const rows of SIZES) {
      const before = await countersOf(urls.control)
      const stateDir = tmpDir(`vertex-scale-${rows}`)
      const child = spawn(
        process.execPath,
        [path.join(FIXTURES, "vertexPipelineRun.ts"), JSON.stringify({ ...urls, rows, runId: `scale-${rows}`, stateDir })],
        { stdio: ["ignore", "pipe", "inherit"] }
      )
      const out = await firstLine(child)
      fs.rmSync(stateDir, { recursive: true, force: true })
      const after = await countersOf(urls.control)
      const delta = (f: (c: Counters) => number) => f(after) - f(before)
      const part = (k: "poll" | "work") => delta((c) => c.bigquery[k].sent + c.bigquery[k].received + c.vertex[k].sent + c.vertex[k].received)
      const r = {
        rows,
        rssMb: Math.round(out.maxRssKb / 1024),
        sampledMb: Math.round(out.peakSampledRss / 1024 / 1024),
        bytes: delta((c) => c.bigquery.sent + c.bigquery.received + c.vertex.sent + c.vertex.received),
        workBytes: part("work"),
        pollBytes: part("poll"),
        workRequests: delta((c) => c.bigquery.work.requests + c.vertex.work.requests),
        polls: delta((c) => c.bigquery.poll.requests + c.vertex.poll.requests),
        seconds: Math.round(out.elapsedMs / 100) / 10
      }
      results.push(r)
      expect(out.state).toBe("completed")
      expect([out.rows, out.succeeded, out.failed]).toEqual([rows, rows, 0])
      expect(out.jobs).toEqual([{ rows, state: "JOB_STATE_SUCCEEDED", completed: rows, failed: 0 }])
      console.log(
        `vertex pushdown ${rows.toLocaleString("en-US")} rows through Pipeline.run: ${r.seconds} s, peak RSS ${r.rssMb} MB (sampled ${r.sampledMb} MB); ` +
          `bytes sent + received ${r.bytes} = ${r.workBytes} in ${r.workRequests} requests that do the work (stage, create, find, tally, land) + ` +
          `${r.pollBytes} in ${r.polls} looks at running jobs (BigQuery ${delta((c) => c.bigquery.sent)} sent / ${delta((c) => c.bigquery.received)} received, ` +
          `Vertex ${delta((c) => c.vertex.sent)} / ${delta((c) => c.vertex.received)})`
      )
    }
    const small = results[0]!
    // the bytes through this process are the jobs' definitions, statuses and counts: a few dozen kilobytes
    expect(small.bytes).toBeLessThan(200_000)
    expect(small.rssMb).toBeLessThan(400)
    if (results.length > 1) {
      const big = results[1]!
      console.log(
        `vertex pushdown 1,000,000 vs 10,000 rows through Pipeline.run: peak RSS ${big.rssMb} vs ${small.rssMb} MB (×${(big.rssMb / small.rssMb).toFixed(2)}), ` +
          `work bytes ${big.workBytes} vs ${small.workBytes} (×${(big.workBytes / small.workBytes).toFixed(2)}), all bytes ×${(big.bytes / small.bytes).toFixed(2)} ` +
          `(looks at running jobs ${small.polls} → ${big.polls}: they follow the jobs' duration, ${small.seconds} s → ${big.seconds} s, not their rows)`
      )
      expect(big.rssMb / small.rssMb).toBeLessThan(1.2)
      expect(big.workBytes / small.workBytes).toBeLessThan(1.2)
    }
  }, 60 * 60 * 1000)
})
