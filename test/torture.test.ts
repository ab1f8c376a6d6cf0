/**
 * Crash torture, for OpenAI, Anthropic and Gemini: one run (10,000 rows on OpenAI, 6,000 on Anthropic, 5,000 on Gemini,
 * 125 requests a batch) is SIGKILLed again and again and resumed each time —
 *
 * - at every crash point of the pipeline and the adapter (reading, after upload before create, inside a create whose
 *   request went out and whose answer is not in — `batch.create.sent`, against an emulator that answers every create
 *   late while the batch already exists —, after create before the ledger write, while polling, mid-download,
 *   mid-sink-write, …), at a first and a later pass (Anthropic and Gemini: the points where the adapter's state is at
 *   stake; Gemini is killed inside its creates from outside, the moment its emulator holds a batch whose create has
 *   not been answered, and the emulator's creation time proves the answer was not sent yet);
 * - while a second process tries to resume the same run: the attempt at work is left alive, a second `offpeak resume`
 *   started meanwhile must be refused naming the owner's pid, then the first is killed (with a create in flight, or
 *   while it delivers) and the next attempt resumes;
 * - at random moments of an attempt at work.
 *
 * At the end every row must be in the sink exactly once with its own answer; no request may have been created twice at
 * the emulator (no custom id in two created batches); every remote batch must be held by the ledger and ended (none
 * unclaimed, none running); and the ledger, the sink and the manifest must agree.
 *
 * Besides, for each provider, one run where every create is answered late and nothing is killed.
 */
import { GoogleGenAI } from "@google/genai"
import OpenAI from "openai"
import { afterAll, describe, expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Counters } from "../packages/providers/anthropic/emulator/Emulator.ts"
import { killAll, prng, query, readParts, repo, runCli, startCli, startEmulator, tmpDir, waitFor, writeTickets } from "./support/files.ts"
import * as Providers from "./support/providers.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

/** requests per batch: small batches, many of them, so every attempt reaches its crash point */
const MAX_REQUESTS = 125
/** how late the torture's emulators answer every create: the crash point inside a create (`batch.create.sent`, 100 ms
 * after the request went out) falls while the batch exists and its answer is not in */
const CREATE_LATENCY_MS = 500
/** Gemini's: creates are one at a time, so this also paces the run (fewer rows go by while a second process starts) */
const GEMINI_CREATE_LATENCY_MS = 1_000

// ----- what the emulator was asked -----

/** one batch the emulator created: its custom ids (the requests paid for) and whether it is still running */
interface Remote {
  readonly id: string
  readonly ids: ReadonlyArray<string>
  readonly running: boolean
}

/** one batch as the emulator lists it: its name, the display name it was created with, when the emulator made it */
interface Listed {
  readonly id: string
  readonly displayName: string
  readonly createdMs: number
  readonly running: boolean
}

const OPENAI_ENDED = new Set(["completed", "failed", "expired", "cancelled"])

/** every batch the OpenAI emulator created, with the custom ids of its input file */
const openAiRemote = async (url: string): Promise<ReadonlyArray<Remote>> => {
  const client = new OpenAI({ apiKey: "test", baseURL: url, maxRetries: 10 })
  const out: Array<Remote> = []
  for await (const b of client.batches.list({ limit: 100 })) {
    const text = await (await client.files.content(b.input_file_id)).text()
    const ids = text.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).custom_id as string)
    out.push({ id: b.id, ids, running: !OPENAI_ENDED.has(b.status) })
  }
  return out
}

const anthropicCounters = async (url: string): Promise<Counters> => {
  const response = await fetch(`${url}/_emulator/counters?ids=1`)
  if (!response.ok) throw new Error(`counters: HTTP ${response.status}`)
  return (await response.json()) as Counters
}

/** every batch the Anthropic emulator created, from its counters (custom ids as the create received them) */
const anthropicRemote = async (url: string): Promise<ReadonlyArray<Remote>> =>
  (await anthropicCounters(url)).batches.map((b) => ({ id: b.id, ids: b.custom_ids ?? [], running: b.status !== "ended" }))

