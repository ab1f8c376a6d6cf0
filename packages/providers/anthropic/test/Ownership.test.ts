/**
 * Which remote batch is ours, after creates whose answer never came: the
 * adapter's `find` against the emulator (official SDK), with crashes made by
 * hand (the journal's intent written, the batch created with exactly the body
 * the adapter sends, no answer recorded), and the pure rules it follows.
 */
import Anthropic from "@anthropic-ai/sdk"
import { assert, describe, it } from "@effect/vitest"
import * as Fingerprint from "@offpeak/core/Fingerprint"
import * as Provider from "@offpeak/core/Provider"
import * as Request from "@offpeak/core/Request"
import { Effect, Option, Redacted, Result, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as AnthropicBatch from "../AnthropicBatch.ts"
import * as Emulator from "../emulator/Emulator.ts"
import * as Ownership from "../internal/ownership.ts"
import * as Journal from "../internal/submitJournal.ts"

const MODEL = "claude-haiku-4-5"
const Label = Schema.Struct({ category: Schema.Literals(["billing", "bug", "other"]) }).annotate({ title: "Label" })
const chat = (prompt: string) => Request.chat({ model: MODEL, prompt, maxTokens: 50, output: { name: "label", schema: Label } })

const adapter = (url: string, options: Partial<AnthropicBatch.Options> = {}) =>
  AnthropicBatch.make({
    apiKey: Redacted.make("test"),
    baseURL: url,
    pollInterval: { initial: "20 millis", max: "100 millis" },
    maxRetries: 0,
    listGrace: "300 millis",
    ...options
  })

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-anthropic-own-"))

/** a batch file of `n` requests (as the pipeline writes it) and its submission */
const file = (provider: Provider.Service, dir: string, batchId: string, n: number) => {
  const encoded = Array.from({ length: n }, (_, i) => Result.getOrThrow(provider.encode(chat(`${batchId} ${i}`), Fingerprint.of(chat(`${batchId} ${i}`)))))
  const p = path.join(dir, `${batchId}.jsonl`)
  fs.writeFileSync(p, encoded.map((e) => e.line).join("\n") + "\n")
  return {
    _tag: "Lines",
    batchId,
    runId: "run",
    sealedAt: Date.now(),
    group: MODEL,
    path: p,
    count: n,
    bytes: encoded.reduce((s, e) => s + e.bytes, 0)
  } satisfies Provider.Lines
}

const sdk = (url: string) => new Anthropic({ apiKey: "test", baseURL: url, maxRetries: 0 })

/** the request lines of a batch file, as the adapter sends them */
const requestsOf = (s: Provider.Lines) =>
  fs.readFileSync(s.path, "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l))

/**
 * A create in flight when the process died: the intent is in the journal, and
 * (when `arrives`) the provider created the batch from the very body the
 * adapter sends; nobody recorded the answer.
 */
const crashedCreate = (url: string, s: Provider.Lines, arrives = true) =>
  Effect.promise(async () => {
    Journal.begin(s.path, s.batchId, s.count, Date.now())
    return arrives ? (await sdk(url).messages.batches.create({ requests: requestsOf(s) })).id : undefined
  })

/** a batch of someone else's with `n` requests */
const foreignBatch = (url: string, n: number) =>
  Effect.promise(() =>
    sdk(url).messages.batches.create({
      requests: Array.from({ length: n }, (_, i) => ({
        custom_id: `foreign${i}`,
        params: { model: MODEL, max_tokens: 10, messages: [{ role: "user" as const, content: "x" }] }
      }))
    })
  ).pipe(Effect.map((b) => b.id))

const idOf = (provider: Provider.Service, s: Provider.Lines) => provider.find(s).pipe(Effect.map(Option.map((r) => r.id)))

/** every attempt back to unanswered: what a resume after another crash in flight would see */
const forget = (s: Provider.Lines) => {
  const journal = Journal.read(s.path, s.batchId)!
  Journal.write(s.path, {
    batchId: journal.batchId,
    count: journal.count,
    attempts: journal.attempts.map((a) => ({ startedAt: a.startedAt, id: null, at: null }))
  })
}

const downloads = (emulator: Emulator.Handle) =>
  emulator.counters().pipe(Effect.map((c) => new Map(c.batches.map((b) => [b.id, b.results_downloads]))))

describe("find after creates whose answer never came (emulator, official SDK)", () => {
  it.live("concurrent lookups for sibling batch files, all the same size, each adopt exactly their own batch", () =>
    Effect.gen(function*() {
      // 6 requests at 10 a second: each batch runs 600 ms, so every candidate is still running when the look starts
      const emulator = yield* Emulator.serve({ linesPerSecond: 10 })
      const provider = yield* adapter(emulator.url)
      const dir = tmpDir()
      const files = ["run-b00001", "run-b00002", "run-b00003", "run-b00004"].map((id) => file(provider, dir, id, 6))
      // three creates in flight at the crash, their batches created; the fourth never reached the provider
      const created = yield* Effect.all(files.map((s, i) => crashedCreate(emulator.url, s, i < 3)), { concurrency: "unbounded" })
      // and someone else's batch of the same size, created meanwhile
      const foreign = yield* foreignBatch(emulator.url, 6)
      const started = Date.now()
      const found = yield* Effect.all(files.map((s) => idOf(provider, s)), { concurrency: "unbounded" })
      const waited = Date.now() - started
      assert.deepStrictEqual(found, created.map((id) => id === undefined ? Option.none() : Option.some(id)))
      const adopted = found.filter(Option.isSome).map((o) => o.value)
      assert.strictEqual(new Set(adopted).size, 3, "no remote batch adopted twice")
      assert.notInclude(adopted, foreign)
      // every decision was proven by custom ids: find waited for the batches to end (600 ms)
      assert.isAtLeast(waited, 500)
      const perBatch = yield* downloads(emulator)
      for (const id of [...created.filter((id) => id !== undefined), foreign]) assert.isAtMost(perBatch.get(id!) ?? 0, 1)
      console.log(
        `concurrent finds: 4 sibling files of 6 requests, 3 batches created + 1 foreign of the same size, all running; ` +
          `each file got its own batch (the 4th none) after ${waited} ms; results downloads per batch ` +
          `${JSON.stringify([...perBatch.values()])}`
      )
    }).pipe(Effect.scoped))

  it.live("a candidate's verdict is cached: repeated resumes never download a batch's results again (≤ 2 with collection)", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ linesPerSecond: 200 })
      const provider = yield* adapter(emulator.url)
      const dir = tmpDir()
      const files = ["run-b00001", "run-b00002", "run-b00003"].map((id) => file(provider, dir, id, 6))
      const created = yield* Effect.all(files.map((s) => crashedCreate(emulator.url, s)), { concurrency: "unbounded" })
      yield* Effect.sleep("200 millis")
      const RESUMES = 8
      for (let resume = 0; resume < RESUMES; resume++) {
        // one file at a time, in a different order each time, as a serialized runner would
        const order = files.map((_, i) => files[(i + resume) % files.length]!)
        for (const s of order) {
          forget(s)
          assert.deepStrictEqual(yield* idOf(provider, s), Option.some(created[files.indexOf(s)]!))
        }
      }
      const afterFinds = yield* downloads(emulator)
      for (const id of created) assert.strictEqual(afterFinds.get(id!), 1, "read once to confirm, then cached")
      // the verdicts are in the journals, the custom ids in the folder's cache
      const journal = Journal.read(files[0]!.path, files[0]!.batchId)!
      assert.strictEqual(journal.attempts.length, 1)
      assert.isDefined(Journal.readRemote(files[0]!.path, created[0]!))
      // collection reads each once more
      for (const id of created) {
        const remote = { id: id! }
        const status = yield* provider.status(remote)
        assert.strictEqual((yield* Stream.runCollect(provider.results(remote, status))).length, 6)
      }
      const total = yield* downloads(emulator)
      for (const id of created) assert.strictEqual(total.get(id!), 2)
      console.log(
        `verdict cache: 3 batches, ${RESUMES} resumes × 3 finds = ${RESUMES * 3} look-ups; results downloads per batch ` +
          `after the finds ${JSON.stringify(created.map((id) => afterFinds.get(id!)))}, after collection ${JSON.stringify(created.map((id) => total.get(id!)))}`
      )
    }).pipe(Effect.scoped))

  it.live("ambiguity waits: a running batch another unanswered attempt could have made is not adopted until its custom ids say whose it is", () =>
    Effect.gen(function*() {
      // 8 requests at 8 a second: the one batch runs a second
      const emulator = yield* Emulator.serve({ linesPerSecond: 8 })
      const provider = yield* adapter(emulator.url)
      const dir = tmpDir()
      const a = file(provider, dir, "run-b00001", 8)
      const b = file(provider, dir, "run-b00002", 8)
      // both creates were in flight at the crash; only b's reached the provider
      yield* crashedCreate(emulator.url, a, false)
      const bId = yield* crashedCreate(emulator.url, b)
      const started = Date.now()
      const aFound = yield* idOf(provider, a)
      const waitedA = Date.now() - started
      // it was running and could have been a's: a waited for it to end, read it, and found b's custom ids
      assert.isTrue(Option.isNone(aFound))
      assert.isAtLeast(waitedA, 800)
      assert.strictEqual(Journal.read(a.path, a.batchId)!.verdicts?.[bId!], "mismatch")
      // b adopts it without reading it again (the custom ids are cached)
      assert.deepStrictEqual(yield* idOf(provider, b), Option.some(bId!))
      assert.strictEqual((yield* downloads(emulator)).get(bId!), 1)

      // the only unanswered attempt of the run, one running candidate: adopted at once, before it ends
      const c = file(provider, dir, "run-b00003", 8)
      const cId = yield* crashedCreate(emulator.url, c)
      const t0 = Date.now()
      assert.deepStrictEqual(yield* idOf(provider, c), Option.some(cId!))
      const waitedC = Date.now() - t0
      assert.isBelow(waitedC, 800)
      assert.strictEqual((yield* Effect.promise(() => sdk(emulator.url).messages.batches.retrieve(cId!))).processing_status, "in_progress")

      // two running candidates for one file (its own and a foreign one of the same size): wait, then custom ids
      const d = file(provider, dir, "run-b00004", 8)
      const dId = yield* crashedCreate(emulator.url, d)
      const foreign = yield* foreignBatch(emulator.url, 8)
      const t1 = Date.now()
      assert.deepStrictEqual(yield* idOf(provider, d), Option.some(dId!))
      const waitedD = Date.now() - t1
      // it waited for an end: its own batch, proven by its custom ids (the foreign one was never taken)
      assert.isAtLeast(waitedD, 800)
      assert.strictEqual(Journal.read(d.path, d.batchId)!.verdicts?.[dId!], "match")
      assert.notInclude(Object.keys(Journal.read(d.path, d.batchId)!.duplicates ?? {}), foreign)
      console.log(
        `ambiguity: a (never created) waited ${waitedA} ms for b's running batch, then none; sole candidate adopted while running in ` +
          `${waitedC} ms; own + foreign batch of the same size resolved by custom ids after ${waitedD} ms`
      )
    }).pipe(Effect.scoped))

  it.live("a create that went through although its call failed is found after the list lag, within the grace: one batch", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({
        linesPerSecond: 100,
        listLagMs: 400,
        endpointFaults: [{ endpoint: "create", status: 500, times: 1, phase: "after", retryAfterMs: 10 }]
      })
      const provider = yield* adapter(emulator.url, { listGrace: "1 second" })
      const s = file(provider, tmpDir(), "run-b00001", 5)
      const error = yield* Effect.flip(provider.submit(s))
      assert.strictEqual(error.reason._tag, "ServerError")
      // what the runner does after a transient error: look, then submit again
      const started = Date.now()
      const found = yield* provider.find(s)
      assert.isTrue(Option.isSome(found), "the batch was listed within the grace")
      const remote = Option.isSome(found) ? found.value : yield* provider.submit(s)
      const counters = yield* emulator.counters()
      assert.strictEqual(counters.batches.length, 1)
      assert.strictEqual(remote.id, counters.batches[0]!.id)
      assert.strictEqual(counters.requests.sentTwiceWithoutFailure, 0)
      console.log(`list lag 400 ms, grace 1 s: find adopted the batch the failed create made after ${Date.now() - started} ms; 1 batch created`)
    }).pipe(Effect.scoped))

  it.live("a duplicate (a failed create that went through, listed after the grace) is cancelled while it runs", () =>
    Effect.gen(function*() {
      // listed 1.5 s late, longer than the 300 ms grace: find cannot see it, and the retry creates a second batch
      const emulator = yield* Emulator.serve({
        linesPerSecond: 2,
        listLagMs: 1_500,
        endpointFaults: [{ endpoint: "create", status: 500, times: 1, phase: "after", retryAfterMs: 10 }]
      })
      const provider = yield* adapter(emulator.url)
      const s = file(provider, tmpDir(), "run-b00001", 10)
      assert.strictEqual((yield* Effect.flip(provider.submit(s))).reason._tag, "ServerError")
      assert.isTrue(Option.isNone(yield* provider.find(s)))
      const remote = yield* provider.submit(s)
      const created = yield* emulator.counters()
      assert.strictEqual(created.batches.length, 2)
      assert.strictEqual(created.repeatedSets, 1)
      const duplicate = created.batches.find((b) => b.id !== remote.id)!.id
      // the held batch is polled as the runner does; the polls look for the late-listed duplicate and cancel it
      const started = Date.now()
      let cancelled: number | null = null
      while (cancelled === null && Date.now() - started < 4_000) {
        yield* provider.status(remote)
        yield* Effect.sleep("100 millis")
        cancelled = (yield* emulator.counters()).batches.find((b) => b.id === duplicate)!.cancel_ms
      }
      assert.isNotNull(cancelled, "the duplicate was cancelled")
      assert.strictEqual(Journal.read(s.path, s.batchId)!.duplicates?.[duplicate], "cancelled")
      const held = (yield* emulator.counters()).batches.find((b) => b.id === remote.id)!
      assert.strictEqual(held.cancel_ms, null, "the held batch runs on")
      // once it ended, its custom ids prove it was the file's
      const status = yield* Effect.promise(() => sdk(emulator.url).messages.batches.retrieve(duplicate))
      const dupCreated = Date.parse(status.created_at)
      let ended = status.processing_status
      while (ended !== "ended") {
        yield* Effect.sleep("50 millis")
        ended = (yield* Effect.promise(() => sdk(emulator.url).messages.batches.retrieve(duplicate))).processing_status
      }
      const ids: Array<string> = []
      const types = new Map<string, number>()
      for (const line of yield* Effect.promise(async () => {
        const out: Array<{ custom_id: string; result: { type: string } }> = []
        for await (const r of await sdk(emulator.url).messages.batches.results(duplicate)) out.push(r as never)
        return out
      })) {
        ids.push(line.custom_id)
        types.set(line.result.type, (types.get(line.result.type) ?? 0) + 1)
      }
      assert.sameMembers(ids, requestsOf(s).map((r) => r.custom_id))
      assert.isAbove(types.get("canceled") ?? 0, 0)
      console.log(
        `duplicate: listed 1.5 s late (grace 300 ms), cancelled ${cancelled! - dupCreated} ms after its creation; ` +
          `its results: ${JSON.stringify(Object.fromEntries(types))} of the file's 10 custom ids`
      )
    }).pipe(Effect.scoped))

  it.live("a duplicate that ended before it was seen is recorded, proven by its custom ids, and never adopted by a sibling", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({
        linesPerSecond: 1_000,
        listLagMs: 600,
        endpointFaults: [{ endpoint: "create", status: 500, times: 1, phase: "after", retryAfterMs: 10 }]
      })
      const provider = yield* adapter(emulator.url, { listGrace: "100 millis" })
      const dir = tmpDir()
      const s = file(provider, dir, "run-b00001", 4)
      yield* Effect.flip(provider.submit(s))
      assert.isTrue(Option.isNone(yield* provider.find(s)))
      const remote = yield* provider.submit(s)
      // polled as the runner does, until the duplicate is accounted for
      const started = Date.now()
      while (Journal.read(s.path, s.batchId)!.duplicates === undefined && Date.now() - started < 6_000) {
        yield* provider.status(remote)
        yield* Effect.sleep("100 millis")
      }
      const duplicate = (yield* emulator.counters()).batches.find((b) => b.id !== remote.id)!
      assert.strictEqual(duplicate.status, "ended")
      assert.strictEqual(duplicate.cancel_ms, null)
      assert.strictEqual(Journal.read(s.path, s.batchId)!.duplicates?.[duplicate.id], "ended")
      // a sibling of the same size whose create was in flight meanwhile does not take it
      const sibling = file(provider, dir, "run-b00002", 4)
      const siblingId = yield* crashedCreate(emulator.url, sibling)
      yield* Effect.sleep("700 millis")
      assert.deepStrictEqual(yield* idOf(provider, sibling), Option.some(siblingId!))
      assert.isAtMost((yield* downloads(emulator)).get(duplicate.id) ?? 0, 1)
      console.log(`ended duplicate: recorded ${Date.now() - started} ms after the retry created the held batch; results downloads 1`)
    }).pipe(Effect.scoped))
})

