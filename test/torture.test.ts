/**
 * Crash torture: one run of 8,000 rows is SIGKILLed again and again —
 * at every crash point of the pipeline and the OpenAI adapter (reading, after
 * upload before create, after create before the ledger write, while polling,
 * mid-download, mid-sink-write, …) and at random moments — and resumed each
 * time. At the end every row must be in the sink exactly once with its own
 * answer, no request may have been sent in two batches, and the ledger and the
 * sink must agree.
 */
import { afterAll, describe, expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { openai, openAiSent } from "./support/providers.ts"

const expectedLabel = openai.expected
import { killAll, prng, query, readParts, repo, runCli, startCli, startEmulator, tmpDir, writeTickets } from "./support/files.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

const ROWS = 8_000

// every crash point, at a first and a later pass
const POINTS = [
  "source.admitted",
  "batch.sealed",
  "batch.uploaded",
  "batch.created",
  "batch.submitted",
  "batch.polled",
  "results.recorded",
  "part.assigned",
  "part.writing",
  "part.written",
  "batch.collected"
] as const
const SCHEDULE: Array<{ readonly failpoint?: string; readonly afterMs?: number }> = [
  ...POINTS.map((p) => ({ failpoint: `${p}:1` })),
  ...POINTS.map((p) => ({ failpoint: `${p}:${p === "batch.polled" ? 6 : p === "source.admitted" ? 2 : 3}` })),
  // and at random moments
  ...Array.from({ length: 5 }, (_, i) => ({ afterMs: 300 + Math.floor(prng(99 + i)() * 1_200) }))
]

describe("crash torture", () => {
  it(`SIGKILL at ${SCHEDULE.length} points, resume each time: every row exactly once, no request paid twice`, async () => {
    const dir = tmpDir("torture")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, ROWS, 11)
    const out = path.join(dir, "out")
    const state = path.join(dir, "state")
    const db = path.join(state, "state.db")

    const url = await startEmulator("openai", dir, { linesPerSecond: 4_000, validationMs: 30 })
    const env = {
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: url,
      OFFPEAK_POLL_INITIAL: "50 millis",
      OFFPEAK_POLL_MAX: "200 millis",
      OFFPEAK_TEST_INPUT: input,
      OFFPEAK_TEST_OUT: out,
      OFFPEAK_TEST_MAX_REQUESTS: "200",
      OFFPEAK_TEST_IN_FLIGHT: "3"
    }

    let runId: string | undefined
    let kills = 0
    let resumes = 0
    let completedEarly = 0
    const hit: Array<string> = []
    for (const step of SCHEDULE) {
      const args = runId === undefined
        ? ["run", fixture, "--state-dir", state]
        : ["resume", runId, "--state-dir", state]
      if (runId !== undefined) resumes++
      const attempt = startCli(args, { cwd: dir, env: { ...env, OFFPEAK_FAILPOINTS: step.failpoint ?? "" } })
      const timer = step.afterMs === undefined ? undefined : setTimeout(() => attempt.child.kill("SIGKILL"), step.afterMs)
      const exit = await attempt.exit
      clearTimeout(timer)
      if (exit.signal === "SIGKILL") {
        kills++
        hit.push(step.failpoint ?? `random ${step.afterMs} ms`)
      } else {
        expect(exit.code, exit.stderr).toBe(0)
        completedEarly++
      }
      if (runId === undefined && fs.existsSync(db)) {
        runId = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]?.id
      }
    }
    expect(runId).toBeDefined()
    const last = await runCli(["resume", runId!, "--state-dir", state], { cwd: dir, env })
    expect(last.code, last.stderr).toBe(0)
    expect(last.stdout).toMatch(/completed/)

    // every row exactly once, with its own answer
    const rows = readParts(out)
    expect(new Set(rows.map((r) => r.id)).size).toBe(ROWS)
    expect(rows).toHaveLength(ROWS)
    for (const r of rows) expect(r.output).toEqual(expectedLabel({ id: r.id, text: r.text }))
    expect(readParts(path.join(out, "dead-letter"))).toHaveLength(0)

    // no request sent twice: every created batch's lines are distinct, and every request was sent
    const batchesSent = await openAiSent(url)
    const created = batchesSent.length
    const ids = batchesSent.flat()
    expect(new Set(ids).size).toBe(ids.length)
    expect(ids).toHaveLength(ROWS)

    // the ledger and the sink agree
    // a row is in a committed part of its own, or goes with its request in a committed range of settled requests
    const [counts] = query<{ items: number; delivered: number; undelivered: number }>(
      db,
      `SELECT r.item_count AS items,
        (SELECT SUM(p.delivered) FROM offpeak_parts p WHERE p.run_id = r.id AND p.state = 'committed') AS delivered,
        (SELECT COUNT(*) FROM offpeak_items i WHERE i.run = r.num AND NOT (
          (i.own = 1 AND EXISTS (SELECT 1 FROM offpeak_parts p
            WHERE p.run_id = r.id AND p.seq = i.part AND p.lo IS NULL AND p.state = 'committed'))
          OR (i.own = 0 AND EXISTS (SELECT 1 FROM offpeak_requests q JOIN offpeak_parts p
            ON p.run_id = r.id AND q.settled BETWEEN p.lo AND p.hi AND p.state = 'committed'
            WHERE q.run = i.run AND q.id = i.request AND q.state IN ('succeeded', 'failed'))))) AS undelivered
       FROM offpeak_runs r WHERE r.id = '${runId}'`
    )
    expect(counts).toEqual({ items: ROWS, delivered: ROWS, undelivered: 0 })
    const batches = query<{ n: number }>(db, `SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL`)[0]!.n
    expect(created).toBe(batches)
    expect(query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_parts WHERE state <> 'committed'")[0]!.n).toBe(0)
    // nothing half-written is left behind: no temporary files, no batch files once every batch is collected
    const leftovers = (dir: string): Array<string> =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? leftovers(path.join(dir, e.name)) : e.name.includes(".tmp") || e.name.endsWith(".jsonl") && dir.endsWith("batches") ? [path.join(dir, e.name)] : []
      )
    expect(leftovers(out)).toEqual([])
    expect(leftovers(path.join(state, "runs"))).toEqual([])
    const manifestRows = JSON.parse(fs.readFileSync(path.join(out, "_manifest.json"), "utf8")).parts
      .reduce((s: number, p: { rows: number }) => s + p.rows, 0)
    expect(manifestRows).toBe(ROWS)

    console.log(
      `crash torture: ${kills} kills (${new Set(hit).size} distinct points: ${hit.join(", ")}), ${resumes + 1} resumes, ` +
        `${completedEarly} attempts ran to the end unkilled, ${ROWS} rows, ${created} batches created, 0 duplicates`
    )
    expect(kills).toBeGreaterThanOrEqual(20)
  }, 600_000)
})