const geminiClients = new Map<string, GoogleGenAI>()
const geminiClient = (url: string): GoogleGenAI => {
  let ai = geminiClients.get(url)
  if (ai === undefined) {
    ai = new GoogleGenAI({ apiKey: "test", vertexai: false, httpOptions: { baseUrl: url, apiVersion: "v1beta" } })
    geminiClients.set(url, ai)
  }
  return ai
}

/** the SDK's names of a Gemini batch's ended states (it rewrites the API's `BATCH_STATE_*` to `JOB_STATE_*`) */
const GEMINI_ENDED = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"])

/** the batches the Gemini emulator lists, newest first: all of them, or the first `pageSize` */
const geminiListed = async (url: string, pageSize?: number): Promise<ReadonlyArray<Listed>> => {
  const out: Array<Listed> = []
  const pager = await geminiClient(url).batches.list({ config: { pageSize: pageSize ?? 100 } })
  const toListed = (b: { name?: string; displayName?: string; createTime?: string; state?: string }): Listed => ({
    id: b.name!,
    displayName: b.displayName ?? "",
    createdMs: Date.parse(b.createTime ?? ""),
    running: !GEMINI_ENDED.has(b.state ?? "")
  })
  if (pageSize !== undefined) return pager.page.map(toListed)
  for await (const b of pager) out.push(toListed(b))
  return out
}

/**
 * every batch the Gemini emulator created, with the keys of its results (inline responses carry the request's
 * `metadata.key`, lines of a responses file their `key`): the requests it answered, so paid for
 */
const geminiRemote = async (url: string): Promise<ReadonlyArray<Remote>> => {
  const ai = geminiClient(url)
  const out: Array<Remote> = []
  for (const b of await geminiListed(url)) {
    const ids: Array<string> = []
    if (!b.running) {
      // the list leaves the results out: a get returns them
      const job = await ai.batches.get({ name: b.id })
      for (const r of job.dest?.inlinedResponses ?? []) ids.push(r.metadata!.key!)
      if (job.dest?.fileName !== undefined) {
        const response = await fetch(`${url}/v1beta/${job.dest.fileName}:download?alt=media`, { headers: { "x-goog-api-key": "test" } })
        if (!response.ok) throw new Error(`${job.dest.fileName}: HTTP ${response.status}`)
        for (const line of (await response.text()).split("\n")) if (line.length > 0) ids.push(JSON.parse(line).key)
      }
    }
    out.push({ id: b.id, ids, running: b.running })
  }
  return out
}

// ----- the schedule -----

/**
 * One attempt:
 * - `point`: armed with a crash point, it kills itself there;
 * - `inside create`: killed from outside the moment the emulator holds a batch this attempt created (its `pass`-th
 *   or a later one), whose create the emulator has not answered yet (for an adapter without `batch.create.sent`);
 * - `contested`: once it holds the run, a second process resumes the same run and must be refused naming the
 *   attempt's pid while the attempt works on; then the attempt is killed once it is in `phase`;
 * - `random`: killed `afterMs` after it took the run's lease.
 */
type Step =
  | { readonly kind: "point"; readonly failpoint: string }
  | { readonly kind: "contested"; readonly phase: "with a create in flight" | "delivering" }
  | { readonly kind: "random"; readonly afterMs: number }
  | { readonly kind: "inside create"; readonly pass: number }

const POINTS = [
  "source.admitted",
  "batch.sealed",
  "batch.uploaded",
  "batch.create.sent",
  "batch.created",
  "batch.submitted",
  "batch.polled",
  "results.recorded",
  "part.assigned",
  "part.writing",
  "part.written",
  "batch.collected"
] as const
const laterPass = (p: typeof POINTS[number]) => p === "batch.polled" ? 6 : p === "source.admitted" ? 2 : 3
const point = (failpoint: string): Step => ({ kind: "point", failpoint })

/** OpenAI: every crash point at a first pass, a second process contending at two moments among them */
const OPENAI_SCHEDULE: ReadonlyArray<Step> = [
  point("source.admitted:1"),
  point("batch.sealed:1"),
  point("batch.uploaded:1"),
  point("batch.create.sent:1"),
  { kind: "contested", phase: "with a create in flight" },
  point("batch.created:1"),
  point("batch.submitted:1"),
  point("batch.polled:1"),
  { kind: "contested", phase: "delivering" },
  point("results.recorded:1"),
  point("part.assigned:1"),
  point("part.writing:1"),
  point("part.written:1"),
  point("batch.collected:1"),
  // and at a later pass
  ...POINTS.map((p) => point(`${p}:${laterPass(p)}`)),
  // and at random moments of an attempt at work
  ...Array.from({ length: 2 }, (_, i): Step => ({ kind: "random", afterMs: Math.floor(prng(99 + i)() * 1_500) }))
]

