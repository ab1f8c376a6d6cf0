/**
 * One owner per run: two processes on one state (a SQLite file, a Postgres ledger) never both work a pipeline —
 * a second `run` or a `resume` of a live run is refused at once, naming the owner; a SIGKILLed owner does not block
 * the resume that follows; nothing is created twice at the provider, no row delivered twice.
 */
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import * as path from "node:path"
import { describePostgres, freshSchema } from "../packages/core/test/support/postgres.ts"
import { killAll, query, readParts, repo, runCli, startCli, startEmulator, submittedBatches, tmpDir, waitFor, writeTickets } from "./support/files.ts"
import { openAiSent } from "./support/providers.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

/** a slow emulator in its own process, the tickets CSV and the environment the CLI needs */
const setup = async (name: string, rows: number, seed: number, linesPerSecond = 250) => {
  const dir = tmpDir(name)
  const input = path.join(dir, "tickets.csv")
  writeTickets(input, rows, seed)
  const out = path.join(dir, "out")
  const url = await startEmulator("openai", dir, { linesPerSecond, validationMs: 0 })
  const env = {
    OPENAI_API_KEY: "test",
    OPENAI_BASE_URL: url,
    OFFPEAK_POLL_INITIAL: "100 millis",
    OFFPEAK_POLL_MAX: "300 millis",
    OFFPEAK_TEST_INPUT: input,
    OFFPEAK_TEST_OUT: out,
    OFFPEAK_TEST_MAX_REQUESTS: "100"
  }
  return { dir, out, url, env, state: path.join(dir, "state") }
}

/** the emulator created each request once, and the sink holds each row once */
const exactlyOnce = async (url: string, out: string, rows: number) => {
  const sent = (await openAiSent(url)).flat()
  expect(sent).toHaveLength(rows)
  expect(new Set(sent).size).toBe(rows)
  const delivered = readParts(out)
  expect(delivered).toHaveLength(rows)
  expect(new Set(delivered.map((r) => r.id)).size).toBe(rows)
  return sent.length
}

const refusal = /pipeline "tickets" is being worked by run (\S+): process (\d+) on \S+, since .* \(last heartbeat \d+ s ago\)/

