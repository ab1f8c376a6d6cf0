/**
 * The CLI's commands as a user runs them against one real run (the local OpenAI emulator in-process, with failed
 * lines of both kinds and malformed input rows): `run --json`, `status`, `failures`, `inspect`, every `--json`
 * decoded with the schema the command prints through, the text views (aligned columns whatever the ids' length), exit
 * codes (0 done, 1 failed or past `--max-dead`, 2 a usage error), and a failed run whose summary gives the exact
 * command that resumes it — run as printed.
 */
import { Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Json from "../packages/core/src/internal/cli/json.ts"
import { killAll, readParts, repo, runCli, startCli, tmpDir, waitFor, writeTickets } from "./support/files.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

const decode = <S extends Schema.Top & { readonly DecodingServices: never }>(schema: S, stdout: string): S["Type"] =>
  Schema.decodeUnknownSync(schema)(JSON.parse(stdout))

/** a pipeline module with a long name (run ids as long as it), on the fixture */
const longNamed = (dir: string) => {
  const file = path.join(dir, "long.pipeline.ts")
  fs.writeFileSync(
    file,
    `import { make } from ${JSON.stringify(fixture)}\n` +
      `const p = make({ input: process.env.OFFPEAK_TEST_INPUT!, out: process.env.OFFPEAK_TEST_OUT!, maxRequests: 100 })\n` +
      `export default { ...p, name: "tickets-with-a-much-longer-pipeline-name" }\n`
  )
  return file
}

describe("offpeak commands on one run", () => {
  const dir = tmpDir("cli-commands")
  const state = path.join(dir, "state")
  const out = path.join(dir, "out")
  const input = path.join(dir, "tickets.csv")
  const env = {
    OPENAI_API_KEY: undefined,
    OPENAI_BASE_URL: undefined,
    OFFPEAK_TEST_INPUT: input,
    OFFPEAK_TEST_OUT: out,
    OFFPEAK_TEST_MAX_REQUESTS: "100",
    // a line in twenty fails for good (400), one in twenty is retried (500)
    OFFPEAK_EMULATOR_KNOBS: JSON.stringify({ lineFailures: [{ status: 400, rate: 0.05 }, { status: 500, rate: 0.05 }], seed: 3 })
  }
  let summary: typeof Json.Summary.Type
  let runStderr = ""
  let runStdout = ""

  beforeAll(async () => {
    writeTickets(input, 300, 11)
    // two rows that cannot be read: an empty id (the schema wants one), and a row with a field too many
    fs.appendFileSync(input, `,an empty id\nr999999,one,field too many\n`)
    const t0 = Date.now()
    const run = await runCli(["run", fixture, "--state-dir", state, "--json"], { cwd: dir, env })
    console.log(`run --json: exit ${run.code} in ${Date.now() - t0} ms`)
    expect(run.code, run.stderr).toBe(0)
    runStdout = run.stdout
    runStderr = run.stderr
    summary = decode(Json.Summary, run.stdout)
  }, 120_000)

  it("run --json: stdout is the summary as JSON and nothing else; notices and events go to stderr", () => {
    console.log(JSON.stringify(summary, null, 2))
    console.log(runStderr)
    expect(summary.state).toBe("completed")
    expect(summary.rows).toBe(302)
    expect(summary.succeeded + summary.failed).toBe(302)
    const dead = readParts(path.join(out, "dead-letter"))
    expect(summary.failed).toBe(dead.length)
    const byKind = Object.fromEntries(summary.failedByKind.map((k) => [k.kind, k.rows]))
    expect(byKind.invalid_input).toBe(2)
    expect(byKind.provider_error).toBe(dead.filter((d) => d.kind === "provider_error").length)
    expect(byKind.provider_error).toBeGreaterThan(0)
    expect(summary.tokens.inputTokens).toBeGreaterThan(0)
    expect(summary.cost.spentUsd).toBeGreaterThan(0)
    expect(summary.cost.syncEquivalentUsd).toBeCloseTo(2 * summary.cost.spentUsd, 9)
    expect(summary.resume).toBeNull()
    expect(summary.results).toBe(out)
    // stdout parsed whole as JSON (above); INFO lines and events are on stderr only
    expect(runStdout).not.toMatch(/no OPENAI_API_KEY|submitted|retry round/)
    expect(runStderr).toMatch(/no OPENAI_API_KEY: running against the local OpenAI emulator/)
    expect(runStderr).toMatch(/batch b00001 submitted: 100 requests \(batch_\w+\)/)
    expect(runStderr).toMatch(/retry round 1: \d+ requests go out again/)
    expect(runStderr).not.toMatch(/\x1b\[/)
  })

  it("status: the runs in aligned columns whatever the ids' length, with times, tokens and cost; --json decodes", async () => {
    const other = await runCli(["run", longNamed(dir), "--state-dir", state], {
      cwd: dir,
      // its own output folder: the sink replaces earlier runs' parts in its folder when a run completes
      env: { ...env, OFFPEAK_EMULATOR_KNOBS: "{}", OFFPEAK_TEST_OUT: path.join(dir, "out-long") }
    })
    expect(other.code, other.stderr).toBe(0)
    const text = await runCli(["status", "--state-dir", state], { cwd: dir })
    expect(text.code).toBe(0)
    console.log(text.stdout)
    const lines = text.stdout.trimEnd().split("\n")
    const [header, ...rows] = lines
    expect(rows.length).toBe(2)
    expect(new Set(rows.map((r) => r.split(/\s+/)[0]!.length)).size).toBe(2)
    // left-aligned columns start where their header starts; numbers end where their header ends
    for (const column of ["STATE", "CREATED"]) {
      for (const row of rows) expect(row[header!.indexOf(column) - 1], `${column} in ${row}`).toBe(" ")
      for (const row of rows) expect(row[header!.indexOf(column)], `${column} in ${row}`).not.toBe(" ")
    }
    for (const column of ["ROWS", "OK", "FAILED", "BATCHES", "ELAPSED", "COST"]) {
      const end = header!.indexOf(` ${column}`) + column.length
      for (const row of rows) {
        expect(row[end], `${column} ends in ${row}`).not.toBe(" ")
        expect(row[end + 1] ?? " ", `${column} ends in ${row}`).toBe(" ")
      }
    }
    expect(text.stdout).toMatch(new RegExp(`${summary.runId}\\s+completed\\s+302\\s+${summary.succeeded}\\s+${summary.failed}\\s`))
    expect(text.stdout).toMatch(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/)
    expect(text.stdout).toMatch(/\$0\.\d{4}/)
    const json = await runCli(["status", "--state-dir", state, "--json"], { cwd: dir })
    const listed = decode(Json.StatusList, json.stdout)
    const mine = listed.find((r) => r.id === summary.runId)!
    expect(mine.counts).toMatchObject({ items: 302, delivered: summary.succeeded, dead: summary.failed, pendingItems: 0 })
    expect(mine.tokens).toEqual(summary.tokens)
    expect(mine.cost.spentUsd).toBeCloseTo(summary.cost.spentUsd, 9)
    expect(mine.elapsedMs).toBeGreaterThan(0)
    expect(mine.holder).toBeNull()
  }, 120_000)

  it("status <run>: counts, failures by kind, money and the batches with their times; --json decodes", async () => {
    const text = await runCli(["status", summary.runId, "--state-dir", state], { cwd: dir })
    console.log(text.stdout)
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(new RegExp(`^run ${summary.runId} \\(tickets, openai, batch\\): completed`))
    expect(text.stdout).toMatch(/failures\s+provider_error \d+ · invalid_input 2|failures\s+invalid_input 2 · provider_error \d+/)
    expect(text.stdout).toMatch(/BATCH\s+STATE\s+MODE\s+REMOTE\s+PROVIDER\s+REQUESTS\s+DONE\s+FAILED\s+CREATED\s+SUBMITTED\s+ENDED\s+TOOK/)
    expect(text.stdout).toMatch(/b00001\s+collected\s+batch\s+batch_\w+\s+completed\s+100\s+\d+\s+\d+\s+\d\d:\d\d:\d\d/)
    const json = decode(Json.StatusRun, (await runCli(["status", summary.runId, "--state-dir", state, "--json"], { cwd: dir })).stdout)
    expect(json.run.id).toBe(summary.runId)
    expect(json.failures).toEqual(summary.failedByKind)
    expect(json.batches.length).toBe(summary.batches)
    for (const b of json.batches) {
      expect(b.state).toBe("collected")
      expect(b.submittedAt).not.toBeNull()
      expect(b.endedAt).not.toBeNull()
    }
  })

  it("failures: by kind with counts and examples; --kind pages through every row of a kind exactly once", async () => {
    const text = await runCli(["failures", summary.runId, "--state-dir", state], { cwd: dir })
    console.log(text.stdout)
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(new RegExp(`run ${summary.runId}: ${summary.failed} rows failed`))
    expect(text.stdout).toMatch(/provider_error\s+\d+\s+offpeak failures \S+ --kind provider_error/)
    expect(text.stdout).toMatch(/invalid_input\s+2\s+offpeak failures \S+ --kind invalid_input/)
    const overview = decode(Json.Failures, (await runCli(["failures", summary.runId, "--state-dir", state, "--json"], { cwd: dir })).stdout)
    expect(overview.counts).toEqual(summary.failedByKind)
    for (const c of overview.counts) {
      expect(overview.rows.filter((r) => r.kind === c.kind).length).toBe(Math.min(3, c.rows))
    }
    // the rows of one kind, five at a time, following `next`
    const dead = readParts(path.join(out, "dead-letter")).filter((d) => d.kind === "provider_error")
    const seen: Array<string> = []
    let after: number | null = 0
    let pages = 0
    while (after !== null) {
      const page: typeof Json.Failures.Type = decode(
        Json.Failures,
        (await runCli(
          ["failures", summary.runId, "--kind", "provider_error", "--limit", "5", "--after", String(after), "--state-dir", state, "--json"],
          { cwd: dir }
        )).stdout
      )
      expect(page.rows.length).toBeLessThanOrEqual(5)
      for (const r of page.rows) {
        expect(r.kind).toBe("provider_error")
        expect(r.attempts).toBeGreaterThanOrEqual(1)
        // failed for good by a 400, or by a 500 on the last of its 3 attempts (a 500 three times running: rare, as the
        // emulator's failures fall by timing)
        if (/HTTP 500/.test(r.message)) expect(r.attempts).toBe(3)
        else expect(r.message).toMatch(/400/)
      }
      seen.push(...page.rows.map((r) => r.key))
      after = page.next
      pages++
    }
    console.log(`${seen.length} provider_error rows in ${pages} pages of 5`)
    expect(seen.length).toBe(dead.length)
    expect(new Set(seen)).toEqual(new Set(dead.map((d) => d.key)))
    const kind = await runCli(["failures", summary.runId, "--kind", "invalid_input", "--state-dir", state], { cwd: dir })
    console.log(kind.stdout)
    expect(kind.stdout).toMatch(/KEY\s+ROW\s+ATTEMPTS\s+MESSAGE/)
    expect(kind.stdout).toMatch(/tickets\.csv row 301 \(line \d+\): field "id"/)
  }, 120_000)

  it("inspect: a failed row and an answered row — record, request (as sent), attempts, batch, answer; --json decodes", async () => {
    const failedKey = readParts(path.join(out, "dead-letter")).find((d) => d.kind === "provider_error")!.key as string
    const failed = decode(Json.Inspect, (await runCli(["inspect", summary.runId, failedKey, "--state-dir", state, "--json"], { cwd: dir })).stdout)
    expect(failed.key).toBe(failedKey)
    expect(failed.record).toMatchObject({ id: failedKey })
    expect(failed.request?.state).toBe("failed")
    expect(failed.request?.failure?.kind).toBe("provider_error")
    expect(failed.request?.batch?.remoteId).toMatch(/^batch_/)
    expect(failed.request?.bodyMatches).toBe(true)
    const row = readParts(out)[0]!
    const answered = decode(Json.Inspect, (await runCli(["inspect", summary.runId, row.id, "--state-dir", state, "--json"], { cwd: dir })).stdout)
    expect(answered.request?.state).toBe("succeeded")
    expect(answered.request?.output).toEqual(row.output)
    expect(answered.request?.body).toMatchObject({ kind: "chat", model: "gpt-4o-mini", params: { maxTokens: 400, temperature: 0 } })
    expect(answered.request?.usage?.inputTokens).toBeGreaterThan(0)
    const text = await runCli(["inspect", summary.runId, row.id, "--state-dir", state], { cwd: dir })
    console.log(text.stdout)
    expect(text.stdout).toMatch(new RegExp(`row "${row.id}" of run ${summary.runId} \\(source row \\d+\\)`))
    expect(text.stdout).toMatch(/request\s+succeeded · \d attempts? · last sent in batch \S+ \(batch_\w+, batch, collected\)/)
    expect(text.stdout).toMatch(/sent\s+\(rendered again from the pipeline module: the same fingerprint\)/)
    expect(text.stdout).toMatch(/answer\n\s+\{\n\s+"category"/)
    const bad = await runCli(["inspect", summary.runId, "no-such-key", "--state-dir", state], { cwd: dir })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/has no row with key "no-such-key"/)
  })

  it("exit codes: --max-dead fails a run with too many dead letters; usage errors exit 2", async () => {
    const over = await runCli(["resume", summary.runId, "--state-dir", state, "--max-dead", String(summary.failed - 1)], { cwd: dir, env })
    console.log(over.stdout)
    expect(over.code).toBe(1)
    expect(over.stdout).toMatch(new RegExp(`max dead\\s+${summary.failed} rows failed, more than --max-dead ${summary.failed - 1}`))
    const under = await runCli(["resume", summary.runId, "--state-dir", state, "--max-dead", "50%"], { cwd: dir, env })
    expect(under.code, under.stderr).toBe(0)
    const percent = Math.floor((100 * summary.failed) / summary.rows) - 1
    const overPercent = await runCli(["resume", summary.runId, "--state-dir", state, "--max-dead", `${percent}%`, "--json"], { cwd: dir, env })
    expect(overPercent.code).toBe(1)
    expect(decode(Json.Summary, overPercent.stdout).maxDeadExceeded).toBe(true)
    const usages: Array<[string, ReadonlyArray<string>, RegExp]> = [
      ["a --max-dead that is not a count", ["resume", summary.runId, "--state-dir", state, "--max-dead", "lots"], /--max-dead must be a number of rows or a percent/],
      ["an unknown run", ["status", "no-such-run", "--state-dir", state], /no run "no-such-run" in the ledger/],
      ["resume of an unknown run", ["resume", "no-such-run", "--state-dir", state], /no run "no-such-run" in the ledger/],
      ["an unknown kind", ["failures", summary.runId, "--kind", "bogus", "--state-dir", state], /--kind must be one of invalid_input, provider_error/],
      ["an unknown flag", ["status", "--bogus"], /Unrecognized flag: --bogus/],
      ["an unknown command", ["frobnicate"], /Unknown subcommand "frobnicate"/],
      ["a missing module", ["run", "nowhere.ts", "--state-dir", state], /nowhere\.ts: no such file/],
      // a command that only reads does not create a ledger where there is none (a mistyped folder)
      ["status of a ledger that is not there", ["status", "--state-dir", path.join(dir, "no-such-state")], /no ledger at \S+no-such-state\/state\.db/],
      ["failures of a ledger that is not there", ["failures", summary.runId, "--state", path.join(dir, "nope.db")], /no ledger at \S+nope\.db/],
      ["resume in a ledger that is not there", ["resume", summary.runId, "--state-dir", path.join(dir, "no-such-state")], /no ledger at \S+no-such-state\/state\.db/],
      ["cancel in a ledger that is not there", ["cancel", summary.runId, "--state", path.join(dir, "nope.db")], /no ledger at \S+nope\.db/],
      ["an unknown provider's emulator", ["emulator", "nosuch"], /unknown provider "nosuch"/]
    ]
    for (const [what, args, said] of usages) {
      const exit = await runCli(args, { cwd: dir, env })
      expect(exit.code, `${what}: ${exit.stderr}`).toBe(2)
      expect(exit.stderr, what).toMatch(said)
      expect(exit.stdout, what).toBe("")
    }
    expect(fs.existsSync(path.join(dir, "no-such-state")), "no folder made").toBe(false)
    expect(fs.existsSync(path.join(dir, "nope.db")), "no ledger made").toBe(false)
  }, 120_000)
})

describe("a run that fails", () => {
  it("says why, with the run id and the exact command that resumes it — which does", async () => {
    const dir = tmpDir("cli-fails")
    const input = path.join(dir, "later.csv")
    const env = {
      OPENAI_API_KEY: undefined,
      OPENAI_BASE_URL: undefined,
      OFFPEAK_TEST_INPUT: input,
      OFFPEAK_TEST_OUT: path.join(dir, "out")
    }
    const failed = await runCli(["run", fixture, "--state-dir", "custom-state"], { cwd: dir, env })
    console.log(failed.stdout)
    expect(failed.code).toBe(1)
    expect(failed.stdout).toMatch(/^run (tickets-\S+): failed after [\d.]+ m?s — .*later\.csv: no such file/)
    const resume = /resume\s+(offpeak resume \S+ --state-dir custom-state)\n/.exec(failed.stdout)
    expect(resume, failed.stdout).not.toBeNull()
    expect(failed.stdout + failed.stderr).not.toMatch(/\n\s+at .*:\d+:\d+/)
    writeTickets(input, 40, 3)
    const args = resume![1]!.split(" ").slice(1)
    const resumed = await runCli(args, { cwd: dir, env })
    console.log(resumed.stdout)
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stdout).toMatch(/: completed in/)
    expect(readParts(path.join(dir, "out"))).toHaveLength(40)
  }, 120_000)
})

/** a folder with `rows` tickets and the env of a run on the in-process OpenAI emulator (no key), results in `out/` */
const offline = (name: string, rows: number, seed: number, extra: Record<string, string> = {}) => {
  const dir = tmpDir(name)
  const input = path.join(dir, "tickets.csv")
  writeTickets(input, rows, seed)
  const env = {
    OPENAI_API_KEY: undefined,
    OPENAI_BASE_URL: undefined,
    OFFPEAK_TEST_INPUT: input,
    OFFPEAK_TEST_OUT: path.join(dir, "out"),
    ...extra
  }
  return { dir, env }
}

describe("status of a run at work", () => {
  it("names the process that works it (pid, host, heartbeat), and says so once that process is gone", async () => {
    const { dir, env } = offline("cli-holder", 400, 8, {
      OFFPEAK_TEST_MAX_REQUESTS: "100",
      OFFPEAK_EMULATOR_KNOBS: JSON.stringify({ linesPerSecond: 5 })
    })
    const run = startCli(["run", fixture, "--state-dir", "st"], { cwd: dir, env })
    await waitFor("a submitted batch", () => /batch b00001 submitted/.test(run.output().stderr))
    const live = await runCli(["status", "--state-dir", "st"], { cwd: dir })
    console.log(live.stdout)
    expect(live.stdout).toMatch(new RegExp(`tickets-\\S+: pid ${run.child.pid} on \\S+ since \\d\\d:\\d\\d:\\d\\d, heartbeat [\\d.]+ m?s ago`))
    const [listed] = decode(Json.StatusList, (await runCli(["status", "--state-dir", "st", "--json"], { cwd: dir })).stdout)
    expect(listed!.state).toBe("running")
    expect(listed!.holder).toMatchObject({ pid: run.child.pid, alive: true })
    run.child.kill("SIGKILL")
    await run.exit
    const gone = await runCli(["status", listed!.id, "--state-dir", "st"], { cwd: dir })
    console.log(gone.stdout)
    expect(gone.stdout).toMatch(
      new RegExp(`worked by\\s+its process \\(pid ${run.child.pid} on \\S+\\) is gone: offpeak resume ${listed!.id} goes on with it`)
    )
  }, 120_000)
})

describe("offpeak emulator --json", () => {
  it("prints the provider and its base URL as JSON", async () => {
    const dir = tmpDir("cli-emulator")
    const emulator = startCli(["emulator", "openai", "--json", "--dir", path.join(dir, "emulator")], { cwd: dir })
    await waitFor("the emulator's JSON line", () => /\}\s*$/.test(emulator.output().stdout) || emulator.child.exitCode !== null, 30_000)
    emulator.child.kill("SIGINT")
    const exit = await emulator.exit
    console.log(exit.stdout, exit.stderr)
    expect(exit.stdout, exit.stderr).toMatch(/^\{/)
    const said = decode(Json.Emulator, exit.stdout.trim().split("\n")[0]!)
    expect(said.provider).toBe("openai")
    expect(said.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/)
  }, 60_000)
})

describe("a run that would pay the full price without being asked to", () => {
  it("--mode auto with batches smaller than syncBelow says every batch goes synchronously", async () => {
    const { dir, env } = offline("cli-auto", 30, 4, { OFFPEAK_TEST_MAX_REQUESTS: "20" })
    const run = await runCli(["run", fixture, "--state-dir", "st", "--mode", "auto", "--json"], { cwd: dir, env })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toMatch(/mode auto: a batch holds at most 20 requests \(batch\.maxRequests\), fewer than batch\.syncBelow \(100\): every batch goes through the synchronous API, at the full price/)
    const summary = decode(Json.Summary, run.stdout)
    expect(summary.cost.spentUsd).toBe(summary.cost.syncEquivalentUsd)
  }, 120_000)

  it("a deadline too near for the batch API is said at the start, and every request goes synchronously at the full price", async () => {
    const { dir, env } = offline("cli-deadline", 40, 5)
    // a fresh ledger knows no batch durations: the margin is 15 minutes, so a deadline in 20 s is within it
    const run = await runCli(["run", fixture, "--state-dir", "st", "--deadline", "20s", "--json"], { cwd: dir, env })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toMatch(/its deadline \S+ is too near for the batch API \(the margin before it: 15m\): every request goes through the synchronous API, at the full price/)
    const summary = decode(Json.Summary, run.stdout)
    expect(summary.succeeded).toBe(40)
    expect(summary.cost.spentUsd).toBeGreaterThan(0)
    expect(summary.cost.spentUsd).toBe(summary.cost.syncEquivalentUsd)
    expect(readParts(path.join(dir, "out"))).toHaveLength(40)
  }, 120_000)
})
