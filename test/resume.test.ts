/**
 * Crash and resume through the CLI, for every provider: the run is SIGKILLed
 * after some batches were submitted to an emulator in another process, then
 * `offpeak resume` finishes it. No batch is created twice for the same rows and
 * the sink holds every row exactly once, with its own answer.
 */
import { afterAll, describe, expect, it } from "vitest"
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