/**
 * Anthropic: the crash points where the adapter's own state is at stake — its submit journal (`batch.uploaded` is
 * after the intent is journaled), inside and right after the create, adoption, polling, results — at a first and a
 * later pass, a second process contending while a create is in flight, a random moment. The runner's own points
 * (reading, sealing, delivering) are the same code for every provider and run in the OpenAI schedule; here they
 * would double the torture's time for nothing new.
 */
const ANTHROPIC_SCHEDULE: ReadonlyArray<Step> = [
  point("batch.uploaded:1"),
  point("batch.create.sent:1"),
  { kind: "contested", phase: "with a create in flight" },
  point("batch.created:1"),
  point("batch.submitted:1"),
  point("batch.polled:1"),
  point("results.recorded:1"),
  point("part.writing:1"),
  point("batch.collected:1"),
  point("batch.uploaded:3"),
  point("batch.create.sent:3"),
  point("batch.created:3"),
  point("batch.submitted:3"),
  point("batch.polled:6"),
  point("results.recorded:3"),
  point("batch.collected:3"),
  { kind: "random", afterMs: Math.floor(prng(101)() * 1_500) }
]

/**
 * Gemini: as Anthropic's, the points where the adapter's state is at stake — the display name is all its `find` has
 * to adopt a batch after a crash: right before the create (`batch.uploaded`: inline batches are not uploaded), inside
 * it (from outside: the adapter has no `batch.create.sent`), right after it before the ledger write, while polling,
 * while its inline responses are recorded — at a first and a later pass (later: `find` must pick its batch among
 * many), a second process contending while a create is in flight, a random moment. 12 kills: the runner's own points
 * (reading, sealing, the ledger write, delivering, collecting) are the same code for every provider and run in the
 * OpenAI schedule. Its creates are answered a second late, which paces the run: the contested attempt works on while
 * the second process starts (many seconds on a loaded machine), and the attempts after it must still find work left
 * in 5,000 rows.
 */
const GEMINI_SCHEDULE: ReadonlyArray<Step> = [
  point("batch.uploaded:1"),
  { kind: "inside create", pass: 1 },
  { kind: "contested", phase: "with a create in flight" },
  point("batch.created:1"),
  point("batch.polled:1"),
  point("results.recorded:1"),
  point("batch.uploaded:3"),
  { kind: "inside create", pass: 3 },
  point("batch.created:3"),
  point("batch.polled:6"),
  point("results.recorded:3"),
  { kind: "random", afterMs: Math.floor(prng(103)() * 1_500) }
]

interface Case {
  readonly provider: Providers.ProviderCase
  readonly schedule: ReadonlyArray<Step>
  /** rows of the run: enough batches (of {@link MAX_REQUESTS}) for every attempt to reach its crash point */
  readonly rows: number
  /** how late the emulator answers every create in the torture */
  readonly createLatencyMs: number
  readonly args: ReadonlyArray<string>
  /** the emulator's knobs, every create answered `createLatencyMs` late */
  readonly knobs: (createLatencyMs: number) => Record<string, unknown>
  readonly remote: (url: string) => Promise<ReadonlyArray<Remote>>
  /** the newest batches the emulator created, newest first (for `inside create`) */
  readonly newest?: (url: string) => Promise<ReadonlyArray<Listed>>
  /** the offpeak batch id a batch was created for, from what the emulator lists */
  readonly batchIdOf?: (listed: Listed) => string | undefined
  /** what else the emulator counts, for the figures */
  readonly extra: (url: string) => Promise<string>
}

