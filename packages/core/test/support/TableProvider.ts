/**
 * A provider and a source for the pushdown path, both on a folder of JSON "tables" that several processes share:
 * the source stages `<batch>_input` from its `docs` table (or from the failed rows of an earlier job's output), the
 * provider's jobs read it and write `<batch>_output` (an answer, or a status for rows that fail), the source lands
 * answers into `target` (a merge on the key) and lists failures. Jobs are files too, so a killed process's job is
 * found by the next one.
 */
import * as Provider from "../../src/Provider.ts"
import * as ProviderError from "../../src/ProviderError.ts"
import type * as Source from "../../src/Source.ts"
import { Effect, Option, Result, Schedule, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

export interface Doc {
  readonly id: string
  readonly text: string
}

interface OutputRow {
  readonly id: string
  readonly answer: string | null
  readonly status: string
}

interface Job {
  readonly id: string
  readonly batchId: string
  readonly input: string
  readonly output: string
  polls: number
  state: "running" | "succeeded" | "cancelled"
}

const readJson = <A>(file: string, fallback: A): A => {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as A
  } catch {
    return fallback
  }
}

const writeJson = (file: string, value: unknown) => {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, JSON.stringify(value))
  fs.renameSync(tmp, file)
}

/** the folder's tables */
export const tables = (dir: string) => ({
  read: <A>(name: string): Array<A> => readJson(path.join(dir, "tables", `${name}.json`), [] as Array<A>),
  write: (name: string, rows: ReadonlyArray<unknown>) => writeJson(path.join(dir, "tables", `${name}.json`), rows),
  jobs: (): Array<Job> =>
    fs.existsSync(path.join(dir, "jobs"))
      ? fs.readdirSync(path.join(dir, "jobs")).filter((f) => f.endsWith(".json")).map((f) => readJson<Job>(path.join(dir, "jobs", f), null as never))
      : []
})

/** the pushdown source over `docs` in `dir`: a request per doc, answers landed into `target` */
export const source = (dir: string): Source.Source<Doc> & { readonly pushdown: Source.Pushdown } => {
  const t = tables(dir)
  return {
    name: "docs",
    schema: Schema.Struct({ id: Schema.String, text: Schema.String }),
    read: Stream.die("a pushdown source is not read row by row"),
    pushdown: {
      stage: ({ batchId, retryOf }) =>
        Effect.sync(() => {
          const failed = retryOf === undefined
            ? undefined
            : new Set(t.read<OutputRow>(retryOf.output).filter((r) => r.status !== "").map((r) => r.id))
          const rows = t.read<Doc>("docs").filter((d) => failed === undefined || failed.has(d.id))
          t.write(`${batchId}_input`, rows.map((d) => ({ id: d.id, request: { prompt: d.text } })))
          return {
            kind: "test-table",
            model: "m",
            input: `${batchId}_input`,
            output: `${batchId}_output`,
            keyColumns: ["id"],
            rows: rows.length
          }
        }),
      tally: (staged) =>
        Effect.sync(() => {
          const out = t.read<OutputRow>(staged.output)
          const failed = out.filter((r) => r.status !== "").length
          return { succeeded: out.length - failed, failed }
        }),
      land: (staged) =>
        Effect.sync(() => {
          const target = new Map(t.read<{ id: string; answer: string }>("target").map((r) => [r.id, r]))
          let n = 0
          for (const r of t.read<OutputRow>(staged.output)) {
            if (r.status !== "" || r.answer === null) continue
            target.set(r.id, { id: r.id, answer: r.answer })
            n++
          }
          t.write("target", [...target.values()].sort((a, b) => a.id.localeCompare(b.id)))
          return n
        }),
      failures: (staged) =>
        Stream.fromIterable(
          t.read<OutputRow>(staged.output).filter((r) => r.status !== "").sort((a, b) => a.id.localeCompare(b.id))
            .map((r) => ({ key: r.id, message: r.status, raw: JSON.stringify(r) }))
        )
    }
  }
}

