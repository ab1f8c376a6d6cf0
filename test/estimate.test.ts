/**
 * Money before it is spent, on the emulators (whose usage is counted with the same tokenizer): the estimate of a
 * 10,000-row job against what the job then reports, for every provider; `offpeak estimate` (table and `--json`,
 * validated by the Estimate schema); `offpeak run --dry-run` (batch files written as the run then splits them,
 * nothing sent, no run created); `offpeak run --sample N` (N rows sent synchronously as a run of their own, reused by
 * the full run, which the user is asked about on a terminal — refused without one unless `--yes`).
 */
import * as Estimate from "@offpeak/core/Estimate"
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Provider from "@offpeak/core/Provider"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema, Stream } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Fixture from "./fixtures/tickets.pipeline.ts"
import { bin, killAll, query, repo, runCli, startEmulator, tmpDir, waitFor, writeTickets } from "./support/files.ts"
import * as Providers from "./support/providers.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

const ledgerOf = (stateDir: string) =>
  Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))

const pct = (estimate: number, actual: number) => ((estimate - actual) / actual) * 100
const signed = (x: number) => `${x >= 0 ? "+" : ""}${x.toFixed(3)}`

describe.each(Providers.all)("$name: estimate vs actual on a 10,000-row job (emulator)", (p) => {
  it.live("input tokens within 2 % of the summary's; requests and batches as sent; a sample's mean predicts the output", () =>
    Effect.gen(function*() {
      const dir = tmpDir(`estimate-${p.name}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 10_000, 19)
      const emulator = yield* p.serve({ linesPerSecond: 200_000 })
      const pipeline = Fixture.make({ input, out: path.join(dir, "out"), maxRequests: 2_000, maxInFlight: 5 })
      const layer = Layer.mergeAll(p.layer(emulator.url), ledgerOf(dir))
      const estimateNow = Effect.gen(function*() {
        return yield* Estimate.make(pipeline, { provider: yield* Provider.Provider, ledger: yield* Ledger.Ledger })
      }).pipe(Effect.provide(layer))
      const first = yield* estimateNow
      assert.strictEqual(first.requests, 10_000)
      assert.isNull(first.outputTokens.expected)

      // a sample of 200 rows, as `run --sample 200` sends it: a sync run of its own, its answers then in the cache
      const sampled = Fixture.make({ input, out: path.join(dir, "out-sample") })
      const sample = yield* Pipeline.run(
        Pipeline.make({
          ...sampled,
          name: Estimate.sampleName(pipeline.name),
          source: { ...sampled.source, read: sampled.source.read.pipe(Stream.take(200)) },
          mode: "sync"
        }),
        { stateDir: dir }
      ).pipe(Effect.provide(layer))
      assert.strictEqual(sample.succeeded, 200)
      const estimate = yield* estimateNow
      assert.strictEqual(estimate.rows.cached, 200)
      assert.strictEqual(estimate.outputTokens.sample?.runId, sample.runId)

      const summary = yield* Pipeline.run(pipeline, { stateDir: dir }).pipe(Effect.provide(layer))
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.succeeded, 10_000)
      assert.strictEqual(summary.cachedRows, 200)

      // the summary's usage counts the answers this run paid for: the 9,800 the estimate says it sends
      const inputOff = pct(estimate.inputTokens.total, summary.usage.inputTokens)
      assert.isBelow(Math.abs(inputOff), 2)
      const outputOff = pct(estimate.outputTokens.expected!, summary.usage.outputTokens)
      assert.isBelow(Math.abs(outputOff), 15)
      assert.strictEqual(estimate.rows.total, summary.rows)
      assert.strictEqual(estimate.rows.sent, summary.succeeded - summary.cachedRows)
      assert.strictEqual(estimate.batches.count, summary.batches)
      assert.isAtMost(summary.usage.outputTokens, estimate.outputTokens.bound)
      assert.isAtMost(summary.cost.spentUsd, estimate.cost.batch.boundUsd)
      const requests = yield* Effect.gen(function*() {
        const ledger = yield* Ledger.Ledger
        const counts = yield* ledger.counts(summary.runId)
        const paid = yield* ledger.paidAnswers(summary.runId)
        return { all: counts.requests, paid: paid.answers }
      }).pipe(Effect.provide(ledgerOf(dir)))
      assert.strictEqual(estimate.requests, requests.paid)
      assert.strictEqual(first.requests, requests.all)
      console.log(
        `${p.name}: 10,000 rows (200 answered by a sample first), ${estimate.requests} requests in ${estimate.batches.count} ` +
          `batches; input tokens estimated ${estimate.inputTokens.total} (${estimate.inputTokens.exact ? "exact" : "approximation"}) ` +
          `vs ${summary.usage.inputTokens} reported (${signed(inputOff)} %); output expected ${estimate.outputTokens.expected} ` +
          `(${estimate.outputTokens.perAnswer!.toFixed(1)} an answer in the sample) vs ${summary.usage.outputTokens} answered ` +
          `(${signed(outputOff)} %), at most ${estimate.outputTokens.bound}; cost expected ` +
          `${Estimate.formatUsd(estimate.cost.batch.expectedUsd!)}, at most ${Estimate.formatUsd(estimate.cost.batch.boundUsd)} ` +
          `(batch) vs ${Estimate.formatUsd(summary.cost.spentUsd)} spent (sync equivalent ` +
          `${Estimate.formatUsd(summary.cost.syncEquivalentUsd)}); estimated in ${estimate.durationMs} ms`
      )
    }), 240_000)
})

describe("CLI: estimate, run --dry-run, run --sample", () => {
  const setup = async (name: string, rows = 1_200) => {
    const dir = tmpDir(name)
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, rows, 23)
    const url = await startEmulator("openai", dir, { validationMs: 0 })
    const env = {
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: url,
      OFFPEAK_POLL_INITIAL: "50 millis",
      OFFPEAK_POLL_MAX: "200 millis",
      OFFPEAK_TEST_INPUT: input,
      OFFPEAK_TEST_OUT: path.join(dir, "out"),
      OFFPEAK_TEST_MAX_REQUESTS: "300"
    }
    return { dir, input, url, env, state: path.join(dir, "state") }
  }

  it("estimate prints the table, and --json that the Estimate schema decodes; nothing is created", async () => {
    const { dir, env, state, url } = await setup("estimate-cli")
    const table = await runCli(["estimate", fixture, "--state-dir", state], { cwd: dir, env })
    assert.strictEqual(table.code, 0, table.stderr)
    assert.match(table.stdout, /^estimate: tickets on openai \(mode batch\) · gpt-4o-mini\n/)
    assert.match(table.stdout, /\n {2}requests {3}1,200 in 4 batches · 4 files, [\d.]+ [KM]iB · at most 300 requests/)
    assert.match(table.stdout, /\n {4}batch API +\$[\d.]+ +-\n/)
    const json = await runCli(["estimate", fixture, "--json", "--sample-rows", "600", "--state-dir", state], { cwd: dir, env })
    assert.strictEqual(json.code, 0, json.stderr)
    const estimate = Schema.decodeUnknownSync(Estimate.Estimate)(JSON.parse(json.stdout))
    assert.strictEqual(estimate.source.rowsRead, 600)
    assert.isFalse(estimate.source.whole)
    assert.isNull(estimate.source.rows)
    assert.strictEqual(estimate.requests, 600)
    assert.isTrue(estimate.advice.includes("the source cannot count its rows: the figures are for the first 600 rows only"))
    assert.isFalse(fs.existsSync(path.join(state, "state.db")))
    assert.strictEqual((await Providers.openAiSent(url)).length, 0)
    const usage = await runCli(["estimate", fixture, "--sample-rows", "0", "--state-dir", state], { cwd: dir, env })
    assert.strictEqual(usage.code, 2)
    assert.include(usage.stderr, "--sample-rows must be at least 1 (got 0)")
    console.log(`estimate --json (600 of 1,200 rows): ${estimate.requests} requests, ${estimate.inputTokens.total} input tokens`)
  }, 120_000)

  it("run --dry-run writes the batch files the run then sends, prints the estimate, sends nothing, creates no run", async () => {
    const { dir, env, state, url } = await setup("estimate-dry")
    const dry = await runCli(["run", fixture, "--dry-run", "--state-dir", state], { cwd: dir, env })
    assert.strictEqual(dry.code, 0, dry.stderr)
    assert.include(dry.stdout, "nothing was sent and no run was created")
    assert.isFalse(fs.existsSync(path.join(state, "state.db")))
    assert.strictEqual((await Providers.openAiSent(url)).length, 0)
    const folder = path.join(state, "dry-run", "tickets")
    const files = fs.readdirSync(folder).filter((f) => f.endsWith(".jsonl")).sort()
    const written = files.map((f) =>
      fs.readFileSync(path.join(folder, f), "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).custom_id as string)
    )
    const estimate = Schema.decodeUnknownSync(Estimate.Estimate)(JSON.parse(fs.readFileSync(path.join(folder, "estimate.json"), "utf8")))
    assert.strictEqual(files.length, estimate.batches.count)

    // the real run: the same batches, line for line (in the order they were created)
    const run = await runCli(["run", fixture, "--state-dir", state], { cwd: dir, env })
    assert.strictEqual(run.code, 0, run.stderr)
    const sent = [...(await Providers.openAiSent(url))].reverse()
    assert.strictEqual(sent.length, written.length)
    assert.deepStrictEqual(
      sent.map((ids) => [...ids].sort()).sort((a, b) => a[0]!.localeCompare(b[0]!)),
      written.map((ids) => [...ids].sort()).sort((a, b) => a[0]!.localeCompare(b[0]!))
    )
    console.log(
      `dry run: ${files.length} files, ${written.flat().length} lines; the run sent ${sent.length} batches with the same lines`
    )
  }, 120_000)

  it("run --sample N --yes: N rows through the synchronous API as a run of their own, reused by the full run", async () => {
    const { dir, env, state, url } = await setup("estimate-sample")
    const out = await runCli(["run", fixture, "--sample", "20", "--yes", "--state-dir", state], { cwd: dir, env })
    assert.strictEqual(out.code, 0, out.stderr)
    assert.match(out.stdout, /^sample run tickets-sample-\S+ \(completed, [\d.]+ s\): 20 rows · 20 answered · 0 failed\n/)
    assert.match(out.stdout, /\n {2}r000001 → \{"category":/)
    assert.match(out.stdout, /\n {2}tokens: [\d,]+ in, [\d,]+ out · cost \$[\d.]+ at the synchronous price\n/)
    assert.match(out.stdout, /answered by the result cache 20 \(free\)/)
    assert.match(out.stdout, /expected [\d,]+ \([\d.]+ an answer in sample run tickets-sample-/)
    assert.match(out.stdout, /send the full job: 1,180 more requests, expected \$[\d.]+, at most \$[\d.]+ at the batch price\? \[y\/N\] yes \(--yes\)/)
    const db = path.join(state, "state.db")
    const runs = query<{ id: string; pipeline: string; mode: string; state: string }>(db, "SELECT id, pipeline, mode, state FROM offpeak_runs ORDER BY created_at")
    assert.deepStrictEqual(runs.map((r) => [r.pipeline, r.mode, r.state]), [["tickets:sample", "sync", "completed"], ["tickets", "batch", "completed"]])
    // the sample's answers were not paid twice: no batch the full run created carries them
    const sampled = query<{ fingerprint: string }>(
      db,
      `SELECT r.fingerprint AS fingerprint FROM offpeak_requests r JOIN offpeak_runs u ON u.num = r.run WHERE u.pipeline = 'tickets:sample'`
    ).map((r) => r.fingerprint)
    assert.strictEqual(sampled.length, 20)
    const sent = (await Providers.openAiSent(url)).flat()
    assert.strictEqual(sent.length, 1_180)
    for (const fp of sampled) assert.notInclude(sent, fp)
    const cached = query<{ n: number }>(
      db,
      `SELECT COUNT(*) AS n FROM offpeak_requests r JOIN offpeak_runs u ON u.num = r.run WHERE u.pipeline = 'tickets' AND r.cached = 1`
    )[0]!.n
    assert.strictEqual(cached, 20)
    console.log(`sample: 20 rows sent synchronously, then 1,180 in batches (${cached} answers copied from the sample)`)
  }, 120_000)

  it("run --sample without --yes and without a terminal refuses before sending anything", async () => {
    const { dir, env, state, url } = await setup("estimate-notty", 100)
    const out = await runCli(["run", fixture, "--sample", "5", "--state-dir", state], { cwd: dir, env })
    assert.strictEqual(out.code, 2)
    assert.include(out.stderr, "--sample 5 asks before the full job, but stdin is not a terminal to ask on: add --yes")
    assert.isFalse(fs.existsSync(path.join(state, "state.db")))
    assert.strictEqual((await Providers.openAiSent(url)).length, 0)
    const both = await runCli(["run", fixture, "--sample", "5", "--dry-run", "--state-dir", state], { cwd: dir, env })
    assert.strictEqual(both.code, 2)
    assert.include(both.stderr, "--dry-run sends nothing and --sample sends rows: give one of them")
  }, 60_000)

  it("run --sample on a terminal asks y/N: no leaves only the sample, yes runs the full job", async () => {
    const { dir, env, state, url } = await setup("estimate-tty", 300)
    const socket = `offpeak-estimate-${process.pid}`
    const tmux = (...args: Array<string>) => execFileSync("tmux", ["-L", socket, ...args], { encoding: "utf8" })
    const screen = (session: string) => tmux("capture-pane", "-p", "-J", "-S", "-500", "-t", session)
    const quote = (word: string) => `'${word.replace(/'/g, `'\\''`)}'`
    const command = [
      `cd ${quote(dir)} &&`,
      "env",
      ...Object.entries(env).map(([k, v]) => quote(`${k}=${v}`)),
      ...[process.execPath, bin, "run", fixture, "--sample", "10", "--state-dir", state].map(quote),
      "; echo EXIT=$?; sleep 600"
    ].join(" ")
    try {
      const answer = async (session: string, key: string) => {
        tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", command)
        await waitFor("the question", () => screen(session).includes("[y/N]"), 60_000).catch((e) => {
          throw new Error(`${e.message}; the terminal shows:\n${screen(session)}`)
        })
        tmux("send-keys", "-t", session, key, "Enter")
        await waitFor("the end", () => /EXIT=\d+/.test(screen(session)), 60_000)
        return screen(session)
      }
      const no = await answer("no", "n")
      assert.match(no, /EXIT=0/)
      assert.include(no, "not sent: the full job was not started")
      const db = path.join(state, "state.db")
      assert.deepStrictEqual(query<{ pipeline: string }>(db, "SELECT pipeline FROM offpeak_runs").map((r) => r.pipeline), ["tickets:sample"])
      assert.strictEqual((await Providers.openAiSent(url)).length, 0)

      const yes = await answer("yes", "y")
      assert.match(yes, /EXIT=0/)
      assert.match(yes, /run tickets-\S+: completed/)
      const runs = query<{ pipeline: string; state: string }>(db, "SELECT pipeline, state FROM offpeak_runs ORDER BY created_at")
      assert.deepStrictEqual(runs.map((r) => r.pipeline), ["tickets:sample", "tickets:sample", "tickets"])
      // the second sample found the first one's answers in the cache; the full run sent the other 290
      assert.strictEqual((await Providers.openAiSent(url)).flat().length, 290)
      console.log(`terminal: "n" started nothing more; "y" ran the full job (290 requests in batches)`)
    } finally {
      try {
        tmux("kill-server")
      } catch {
        // already gone
      }
    }
  }, 180_000)
})