describe("one owner per run (SQLite state)", () => {
  it("a resume, a cancel and a second run of a live run are refused at once, naming the owner and the command for after", async () => {
    // slow enough that the first run is still at work when the others start
    const { dir, out, url, env, state } = await setup("own-live", 1_000, 21, 20)
    const db = path.join(state, "state.db")
    const first = startCli(["run", fixture, "--state-dir", state], { cwd: dir, env })
    await waitFor("a submitted batch", () => submittedBatches(db) >= 1)
    const [r] = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")
    const started = Date.now()
    const [resume, second, cancel] = await Promise.all([
      runCli(["resume", r!.id, "--state-dir", state], { cwd: dir, env }),
      runCli(["run", fixture, "--state-dir", state], { cwd: dir, env }),
      runCli(["cancel", r!.id, "--state-dir", state], { cwd: dir, env })
    ])
    const refusedIn = Date.now() - started
    expect(first.child.exitCode, "the first run was still at work").toBeNull()
    for (const [attempt, then] of [[resume, "resume"], [second, "resume"], [cancel, "cancel"]] as const) {
      expect(attempt.code).not.toBe(0)
      const m = refusal.exec(attempt.stderr)
      expect(m, attempt.stderr).not.toBeNull()
      expect(m![1]).toBe(r!.id)
      expect(Number(m![2])).toBe(first.child.pid)
      // the command to give once it is stopped, with the flags that find this ledger
      expect(attempt.stderr).toContain(`then \`offpeak ${then} ${r!.id} --state-dir ${state}\``)
    }
    // the refused `run` created no run of its own
    expect(query(db, "SELECT id FROM offpeak_runs")).toHaveLength(1)
    const done = await first.exit
    expect(done.code, done.stderr).toBe(0)
    const created = await exactlyOnce(url, out, 1_000)
    console.log(
      `ownership (SQLite): resume and second run refused in ${refusedIn} ms while pid ${first.child.pid} worked; ` +
        `${created} requests created once each, 1000 rows delivered once`
    )
  }, 180_000)

  it("a SIGKILLed owner does not block the resume that follows: its lease is free at once, not after the ttl", async () => {
    const { dir, out, url, env, state } = await setup("own-kill", 800, 22)
    const db = path.join(state, "state.db")
    const first = startCli(["run", fixture, "--state-dir", state], { cwd: dir, env })
    await waitFor("a submitted batch", () => submittedBatches(db) >= 2)
    first.child.kill("SIGKILL")
    await first.exit
    const [r] = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")
    const started = Date.now()
    const resumed = startCli(["resume", r!.id, "--state-dir", state], { cwd: dir, env })
    // the lease of a dead process on this host is free at once: the resume works, it does not wait for the expiry
    await waitFor("the resume at work", () => /read|submitted/.test(resumed.output().stderr), 20_000)
    const waited = Date.now() - started
    const done = await resumed.exit
    expect(done.code, done.stderr).toBe(0)
    expect(done.stderr).not.toMatch(/being worked/)
    await exactlyOnce(url, out, 800)
    console.log(`ownership (SQLite): resume after SIGKILL at work after ${waited} ms (lease ttl 30 s)`)
  }, 180_000)

  it("cancel refuses a completed run: it stays completed and its rows stay delivered", async () => {
    const { dir, out, env, state } = await setup("own-cancel", 150, 23)
    const run = await runCli(["run", fixture, "--state-dir", state], { cwd: dir, env })
    expect(run.code, run.stderr).toBe(0)
    const db = path.join(state, "state.db")
    const [r] = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")
    const cancel = await runCli(["cancel", r!.id, "--state-dir", state], { cwd: dir, env })
    expect(cancel.code).not.toBe(0)
    expect(cancel.stderr).toMatch(new RegExp(`run ${r!.id} completed at .*: there is nothing left to cancel`))
    const [after] = query<{ state: string }>(db, "SELECT state FROM offpeak_runs")
    expect(after!.state).toBe("completed")
    expect(readParts(out)).toHaveLength(150)
  }, 120_000)
})

describePostgres("one owner per run (Postgres ledger shared by two processes)", (pgUrl) => {
  it("a resume of a live run is refused; after a SIGKILL the resume takes over and finishes; nothing twice", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const { url: ledgerUrl } = yield* freshSchema(pgUrl, "own")
      const { dir, out, url, env, state } = yield* Effect.promise(() => setup("own-pg", 1_000, 24, 20))
      const pgEnv = { ...env, OFFPEAK_STATE: ledgerUrl }
      const first = startCli(["run", fixture, "--state-dir", state], { cwd: dir, env: pgEnv })
      yield* Effect.promise(() => waitFor("a submitted batch", () => /submitted [1-9]/.test(first.output().stderr), 60_000))
      const status = yield* Effect.promise(() => runCli(["status", "--json"], { cwd: dir, env: pgEnv }))
      const [run] = JSON.parse(status.stdout)
      const resume = yield* Effect.promise(() => runCli(["resume", run.id, "--state-dir", state], { cwd: dir, env: pgEnv }))
      expect(first.child.exitCode, "the first run was still at work").toBeNull()
      expect(resume.code).not.toBe(0)
      expect(resume.stderr).toMatch(refusal)
      first.child.kill("SIGKILL")
      yield* Effect.promise(() => first.exit)
      const resumed = yield* Effect.promise(() => runCli(["resume", run.id, "--state-dir", state], { cwd: dir, env: pgEnv }))
      expect(resumed.code, resumed.stderr).toBe(0)
      yield* Effect.promise(() => exactlyOnce(url, out, 1_000))
    })))
  }, 180_000)
})
