/**
 * `offpeak ui` in a real browser: a run of the test pipeline against the OpenAI emulator in another process (400
 * tickets, 2 malformed rows, 20% of lines answered 400 and 4% answered 500 then retried), `offpeak ui` on its state
 * started while the run works, and headless Chromium (Debian's, driven by playwright-core) on the page: the run seen
 * running and then completed without a reload, its batches on the timeline, failures by kind with their counts and
 * paged rows, a row's record, request and answer — each compared with what the sinks wrote. Screenshots go to
 * `.ci/artifacts/ui.png` (the run, a failure kind open, a row inspected) and `.ci/artifacts/ui-live.png` (mid-run).
 *
 * Chromium: `OFFPEAK_CHROMIUM`, else `/usr/lib/chromium/chromium` (`scripts/chromium.sh` installs it). Without one the
 * browser tests fail under CI and are skipped elsewhere.
 */
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type Browser, chromium, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Api from "../packages/core/src/internal/ui/api.ts"
import { describePostgres, freshSchema, isCI } from "../packages/core/test/support/postgres.ts"
import {
  type Exit,
  killAll,
  query,
  readParts,
  repo,
  runCli,
  startCli,
  startEmulator,
  submittedBatches,
  tmpDir,
  waitFor,
  writeTickets
} from "./support/files.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
const artifacts = path.join(repo, ".ci/artifacts")

const browserPath = (): string | undefined => {
  const candidate = process.env.OFFPEAK_CHROMIUM ?? "/usr/lib/chromium/chromium"
  return fs.existsSync(candidate) ? candidate : undefined
}

/** `describe` for tests that need Chromium: failing under CI without it, skipped with a message elsewhere */
const describeBrowser = (name: string, body: (executablePath: string) => void) => {
  const found = browserPath()
  if (found !== undefined) return describe(name, () => body(found))
  const howTo = "install it with `scripts/chromium.sh path`, or set OFFPEAK_CHROMIUM to a Chromium binary"
  if (isCI()) {
    return describe(name, () => {
      it("needs Chromium", () => {
        throw new Error(`${name}: no Chromium at ${process.env.OFFPEAK_CHROMIUM ?? "/usr/lib/chromium/chromium"} and CI is set (${howTo})`)
      })
    })
  }
  console.warn(`[skipped] ${name}: no Chromium (${howTo})`)
  return describe(name, () => it.skip(`skipped: no Chromium (${howTo})`, () => {}))
}

/** `offpeak ui` in another process; resolves once it printed its URL */
const startUi = async (args: ReadonlyArray<string>, cwd: string, env: NodeJS.ProcessEnv = {}) => {
  const started = Date.now()
  const ui = startCli(["ui", ...args], { cwd, env })
  let exited: Exit | undefined
  void ui.exit.then((e) => (exited = e))
  await waitFor("the ui's URL", () => exited !== undefined || /http:\/\/\S+/.test(ui.output().stdout), 30_000)
  if (exited !== undefined) throw new Error(`offpeak ui exited (${exited.code}): ${exited.stderr}`)
  return { ...ui, url: /http:\/\/\S+/.exec(ui.output().stdout)![0], startupMs: Date.now() - started }
}

/** GETs a JSON answer and decodes it with the API's schema for it */
const get = async <S extends Schema.Decoder<unknown>>(url: string, schema: S): Promise<S["Type"]> => {
  const res = await fetch(url)
  const body = await res.json()
  expect(res.status, JSON.stringify(body)).toBe(200)
  return Schema.decodeUnknownSync(schema)(body)
}

const countBy = <A>(items: ReadonlyArray<A>, key: (a: A) => string) => {
  const out: Record<string, number> = {}
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1
  return out
}

/** the rows of a failure kind as the page pages them: every key, following "Next" */
const pagedKeys = async (page: Page, kind: string) => {
  await page.click(`#failures button[data-kind="${kind}"]`)
  const keys: Array<string> = []
  const labels: Array<string> = []
  for (;;) {
    const table = page.locator(`table[aria-label="failed rows: ${kind}"]`)
    await table.waitFor()
    const label = (await page.locator("[data-test=page]").textContent())!
    labels.push(label)
    keys.push(...await table.locator("tbody tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-key")!)))
    const next = page.getByRole("button", { name: "Next →" })
    if (await next.isDisabled()) break
    await next.click()
    await expect.poll(() => page.locator("[data-test=page]").textContent()).not.toBe(label)
  }
  return { keys, labels }
}

