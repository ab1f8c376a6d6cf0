/**
 * No row through the process: a pushed-down classification job driven by
 * VertexBatch + BigQuery.pushdown in a process of its own
 * (`fixtures/vertexDrive.ts`), against the emulators in another
 * (`fixtures/vertexStack.ts`, behind byte-counting proxies). The driver's
 * peak RSS and the bytes it sends and receives are measured for 10,000 rows,
 * and — with `OFFPEAK_VERTEX_SCALE_1M=1`, about ten minutes on two cores —
 * for 1,000,000 rows: they must not grow with the rows.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { afterAll, describe, expect, it } from "vitest"

const FIXTURES = path.join(import.meta.dirname, "fixtures")
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

const counters = async (control: string): Promise<Counters> => (await (await fetch(`${control}/counters`)).json()) as Counters

let stack: ChildProcess | undefined
afterAll(() => {
  stack?.kill()
})

describe("Vertex from BigQuery, pushed down, at scale", () => {
  it(`a ${SIZES.map((n) => n.toLocaleString("en")).join(" and a ")}-row job: the driver's peak RSS and its bytes do not grow with the rows`, async () => {
    stack = spawn(process.execPath, [path.join(FIXTURES, "vertexStack.ts"), JSON.stringify({ rows: SIZES })], { stdio: ["ignore", "pipe", "inherit"] })
    const urls = await firstLine(stack)
    const results: Array<{
      rows: number
      rssMb: number
      bytes: number
      workBytes: number
      pollBytes: number
      workRequests: number
      polls: number
      seconds: number
      landed: number
    }> = []
    for (const rows of SIZES) {
      const before = await counters(urls.control)
      const child = spawn(process.execPath, [path.join(FIXTURES, "vertexDrive.ts"), JSON.stringify({ ...urls, rows, runId: `scale-${rows}` })], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      const out = await firstLine(child)
      const after = await counters(urls.control)
      const delta = (f: (c: Counters) => number) => f(after) - f(before)
      const part = (k: "poll" | "work") => delta((c) => c.bigquery[k].sent + c.bigquery[k].received + c.vertex[k].sent + c.vertex[k].received)
      const r = {
        rows,
        rssMb: Math.round(out.maxRssKb / 1024),
        bytes: delta((c) => c.bigquery.sent + c.bigquery.received + c.vertex.sent + c.vertex.received),
        workBytes: part("work"),
        pollBytes: part("poll"),
        workRequests: delta((c) => c.bigquery.work.requests + c.vertex.work.requests),
        polls: delta((c) => c.bigquery.poll.requests + c.vertex.poll.requests),
        seconds: Math.round(out.elapsedMs / 100) / 10,
        landed: out.landed
      }
      results.push(r)
      expect(out.landed).toBe(rows)
      expect(out.jobs).toHaveLength(1)
      expect(out.jobs[0].tally).toEqual({ succeeded: rows, failed: 0 })
      console.log(
        `vertex pushdown ${rows.toLocaleString("en")} rows: ${r.seconds} s, driver peak RSS ${r.rssMb} MB; bytes sent + received ${r.bytes} = ${r.workBytes} in ${r.workRequests} requests that do the work (stage, create, tally, land) + ${r.pollBytes} in ${r.polls} looks at running jobs (BigQuery ${delta((c) => c.bigquery.sent)} sent / ${delta((c) => c.bigquery.received)} received, Vertex ${delta((c) => c.vertex.sent)} / ${delta((c) => c.vertex.received)})`
      )
    }
    const small = results[0]!
    // the bytes through this process are the jobs' definitions, statuses and counts: a few dozen kilobytes
    expect(small.bytes).toBeLessThan(200_000)
    expect(small.rssMb).toBeLessThan(300)
    if (results.length > 1) {
      const big = results[1]!
      console.log(
        `vertex pushdown 1,000,000 vs 10,000 rows: peak RSS ×${(big.rssMb / small.rssMb).toFixed(2)}, work bytes ×${(big.workBytes / small.workBytes).toFixed(2)}, all bytes ×${(big.bytes / small.bytes).toFixed(2)} (looks at running jobs ${small.polls} → ${big.polls}: they follow the jobs' duration, ${small.seconds} s → ${big.seconds} s, not their rows)`
      )
      expect(big.rssMb / small.rssMb).toBeLessThan(1.2)
      expect(big.workBytes / small.workBytes).toBeLessThan(1.2)
    }
  }, 60 * 60 * 1000)
})
