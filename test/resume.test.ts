/**
 * Crash and resume through the CLI, for every provider: the run is SIGKILLed
 * after some batches were submitted to an emulator in another process, then
 * `offpeak resume` finishes it. No batch is created twice for the same rows and
 * the sink holds every row exactly once, with its own answer.
 */
import { afterAll, describe, expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { killAll, query, readParts, repo, runCli, startCli, startEmulator, submittedBatches, tmpDir, waitFor, writeTickets } from "./support/files.ts"
import * as Providers from "./support/providers.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

/** `rows` tickets, an emulator in another process, and the CLI's environment for the fixture pipeline */
const setup = async (
  p: Providers.ProviderCase,
  name: string,
  rows: number,
  options: { readonly seed: number; readonly maxRequests: number; readonly knobs?: object; readonly env?: object }
) => {
  const dir = tmpDir(`${name}-${p.name}`)
  const input = path.join(dir, "tickets.csv")
  writeTickets(input, rows, options.seed)
  const out = path.join(dir, "out")
  const url = await startEmulator(p.name, dir, options.knobs)
  const env = {
    ...p.cliEnv(url),
    ...options.env,
    OFFPEAK_TEST_INPUT: input,
    OFFPEAK_TEST_OUT: out,
    OFFPEAK_TEST_MAX_REQUESTS: String(options.maxRequests),
    OFFPEAK_TEST_IN_FLIGHT: "3"
  }
  const state = path.join(dir, "state")
  return { dir, out, url, env, state, db: path.join(state, "state.db") }
}

describe.each(Providers.all)("$name: crash and resume", (p) => {
  it("SIGKILL after some batches were submitted, then resume: no batch created twice, every row once", async () => {
    const { dir, out, url, env, state, db } = await setup(p, "resume", 4_000, {
      seed: 3,
      maxRequests: 400,
      knobs: { linesPerSecond: 1_500 },
      env: { OFFPEAK_POLL_INITIAL: "100 millis", OFFPEAK_POLL_MAX: "500 millis" }
    })
    const first = startCli(["run", fixture, "--provider", p.name, "--state-dir", state], { cwd: dir, env })
    await waitFor("two submitted batches", () => submittedBatches(db) >= 2)
    first.child.kill("SIGKILL")
    const killed = await first.exit
    expect(killed.signal).toBe("SIGKILL")
    const before = { batches: submittedBatches(db), rows: readParts(out).length }
    expect(before.rows).toBeLessThan(4_000)
    const runId = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id

    const resumed = await runCli(["resume", runId, "--state-dir", state], { cwd: dir, env })
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stdout).toMatch(/completed/)

    const rows = readParts(out)
    expect(rows).toHaveLength(4_000)
    expect(new Set(rows.map((r) => r.id)).size).toBe(4_000)
    for (const r of rows) expect(r.output).toEqual(p.expected({ id: r.id, text: r.text }))
    const created = await p.created(url)
    const sent = created.flat()
    expect(new Set(sent).size).toBe(sent.length)
    expect(sent).toHaveLength(4_000)
    expect(created.length).toBe(submittedBatches(db))
    console.log(
      `${p.name} crash/resume: SIGKILL with ${before.batches} batches submitted and ${before.rows} rows in the sink; ` +
        `after resume ${rows.length} rows (${new Set(rows.map((r) => r.id)).size} distinct), ${created.length} batches created ` +
        `for ${sent.length} requests (${new Set(sent).size} distinct)`
    )
  }, 180_000)

  it("--mode sync, SIGKILL after answers were recorded, then resume: every row once with its own answer", async () => {
    const { dir, out, url, env, state, db } = await setup(p, "resume-sync", 1_500, { seed: 7, maxRequests: 100 })
    const killed = await runCli(["run", fixture, "--provider", p.name, "--mode", "sync", "--state-dir", state], {
      cwd: dir,
      env: { ...env, OFFPEAK_FAILPOINTS: "results.recorded:4" }
    })
    expect(killed.signal).toBe("SIGKILL")
    const recorded = query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_requests WHERE state = 'succeeded'")[0]!.n
    expect(recorded).toBeGreaterThan(0)
    expect(recorded).toBeLessThan(1_500)
    const runId = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id

    const resumed = await runCli(["resume", runId, "--state-dir", state], { cwd: dir, env })
    expect(resumed.code, resumed.stderr).toBe(0)
    const rows = readParts(out)
    expect(rows).toHaveLength(1_500)
    expect(new Set(rows.map((r) => r.id)).size).toBe(1_500)
    for (const r of rows) expect(r.output).toEqual(p.expected({ id: r.id, text: r.text }))
    // no batch at the provider: every batch of the run was sent as synchronous calls, before and after the kill
    expect(await p.created(url)).toHaveLength(0)
    const modes = query<{ mode: string; state: string; n: number }>(db, "SELECT mode, state, COUNT(*) AS n FROM offpeak_batches GROUP BY mode, state")
    expect(modes).toEqual([{ mode: "sync", state: "collected", n: 15 }])
    console.log(`${p.name} sync crash/resume: SIGKILL with ${recorded} answers recorded; after resume ${rows.length} rows, 15 sync batches, 0 batches created`)
  }, 180_000)
})