/**
 * The provider: a job ends after `pollsToComplete` polls; a row whose text contains `fail×N` fails its first N
 * attempts (counted across jobs in `attempts.json`), `always` fails every time.
 */
export const provider = (dir: string, options: { readonly pollsToComplete?: number } = {}): Provider.Service => {
  const t = tables(dir)
  const jobFile = (id: string) => path.join(dir, "jobs", `${id}.json`)
  const unsupported = (operation: string) =>
    new ProviderError.ProviderError({
      provider: "tables",
      operation,
      reason: new ProviderError.Unsupported({ message: "this test provider runs table jobs only" })
    })
  const finish = (job: Job) => {
    const attempts = readJson<Record<string, number>>(path.join(dir, "attempts.json"), {})
    const out = t.read<{ id: string; request: { prompt: string } }>(job.input).map((row): OutputRow => {
      const n = (attempts[row.id] ?? 0) + 1
      attempts[row.id] = n
      const times = /fail×(\d+)/.exec(row.request.prompt)
      const fails = row.request.prompt.includes("always") || (times !== null && n <= Number(times[1]))
      return fails
        ? { id: row.id, answer: null, status: `RESOURCE_EXHAUSTED: attempt ${n}` }
        : { id: row.id, answer: row.request.prompt.toUpperCase(), status: "" }
    })
    writeJson(path.join(dir, "attempts.json"), attempts)
    t.write(job.output, out)
  }
  return {
    name: "tables",
    limits: { maxRequests: 1_000_000, maxBytes: 1 << 30, maxRequestBytes: 1 << 20, maxInFlight: 1 },
    tables: ["test-table"],
    encode: () => Result.fail("tables only"),
    submit: (submission) =>
      Effect.suspend(() => {
        if (submission._tag !== "Table") return Effect.fail(unsupported("submit"))
        const id = `job-${t.jobs().length + 1}-${Math.random().toString(36).slice(2, 6)}`
        writeJson(jobFile(id), {
          id,
          batchId: submission.batchId,
          input: submission.input,
          output: submission.output,
          polls: 0,
          state: "running"
        } satisfies Job)
        return Effect.succeed({ id })
      }),
    find: (submission) =>
      Effect.sync(() => {
        const job = t.jobs().find((j) => j.batchId === submission.batchId)
        return job === undefined ? Option.none() : Option.some({ id: job.id })
      }),
    status: (remote) =>
      Effect.suspend(() => {
        const job = readJson<Job | null>(jobFile(remote.id), null)
        if (job === null) {
          return Effect.fail(new ProviderError.ProviderError({
            provider: "tables",
            operation: "status",
            reason: new ProviderError.NotFound({ message: remote.id })
          }))
        }
        job.polls++
        if (job.state === "running" && job.polls >= (options.pollsToComplete ?? 2)) {
          finish(job)
          job.state = "succeeded"
        }
        writeJson(jobFile(job.id), job)
        const rows = t.read(job.input).length
        const state: Provider.State = job.state === "running" ? "running" : job.state === "cancelled" ? "cancelled" : "completed"
        return Effect.succeed({
          state,
          providerState: job.state,
          counts: { total: rows, completed: job.state === "succeeded" ? rows : 0, failed: 0 },
          issues: []
        })
      }),
    results: () => Stream.fail(unsupported("results")),
    cancel: (remote) =>
      Effect.sync(() => {
        const job = readJson<Job | null>(jobFile(remote.id), null)
        if (job !== null && job.state === "running") writeJson(jobFile(job.id), { ...job, state: "cancelled" })
      }),
    decodeOutput: () => Result.fail("tables only"),
    pollSchedule: Schedule.spaced("10 millis").pipe(Schedule.setInputType<Provider.Status>()),
    sync: () => Effect.fail(unsupported("sync"))
  }
}