afterAll(killAll)

describeBrowser("offpeak ui in headless Chromium", (executablePath) => {
  const dir = tmpDir("ui")
  const input = path.join(dir, "tickets.csv")
  const out = path.join(dir, "out")
  const state = path.join(dir, "state")
  const db = path.join(state, "state.db")
  let browser: Browser
  let run: ReturnType<typeof startCli>
  let ui: Awaited<ReturnType<typeof startUi>>
  let runStarted = 0

  beforeAll(async () => {
    writeTickets(input, 400, 7)
    // two malformed rows: an empty id, and a row with too many fields
    fs.appendFileSync(input, ",an empty id\nr999999,too,many,fields\n")
    const url = await startEmulator("openai", dir, {
      linesPerSecond: 12,
      seed: 5,
      lineFailures: [{ status: 400, rate: 0.2 }, { status: 500, rate: 0.04 }]
    })
    runStarted = Date.now()
    run = startCli(["run", fixture, "--state-dir", state], {
      cwd: dir,
      env: {
        OPENAI_API_KEY: "test",
        OPENAI_BASE_URL: url,
        OFFPEAK_POLL_INITIAL: "100 millis",
        OFFPEAK_POLL_MAX: "300 millis",
        OFFPEAK_TEST_INPUT: input,
        OFFPEAK_TEST_OUT: out,
        OFFPEAK_TEST_MAX_REQUESTS: "50",
        OFFPEAK_TEST_IN_FLIGHT: "3"
      }
    })
    await waitFor("the run in the ledger", () => {
      try {
        return fs.existsSync(db) && query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_runs")[0]!.n > 0
      } catch {
        return false
      }
    })
    ui = await startUi(["--state-dir", state], dir)
    const launched = Date.now()
    browser = await chromium.launch({ executablePath })
    console.log(`ui: offpeak ui printed its URL ${ui.url} in ${ui.startupMs} ms; Chromium launched in ${Date.now() - launched} ms`)
  }, 90_000)

  afterAll(async () => {
    await browser?.close()
  })

  it("shows the run live, its batches, failures by kind with their rows, and a row's answer", async () => {
    const page = await browser.newPage({ viewport: { width: 1360, height: 900 } })
    const problems: Array<string> = []
    page.on("pageerror", (e) => problems.push(String(e)))
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text())
    })
    const opened = Date.now()
    await page.goto(ui.url)
    const listed = page.locator("table[aria-label=runs] tbody tr")
    await listed.first().waitFor()
    console.log(`ui: runs page shown ${Date.now() - opened} ms after goto`)
    expect(await listed.count()).toBe(1)
    const runId = (await listed.first().getAttribute("data-run"))!
    expect(runId).toMatch(/^tickets-/)
    // opened while the run works: the page says so
    expect(await listed.first().getAttribute("data-state"), "the run ended before the page saw it").toBe("running")

    await page.getByRole("link", { name: runId }).click()
    await page.locator("#summary .badge").first().waitFor()
    expect(await page.locator("#summary .badge").first().textContent()).toBe("running")

    // watch it without reloading: progress and batch states change as the ledger does
    const progress = new Set<string>()
    const laneStates = new Set<string>()
    let liveShot = false
    const watchStart = Date.now()
    for (;;) {
      progress.add((await page.locator("[data-test=progress]").textContent()) ?? "")
      for (const s of await page.locator("#timeline g.lane").evaluateAll((gs) => gs.map((g) => g.getAttribute("data-state")!))) {
        laneStates.add(s)
      }
      if (!liveShot && laneStates.has("submitted")) {
        fs.mkdirSync(artifacts, { recursive: true })
        await page.screenshot({ path: path.join(artifacts, "ui-live.png"), fullPage: true })
        liveShot = true
      }
      if ((await page.locator("#summary .badge").first().textContent()) === "completed") break
      if (Date.now() - watchStart > 90_000) throw new Error("the page did not show the run completed within 90 s")
      await page.waitForTimeout(150)
    }
    const exit = await run.exit
    expect(exit.code, exit.stderr).toBe(0)
    console.log(
      `ui: run took ${Date.now() - runStarted} ms; the page showed ${progress.size} different progress lines live and batch states ${
        [...laneStates].join(", ")
      }`
    )
    expect(progress.size).toBeGreaterThanOrEqual(3)
    expect(laneStates.has("submitted")).toBe(true)
    expect(laneStates.has("collected")).toBe(true)

    // what the sinks wrote is what the page shows
    const ok = readParts(out)
    const dead = readParts(path.join(out, "dead-letter"))
    expect(ok.length + dead.length).toBe(402)
    const byKind = countBy(dead, (d) => d.kind as string)
    expect(byKind["invalid_input"]).toBe(2)
    expect(byKind["provider_error"]).toBeGreaterThan(50)
    await expect.poll(() => page.locator("[data-test=progress]").textContent()).toBe(
      `${ok.length} succeeded · ${dead.length} failed · 0 pending of 402 rows`
    )

    // the timeline: one lane per batch of the ledger, each collected
    const batches = query<{ id: string; state: string }>(db, "SELECT id, state FROM offpeak_batches ORDER BY seq")
    expect(batches.length).toBeGreaterThanOrEqual(9) // 8 of 50 + at least one retry batch for the 500s
    const lanes = await page.locator("#timeline g.lane").evaluateAll((gs) =>
      gs.map((g) => ({ id: g.getAttribute("data-batch")!, state: g.getAttribute("data-state")! }))
    )
    expect(lanes).toEqual(batches)
    // the batches table under the timeline lists them too
    await page.locator("details.batches summary").click()
    expect(await page.locator("table[aria-label=batches] tbody tr").count()).toBe(batches.length)
    expect(await page.locator("table[aria-label=batches] tbody .badge").allTextContents()).toEqual(batches.map((b) => b.state))

    // failures by kind, with the counts of the dead letter
    for (const [kind, n] of Object.entries(byKind)) {
      expect(await page.locator(`#failures button[data-kind="${kind}"] .count`).textContent(), kind).toBe(String(n))
    }
    // the provider errors, paged by 50: every row once, in source order, the dead letter's keys
    const paged = await pagedKeys(page, "provider_error")
    const expected = dead.filter((d) => d.kind === "provider_error").sort((a, b) => a.position - b.position).map((d) => d.key)
    expect(paged.keys).toEqual(expected)
    expect(paged.labels.length).toBeGreaterThanOrEqual(2)
    expect(paged.labels).toEqual(
      paged.labels.map((_, i) => `rows ${i * 50 + 1}–${Math.min((i + 1) * 50, expected.length)}`)
    )
    console.log(`ui: failures shown ${JSON.stringify(byKind)}; provider_error paged as ${paged.labels.join(" | ")}`)

    // a failed row: its reason
    await page.locator(`table[aria-label="failed rows: provider_error"] a`).first().click()
    const failedKey = expected[(paged.labels.length - 1) * 50]!
    await page.locator(`.row-detail[data-key="${failedKey}"]`).waitFor()
    const deadRow = dead.find((d) => d.key === failedKey)!
    expect(await page.locator(".row-detail .failure").textContent()).toContain(deadRow.message)

    // a malformed row: its failure, no request
    await page.getByRole("button", { name: "Previous" }).click()
    await page.locator(`#failures button[data-kind="invalid_input"]`).click()
    await page.locator(`table[aria-label="failed rows: invalid_input"] a`).first().click()
    const firstMalformed = dead.filter((d) => d.kind === "invalid_input").sort((a, b) => a.position - b.position)[0]!
    await page.locator(`.row-detail[data-key="${firstMalformed.key}"]`).waitFor()
    expect(await page.locator(".row-detail .failure").textContent()).toContain(firstMalformed.message)
    expect(firstMalformed.message).toMatch(/field "id"/)

    // a succeeded row: its record, rendered request and answer are the sink's
    const answered = ok[7]!
    await page.getByRole("searchbox", { name: "row key" }).fill(answered.id)
    await page.getByRole("button", { name: "Show" }).click()
    await page.locator(`.row-detail[data-key="${answered.id}"] #answer`).waitFor()
    expect(JSON.parse((await page.locator("#answer pre").textContent())!)).toEqual(answered.output)
    expect(await page.locator("[data-test=request-state]").textContent()).toBe("succeeded")
    expect(await page.locator(".rendered .msg.user pre").textContent()).toBe(answered.text)
    expect(await page.locator(".rendered .msg.system pre").textContent()).toBe("Label the ticket.")
    expect(await page.locator(".row-detail .warn").count()).toBe(0) // the module did not change: what was sent

    fs.mkdirSync(artifacts, { recursive: true })
    await page.locator(`#failures button[data-kind="provider_error"]`).click()
    await page.locator(`table[aria-label="failed rows: provider_error"]`).waitFor()
    await page.screenshot({ path: path.join(artifacts, "ui.png"), fullPage: true })

    // back on the list: the run with its numbers and cost
    await page.getByRole("link", { name: "← all runs" }).click()
    const row = page.locator(`tr[data-run="${runId}"]`)
    await expect.poll(() => row.getAttribute("data-state")).toBe("completed")
    expect(await row.locator("[data-col=rows]").textContent()).toBe("402")
    expect(await row.locator("[data-col=succeeded]").textContent()).toBe(String(ok.length))
    expect(await row.locator("[data-col=failed]").textContent()).toBe(String(dead.length))
    const cost = (await row.locator("[data-col=cost]").textContent())!
    expect(cost).toMatch(/^\$0\.\d{6}$/)
    await page.screenshot({ path: path.join(artifacts, "ui-runs.png") })

    // a link to a failure kind and a row opens on them (a fresh load)
    const malformed = dead.find((d) => d.kind === "invalid_input")!
    await page.goto("about:blank")
    await page.goto(`${ui.url}#/runs/${runId}?${new URLSearchParams({ kind: "invalid_input", key: malformed.key })}`)
    await page.locator(`.row-detail[data-key="${malformed.key}"]`).waitFor()
    expect(await page.locator(`table[aria-label="failed rows: invalid_input"] tbody tr`).count()).toBe(2)
    expect(await page.locator(".row-detail .failure").textContent()).toContain(malformed.message)
    console.log(`ui: ${ok.length} succeeded, ${dead.length} failed, ${batches.length} batches, cost ${cost}; screenshots in ${artifacts}`)
    expect(problems).toEqual([])
  }, 150_000)

  it("answers the JSON API: every view decodes with its schema, failures page exactly, read-only, loopback only", async () => {
    const exit = await run.exit
    expect(exit.code, exit.stderr).toBe(0)
    const base = ui.url.replace(/\/$/, "")
    const runs = await get(`${base}/api/runs`, Api.RunsResponse)
    expect(runs.runs).toHaveLength(1)
    const r = runs.runs[0]!
    const ok = readParts(out)
    const dead = readParts(path.join(out, "dead-letter"))
    expect(r).toMatchObject({ state: "completed", live: false, holder: null, pipeline: "tickets", provider: "openai", mode: "batch" })
    expect(r.counts).toMatchObject({ items: 402, delivered: ok.length, dead: dead.length, pendingItems: 0, openBatches: 0 })
    expect(r.tokens.input).toBeGreaterThan(0)
    expect(r.cost).not.toBeNull()
    // batch price: half the synchronous price
    expect(BigInt(r.cost!.syncEquivalent.picodollars)).toBe(2n * BigInt(r.cost!.spent.picodollars))

    const one = await get(`${base}/api/runs/${r.id}`, Api.RunResponse)
    expect(Object.fromEntries(one.failures.map((f) => [f.kind, f.rows]))).toEqual(countBy(dead, (d) => d.kind))

    const batches = await get(`${base}/api/runs/${r.id}/batches`, Api.BatchesResponse)
    expect(batches.batches.map((b) => b.id)).toEqual(query<{ id: string }>(db, "SELECT id FROM offpeak_batches ORDER BY seq").map((b) => b.id))
    for (const b of batches.batches.filter((b) => b.mode === "batch" && b.remoteId !== null)) {
      // sealed → submitted → ended, in that order
      expect(Date.parse(b.createdAt)).toBeLessThanOrEqual(Date.parse(b.submittedAt!))
      expect(Date.parse(b.submittedAt!)).toBeLessThanOrEqual(Date.parse(b.endedAt!))
    }

    // every failed row once, in pages of 7 following `next`
    const keys: Array<string> = []
    let after = 0
    let pages = 0
    for (;;) {
      const page = await get(`${base}/api/runs/${r.id}/failures/all?after=${after}&limit=7`, Api.FailuresResponse)
      keys.push(...page.rows.map((x) => x.key))
      pages++
      if (page.next === null) break
      after = page.next
    }
    expect(keys).toEqual(dead.sort((a, b) => a.position - b.position).map((d) => d.key))
    console.log(`ui api: ${keys.length} failed rows in ${pages} pages of 7`)

    const answered = ok[0]!
    const row = await get(`${base}/api/runs/${r.id}/row?key=${encodeURIComponent(answered.id)}`, Api.RowResponse)
    expect(row.request!.answer).toEqual(answered.output)
    expect(row.record).toEqual({ id: answered.id, text: answered.text })
    expect(row.rendered).toMatchObject({ ok: true, matches: true, fingerprint: row.request!.fingerprint })
    const malformed = dead.find((d) => d.kind === "invalid_input")!
    const bad = await get(`${base}/api/runs/${r.id}/row?key=${encodeURIComponent(malformed.key)}`, Api.RowResponse)
    expect(bad.failure).toMatchObject({ kind: "invalid_input", message: malformed.message })
    expect(bad.request).toBeNull()

    const status = async (url: string, init?: RequestInit) => (await fetch(url, init)).status
    expect(await status(`${base}/api/runs/no-such-run`)).toBe(404)
    expect(await status(`${base}/api/runs/${r.id}/row?key=no-such-key`)).toBe(404)
    expect(await status(`${base}/api/runs/${r.id}/failures/nonsense`)).toBe(400)
    expect(await status(`${base}/api/runs/${r.id}/failures/all?limit=100000`)).toBe(400)
    expect(await status(`${base}/api/runs`, { method: "POST" })).toBe(405)
    expect(await status(`${base}/api/runs/${r.id}`, { method: "DELETE" })).toBe(405)
    // a page elsewhere reaching this port through DNS rebinding is refused
    const rebound = await new Promise<number>((resolve, reject) => {
      const u = new URL(`${base}/api/runs`)
      import("node:http").then((http) =>
        http.get({ host: u.hostname, port: u.port, path: u.pathname, headers: { host: "attacker.example" } }, (res) => {
          res.resume()
          resolve(res.statusCode ?? 0)
        }).on("error", reject)
      )
    })
    expect(rebound).toBe(403)
    expect(new URL(ui.url).hostname).toBe("127.0.0.1")
  }, 120_000)

  it("a run whose process was killed shows as running with no process, with the command that resumes it", async () => {
    const killedDir = tmpDir("ui-killed")
    const killedInput = path.join(killedDir, "tickets.csv")
    writeTickets(killedInput, 300, 11)
    const url = await startEmulator("openai", killedDir, { linesPerSecond: 20 })
    const killedState = path.join(killedDir, "state")
    const killed = startCli(["run", fixture, "--state-dir", killedState], {
      cwd: killedDir,
      env: {
        OPENAI_API_KEY: "test",
        OPENAI_BASE_URL: url,
        OFFPEAK_POLL_INITIAL: "100 millis",
        OFFPEAK_TEST_INPUT: killedInput,
        OFFPEAK_TEST_OUT: path.join(killedDir, "out"),
        OFFPEAK_TEST_MAX_REQUESTS: "100"
      }
    })
    await waitFor("a submitted batch", () => submittedBatches(path.join(killedState, "state.db")) >= 1)
    killed.child.kill("SIGKILL")
    await killed.exit
    const killedAt = Date.now()
    const view = await startUi(["--state-dir", killedState], killedDir)
    const page = await browser.newPage({ viewport: { width: 1360, height: 900 } })
    try {
      await page.goto(view.url)
      const row = page.locator("table[aria-label=runs] tbody tr").first()
      await row.waitFor()
      expect(await row.getAttribute("data-state")).toBe("running")
      expect(await row.locator(".badge").textContent()).toBe("running · no process")
      const runId = (await row.getAttribute("data-run"))!
      await page.getByRole("link", { name: runId }).click()
      await page.locator("[data-test=resume]").waitFor()
      expect(await page.locator("[data-test=resume]").textContent()).toBe(`offpeak resume ${runId} --state-dir ${killedState}`)
      expect(await page.locator("#summary .meta").textContent()).toMatch(/stopped after .+ its process \(pid \d+ on .+\) is gone/)
      const api = await get(`${view.url}api/runs/${runId}`, Api.RunResponse)
      expect(api.run).toMatchObject({ state: "running", live: false, holder: { alive: false, pid: killed.child.pid } })
      // its time stopped with its process: no longer than from its start to the kill
      expect(api.run.durationMs).toBeLessThanOrEqual(killedAt - Date.parse(api.run.createdAt))
      console.log(`ui: killed run ${runId} (pid ${killed.child.pid}) shown as "running · no process"`)
    } finally {
      await page.close()
      view.child.kill("SIGTERM")
    }
  }, 90_000)

  it("refuses a ledger that does not exist, naming it", async () => {
    const empty = tmpDir("ui-none")
    const exit = await runCli(["ui", "--state-dir", path.join(empty, "nowhere")], { cwd: empty })
    expect(exit.code).not.toBe(0)
    expect(exit.stderr).toContain(`no ledger at ${path.join(empty, "nowhere", "state.db")}`)
    expect(fs.existsSync(path.join(empty, "nowhere"))).toBe(false)
  })
})