/**
 * A run that did not finish keeps its batches and its rows: a new run of the pipeline beside it is refused while it
 * has batches at the provider (the new one would pay for the same requests again), a resume against another endpoint
 * is refused (the batches are not there, and answers from elsewhere would be mixed in), and a resume of a completed
 * run does nothing but print its summary (finishing the sink again would remove a later run's rows).
 */
describe("a run that did not finish", () => {
  it("refuses a new run beside it, a resume elsewhere, and a resume once complete; nothing is sent twice or lost", async () => {
    const p = Providers.openai
    const { dir, out, url, env, state, db } = await setup(p, "unfinished", 2_000, {
      seed: 11,
      maxRequests: 200,
      knobs: { linesPerSecond: 1_500 },
      env: { OFFPEAK_POLL_INITIAL: "100 millis", OFFPEAK_POLL_MAX: "300 millis" }
    })
    const args = ["--provider", p.name, "--state-dir", state]
    const first = startCli(["run", fixture, ...args], { cwd: dir, env })
    // killed with rows delivered and batches at the provider
    const atProvider = () => {
      try {
        return query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL AND state <> 'collected'")[0]!.n
      } catch {
        return 0
      }
    }
    await waitFor("rows delivered and batches out", () => readParts(out).length > 0 && atProvider() > 0)
    first.child.kill("SIGKILL")
    await first.exit
    const runId = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id
    const delivered = readParts(out).length
    const createdBefore = (await p.created(url)).length

    // a new run: refused, naming the run and the command that finishes it; nothing sent, nothing removed
    const beside = await runCli(["run", fixture, ...args], { cwd: dir, env })
    expect(beside.code).not.toBe(0)
    expect(beside.stdout + beside.stderr).toMatch(new RegExp(`run ${runId} of this pipeline did not finish`))
    expect(beside.stdout + beside.stderr).toContain(`\`offpeak resume ${runId} --state-dir ${state}\` finishes it`)
    expect(beside.stdout + beside.stderr).toContain(`\`offpeak cancel ${runId} --state-dir ${state}\` stops it`)
    expect((await p.created(url)).length).toBe(createdBefore)
    expect(readParts(out)).toHaveLength(delivered)
    expect(query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_runs")[0]!.n).toBe(1)

    // a resume against the local emulator (no API key in this shell): refused, naming where the run was started
    const elsewhere = await runCli(["resume", runId, "--state-dir", state], {
      cwd: dir,
      env: { ...env, OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined }
    })
    expect(elsewhere.code).not.toBe(0)
    expect(elsewhere.stdout + elsewhere.stderr).toMatch(/was started against http:\/\/127\.0\.0\.1:\d+.*would send to the local openai emulator/)
    expect(readParts(out)).toHaveLength(delivered)

    // the resume with its own settings finishes it: every row once
    const resumed = await runCli(["resume", runId, "--state-dir", state], { cwd: dir, env })
    expect(resumed.code, resumed.stderr).toBe(0)
    // its figures are this process's, and it says so
    expect(resumed.stdout).toMatch(/: completed in [\d.]+ m?s \(this process; the run started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)/)
    const ids = (rows: ReadonlyArray<{ id: string }>) => rows.map((r) => r.id)
    expect(new Set(ids(readParts(out))).size).toBe(2_000)
    expect(readParts(out)).toHaveLength(2_000)
    const sent = (await p.created(url)).flat()
    expect(new Set(sent).size).toBe(sent.length)

    // now a new run may start (its answers all from the result cache), and its rows replace the first run's
    const second = await runCli(["run", fixture, ...args], { cwd: dir, env })
    expect(second.code, second.stderr).toBe(0)
    expect((await p.created(url)).flat()).toHaveLength(sent.length)
    const runs = query<{ id: string }>(db, "SELECT id FROM offpeak_runs ORDER BY num")
    expect(runs).toHaveLength(2)
    const manifest = () => JSON.parse(fs.readFileSync(path.join(out, "_manifest.json"), "utf8")).parts as Array<{ runId: string }>
    expect(new Set(manifest().map((m) => m.runId))).toEqual(new Set([runs[1]!.id]))
    expect(readParts(out)).toHaveLength(2_000)

    // resuming the first, complete run does nothing but say so: the later run's rows stay
    const again = await runCli(["resume", runId, "--state-dir", state], { cwd: dir, env })
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr).toMatch(/completed at .*: there is nothing left to resume/)
    expect(again.stdout).toMatch(/rows\s+2,000 · succeeded 2,000/)
    expect(new Set(manifest().map((m) => m.runId))).toEqual(new Set([runs[1]!.id]))
    expect(new Set(ids(readParts(out))).size).toBe(2_000)
    expect(readParts(out)).toHaveLength(2_000)
    console.log(
      `unfinished run: killed with ${delivered} rows delivered and ${createdBefore} batches created; a new run beside it ` +
        `(exit ${beside.code}) and a resume on the emulator (exit ${elsewhere.code}) refused with nothing sent; resumed: ` +
        `2,000 rows once, ${sent.length} requests sent once; a second run replaced them (2,000 rows); a resume of the ` +
        `first did nothing (exit ${again.code}), the sink unchanged`
    )
  }, 180_000)
})