const CASES: ReadonlyArray<Case> = [
  {
    provider: Providers.openai,
    schedule: OPENAI_SCHEDULE,
    rows: 10_000,
    createLatencyMs: CREATE_LATENCY_MS,
    args: [],
    knobs: (createLatencyMs) => ({ linesPerSecond: 4_000, validationMs: 30, createLatencyMs }),
    remote: openAiRemote,
    extra: async () => ""
  },
  {
    provider: Providers.anthropic,
    schedule: ANTHROPIC_SCHEDULE,
    rows: 6_000,
    createLatencyMs: CREATE_LATENCY_MS,
    args: ["--provider", "anthropic"],
    knobs: (createLatencyMs) => ({ linesPerSecond: 4_000, createLatencyMs }),
    remote: anthropicRemote,
    extra: async (url) => {
      const c = await anthropicCounters(url)
      expect(c.requests.sentTwiceWithoutFailure, "requests sent twice without a failure before").toBe(0)
      expect(c.repeatedSets, "batches repeating an earlier batch's requests").toBe(0)
      const downloads = c.batches.map((b) => b.results_downloads)
      return `; creates received ${c.creates.received}, answered ${c.creates.answered}, results downloads per batch ` +
        `max ${Math.max(...downloads)} (total ${downloads.reduce((s, n) => s + n, 0)})`
    }
  },
  {
    provider: Providers.gemini,
    schedule: GEMINI_SCHEDULE,
    rows: 5_000,
    createLatencyMs: GEMINI_CREATE_LATENCY_MS,
    args: ["--provider", "gemini"],
    knobs: (createLatencyMs) => ({ linesPerSecond: 4_000, createLatency: { ms: createLatencyMs } }),
    remote: geminiRemote,
    newest: (url) => geminiListed(url, 5),
    batchIdOf: (listed) => /^offpeak (\S+)$/.exec(listed.displayName)?.[1],
    extra: async (url) => {
      // a batch created twice for one offpeak batch carries its display name twice
      const names = (await geminiListed(url)).map((b) => b.displayName)
      expect(names.length - new Set(names).size, "display names (offpeak batch ids) the emulator created twice").toBe(0)
      return `; ${names.length} distinct display names at the emulator`
    }
  }
]

// ----- the ledger, read from the test while the CLI writes it -----

const safely = <A>(f: () => A, fallback: A): A => {
  try {
    return f()
  } catch {
    // the ledger is being created, or busy
    return fallback
  }
}

const ledgerCount = (db: string, sql: string): number =>
  safely(() => (fs.existsSync(db) ? query<{ n: number }>(db, sql)[0]!.n : 0), 0)

const holdsLease = (db: string, pid: number | undefined) =>
  pid !== undefined && ledgerCount(db, `SELECT COUNT(*) AS n FROM offpeak_leases WHERE owner IS NOT NULL AND pid = ${pid}`) > 0

const refusal = /pipeline "tickets" is being worked by run (\S+): process (\d+) on \S+, since .* \(last heartbeat \d+ s ago\)/

// ----- the checks -----

/** rows once each with their own answer, the ledger and the sink and the manifest agreeing, nothing left half-written */
const checkDelivery = (provider: Providers.ProviderCase, db: string, runId: string, out: string, state: string, rows: number) => {
  const delivered = readParts(out)
  expect(new Set(delivered.map((r) => r.id)).size).toBe(rows)
  expect(delivered).toHaveLength(rows)
  for (const r of delivered) expect(r.output).toEqual(provider.expected({ id: r.id, text: r.text }))
  expect(readParts(path.join(out, "dead-letter"))).toHaveLength(0)

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
  expect(counts).toEqual({ items: rows, delivered: rows, undelivered: 0 })
  expect(query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_parts WHERE state <> 'committed'")[0]!.n).toBe(0)
  // nothing half-written is left behind: no temporary files, no batch files once every batch is collected
  const leftovers = (dir: string): Array<string> =>
    fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory()
        ? leftovers(path.join(dir, e.name))
        : e.name.includes(".tmp") || e.name.endsWith(".jsonl") && dir.endsWith("batches")
        ? [path.join(dir, e.name)]
        : []
    )
  expect(leftovers(out)).toEqual([])
  expect(leftovers(path.join(state, "runs"))).toEqual([])
  const manifestRows = JSON.parse(fs.readFileSync(path.join(out, "_manifest.json"), "utf8")).parts
    .reduce((s: number, p: { rows: number }) => s + p.rows, 0)
  expect(manifestRows).toBe(rows)
}