describePostgres("offpeak ui on a Postgres ledger", (pgUrl) => {
  it("shows a run whose ledger is in Postgres", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const { url } = yield* freshSchema(pgUrl, "ui")
      const dir = tmpDir("ui-pg")
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 200, 3)
      fs.appendFileSync(input, ",no id\n")
      const out = path.join(dir, "out")
      const env = {
        OPENAI_API_KEY: undefined,
        OFFPEAK_STATE: url,
        OFFPEAK_EMULATOR_KNOBS: JSON.stringify({ linesPerSecond: 2_000, lineFailures: [{ status: 400, rate: 0.1 }] }),
        OFFPEAK_TEST_INPUT: input,
        OFFPEAK_TEST_OUT: out,
        OFFPEAK_TEST_MAX_REQUESTS: "50"
      }
      const done = yield* Effect.promise(() => runCli(["run", fixture, "--state-dir", path.join(dir, "state")], { cwd: dir, env }))
      expect(done.code, done.stderr).toBe(0)
      const ui = yield* Effect.promise(() => startUi(["--state", url], dir, { OFFPEAK_STATE: undefined }))
      yield* Effect.addFinalizer(() => Effect.sync(() => ui.child.kill("SIGTERM")))
      const base = ui.url.replace(/\/$/, "")
      const runs = yield* Effect.promise(() => get(`${base}/api/runs`, Api.RunsResponse))
      const ok = readParts(out)
      const dead = readParts(path.join(out, "dead-letter"))
      expect(runs.runs).toHaveLength(1)
      expect(runs.runs[0]!.counts).toMatchObject({ items: 201, delivered: ok.length, dead: dead.length })
      const info = yield* Effect.promise(() => get(`${base}/api/info`, Api.InfoResponse))
      expect(info.ledger).toMatch(/^postgres:\/\//)
      const row = yield* Effect.promise(() =>
        get(`${base}/api/runs/${runs.runs[0]!.id}/row?key=${encodeURIComponent(ok[0]!.id)}`, Api.RowResponse)
      )
      expect(row.request!.answer).toEqual(ok[0]!.output)
      console.log(`ui on postgres: ${ok.length} succeeded, ${dead.length} failed; ui started in ${ui.startupMs} ms`)
    })))
  }, 120_000)
})
