/**
 * The `offpeak` CLI as users run it: the README's first command, SIGKILL and
 * resume against an emulator in another process, Ctrl-C detach.
 */
import { afterAll, describe, expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import OpenAI from "openai"
import { killAll, query, readParts, repo, runCli, startCli, startEmulator, submittedBatches, tmpDir, waitFor, writeTickets } from "./support/files.ts"
import { openAiSent } from "./support/providers.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

/** tickets, an OpenAI emulator in another process slow enough to stop a run mid-way, and the CLI's environment */
const detachable = async (
  name: string,
  o: { readonly rows: number; readonly seed: number; readonly maxRequests: number; readonly linesPerSecond: number }
) => {
  const dir = tmpDir(name)
  const input = path.join(dir, "tickets.csv")
  writeTickets(input, o.rows, o.seed)
  const out = path.join(dir, "out")
  const url = await startEmulator("openai", dir, { linesPerSecond: o.linesPerSecond })
  const env = {
    OPENAI_API_KEY: "test",
    OPENAI_BASE_URL: url,
    OFFPEAK_POLL_INITIAL: "100 millis",
    OFFPEAK_POLL_MAX: "500 millis",
    OFFPEAK_TEST_INPUT: input,
    OFFPEAK_TEST_OUT: out,
    OFFPEAK_TEST_MAX_REQUESTS: String(o.maxRequests)
  }
  const state = path.join(dir, "state")
  return { dir, out, url, env, state, db: path.join(state, "state.db") }
}

describe("offpeak CLI", () => {
  it("runs the triage example offline on the embedded default (the README's first command)", async () => {
    const cwd = tmpDir("cli-triage")
    const run = await runCli(["run", path.join(repo, "examples/triage/pipeline.ts")], {
      cwd,
      env: { OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined }
    })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toMatch(/no OPENAI_API_KEY: running against the local OpenAI emulator/)
    expect(run.stdout).toMatch(/run triage-\S+: completed/)
    const rows = readParts(path.join(cwd, "out/triage"))
    expect(rows).toHaveLength(150)
    expect(new Set(rows.map((r) => r.id)).size).toBe(150)
    for (const r of rows) expect(["billing", "bug", "account", "feature_request", "shipping", "other"]).toContain(r.category)
    // the billing tickets of the example are labelled billing by the emulator's engine
    expect(rows.find((r) => r.id === "T-0001")!.category).toBe("billing")
    const dead = readParts(path.join(cwd, "out/triage/dead-letter"))
    expect(dead).toHaveLength(2)
    // named by file, row and line (and the key its id cell holds, when it holds one: filed under it)
    for (const d of dead) expect(d.message).toMatch(/tickets\.csv row \d+ \(line \d+(, id "T-\d+")?\)/)
    expect(dead.map((d) => d.key).sort()).toEqual(["#93", "T-9001#42"])
    const status = await runCli(["status"], { cwd })
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(/triage-\S+\s+completed\s+152\s+150\s+2/)
  }, 120_000)

  it("the emulator's answers are never reused for a run on another endpoint; the same endpoint reuses its own", async () => {
    const cwd = tmpDir("cli-cache-scope")
    const example = path.join(repo, "examples/triage/pipeline.ts")
    const summaryOf = (stdout: string) => ({
      saved: Number(/saved\s+(\d+) answers from the result cache/.exec(stdout)?.[1] ?? -1),
      batches: Number(/batches\s+(\d+)/.exec(stdout)?.[1] ?? -1)
    })
    // the README's first command: the in-process emulator
    const demo = await runCli(["run", example], { cwd, env: { OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined } })
    expect(demo.code, demo.stderr).toBe(0)
    expect(summaryOf(demo.stdout).batches).toBeGreaterThan(0)
    // then "the real API": a key and a base URL (another emulator process stands for the compatible host)
    const url = await startEmulator("openai", tmpDir("cli-cache-scope-host"))
    const real = { OPENAI_API_KEY: "sk-test-cache-scope", OPENAI_BASE_URL: url }
    const first = await runCli(["run", example], { cwd, env: real })
    expect(first.code, first.stderr).toBe(0)
    expect(first.stderr).toMatch(/using the OpenAI API at/)
    const sent = summaryOf(first.stdout)
    expect(sent.saved, first.stdout).toBe(0)
    expect(sent.batches).toBeGreaterThan(0)
    // the same endpoint again: its own answers come from the cache
    const again = await runCli(["run", example], { cwd, env: real })
    expect(again.code, again.stderr).toBe(0)
    const reused = summaryOf(again.stdout)
    expect(reused.batches, again.stdout).toBe(0)
    expect(reused.saved).toBe(150)
    console.log(
      `cache scope: emulator run ${summaryOf(demo.stdout).batches} batches; on another endpoint ${sent.batches} batches, ` +
        `${sent.saved} answers from the cache; that endpoint again ${reused.batches} batches, ${reused.saved} from the cache`
    )
  }, 180_000)

  it("a rerun of an unchanged pipeline replaces its output (files: replace by default), never a second copy", async () => {
    const cwd = tmpDir("cli-rerun")
    const env = { OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined }
    for (const attempt of [1, 2]) {
      const run = await runCli(["run", path.join(repo, "examples/triage/pipeline.ts")], { cwd, env })
      expect(run.code, run.stderr).toBe(0)
      const rows = readParts(path.join(cwd, "out/triage"))
      expect(rows, `after run ${attempt}`).toHaveLength(150)
      expect(new Set(rows.map((r) => r.id)).size).toBe(150)
      expect(readParts(path.join(cwd, "out/triage/dead-letter"))).toHaveLength(2)
    }
    const runs = JSON.parse((await runCli(["status", "--json"], { cwd })).stdout)
    expect(runs).toHaveLength(2)
    // the second run's answers came from the result cache: its output is its own parts only
    const manifest = JSON.parse(fs.readFileSync(path.join(cwd, "out/triage/_manifest.json"), "utf8"))
    expect(new Set(manifest.parts.map((p: { runId: string }) => p.runId))).toEqual(new Set([runs[0].id]))
  }, 120_000)

  it("a resume started from another folder writes where the run started, not beside the new folder", async () => {
    const dir = tmpDir("cli-elsewhere")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 600, 31)
    const url = await startEmulator("openai", dir, { linesPerSecond: 200 })
    // relative paths, resolved from where the run was started
    const env = {
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: url,
      OFFPEAK_POLL_INITIAL: "100 millis",
      OFFPEAK_POLL_MAX: "300 millis",
      OFFPEAK_TEST_INPUT: "tickets.csv",
      OFFPEAK_TEST_OUT: "out",
      OFFPEAK_TEST_MAX_REQUESTS: "100"
    }
    const state = path.join(dir, "state")
    const db = path.join(state, "state.db")
    const first = startCli(["run", fixture, "--state-dir", state], { cwd: dir, env })
    await waitFor("a submitted batch", () => submittedBatches(db) >= 1)
    first.child.kill("SIGKILL")
    await first.exit
    const [r] = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")
    const elsewhere = tmpDir("cli-elsewhere-cwd")
    const resumed = await runCli(["resume", r!.id, "--state-dir", path.relative(elsewhere, state)], { cwd: elsewhere, env })
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stderr).toContain(`resuming from ${dir}, where run ${r!.id} was started`)
    expect(readParts(path.join(dir, "out"))).toHaveLength(600)
    expect(fs.existsSync(path.join(elsewhere, "out"))).toBe(false)
  }, 120_000)

  it("runs the triage example with --provider anthropic on the local Anthropic emulator", async () => {
    const cwd = tmpDir("cli-triage-anthropic")
    const run = await runCli(["run", path.join(repo, "examples/triage/pipeline.ts"), "--provider", "anthropic"], {
      cwd,
      env: { ANTHROPIC_API_KEY: undefined, ANTHROPIC_BASE_URL: undefined }
    })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toMatch(/no ANTHROPIC_API_KEY: running against the local Anthropic emulator/)
    const rows = readParts(path.join(cwd, "out/triage"))
    expect(rows).toHaveLength(150)
    expect(rows.find((r) => r.id === "T-0001")!.category).toBe("billing")
    expect(readParts(path.join(cwd, "out/triage/dead-letter"))).toHaveLength(2)
    const status = await runCli(["status", "--json"], { cwd })
    expect(JSON.parse(status.stdout)[0].provider).toBe("anthropic")
  }, 120_000)

  it("--mode sync: the triage example answered by synchronous calls, no batch at the provider", async () => {
    const cwd = tmpDir("cli-triage-sync")
    const run = await runCli(["run", path.join(repo, "examples/triage/pipeline.ts"), "--mode", "sync"], {
      cwd,
      env: { OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined }
    })
    expect(run.code, run.stderr).toBe(0)
    const rows = readParts(path.join(cwd, "out/triage"))
    expect(rows).toHaveLength(150)
    expect(rows.find((r) => r.id === "T-0001")!.category).toBe("billing")
    expect(readParts(path.join(cwd, "out/triage/dead-letter"))).toHaveLength(2)
    const [listed] = JSON.parse((await runCli(["status", "--json"], { cwd })).stdout)
    expect(listed.mode).toBe("sync")
    const status = await runCli(["status", listed.id, "--json"], { cwd })
    const { batches } = JSON.parse(status.stdout)
    expect(batches.length).toBeGreaterThan(0)
    for (const b of batches) expect(b).toMatchObject({ mode: "sync", remoteId: null, remoteState: "sync", state: "collected" })
    expect((await runCli(["status", listed.id], { cwd })).stdout).toMatch(/\(sync calls\)/)
  }, 120_000)

  it("Ctrl-C detaches: the run is recorded as detached and resume finishes it", async () => {
    const { dir, out, url, env, state, db } = await detachable("cli-sigint", { rows: 600, seed: 5, maxRequests: 200, linesPerSecond: 300 })
    const run = startCli(["run", fixture, "--state-dir", state], { cwd: dir, env })
    await waitFor("a submitted batch", () => submittedBatches(db) >= 1)
    run.child.kill("SIGINT")
    const exit = await run.exit
    expect(exit.code).toBe(130)
    expect(exit.stderr).toMatch(/detached from run \S+: batches at the provider keep running/)
    const [r] = query<{ id: string; state: string }>(db, "SELECT id, state FROM offpeak_runs")
    expect(r!.state).toBe("detached")
    const resumed = await runCli(["resume", r!.id, "--state-dir", state], { cwd: dir, env })
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(readParts(out)).toHaveLength(600)
    const sent = (await openAiSent(url)).flat()
    expect(new Set(sent).size).toBe(600)
    expect(sent).toHaveLength(600)
  }, 120_000)

  it("a hang-up, or output whose reader went away, detaches as Ctrl-C does (--json says so on stdout); resume finishes each run", async () => {
    for (const how of ["SIGHUP", "stderr closed"] as const) {
      const { dir, out, url, env, state, db } = await detachable(`cli-${how.replace(" ", "-")}`, {
        rows: 400,
        seed: how === "SIGHUP" ? 13 : 17,
        maxRequests: 100,
        linesPerSecond: 200
      })
      const run = startCli(["run", fixture, "--state-dir", state, "--json"], { cwd: dir, env })
      await waitFor("a submitted batch", () => submittedBatches(db) >= 1)
      // (a terminal closed, an ssh session dropped; a `2>&1 | head` or `| tee` that stopped reading)
      if (how === "SIGHUP") run.child.kill("SIGHUP")
      else run.child.stderr!.destroy()
      const exit = await run.exit
      expect(exit.code, how).toBe(130)
      const [r] = query<{ id: string; state: string }>(db, "SELECT id, state FROM offpeak_runs")
      expect(r!.state, how).toBe("detached")
      // --json: the summary on stdout says so too, with the command that goes on
      const said = JSON.parse(exit.stdout)
      expect([said.runId, said.state, said.resume], how).toEqual([r!.id, "detached", `offpeak resume ${r!.id} --state-dir ${state}`])
      const resumed = await runCli(["resume", r!.id, "--state-dir", state], { cwd: dir, env })
      expect(resumed.code, resumed.stderr).toBe(0)
      expect(readParts(out), how).toHaveLength(400)
      const sent = (await openAiSent(url)).flat()
      expect(new Set(sent).size, how).toBe(400)
      expect(sent, how).toHaveLength(400)
    }
  }, 120_000)

  it("--cancel-on-exit: Ctrl-C cancels the batches at the provider and records the unfinished rows as cancelled", async () => {
    const dir = tmpDir("cli-cancel")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 600, 9)
    const out = path.join(dir, "out")
    const url = await startEmulator("openai", dir, { linesPerSecond: 100, validationMs: 0 })
    const env = {
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: url,
      OFFPEAK_POLL_INITIAL: "100 millis",
      OFFPEAK_POLL_MAX: "300 millis",
      OFFPEAK_TEST_INPUT: input,
      OFFPEAK_TEST_OUT: out,
      OFFPEAK_TEST_MAX_REQUESTS: "200"
    }
    const db = path.join(dir, "state", "state.db")
    const run = startCli(["run", fixture, "--state-dir", path.join(dir, "state"), "--cancel-on-exit"], { cwd: dir, env })
    await waitFor("submitted batches", () => submittedBatches(db) >= 2)
    await new Promise((r) => setTimeout(r, 300))
    run.child.kill("SIGINT")
    const exit = await run.exit
    expect(exit.stderr).toMatch(/cancelling run \S+ \(--cancel-on-exit\)/)
    expect(exit.stdout).toMatch(/run \S+: cancelled/)
    const [r] = query<{ id: string; state: string }>(db, "SELECT id, state FROM offpeak_runs")
    expect(r!.state).toBe("cancelled")
    // the batches were cancelled at the provider, and nothing more was created
    const client = new OpenAI({ apiKey: "test", baseURL: url })
    const statuses: Array<string> = []
    for await (const b of client.batches.list({ limit: 100 })) statuses.push(b.status)
    expect(statuses.length).toBeGreaterThanOrEqual(2)
    expect(statuses.every((s) => s === "cancelled" || s === "completed")).toBe(true)
    expect(statuses).toContain("cancelled")
    // every admitted row is in exactly one place: answered in the sink, or cancelled in the dead letter
    const ok = readParts(out)
    const dead = readParts(path.join(out, "dead-letter"))
    const admitted = query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_items")[0]!.n
    expect(ok.length + dead.length).toBe(admitted)
    expect(dead.length).toBeGreaterThan(0)
    expect(dead.every((d) => d.kind === "cancelled")).toBe(true)
    // a later cancel or resume changes nothing
    const again = await runCli(["cancel", r!.id, "--state-dir", path.join(dir, "state")], { cwd: dir, env })
    expect(again.code, again.stderr).toBe(0)
    expect(readParts(out).length + readParts(path.join(out, "dead-letter")).length).toBe(admitted)
  }, 120_000)

  it("offpeak cancel <run> after a crash cancels what the run left at the provider", async () => {
    const dir = tmpDir("cli-cancel-cmd")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 400, 13)
    const out = path.join(dir, "out")
    const url = await startEmulator("openai", dir, { linesPerSecond: 50, validationMs: 0 })
    const env = {
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: url,
      OFFPEAK_POLL_INITIAL: "100 millis",
      OFFPEAK_POLL_MAX: "300 millis",
      OFFPEAK_TEST_INPUT: input,
      OFFPEAK_TEST_OUT: out,
      OFFPEAK_TEST_MAX_REQUESTS: "100"
    }
    const db = path.join(dir, "state", "state.db")
    const run = startCli(["run", fixture, "--state-dir", path.join(dir, "state")], { cwd: dir, env })
    await waitFor("submitted batches", () => submittedBatches(db) >= 2)
    run.child.kill("SIGKILL")
    await run.exit
    const [r] = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")
    const cancel = await runCli(["cancel", r!.id, "--state-dir", path.join(dir, "state")], { cwd: dir, env })
    expect(cancel.code, cancel.stderr).toBe(0)
    expect(cancel.stdout).toMatch(/cancelled/)
    const status = await runCli(["status", r!.id, "--state-dir", path.join(dir, "state")], { cwd: dir })
    expect(status.stdout).toMatch(/: cancelled/)
    const admitted = query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_items")[0]!.n
    const ok = readParts(out)
    const dead = readParts(path.join(out, "dead-letter"))
    expect(ok.length + dead.length).toBe(admitted)
    expect(new Set([...ok.map((o) => o.id), ...dead.map((d) => d.key)]).size).toBe(admitted)
  }, 120_000)
})