// ----- the rules, without a provider -----

const clock = (now: number): Ownership.Clock => ({
  now,
  processStart: 0,
  skewMs: 600_000,
  marginMs: 2_000,
  createTimeoutMs: 1_800_000
})

const journal = (batchId: string, count: number, attempts: ReadonlyArray<Journal.Attempt>, extra: Partial<Journal.Journal> = {}): Journal.Journal => ({
  batchId,
  count,
  attempts,
  ...extra
})

const evidence = (own: Journal.Journal, others: ReadonlyArray<Journal.Journal> = [], extra: Partial<Ownership.Evidence> = {}): Ownership.Evidence => ({
  own,
  others,
  digest: "D-own",
  remote: () => undefined,
  unreadable: new Set(),
  ...extra
})

describe("Ownership rules", () => {
  const T = 1_800_000_000_000
  const listed = (id: string, createdMs: number, count = 5, ended = false): Ownership.Listed => ({ id, createdMs, count, ended })

  it("the offset measured by answered creates narrows the window; a clock step falls back to the union", () => {
    const answered = journal("b1", 5, [{ startedAt: T, id: "x", at: T + 3_000, created: T + 1_000 }])
    assert.deepStrictEqual(Ownership.offsetOf([answered]), { lo: -2_000, hi: 1_000 })
    const open: Journal.Attempt = { startedAt: T + 60_000, id: null, at: null, endedAt: T + 61_000 }
    assert.deepStrictEqual(Ownership.windowOf(open, clock(T + 70_000), Ownership.offsetOf([answered])), {
      lo: T + 60_000 - 2_000 - 2_000,
      hi: T + 61_000 + 1_000 + 2_000
    })
    // no answered create: the configured skew either side
    assert.deepStrictEqual(Ownership.windowOf(open, clock(T + 70_000), undefined), { lo: T + 60_000 - 600_000, hi: T + 61_000 + 600_000 })
    // an attempt of a process that died ends, at the latest, when this one started
    const crashed: Journal.Attempt = { startedAt: T, id: null, at: null }
    assert.strictEqual(Ownership.endOf(crashed, { ...clock(T + 999_000), processStart: T + 5_000 }), T + 5_000)
    const stepped = journal("b2", 5, [{ startedAt: T + 100_000, id: "y", at: T + 100_500, created: T + 200_000 }])
    assert.deepStrictEqual(Ownership.offsetOf([answered, stepped]), { lo: -2_000, hi: 100_000 })
    // adopted ids measure nothing
    assert.isUndefined(Ownership.offsetOf([journal("b3", 5, [{ startedAt: T, id: "z", at: T + 9, created: T, adopted: true }])]))
  })

  it("decides: known id, refused only, proven by custom ids, sole running candidate, wait, none", () => {
    const open: Journal.Attempt = { startedAt: T, id: null, at: null }
    const c = clock(T + 10_000)
    assert.deepStrictEqual(Ownership.decide(evidence(journal("a", 5, [{ startedAt: T, id: "x", at: T }])), [], c), { _tag: "Known", id: "x" })
    assert.deepStrictEqual(Ownership.decide(evidence(journal("a", 5, [{ ...open, refused: true, endedAt: T }])), [listed("x", T + 1)], c), { _tag: "None" })
    const own = journal("a", 5, [open])
    // wrong size, claimed by a sibling, or known to hold other custom ids: not candidates
    const sibling = journal("b", 5, [{ startedAt: T, id: "claimed", at: T }])
    const noCandidates = [listed("small", T + 1, 4), listed("claimed", T + 2), listed("old", T - 700_000)]
    assert.deepStrictEqual(Ownership.decide(evidence(own, [sibling]), noCandidates, c), { _tag: "None" })
    // an ended candidate is read first
    assert.deepStrictEqual(Ownership.decide(evidence(own), [listed("e", T + 5, 5, true)], c), { _tag: "Confirm", ids: ["e"] })
    const remote = (id: string) => id === "e" ? { id, lines: 5, digest: "D-own" } : id === "f" ? { id, lines: 5, digest: "D-other" } : undefined
    assert.deepInclude(Ownership.decide(evidence(own, [], { remote }), [listed("f", T + 1, 5, true), listed("e", T + 5, 5, true)], c), {
      _tag: "Adopt",
      id: "e",
      proven: true
    })
    // one running candidate, nothing else unanswered: adopted unproven
    assert.deepInclude(Ownership.decide(evidence(own), [listed("r", T + 5)], c), { _tag: "Adopt", id: "r", proven: false })
    // another file's unanswered attempt could have made it: wait
    const rival = journal("b", 5, [{ startedAt: T + 10, id: null, at: null }])
    assert.deepStrictEqual(Ownership.decide(evidence(own, [rival]), [listed("r", T + 5)], c), { _tag: "Wait", ids: ["r"] })
    // … unless it has another size
    assert.deepInclude(Ownership.decide(evidence(own, [journal("b", 6, rival.attempts)]), [listed("r", T + 5)], c), { _tag: "Adopt", id: "r" })
    // two running candidates: wait
    assert.deepStrictEqual(Ownership.decide(evidence(own), [listed("r", T + 5), listed("s", T + 9)], c), { _tag: "Wait", ids: ["r", "s"] })
    // an ended candidate whose results cannot be read yet counts as running
    assert.deepStrictEqual(
      Ownership.decide(evidence(own, [], { unreadable: new Set(["e"]) }), [listed("e", T + 5, 5, true)], c),
      { _tag: "Wait", ids: ["e"] }
    )
  })

  it("duplicates: proven ended ones recorded, running ones cancelled only with a measured offset and no other explanation", () => {
    const held: Journal.Attempt = { startedAt: T + 10_000, id: "x", at: T + 11_000, created: T + 10_500 }
    const failed: Journal.Attempt = { startedAt: T, id: null, at: null, endedAt: T + 2_000 }
    const own = journal("a", 5, [failed, held])
    const c = clock(T + 20_000)
    assert.deepStrictEqual(Ownership.duplicates(evidence(own), [listed("x", T + 10_500), listed("d", T + 1_000)], c), [{ _tag: "Cancel", id: "d" }])
    // outside the failed attempt's window (by the measured offset): not ours
    assert.deepStrictEqual(Ownership.duplicates(evidence(own), [listed("late", T + 9_000)], c), [])
    // no offset measured (the held batch was adopted): never cancelled
    const adopted = journal("a", 5, [failed, { startedAt: T + 10_000, id: "x", at: T + 11_000, adopted: true }])
    assert.deepStrictEqual(Ownership.duplicates(evidence(adopted), [listed("d", T + 1_000)], c), [])
    // another file's unanswered attempt could explain it: not cancelled
    const rival = journal("b", 5, [{ startedAt: T + 500, id: null, at: null, endedAt: T + 900 }])
    assert.deepStrictEqual(Ownership.duplicates(evidence(own, [rival]), [listed("d", T + 1_000)], c), [])
    // ended: read, then recorded when it carries the file's custom ids
    assert.deepStrictEqual(Ownership.duplicates(evidence(own), [listed("d", T + 1_000, 5, true)], c), [{ _tag: "Confirm", id: "d" }])
    const remote = () => ({ id: "d", lines: 5, digest: "D-own" })
    assert.deepStrictEqual(Ownership.duplicates(evidence(own, [], { remote }), [listed("d", T + 1_000, 5, true)], c), [{ _tag: "Ended", id: "d" }])
    // already recorded: claimed
    const recorded = journal("a", 5, own.attempts, { duplicates: { d: "cancelled" } })
    assert.deepStrictEqual(Ownership.duplicates(evidence(recorded), [listed("d", T + 1_000)], c), [])
  })
})