/** at the emulator: each request created once, every remote batch held by one ledger batch and ended */
const checkRemote = async (c: Case, url: string, db: string, rows: number) => {
  const remote = await c.remote(url)
  const ids = remote.flatMap((b) => b.ids)
  const createdTwice = ids.length - new Set(ids).size
  expect(createdTwice, "requests created twice at the emulator").toBe(0)
  expect(ids).toHaveLength(rows)
  const held = query<{ remote_id: string }>(db, "SELECT remote_id FROM offpeak_batches WHERE remote_id IS NOT NULL").map((b) => b.remote_id)
  expect(new Set(held).size, "no remote batch held by two ledger batches").toBe(held.length)
  const unclaimed = remote.filter((b) => !held.includes(b.id)).map((b) => b.id)
  const running = remote.filter((b) => b.running).map((b) => b.id)
  expect(unclaimed, "remote batches no ledger batch holds").toEqual([])
  expect(running, "remote batches still running").toEqual([])
  expect(remote.length).toBe(held.length)
  return { batches: remote.length, held: held.length, createdTwice, unclaimed: unclaimed.length, running: running.length }
}

// ----- the tests -----

describe.concurrent("crash torture", () => {
  for (const c of CASES) {
    const name = c.provider.name
    it(`${name}: SIGKILL at ${c.schedule.length} points (inside late creates, with a second process contending), resume each time: every row exactly once, nothing created twice`, async () => {
      const dir = tmpDir(`torture-${name}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, c.rows, 11)
      const out = path.join(dir, "out")
      const state = path.join(dir, "state")
      const db = path.join(state, "state.db")
      const url = await startEmulator(name, dir, c.knobs(c.createLatencyMs))
      const env = {
        ...c.provider.cliEnv(url),
        OFFPEAK_POLL_INITIAL: "50 millis",
        OFFPEAK_POLL_MAX: "200 millis",
        OFFPEAK_TEST_INPUT: input,
        OFFPEAK_TEST_OUT: out,
        OFFPEAK_TEST_MAX_REQUESTS: String(MAX_REQUESTS),
        OFFPEAK_TEST_IN_FLIGHT: "3"
      }
      const started = Date.now()

      let runId: string | undefined
      let kills = 0
      let resumes = 0
      let completedEarly = 0
      const hit: Array<string> = []
      const insideCreates: Array<string> = []
      const contests: Array<string> = []
      let attemptsMs = 0
      for (const step of c.schedule) {
        const args = runId === undefined
          ? ["run", fixture, ...c.args, "--state-dir", state]
          : ["resume", runId, "--state-dir", state]
        if (runId !== undefined) resumes++
        const failpoint = step.kind === "point" ? step.failpoint : ""
        const heldBefore = ledgerCount(db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL")
        const partsBefore = ledgerCount(db, "SELECT COUNT(*) AS n FROM offpeak_parts WHERE state = 'committed'")
        // batches an earlier attempt left in the middle of their create (the next attempt adopts them)
        const submittingBefore = safely(
          () => fs.existsSync(db) ? query<{ seq: number }>(db, "SELECT seq FROM offpeak_batches WHERE state = 'submitting'").map((b) => b.seq) : [],
          []
        )
        // the emulator's newest batches before the attempt (the list is newest first): one not among them is the attempt's
        const before = step.kind === "inside create" ? new Set((await c.newest!(url)).map((b) => b.id)) : new Set<string>()
        const attemptStarted = Date.now()
        const attempt = startCli(args, { cwd: dir, env: { ...env, OFFPEAK_FAILPOINTS: failpoint } })
        const pid = attempt.child.pid
        const alive = () => attempt.child.exitCode === null && attempt.child.signalCode === null
        let label = failpoint
        /** an `inside create` kill: the batch the emulator held and the ledger did not, killed how long after its creation */
        let caught: { readonly listed: Listed; readonly batchId: string; readonly afterMs: number } | undefined

        if (step.kind === "inside create") {
          let passes = 0
          const counted = new Set<string>()
          while (alive() && caught === undefined) {
            const fresh = (await c.newest!(url)).filter((b) => !before.has(b.id) && !counted.has(b.id)).reverse()
            for (const b of fresh) {
              counted.add(b.id)
              passes++
              const batchId = c.batchIdOf!(b)
              if (passes < step.pass || batchId === undefined) continue
              // the emulator has it; the ledger does not (the create's answer is not in), and its answer is not due yet
              const known = ledgerCount(db, `SELECT COUNT(*) AS n FROM offpeak_batches WHERE id = '${batchId}' AND remote_id IS NOT NULL`)
              const now = Date.now()
              if (known === 0 && now < b.createdMs + c.createLatencyMs - 100) {
                attempt.child.kill("SIGKILL")
                caught = { listed: b, batchId, afterMs: now - b.createdMs }
                break
              }
            }
            if (caught === undefined) await new Promise((r) => setTimeout(r, 20))
          }
          label = `inside create, pass ${passes}`
        } else if (step.kind === "random") {
          await waitFor("the attempt at work", () => !alive() || holdsLease(db, pid))
          await new Promise((r) => setTimeout(r, step.afterMs))
          attempt.child.kill("SIGKILL")
          label = `random ${step.afterMs} ms`
        } else if (step.kind === "contested") {
          // the attempt at work: a second process asks for the run while the first works on, towards the phase
          await waitFor("the attempt at work", () => !alive() || holdsLease(db, pid))
          expect(alive(), "the attempt took the run").toBe(true)
          runId ??= query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id
          const t0 = Date.now()
          const second = startCli(["resume", runId, "--state-dir", state], { cwd: dir, env })
          const inPhase = () =>
            (step.phase === "with a create in flight" &&
              ledgerCount(db, `SELECT COUNT(*) AS n FROM offpeak_batches WHERE state = 'submitting' AND seq NOT IN (${[0, ...submittingBefore].join(", ")})`) > 0) ||
            (step.phase === "delivering" &&
              ledgerCount(db, "SELECT COUNT(*) AS n FROM offpeak_parts WHERE state = 'committed'") > partsBefore)
          const verdict = await second.exit
          const refusedIn = Date.now() - t0
          expect(verdict.code, verdict.stderr).not.toBe(0)
          const m = refusal.exec(verdict.stderr)
          expect(m, verdict.stderr).not.toBeNull()
          expect(m![1]).toBe(runId)
          expect(Number(m![2]), "the refusal names the owner's pid").toBe(pid)
          expect(alive(), "the first attempt was still at work when the second was refused").toBe(true)
          // then the first dies in the phase asked for
          await waitFor(`the attempt ${step.phase}`, () => !alive() || inPhase())
          expect(alive(), `the attempt was still at work (${step.phase})`).toBe(true)
          attempt.child.kill("SIGKILL")
          label = `contested, killed ${step.phase}`
          contests.push(`refused in ${refusedIn} ms naming pid ${pid}, which was then killed ${step.phase}`)
        }

        const exit = await attempt.exit
        attemptsMs += Date.now() - attemptStarted
        if (exit.signal === "SIGKILL") {
          kills++
          hit.push(label)
          if (step.kind === "point") expect(exit.stderr).toContain(`failpoint ${failpoint}: SIGKILL`)
        } else {
          expect(exit.code, exit.stderr).toBe(0)
          completedEarly++
        }
        if (runId === undefined && fs.existsSync(db)) {
          runId = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]?.id
        }
        if (caught !== undefined) {
          // killed inside the create: the provider has the batch, the ledger still waits for it
          const atProvider = (await c.remote(url)).length
          const held = ledgerCount(db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL")
          const [ledgerBatch] = query<{ state: string; remote_id: string | null }>(db, `SELECT state, remote_id FROM offpeak_batches WHERE id = '${caught.batchId}'`)
          expect(ledgerBatch, `${label}: the killed create's batch ${caught.batchId} in the ledger`).toEqual({ state: "submitting", remote_id: null })
          expect(atProvider, `${label}: the killed create's batch exists, unknown to the ledger`).toBe(held + 1)
          insideCreates.push(
            `${label}: killed ${caught.afterMs} ms after the emulator created ${caught.listed.id} (answer due at ${c.createLatencyMs} ms), ` +
              `${atProvider} batches at the provider, ${held} known to the ledger (${heldBefore} before)`
          )
        }
        if (failpoint.startsWith("batch.create.sent") && exit.signal === "SIGKILL") {
          // the create was in flight: the provider has the batch, the ledger does not know it yet
          const atProvider = (await c.remote(url)).length
          const held = ledgerCount(db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL")
          insideCreates.push(`${failpoint}: ${atProvider} batches at the provider, ${held} known to the ledger (${heldBefore} before)`)
          expect(atProvider, `${failpoint}: the killed create's batch exists, unknown to the ledger`).toBe(held + 1)
        }
      }
      expect(runId).toBeDefined()
      const lastStarted = Date.now()
      const last = await runCli(["resume", runId!, "--state-dir", state], { cwd: dir, env })
      const lastMs = Date.now() - lastStarted
      expect(last.code, last.stderr).toBe(0)
      expect(last.stdout).toMatch(/completed/)

      checkDelivery(c.provider, db, runId!, out, state, c.rows)
      const remote = await checkRemote(c, url, db, c.rows)
      const extra = await c.extra(url)
      console.log(
        `crash torture (${name}, creates answered ${c.createLatencyMs} ms late): ${kills} kills ` +
          `(${new Set(hit).size} distinct: ${hit.join(", ")}), ${resumes + 1} resumes, ${completedEarly} attempts ran to ` +
          `the end unkilled, second processes refused while the first worked: ${contests.length} (${contests.join("; ")}); ` +
          `inside creates: ${insideCreates.join("; ")}; ${c.rows} rows delivered once each, ${remote.batches} batches created at ` +
          `the emulator, ${remote.held} remote batches held by the ledger, ` +
          `${remote.createdTwice} requests created twice, ${remote.unclaimed} remote batches unclaimed, ${remote.running} running${extra}; ` +
          `${((Date.now() - started) / 1000).toFixed(0)} s (the killed attempts ${(attemptsMs / 1000).toFixed(0)} s, ` +
          `the last resume ${(lastMs / 1000).toFixed(1)} s)`
      )
      // every attempt died where it was meant to: none found the run finished
      expect(completedEarly).toBe(0)
      expect(kills).toBe(c.schedule.length)
      expect(contests).toHaveLength(c.schedule.filter((step) => step.kind === "contested").length)
      expect(insideCreates).toHaveLength(c.schedule.filter((step) => step.kind === "inside create" || step.kind === "point" && step.failpoint.startsWith("batch.create.sent")).length)
    }, 600_000)

    it(`${name}: every create answered late, nothing killed: completes, each request created once`, async () => {
      const rows = 800
      const latency = 1_000
      const dir = tmpDir(`late-${name}`)
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, rows, 12)
      const out = path.join(dir, "out")
      const state = path.join(dir, "state")
      const db = path.join(state, "state.db")
      const url = await startEmulator(name, dir, c.knobs(latency))
      const env = {
        ...c.provider.cliEnv(url),
        OFFPEAK_POLL_INITIAL: "50 millis",
        OFFPEAK_POLL_MAX: "200 millis",
        OFFPEAK_TEST_INPUT: input,
        OFFPEAK_TEST_OUT: out,
        OFFPEAK_TEST_MAX_REQUESTS: "100",
        OFFPEAK_TEST_IN_FLIGHT: "3"
      }
      const t0 = Date.now()
      const run = await runCli(["run", fixture, ...c.args, "--state-dir", state], { cwd: dir, env })
      const ms = Date.now() - t0
      expect(run.code, run.stderr).toBe(0)
      expect(run.stdout).toMatch(/completed/)
      const runId = query<{ id: string }>(db, "SELECT id FROM offpeak_runs")[0]!.id
      checkDelivery(c.provider, db, runId, out, state, rows)
      const remote = await checkRemote(c, url, db, rows)
      const extra = await c.extra(url)
      console.log(
        `late creates (${name}): every create answered ${latency} ms late, no kill: run took ${ms} ms; ${rows} rows ` +
          `delivered once each, ${remote.batches} batches created (${remote.batches} held by the ledger), ` +
          `${remote.createdTwice} requests created twice, ${remote.unclaimed} unclaimed, ${remote.running} running${extra}`
      )
    }, 240_000)
  }
})
