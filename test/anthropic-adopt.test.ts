/**
 * Issue 23, end to end through the CLI: the Anthropic emulator (in another
 * process) answers every create seconds late, while the batch already exists;
 * the run is SIGKILLed while creates are in flight, and `offpeak resume` must
 * adopt exactly its own remote batches — every ledger batch holds a distinct
 * remote batch carrying exactly its requests' custom ids, no remote batch is
 * left unclaimed and running, no request is sent twice without a failure
 * before, and no batch's results are downloaded more than twice.
 */
import Anthropic from "@anthropic-ai/sdk"
import { afterAll, describe, expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import type { Counters } from "../packages/providers/anthropic/emulator/Emulator.ts"
import * as Journal from "../packages/providers/anthropic/internal/submitJournal.ts"
import { killAll, query, readParts, repo, runCli, startCli, startEmulator, tmpDir, writeTickets } from "./support/files.ts"
import * as Providers from "./support/providers.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

const counters = async (url: string): Promise<Counters> => {
  const response = await fetch(`${url}/_emulator/counters?ids=1`)
  if (!response.ok) throw new Error(`counters: HTTP ${response.status}`)
  return (await response.json()) as Counters
}

const setup = async (name: string, rows: number, knobs: object) => {
  const dir = tmpDir(`anthropic-adopt-${name}`)
  const input = path.join(dir, "tickets.csv")
  writeTickets(input, rows, 23)
  const out = path.join(dir, "out")
  const url = await startEmulator("anthropic", dir, knobs)
  const env = {
    ...Providers.anthropic.cliEnv(url),
    OFFPEAK_TEST_INPUT: input,
    OFFPEAK_TEST_OUT: out,
    OFFPEAK_TEST_MAX_REQUESTS: "10",
    OFFPEAK_TEST_IN_FLIGHT: "3",
    OFFPEAK_POLL_INITIAL: "100 millis",
    OFFPEAK_POLL_MAX: "500 millis"
  }
  const state = path.join(dir, "state")
  return { dir, out, url, env, state, db: path.join(state, "state.db") }
}

/**
 * What the ledger and the emulator must agree on: each ledger batch that reached the provider holds its own remote
 * batch, whose custom ids are exactly the requests the ledger settled in it; every remote batch is held by one ledger
 * batch and has ended; nothing was sent twice without a failure first; no batch's results were read more than twice.
 */
const check = async (db: string, url: string, rows: number, out: string, foreign: ReadonlyArray<string> = []) => {
  const all = await counters(url)
  // someone else's batches in the workspace are not ours to hold
  const c = { ...all, batches: all.batches.filter((b) => !foreign.includes(b.id)) }
  const ledger = query<{ seq: number; remote_id: string | null; state: string }>(db, "SELECT seq, remote_id, state FROM offpeak_batches ORDER BY seq")
  const requests = query<{ batch: number | null; fingerprint: string; state: string }>(
    db,
    "SELECT batch, fingerprint, state FROM offpeak_requests"
  )
  const held = ledger.filter((b) => b.remote_id !== null)
  const remoteIds = held.map((b) => b.remote_id!)
  expect(new Set(remoteIds).size, "no remote batch held by two ledger batches").toBe(remoteIds.length)
  const remote = new Map(c.batches.map((b) => [b.id, b]))
  for (const b of held) {
    const r = remote.get(b.remote_id!)
    expect(r, `ledger batch ${b.seq} holds ${b.remote_id}, which the provider knows`).toBeDefined()
    const own = requests.filter((q) => q.batch === b.seq).map((q) => q.fingerprint).sort()
    expect([...r!.custom_ids!].sort(), `ledger batch ${b.seq}: the custom ids of ${b.remote_id}`).toEqual(own)
  }
  const unheld = c.batches.filter((b) => !remoteIds.includes(b.id))
  expect(unheld.map((b) => b.id), "remote batches no ledger batch holds").toEqual([])
  expect(c.batches.filter((b) => b.status !== "ended").map((b) => b.id), "remote batches still running").toEqual([])
  expect(all.batches.filter((b) => b.status !== "ended").map((b) => b.id), "remote batches still running").toEqual([])
  expect(c.requests.sentTwiceWithoutFailure, "requests sent twice without a failure before").toBe(0)
  expect(c.repeatedSets).toBe(0)
  expect(c.batches.reduce((n, b) => n + b.total, 0), "requests sent").toBe(rows)
  const downloads = c.batches.map((b) => b.results_downloads)
  expect(Math.max(...downloads), "results downloads per batch").toBeLessThanOrEqual(2)
  expect(requests.every((q) => q.state === "succeeded")).toBe(true)
  const delivered = readParts(out)
  expect(delivered).toHaveLength(rows)
  expect(new Set(delivered.map((r) => r.id)).size).toBe(rows)
  for (const r of delivered) expect(r.output).toEqual(Providers.anthropic.expected({ id: r.id, text: r.text }))
  return { c, held, downloads }
}

describe("anthropic: a resume after a crash during concurrent creates adopts exactly its own remote batches", () => {
  it("SIGKILL with creates in flight (answered 2 s late, batches already there), then resume", async () => {
    const ROWS = 90
    const { dir, out, url, env, state, db } = await setup("kill", ROWS, { createLatencyMs: 2_000, linesPerSecond: 40 })
    const first = startCli(["run", fixture, "--provider", "anthropic", "--state-dir", state], { cwd: dir, env })
    // three creates in flight at once, their batches created and not answered (before the runner serializes creates);
    // with one create in unknown state at a time, the third create arrived and is still in flight
    let inFlightAtKill = 0
    let arrivedAtKill = 0
    const started = Date.now()
    while (true) {
      const c = await counters(url)
      const threeAtOnce = c.unanswered >= 3
      const serialized = Date.now() - started > 12_000 && c.creates.received >= 3 && c.unanswered >= 1
      if (threeAtOnce || serialized) {
        first.child.kill("SIGKILL")
        inFlightAtKill = c.unanswered
        arrivedAtKill = c.creates.received
        break
      }
      if (Date.now() - started > 60_000) throw new Error(`no creates in flight: ${JSON.stringify(c.creates)}`)
      await new Promise((r) => setTimeout(r, 20))
    }
    const killed = await first.exit
    expect(killed.signal).toBe("SIGKILL")
    const beforeResume = await counters(url)
    const submitting = query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE state = 'submitting'")[0]!.n
    const runId = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id

    const t0 = Date.now()
    const resumed = await runCli(["resume", runId, "--state-dir", state], { cwd: dir, env })
    const resumeMs = Date.now() - t0
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stdout).toMatch(/completed/)
    const { c, held, downloads } = await check(db, url, ROWS, out)
    console.log(
      `anthropic adopt: SIGKILL with ${inFlightAtKill} created batches unanswered (${arrivedAtKill} creates received, ` +
        `${beforeResume.batches.length} batches at the provider, ${submitting} ledger batches submitting); resume took ${resumeMs} ms: ` +
        `${held.length} ledger batches hold ${new Set(held.map((b) => b.remote_id)).size} distinct remote batches ` +
        `(${c.batches.length} created at the provider, 0 unclaimed, 0 running), requests sent ${c.requests.sent} for ${ROWS} rows ` +
        `(${c.requests.sentTwiceWithoutFailure} twice without a failure), results downloads per batch max ${Math.max(...downloads)} ` +
        `(total ${downloads.reduce((s, n) => s + n, 0)} for ${c.batches.length} batches)`
    )
  }, 240_000)

  it("three creates in flight at the crash, their batches created in another order, plus a foreign batch of the same size: resume adopts each its own", async () => {
    // the state a crash left before creates were serialized per run: three ledger batches `submitting`, each with the
    // intent in its journal, and at the provider three batches of the same size created from exactly their bodies
    const ROWS = 90
    const { dir, out, url, env, state, db } = await setup("three", ROWS, { createLatencyMs: 2_000, linesPerSecond: 5 })
    // the process dies while the first create is in flight (its batch created, the answer 2 s away) and two more
    // batches are sealed behind it
    const first = startCli(["run", fixture, "--provider", "anthropic", "--state-dir", state], { cwd: dir, env })
    const open = () => {
      try {
        return query<{ id: string; file: string; state: string; request_count: number }>(
          db,
          "SELECT id, file, state, request_count FROM offpeak_batches WHERE remote_id IS NULL ORDER BY seq"
        ).filter((b) => b.request_count === 10 && fs.existsSync(b.file))
      } catch {
        return []
      }
    }
    const started = Date.now()
    while (!((await counters(url)).unanswered >= 1 && open().length >= 3 && open()[0]!.state === "submitting")) {
      if (Date.now() - started > 60_000) throw new Error("no create in flight with two batches sealed behind it")
      await new Promise((r) => setTimeout(r, 20))
    }
    first.child.kill("SIGKILL")
    expect((await first.exit).signal).toBe("SIGKILL")
    const three = open().slice(0, 3)
    expect(three[0]!.state).toBe("submitting")
    expect((await counters(url)).batches).toHaveLength(1)
    // the other two were in flight too: submitting, their intents journaled
    const conn = new DatabaseSync(db)
    try {
      for (const b of three.slice(1)) {
        conn.prepare("UPDATE offpeak_batches SET state = 'submitting' WHERE id = ?").run(b.id)
        Journal.begin(b.file, b.id, b.request_count, Date.now())
      }
    } finally {
      conn.close()
    }
    // the provider received the three creates in another order than they started, and someone else's batch of the
    // same size came in between; no answer reached the dead process
    const client = new Anthropic({ apiKey: "test", baseURL: url, maxRetries: 0 })
    const bodyOf = (file: string) =>
      fs.readFileSync(file, "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l))
    const createOf = (file: string) => client.messages.batches.create({ requests: bodyOf(file) }).then((b) => b.id, () => "")
    const foreignBody = Array.from({ length: 10 }, (_, i) => ({
      custom_id: `foreign${i}`,
      params: { model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user" as const, content: "x" }] }
    }))
    // creates are answered 2 s late: send them all at once, as three in flight would be
    const [c2, foreign, c1] = await Promise.all([
      createOf(three[2]!.file),
      client.messages.batches.create({ requests: foreignBody }).then((b) => b.id),
      createOf(three[1]!.file)
    ])
    const mine = [(await counters(url)).batches[0]!.id, c1, c2]
    const runId = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id

    const t0 = Date.now()
    const resumed = await runCli(["resume", runId, "--state-dir", state], { cwd: dir, env })
    const resumeMs = Date.now() - t0
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stdout).toMatch(/completed/)
    const { c, held, downloads } = await check(db, url, ROWS, out, [foreign])
    const heldBy = new Map(query<{ id: string; remote_id: string | null }>(db, "SELECT id, remote_id FROM offpeak_batches").map((b) => [b.id, b.remote_id]))
    expect(three.map((b) => heldBy.get(b.id))).toEqual(mine)
    const foreignDownloads = (await counters(url)).batches.find((b) => b.id === foreign)!.results_downloads
    expect(foreignDownloads).toBeLessThanOrEqual(1)
    console.log(
      `anthropic adopt (3 in flight): 3 ledger batches submitting, their 3 batches + 1 foreign batch of the same size at ` +
        `the provider (arrival order 1st, then 3rd, foreign, 2nd at once); resume took ${resumeMs} ms: each adopted its own ` +
        `(${held.length} ledger batches hold ${new Set(held.map((b) => b.remote_id)).size} distinct remote batches, ` +
        `${c.batches.length} of ours at the provider, 0 unclaimed, 0 running); requests sent ${c.batches.reduce((n, b) => n + b.total, 0)} for ${ROWS} rows ` +
        `(${c.requests.sentTwiceWithoutFailure} twice without a failure); results downloads per batch max ${Math.max(...downloads)} ` +
        `(the three: ${JSON.stringify(mine.map((id) => c.batches.find((b) => b.id === id)!.results_downloads))}, foreign ${foreignDownloads})`
    )
  }, 240_000)

  it("crash point batch.create.sent (for the torture): killed right after a create's body left, at the 1st and the 3rd create", async () => {
    const ROWS = 60
    const { dir, out, url, env, state, db } = await setup("sent", ROWS, { createLatencyMs: 1_000, linesPerSecond: 40 })
    const seen: Array<string> = []
    let runId: string | undefined
    for (const failpoint of ["batch.create.sent:1", "batch.create.sent:3"]) {
      const args = runId === undefined ? ["run", fixture, "--provider", "anthropic"] : ["resume", runId]
      const attempt = await runCli([...args, "--state-dir", state], { cwd: dir, env: { ...env, OFFPEAK_FAILPOINTS: failpoint } })
      expect(attempt.signal, attempt.stderr).toBe("SIGKILL")
      expect(attempt.stderr).toContain(`failpoint ${failpoint}: SIGKILL`)
      runId ??= query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id
      const c = await counters(url)
      // the batch of the killed create exists, its answer never reached the process
      expect(c.batches.at(-1)!.answered_ms === null || c.creates.answered < c.creates.received).toBe(true)
      seen.push(`${failpoint}: ${c.batches.length} batches at the provider, ${c.unanswered} unanswered`)
    }
    const resumed = await runCli(["resume", runId!, "--state-dir", state], { cwd: dir, env })
    expect(resumed.code, resumed.stderr).toBe(0)
    const { c, held, downloads } = await check(db, url, ROWS, out)
    console.log(
      `anthropic batch.create.sent: ${seen.join("; ")}; after the last resume ${held.length} ledger batches hold ` +
        `${c.batches.length} remote batches, ${c.requests.sentTwiceWithoutFailure} requests sent twice, results downloads max ${Math.max(...downloads)}`
    )
  }, 240_000)

  it("every create answered late, no crash: completes, each request sent once", async () => {
    const ROWS = 60
    const { dir, out, url, env, state, db } = await setup("late", ROWS, { createLatencyMs: 1_500, linesPerSecond: 40 })
    const t0 = Date.now()
    const run = await runCli(["run", fixture, "--provider", "anthropic", "--state-dir", state], { cwd: dir, env })
    const ms = Date.now() - t0
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toMatch(/completed/)
    const { c, held, downloads } = await check(db, url, ROWS, out)
    expect(c.creates.received).toBe(held.length)
    console.log(
      `anthropic late creates: ${held.length} batches, every create answered 1.5 s late; run took ${ms} ms; ` +
        `${c.requests.sent} requests sent for ${ROWS} rows, results downloads per batch max ${Math.max(...downloads)}`
    )
  }, 240_000)
})
