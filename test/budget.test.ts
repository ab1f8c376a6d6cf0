/**
 * The budget through the CLI against the OpenAI emulator (real prices: gpt-4o-mini): a job three times over its budget
 * spends at most the budget, reports the rows it did not send, and a SIGKILL between a reservation and its submit
 * never lets the spend pass the budget; nothing is created at the provider that the ledger does not account for.
 */
import { afterAll, describe, expect, it } from "vitest"
import * as path from "node:path"
import { killAll, query, repo, runCli, startCli, startEmulator, tmpDir, writeTickets } from "./support/files.ts"
import { openAiSent } from "./support/providers.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

/** what a ledger's answers cost, in USD */
const spentUsd = (db: string) =>
  Number(query<{ s: string | null }>(db, "SELECT CAST(SUM(cost) AS TEXT) AS s FROM offpeak_outputs")[0]!.s ?? 0) / 1e12

describe("budget (CLI, OpenAI emulator, gpt-4o-mini prices)", () => {
  it("three times over budget: spent ≤ budget, the rest reported; a kill between reservation and submit changes nothing", async () => {
    const dir = tmpDir("budget")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 1_200, 41)
    const url = await startEmulator("openai", dir, { validationMs: 0 })
    const env = (out: string, extra: Record<string, string> = {}) => ({
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: url,
      OFFPEAK_POLL_INITIAL: "50 millis",
      OFFPEAK_POLL_MAX: "200 millis",
      OFFPEAK_TEST_INPUT: input,
      OFFPEAK_TEST_OUT: path.join(dir, out),
      OFFPEAK_TEST_MAX_REQUESTS: "100",
      ...extra
    })
    // what the whole job costs, measured on a state of its own
    const full = await runCli(["run", fixture, "--state-dir", path.join(dir, "full")], { cwd: dir, env: env("out-full") })
    expect(full.code, full.stderr).toBe(0)
    const total = spentUsd(path.join(dir, "full", "state.db"))
    expect(total).toBeGreaterThan(0)
    const createdBefore = (await openAiSent(url)).length
    // a third of it, killed once right after a reservation (before its submit), then resumed
    const budget = (total / 3).toFixed(9)
    const state = path.join(dir, "capped")
    const db = path.join(state, "state.db")
    const killed = await runCli(["run", fixture, "--state-dir", state], {
      cwd: dir,
      // small batches: each reserves its worst case (every request's 400 max tokens), far above what it costs
      env: env("out-capped", { OFFPEAK_TEST_BUDGET: budget, OFFPEAK_FAILPOINTS: "budget.reserved:3", OFFPEAK_TEST_MAX_REQUESTS: "10" })
    })
    expect(killed.signal, killed.stdout + killed.stderr).toBe("SIGKILL")
    const [r] = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")
    const resumed = startCli(["resume", r!.id, "--state-dir", state], {
      cwd: dir,
      env: env("out-capped", { OFFPEAK_TEST_MAX_REQUESTS: "10" })
    })
    await resumed.exit
    const spent = spentUsd(db)
    expect(spent).toBeLessThanOrEqual(Number(budget))
    const [run] = query<{ state: string; message: string }>(db, "SELECT state, message FROM offpeak_runs")
    expect(run!.state).toBe("failed")
    expect(run!.message).toMatch(/^budget_refused: [\d,]+ rows not sent/)
    // every batch created at the provider for this run is one the ledger holds, answered and counted
    // (the emulator lists batches newest first)
    const all = await openAiSent(url)
    const created = all.slice(0, all.length - createdBefore)
    const held = query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL")[0]!.n
    expect(created.length).toBe(held)
    const sent = created.flat()
    expect(new Set(sent).size).toBe(sent.length)
    const answered = query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_requests WHERE state = 'succeeded'")[0]!.n
    expect(answered).toBe(sent.length)
    console.log(
      `budget: the whole job costs $${total.toFixed(6)}; with $${budget} (killed after a reservation, resumed) ` +
        `${sent.length} of 1,200 requests were sent, $${spent.toFixed(6)} spent; ${run!.message.split(":")[1]}`
    )
    // the same run resumed with --budget above the job's cost: what the budget held back goes out, each request once
    const raised = (total * 3).toFixed(6)
    const finished = await runCli(["resume", r!.id, "--state-dir", state, "--budget", raised], {
      cwd: dir,
      env: env("out-capped", { OFFPEAK_TEST_MAX_REQUESTS: "10" })
    })
    expect(finished.code, finished.stderr).toBe(0)
    expect(query<{ state: string }>(db, "SELECT state FROM offpeak_runs")[0]!.state).toBe("completed")
    const everything = await openAiSent(url)
    const sentAll = everything.slice(0, everything.length - createdBefore).flat()
    expect(new Set(sentAll).size).toBe(sentAll.length)
    const succeeded = query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_requests WHERE state = 'succeeded'")[0]!.n
    expect(sentAll.length).toBe(succeeded)
    const rows = query<{ delivered: number; dead: number }>(
      db,
      "SELECT SUM(delivered) AS delivered, SUM(dead) AS dead FROM offpeak_parts WHERE state = 'committed'"
    )[0]!
    expect(rows.delivered + rows.dead).toBe(1_200)
    console.log(
      `budget: resumed with --budget $${raised}: completed, ${sentAll.length} requests sent in all (each once), ` +
        `${rows.delivered} rows delivered + ${rows.dead} dead-lettered = 1,200`
    )
  }, 180_000)
})
